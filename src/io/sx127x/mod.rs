//! SX1276/77/78/79 LoRa radio on the Pi's SPI bus: our own driver (`driver.rs`, register traffic
//! only), a register-level model of the chip (`model.rs`) for tests and the demo, the SPI/pin traits
//! with their rppal implementations (`spi.rs`), and the task that keeps the radio receiving.
//!
//! The task ([`run_sx127x`]) resets the chip through its NRESET pin, checks RegVersion, puts it in
//! LoRa continuous receive, and reads a packet from the FIFO whenever DIO0 signals RxDone (the rppal
//! interrupt thread posts into a tokio channel). CRC and header errors are dropped and counted. Every
//! `health_interval_ms` it reads RegVersion, RegOpMode and the sync word back (a chip that was reset or
//! unplugged fails this) and looks for packets the interrupt did not announce; a chip that fails is
//! reset and re-initialised, with backoff. Class-C downlinks ([`TxRequest`]) go out on the same chip,
//! which then returns to receive.
//!
//! Architecture invariant: nothing here knows LoRaWAN; frames go out as [`RadioFrame`]s.

pub mod driver;
pub mod model;
pub mod regs;
pub mod spi;
use crate::io::status;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::ingest::RadioFrame;

pub use crate::config::radio::Sx127xConfig;
pub use crate::io::status::{Backoff, SourceState, SourceStatus, StatusSnapshot};
pub use driver::{ChipSetup, ModemParams, RxOutcome, RxPacket, Sx127x, Sx127xError};
pub use model::{Air, Missed, Sx127xModel, TxRecord};
pub use spi::{open_rppal, HwError, Pins, RppalPins, RppalSpi, RppalWiring, SpiBus};

impl Sx127xConfig {
    /// Problems a config has, as `key: message` strings (empty when valid).
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if !(7..=12).contains(&self.sf) {
            errs.push(format!("sf: {} is not a LoRaWAN spreading factor (7..=12)", self.sf));
        }
        if regs::bw_code(self.bw_khz).is_none() {
            errs.push(format!("bw_khz: {} is not 125, 250 or 500", self.bw_khz));
        }
        if regs::cr_code(self.cr).is_none() {
            errs.push(format!("cr: {} must be 5..=8 (coding rate 4/5..4/8)", self.cr));
        }
        if !(137_000_000..=1_020_000_000).contains(&self.freq_hz) {
            errs.push(format!("freq_hz: {} is outside the SX127x range (137-1020 MHz)", self.freq_hz));
        }
        if self.spi_bus > 6 {
            errs.push(format!("spi_bus: {} (0..=6)", self.spi_bus));
        }
        if self.spi_cs > 15 {
            errs.push(format!("spi_cs: {} (0..=15)", self.spi_cs));
        }
        if Some(self.dio0_pin) == self.reset_pin {
            errs.push(format!("dio0_pin: {} is also the reset_pin", self.dio0_pin));
        }
        if self.preamble_len < 6 {
            errs.push(format!("preamble_len: {} (at least 6)", self.preamble_len));
        }
        if self.health_interval_ms == 0 {
            errs.push("health_interval_ms: must be > 0".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            errs.push("backoff_min_ms/backoff_max_ms: need 0 < min <= max".into());
        }
        errs
    }

    /// The pins and bus for [`open_rppal`].
    pub fn wiring(&self) -> RppalWiring {
        RppalWiring {
            spi_bus: self.spi_bus,
            spi_cs: self.spi_cs,
            spi_clock_hz: self.spi_clock_hz,
            reset_pin: self.reset_pin,
            reset_active_low: self.reset_active_low,
            dio0_pin: self.dio0_pin,
        }
    }

    fn rx_params(&self) -> ModemParams {
        ModemParams {
            freq_hz: self.freq_hz,
            sf: self.sf,
            bw_khz: self.bw_khz,
            cr: self.cr,
            preamble: self.preamble_len,
            crc: true,
            invert_iq: false,
        }
    }

    fn setup(&self) -> ChipSetup {
        ChipSetup { sync_word: self.sync_word, tx_power_dbm: self.tx_power_dbm, pa_boost: self.pa_boost }
    }
}

/// A downlink to transmit (class C: sent as soon as the radio is free).
#[derive(Debug)]
pub struct TxRequest {
    pub phy: Vec<u8>,
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: u32,
    /// Coding rate 4/`cr`.
    pub cr: u8,
    /// None: the source's `tx_power_dbm`.
    pub power_dbm: Option<i8>,
    /// None: the source's `tx_invert_iq` (LoRaWAN downlinks: inverted).
    pub invert_iq: Option<bool>,
    /// Told when the packet is out (or why not).
    pub done: Option<oneshot::Sender<Result<TxReport, TxError>>>,
}

