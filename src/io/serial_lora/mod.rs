//! LoRa modules on a serial port (USB or UART): RAK3172 (RUI3 AT commands, P2P receive) and
//! Microchip RN2483 (`radio rx 0`). The dialects are pure line classifiers plus command sequences
//! (`rak3172.rs`, `rn2483.rs`, `protocol.rs`, `lines.rs`); this file owns the port (tokio-serial):
//! it opens it, runs the init sequence checking every reply, listens, probes the module when it has
//! been quiet for `idle_probe_ms`, and starts over with backoff when anything fails. When the device
//! node disappears (USB unplugged) it waits for it to come back. `script.rs` is a scripted module on
//! a pseudo-terminal that speaks both dialects, for tests and the demo.

pub mod lines;
pub mod protocol;
pub mod rak3172;
pub mod rn2483;
pub mod script;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::ingest::RadioFrame;
use crate::io::serial_port::{self, End, Supervision};
use crate::io::status::SourceStatus;

use lines::LineBuffer;
use protocol::{judge, Capture, Line, Step, Verdict};

pub use crate::config::radio::{ModuleKind, SerialLoraConfig};
pub use crate::io::status::{SourceState, StatusSnapshot};

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Rak3172 => "RAK3172",
            ModuleKind::Rn2483 => "RN2483",
        }
    }

    pub fn default_baud(self) -> u32 {
        match self {
            ModuleKind::Rak3172 => rak3172::DEFAULT_BAUD,
            ModuleKind::Rn2483 => rn2483::DEFAULT_BAUD,
        }
    }

    pub fn classify(self, line: &str) -> Line {
        match self {
            ModuleKind::Rak3172 => rak3172::classify(line),
            ModuleKind::Rn2483 => rn2483::classify(line),
        }
    }

    pub fn init_steps(self, s: &RadioSettings) -> Vec<Step> {
        match self {
            ModuleKind::Rak3172 => rak3172::init_steps(s),
            ModuleKind::Rn2483 => rn2483::init_steps(s),
        }
    }

    pub fn probe_steps(self) -> Vec<Step> {
        match self {
            ModuleKind::Rak3172 => rak3172::probe_steps(),
            ModuleKind::Rn2483 => rn2483::probe_steps(),
        }
    }

    pub fn rearm_steps(self) -> Vec<Step> {
        match self {
            ModuleKind::Rak3172 => rak3172::rearm_steps(),
            ModuleKind::Rn2483 => rn2483::rearm_steps(),
        }
    }

    pub fn after_frame_steps(self) -> Vec<Step> {
        match self {
            ModuleKind::Rak3172 => Vec::new(),
            ModuleKind::Rn2483 => rn2483::after_frame_steps(),
        }
    }
}

/// The radio settings a module is initialised with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadioSettings {
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: u32,
    /// Coding rate 4/`cr`.
    pub cr: u8,
    pub sync_word: u8,
    pub preamble_len: u16,
    pub tx_power_dbm: i8,
}

impl SerialLoraConfig {
    pub fn baud(&self) -> u32 {
        self.baud.unwrap_or_else(|| self.module.default_baud())
    }

    pub fn settings(&self) -> RadioSettings {
        RadioSettings {
            freq_hz: self.freq_hz,
            sf: self.sf,
            bw_khz: self.bw_khz,
            cr: self.cr,
            sync_word: self.sync_word,
            preamble_len: self.preamble_len,
            tx_power_dbm: self.tx_power_dbm,
        }
    }

