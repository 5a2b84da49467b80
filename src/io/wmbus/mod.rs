//! The wireless M-Bus source: an iM871A or AMB8465 USB stick on a serial port (tokio-serial).
//!
//! The stick's framing and init commands are pure (`district_core::wmbus_stick`); the privacy filter
//! and decoding too (`district_core::wmbus_meters::MeterTable`). This file owns the port: it opens it,
//! sends the init sequence checking every reply, then reads telegrams, asks a stick that has been quiet
//! for `idle_probe_ms` whether it is still there, and starts over with backoff when anything fails
//! or the stick is unplugged (`io::serial_port`, shared with the serial LoRa modules).
//!
//! A telegram of a meter that is not configured is counted by manufacturer and type and dropped: it
//! is never decoded, logged or published, and its id is not kept. A configured meter whose telegram
//! cannot be decoded (wrong key!) is counted and logged by device name, never with its key, and gives
//! no reading.
//!
//! `script.rs` is a scripted stick (either kind) on a pseudo-terminal, for tests and the demo.

pub mod script;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::radio::WmbusSourceConfig;
use crate::counters::Counters;
use crate::ingest::MeterSample;
use crate::io::serial_port::{self, End, Supervision};
use crate::io::status::SourceStatus;
use crate::wmbus_meters::{Heard, MeterTable};
use crate::wmbus_stick::{reply_ok, InitStep, StickDecoder, StickEvent};

#[derive(Debug, thiserror::Error)]
pub enum WmbusSourceError {
    #[error(transparent)]
    Open(#[from] serial_port::OpenError),
    #[error("serial I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("serial device closed")]
    Closed,
    #[error("{stick} did not answer `{what}` within {ms} ms")]
    Timeout { stick: &'static str, what: String, ms: u64 },
    #[error("{stick} refused `{what}` (status 0x{status:02x})")]
    Rejected { stick: &'static str, what: String, status: u8 },
}

/// What the source hands its telegrams to, and counts them in.
pub struct WmbusWiring {
    pub meters: Arc<MeterTable>,
    pub out: mpsc::Sender<MeterSample>,
    pub status: Arc<SourceStatus>,
    pub counters: Arc<Counters>,
}

/// Keeps one stick receiving until `shutdown` turns true (or the output closes).
pub async fn run(cfg: WmbusSourceConfig, wiring: WmbusWiring, shutdown: watch::Receiver<bool>) {
    let supervision = Supervision {
        name: &cfg.name,
        what: "wM-Bus stick",
        port: &cfg.port,
        device_poll: Duration::from_millis(cfg.device_poll_ms),
        backoff_min: Duration::from_millis(cfg.backoff_min_ms),
        backoff_max: Duration::from_millis(cfg.backoff_max_ms),
    };
    let status = wiring.status.clone();
    serial_port::supervise(supervision, status, shutdown, |mut shutdown| {
        let (cfg, wiring) = (&cfg, &wiring);
        async move {
            let port = serial_port::open(&cfg.port, cfg.baud())?;
            session(cfg, port, wiring, &mut shutdown).await
        }
    })
    .await;
}

/// The port and the stick's decoder.
struct Conn<S> {
    io: S,
    decoder: StickDecoder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The events in the next chunk of bytes, or None at `deadline`.
    async fn events(&mut self, deadline: Instant) -> Result<Option<Vec<StickEvent>>, WmbusSourceError> {
        let mut chunk = [0u8; 512];
        let n = match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
            Err(_) => return Ok(None),
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(WmbusSourceError::Closed);
        }
        Ok(Some(self.decoder.push(chunk.get(..n).unwrap_or(&[]))))
    }
}

/// Sends `step` and waits for its reply; telegrams arriving meanwhile are handled as usual.
/// True when the consumer is gone.
async fn run_step<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: &WmbusSourceConfig,
    conn: &mut Conn<S>,
    step: &InitStep,
    wiring: &WmbusWiring,
) -> Result<bool, WmbusSourceError> {
    tracing::debug!(source = %cfg.name, stick = cfg.stick.as_str(), step = %step.what, "->");
    conn.io.write_all(&step.request).await?;
    conn.io.flush().await?;
    let wait = Duration::from_millis(cfg.reply_timeout_ms);
    let deadline = Instant::now() + wait;
    loop {
        let Some(events) = conn.events(deadline).await? else {
            return Err(WmbusSourceError::Timeout {
                stick: cfg.stick.as_str(),
                what: step.what.clone(),
                ms: wait.as_millis() as u64,
            });
        };
        let mut answered = false;
        for ev in events {
            match ev {
                StickEvent::Reply { id, status } if id == step.reply && !answered => {
                    if !reply_ok(status) {
                        return Err(WmbusSourceError::Rejected {
                            stick: cfg.stick.as_str(),
                            what: step.what.clone(),
                            status: status.unwrap_or_default(),
                        });
                    }
                    answered = true;
                }
                other => {
                    if handle(cfg, other, wiring) {
                        return Ok(true);
                    }
                }
            }
        }
        if answered {
            return Ok(false);
        }
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: &WmbusSourceConfig,
    io: S,
    wiring: &WmbusWiring,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<End, WmbusSourceError> {
    let mut conn = Conn { io, decoder: cfg.stick.decoder() };
    for step in cfg.stick.init_steps(cfg.mode) {
        if run_step(cfg, &mut conn, &step, wiring).await? {
            return Ok(End::OutputClosed);
        }
    }
    wiring.status.set_up();
    tracing::info!(source = %cfg.name, stick = cfg.stick.as_str(), mode = cfg.mode.as_str(),
        meters = wiring.meters.len(), "wM-Bus stick receiving");
    let idle = Duration::from_millis(cfg.idle_probe_ms);
    let mut deadline = Instant::now() + idle;
    loop {
        let events = tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Ok(End::Shutdown);
                }
                continue;
            }
            e = conn.events(deadline) => e?,
        };
        let Some(events) = events else {
            tracing::debug!(source = %cfg.name, "stick quiet; probing");
            if run_step(cfg, &mut conn, &cfg.stick.probe_step(), wiring).await? {
                return Ok(End::OutputClosed);
            }
            deadline = Instant::now() + idle;
            continue;
        };
        deadline = Instant::now() + idle;
        for ev in events {
            if handle(cfg, ev, wiring) {
                return Ok(End::OutputClosed);
            }
        }
    }
}