impl TxRequest {
    /// A LoRaWAN downlink with CR 4/5 and the source's power and IQ settings.
    pub fn downlink(phy: Vec<u8>, freq_hz: u64, sf: u8, bw_khz: u32) -> Self {
        TxRequest { phy, freq_hz, sf, bw_khz, cr: 5, power_dbm: None, invert_iq: None, done: None }
    }

    /// The same request, plus a receiver told when it is out.
    pub fn with_report(mut self) -> (Self, oneshot::Receiver<Result<TxReport, TxError>>) {
        let (tx, rx) = oneshot::channel();
        self.done = Some(tx);
        (self, rx)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxReport {
    /// Time on air by the LoRa formula.
    pub airtime_us: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TxError {
    #[error("invalid transmit request: {0}")]
    Invalid(String),
    #[error("transmit failed: {0}")]
    Failed(String),
}

/// How a session ended without an error.
enum End {
    Shutdown,
    OutputClosed,
}

/// Keeps one SX127x receiving until `shutdown` turns true (or the output channel closes).
///
/// `hw_factory` opens the SPI device and pins (`|| open_rppal(&cfg.wiring())` on a Pi,
/// `model.factory()` in tests); it is called again after every failure, after a backoff.
pub async fn run_sx127x<B, P, F>(
    cfg: Sx127xConfig,
    hw_factory: F,
    out: mpsc::Sender<RadioFrame>,
    mut tx: mpsc::Receiver<TxRequest>,
    status: Arc<SourceStatus>,
    mut shutdown: watch::Receiver<bool>,
) where
    B: SpiBus,
    P: Pins,
    F: Fn() -> Result<(B, P), HwError>,
{
    let name = if cfg.name.is_empty() { "sx127x".to_string() } else { cfg.name.clone() };
    let mut backoff =
        Backoff::new(Duration::from_millis(cfg.backoff_min_ms), Duration::from_millis(cfg.backoff_max_ms));
    let stable_after = Duration::from_millis(cfg.backoff_max_ms.max(10_000));
    let mut failed_before = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if failed_before {
            status.restart();
            status.set_retrying();
        }
        let started = Instant::now();
        let result = session(&cfg, &hw_factory, &out, &mut tx, &status, &mut shutdown).await;
        match result {
            Ok(End::Shutdown) => break,
            Ok(End::OutputClosed) => {
                tracing::info!(source = %name, "frame consumer gone; radio source stops");
                break;
            }
            Err(e) => {
                if started.elapsed() >= stable_after {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(source = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "SX127x down");
                status.set_down(e.to_string());
                failed_before = true;
                if status::sleep_or_shutdown(delay, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    status.set_stopped();
}

async fn session<B, P, F>(
    cfg: &Sx127xConfig,
    hw_factory: &F,
    out: &mpsc::Sender<RadioFrame>,
    tx: &mut mpsc::Receiver<TxRequest>,
    status: &SourceStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<End, Sx127xError>
where
    B: SpiBus,
    P: Pins,
    F: Fn() -> Result<(B, P), HwError>,
{
    let (spi, mut pins) = hw_factory()?;
    let (irq_tx, mut irq_rx) = mpsc::channel::<()>(16);
    pins.watch_dio0(irq_tx)?;
    if pins.has_reset() {
        pins.set_reset(true)?;
        tokio::time::sleep(spi::RESET_PULSE).await;
        pins.set_reset(false)?;
        tokio::time::sleep(spi::RESET_RECOVERY).await;
    }
    let mut chip = Sx127x::new(spi);
    let rx_params = cfg.rx_params();
    chip.init(&cfg.setup())?;
    chip.start_rx(&rx_params)?;
    // Drop edges from before the chip was ours.
    while irq_rx.try_recv().is_ok() {}
    status.set_up();
    tracing::info!(source = %status.name(), freq_hz = cfg.freq_hz, sf = cfg.sf, bw_khz = cfg.bw_khz, "SX127x receiving");

    let mut health = tokio::time::interval(Duration::from_millis(cfg.health_interval_ms));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.tick().await; // the first tick is immediate
    let mut handled: u16 = 0; // valid packets read since RX was entered (mirrors RegRxPacketCnt)
    let mut missed: u32 = 0;
    let mut tx_open = true;
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    let _ = chip.sleep();
                    return Ok(End::Shutdown);
                }
            }
            edge = irq_rx.recv() => {
                if edge.is_none() {
                    return Err(Sx127xError::IrqBridgeClosed);
                }
                missed = 0;
                let outcome = chip.service_rx(cfg.require_crc)?;
                if deliver(cfg, outcome, out, status, &mut handled) {
                    let _ = chip.sleep();
                    return Ok(End::OutputClosed);
                }
            }
            req = tx.recv(), if tx_open => {
                match req {
                    Some(req) => {
                        transmit(cfg, &mut chip, &mut irq_rx, req).await?;
                        chip.start_rx(&rx_params)?;
                        handled = 0;
                    }
                    None => tx_open = false,
                }
            }
            _ = health.tick() => {
                chip.check_alive(cfg.sync_word)?;
                let flags = chip.irq_flags()?;
                let count = chip.packet_count()?;
                let unannounced = count.wrapping_sub(handled);
                if flags & regs::IRQ_RX_DONE != 0 || (unannounced != 0 && unannounced < 0x8000) {
                    missed += 1;
                    status.error(format!("DIO0 interrupt missed (RxDone pending at check {missed})"));
                    tracing::warn!(source = %status.name(), missed, "RxDone without DIO0 interrupt; polling");
                    let outcome = chip.service_rx(cfg.require_crc)?;
                    if deliver(cfg, outcome, out, status, &mut handled) {
                        let _ = chip.sleep();
                        return Ok(End::OutputClosed);
                    }
                    handled = chip.packet_count()?;
                    if missed >= cfg.missed_irq_limit.max(1) {
                        return Err(Sx127xError::IrqLost(missed));
                    }
                }
            }
        }
    }
}

/// Hands a packet on (or counts why not). Returns true when the consumer is gone.
fn deliver(
    cfg: &Sx127xConfig,
    outcome: RxOutcome,
    out: &mpsc::Sender<RadioFrame>,
    status: &SourceStatus,
    handled: &mut u16,
) -> bool {
    match outcome {
        RxOutcome::Nothing => false,
        RxOutcome::CrcError => {
            status.crc_error();
            tracing::debug!(source = %status.name(), "payload CRC error; dropped");
            false
        }
        RxOutcome::HeaderError(why) => {
            if why != driver::NO_VALID_HEADER {
                *handled = handled.wrapping_add(1);
            }
            status.header_error();
            tracing::debug!(source = %status.name(), why, "header error; dropped");
            false
        }
        RxOutcome::Packet(p) => {
            *handled = handled.wrapping_add(1);
            let frame = RadioFrame {
                phy: p.phy,
                rssi: Some(p.rssi_dbm),
                snr: Some(p.snr_db),
                freq_hz: cfg.freq_hz,
                sf: Some(cfg.sf),
                bw_khz: cfg.bw_khz,
                // The chip has no concentrator clock; class C downlinks go out on the same chip.
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
    }
}

/// Sends one downlink and waits for TxDone (by interrupt, or by polling at the deadline).
async fn transmit<B: SpiBus>(
    cfg: &Sx127xConfig,
    chip: &mut Sx127x<B>,
    irq_rx: &mut mpsc::Receiver<()>,
    req: TxRequest,
) -> Result<(), Sx127xError> {
    let TxRequest { phy, freq_hz, sf, bw_khz, cr, power_dbm, invert_iq, done } = req;
    let reply = |r: Result<TxReport, TxError>| {
        if let Some(done) = done {
            let _ = done.send(r);
        }
    };
    let params = ModemParams {
        freq_hz,
        sf,
        bw_khz,
        cr,
        preamble: cfg.preamble_len,
        crc: false,
        invert_iq: invert_iq.unwrap_or(cfg.tx_invert_iq),
    };
    if regs::modem_regs(freq_hz, sf, bw_khz, cr, false).is_none()
        || !(137_000_000..=1_020_000_000).contains(&freq_hz)
        || phy.is_empty()
        || phy.len() > 255
    {
        reply(Err(TxError::Invalid(format!("{} bytes at {freq_hz} Hz SF{sf} BW{bw_khz} CR 4/{cr}", phy.len()))));
        return Ok(());
    }
    let airtime_us = regs::time_on_air_us(phy.len(), sf, bw_khz, cr, cfg.preamble_len, false);
    while irq_rx.try_recv().is_ok() {}
    let power = Some((power_dbm.unwrap_or(cfg.tx_power_dbm), cfg.pa_boost));
    if let Err(e) = chip.start_tx(&params, &phy, power) {
        reply(Err(TxError::Failed(e.to_string())));
        return Err(e);
    }
    let limit = Duration::from_micros(airtime_us) * 2 + Duration::from_millis(100);
    let edge = tokio::time::timeout(limit, irq_rx.recv()).await;
    let done_flag = match chip.tx_done() {
        Ok(d) => d,
        Err(e) => {
            reply(Err(TxError::Failed(e.to_string())));
            return Err(e.into());
        }
    };
    if done_flag {
        if edge.is_err() {
            tracing::warn!("TxDone found by polling: DIO0 interrupt missed");
        }
        reply(Ok(TxReport { airtime_us }));
        Ok(())
    } else {
        let ms = limit.as_millis() as u64;
        reply(Err(TxError::Failed(format!("no TxDone after {ms} ms"))));
        Err(Sx127xError::TxTimeout(ms))
    }
}