    /// Problems, as `key: message` strings (empty when valid).
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if !(7..=12).contains(&self.sf) {
            errs.push(format!("sf: {} (7..=12)", self.sf));
        }
        if ![125, 250, 500].contains(&self.bw_khz) {
            errs.push(format!("bw_khz: {} is not 125, 250 or 500", self.bw_khz));
        }
        if !(5..=8).contains(&self.cr) {
            errs.push(format!("cr: {} must be 5..=8 (coding rate 4/5..4/8)", self.cr));
        }
        let f = self.freq_hz;
        let freq_ok = match self.module {
            ModuleKind::Rak3172 => (150_000_000..=960_000_000).contains(&f),
            ModuleKind::Rn2483 => (433_050_000..=434_790_000).contains(&f) || (863_000_000..=870_000_000).contains(&f),
        };
        if !freq_ok {
            errs.push(format!("freq_hz: {f} is outside what the {} can receive", self.module.as_str()));
        }
        if self.reply_timeout_ms == 0 || self.idle_probe_ms == 0 || self.device_poll_ms == 0 {
            errs.push("reply_timeout_ms/idle_probe_ms/device_poll_ms: must be > 0".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            errs.push("backoff_min_ms/backoff_max_ms: need 0 < min <= max".into());
        }
        errs
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SerialLoraError {
    #[error("serial device {0} is missing (unplugged?)")]
    Missing(PathBuf),
    #[error("cannot open serial device {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("serial I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("serial device closed")]
    Closed,
    #[error("{module} did not answer `{cmd}` within {ms} ms")]
    Timeout { module: &'static str, cmd: String, ms: u64 },
    #[error("{module} refused `{cmd}`: {reply}")]
    Rejected { module: &'static str, cmd: String, reply: String },
}

/// The port, its line buffer, and the dialect.
struct Conn<S> {
    io: S,
    buf: LineBuffer,
    kind: ModuleKind,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn send(&mut self, cmd: &str) -> Result<(), SerialLoraError> {
        tracing::trace!(module = self.kind.as_str(), cmd, "->");
        self.io.write_all(cmd.as_bytes()).await?;
        self.io.write_all(b"\r\n").await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next line, or None at `deadline`.
    async fn line(&mut self, deadline: Instant) -> Result<Option<String>, SerialLoraError> {
        loop {
            match self.buf.next_line() {
                Some(Ok(l)) => {
                    tracing::trace!(module = self.kind.as_str(), line = %l, "<-");
                    return Ok(Some(l));
                }
                Some(Err(lines::TooLong(n))) => {
                    tracing::warn!(module = self.kind.as_str(), bytes = n, "over-long line from module discarded");
                    continue;
                }
                None => {}
            }
            let mut chunk = [0u8; 512];
            let n = match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(r) => r?,
            };
            if n == 0 {
                return Err(SerialLoraError::Closed);
            }
            self.buf.push(&chunk[..n]);
        }
    }
}

/// A frame seen while running a sequence, or numbers captured from the replies.
#[derive(Default)]
struct StepsOutcome {
    frames: Vec<(Vec<u8>, Option<i32>, Option<f64>)>,
    rx_errors: Vec<String>,
    snr: Option<f64>,
    rssi: Option<f64>,
}

async fn run_steps<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    steps: &[Step],
    timeout: Duration,
) -> Result<StepsOutcome, SerialLoraError> {
    let mut outcome = StepsOutcome::default();
    for step in steps {
        let mut attempt = 0u8;
        'attempts: loop {
            attempt += 1;
            conn.send(&step.cmd).await?;
            let wait = step.timeout_ms.map_or(timeout, |ms| timeout.min(Duration::from_millis(ms)));
            let deadline = Instant::now() + wait;
            loop {
                let Some(line) = conn.line(deadline).await? else {
                    if attempt < step.attempts {
                        continue 'attempts;
                    }
                    return Err(SerialLoraError::Timeout {
                        module: conn.kind.as_str(),
                        cmd: step.cmd.clone(),
                        ms: wait.as_millis() as u64,
                    });
                };
                if line == step.cmd {
                    continue; // echo
                }
                let classified = conn.kind.classify(&line);
                match classified {
                    Line::Frame { phy, rssi, snr } => {
                        outcome.frames.push((phy, rssi, snr));
                        continue;
                    }
                    Line::RxError(e) => {
                        outcome.rx_errors.push(e);
                        continue;
                    }
                    _ => {}
                }
                match judge(step.expect, &classified) {
                    Verdict::Done(n) => {
                        match step.capture {
                            Capture::Snr => outcome.snr = n,
                            Capture::Rssi => outcome.rssi = n,
                            Capture::None => {}
                        }
                        break 'attempts;
                    }
                    Verdict::Rejected(reply) => {
                        return Err(SerialLoraError::Rejected {
                            module: conn.kind.as_str(),
                            cmd: step.cmd.clone(),
                            reply,
                        })
                    }
                    Verdict::Wait => {
                        tracing::debug!(module = conn.kind.as_str(), line = %line, "unsolicited line");
                    }
                }
            }
        }
    }
    Ok(outcome)
}

/// Keeps one serial LoRa module receiving until `shutdown` turns true (or the output closes).
pub async fn run_serial_lora(
    cfg: SerialLoraConfig,
    out: mpsc::Sender<RadioFrame>,
    status: Arc<SourceStatus>,
    shutdown: watch::Receiver<bool>,
) {
    let name = if cfg.name.is_empty() { cfg.port.display().to_string() } else { cfg.name.clone() };
    let supervision = Supervision {
        name: &name,
        what: "serial LoRa module",
        port: &cfg.port,
        device_poll: Duration::from_millis(cfg.device_poll_ms),
        backoff_min: Duration::from_millis(cfg.backoff_min_ms),
        backoff_max: Duration::from_millis(cfg.backoff_max_ms),
    };
    let st = status.clone();
    serial_port::supervise(supervision, status, shutdown, |mut shutdown| {
        let (cfg, out, st) = (&cfg, &out, st.clone());
        async move { session(cfg, out, &st, &mut shutdown).await }
    })
    .await;
}

fn open_port(cfg: &SerialLoraConfig) -> Result<tokio_serial::SerialStream, SerialLoraError> {
    serial_port::open(&cfg.port, cfg.baud()).map_err(|e| match e {
        serial_port::OpenError::Missing(p) => SerialLoraError::Missing(p),
        serial_port::OpenError::Open { path, detail } => SerialLoraError::Open { path, detail },
    })
}

async fn session(
    cfg: &SerialLoraConfig,
    out: &mpsc::Sender<RadioFrame>,
    status: &SourceStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<End, SerialLoraError> {
    let port = open_port(cfg)?;
    let kind = cfg.module;
    let mut conn = Conn { io: port, buf: LineBuffer::new(1024), kind };
    let timeout = Duration::from_millis(cfg.reply_timeout_ms);
    let idle = Duration::from_millis(cfg.idle_probe_ms);

    let init = run_steps(&mut conn, &kind.init_steps(&cfg.settings()), timeout).await?;
    status.set_up();
    tracing::info!(source = %status.name(), module = kind.as_str(), freq_hz = cfg.freq_hz, sf = cfg.sf, "serial LoRa module receiving");
    if deliver_outcome(cfg, init, out, status) {
        return Ok(End::OutputClosed);
    }

    let mut deadline = Instant::now() + idle;
    loop {
        let line = tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Ok(End::Shutdown);
                }
                continue;
            }
            l = conn.line(deadline) => l?,
        };
        let Some(line) = line else {
            // Quiet for `idle`: is the module still there?
            tracing::debug!(source = %status.name(), "module quiet; probing");
            let probe = run_steps(&mut conn, &kind.probe_steps(), timeout).await?;
            if deliver_outcome(cfg, probe, out, status) {
                return Ok(End::OutputClosed);
            }
            deadline = Instant::now() + idle;
            continue;
        };
        deadline = Instant::now() + idle;
        match kind.classify(&line) {
            Line::Frame { phy, rssi, snr } => {
                let after = run_steps(&mut conn, &kind.after_frame_steps(), timeout).await?;
                let rssi = rssi.or(after.rssi.map(|r| r.round() as i32));
                let snr = snr.or(after.snr);
                if send_frame(cfg, phy, rssi, snr, out, status) || deliver_outcome(cfg, after, out, status) {
                    return Ok(End::OutputClosed);
                }
            }
            Line::RxError(e) => {
                status.crc_error();
                tracing::debug!(source = %status.name(), error = %e, "reception failed");
                let rearm = run_steps(&mut conn, &kind.rearm_steps(), timeout).await?;
                if deliver_outcome(cfg, rearm, out, status) {
                    return Ok(End::OutputClosed);
                }
            }
            Line::RxEnded => {
                let rearm = run_steps(&mut conn, &kind.rearm_steps(), timeout).await?;
                if deliver_outcome(cfg, rearm, out, status) {
                    return Ok(End::OutputClosed);
                }
            }
            Line::Error(e) => {
                status.error(format!("unsolicited error from {}: {e}", kind.as_str()));
            }
            Line::Ok | Line::Other(_) => {
                tracing::debug!(source = %status.name(), line = %line, "ignored line");
            }
        }
    }
}