/// One event from the stick. True when the consumer is gone.
fn handle(cfg: &WmbusSourceConfig, ev: StickEvent, w: &WmbusWiring) -> bool {
    match ev {
        StickEvent::Telegram { frame, rssi_dbm } => {
            Counters::inc(&w.counters.wmbus_telegrams);
            match w.meters.on_telegram(&frame, rssi_dbm, crate::clock::now()) {
                Heard::Sample(sample) => match w.out.try_send(*sample) {
                    Ok(()) => w.status.frame(),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        w.status.dropped();
                        tracing::warn!(source = %cfg.name, "meter sample queue full; telegram dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return true,
                },
                // Somebody else's meter: a count by manufacturer and type, nothing more (no log).
                Heard::Foreign { manufacturer, device_type } => w.counters.wmbus.foreign(&manufacturer, device_type),
                Heard::Failed { device, error } => {
                    w.counters.wmbus.failed(&device);
                    w.status.error(format!("meter {device}: {error}"));
                    tracing::warn!(source = %cfg.name, %device, %error, "wM-Bus telegram of a configured meter not decoded");
                }
                Heard::Unreadable(_) => {
                    Counters::inc(&w.counters.wmbus_unreadable);
                    w.status.header_error();
                }
            }
        }
        StickEvent::Reply { id, status } => {
            tracing::debug!(source = %cfg.name, id, ?status, "unsolicited reply from the stick");
        }
        StickEvent::Skipped { bytes, why } => {
            w.status.error(format!("{bytes} bytes skipped: {why}"));
            tracing::debug!(source = %cfg.name, bytes, why, "bytes from the stick skipped");
        }
    }
    false
}