/// Frames and reception errors seen while a sequence ran. True when the consumer is gone.
fn deliver_outcome(
    cfg: &SerialLoraConfig,
    o: StepsOutcome,
    out: &mpsc::Sender<RadioFrame>,
    status: &SourceStatus,
) -> bool {
    for _ in o.rx_errors {
        status.crc_error();
    }
    for (phy, rssi, snr) in o.frames {
        if send_frame(cfg, phy, rssi, snr, out, status) {
            return true;
        }
    }
    false
}

fn send_frame(
    cfg: &SerialLoraConfig,
    phy: Vec<u8>,
    rssi: Option<i32>,
    snr: Option<f64>,
    out: &mpsc::Sender<RadioFrame>,
    status: &SourceStatus,
) -> bool {
    // A module has no concentrator timestamp: class A answers cannot be timed through it.
    let frame = RadioFrame {
        phy,
        rssi,
        snr,
        freq_hz: cfg.freq_hz,
        sf: Some(cfg.sf),
        bw_khz: cfg.bw_khz,
        tmst: None,
        origin: Default::default(),
    };
    match out.try_send(frame) {
        Ok(()) => {
            status.frame();
            false
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            status.dropped();
            tracing::warn!(source = %status.name(), "frame queue full; frame dropped");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => true,
    }
}
