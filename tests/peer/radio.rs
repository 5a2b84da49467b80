//! lorawan-device's view of the hardware: a radio ([`VirtualRadio`], its async `PhyRxTx`) and a timer
//! ([`VirtualTimer`]) over the shared [`Air`]. The device decides when to listen and on which
//! frequency and data rate; the radio only reports what a real one would have received there.

use std::time::Duration;

use lorawan_device::async_device::radio::{PhyRxTx, RxConfig, RxMode, RxQuality, RxStatus, Timer, TxConfig};
use lorawan_device::async_device::Timings;

use lorawan::keys::{AppSKey, NewSKey};

use super::air::{Air, TxPk};

/// How early the device opens a window before its nominal start (and how long it listens after).
const LEAD_MS: u32 = 20;
/// How long a class C radio waits, in real time, for the daemon's next immediate downlink.
const CONTINUOUS_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum RadioError {
    /// The daemon did not acknowledge an uplink.
    Uplink(String),
    /// Class C: no downlink came within [`CONTINUOUS_LIMIT`].
    NothingHeard,
    /// Asked to receive without a receive configuration.
    NotListening,
}

pub struct VirtualRadio {
    air: Air,
    rx: Option<RxConfig>,
    /// When the current window opened (concentrator µs).
    open_us: u64,
    /// Session keys to set the ADR bit with (see [`super::frames::with_adr_bit`]); `None`: uplinks go
    /// out exactly as the device built them.
    pub adr_bit: Option<(NewSKey, AppSKey)>,
}

impl VirtualRadio {
    pub fn new(air: Air) -> VirtualRadio {
        VirtualRadio { air, rx: None, open_us: 0, adr_bit: None }
    }

    /// Copies a heard downlink into the device's buffer, as the radio's FIFO would.
    fn deliver(&self, t: &TxPk, buf: &mut [u8]) -> usize {
        let n = t.data.len().min(buf.len());
        buf[..n].copy_from_slice(&t.data[..n]);
        n
    }

    fn listening(&self) -> Result<(u32, u32, u32), RadioError> {
        let rf = self.rx.ok_or(RadioError::NotListening)?.rf;
        Ok((rf.frequency, rf.bb.sf.factor(), rf.bb.bw.hz()))
    }
}

impl PhyRxTx for VirtualRadio {
    type PhyError = RadioError;
    const MAX_RADIO_POWER: u8 = 14;

    async fn tx(&mut self, config: TxConfig, buf: &[u8]) -> Result<u32, RadioError> {
        self.rx = None;
        let rf = config.rf;
        let rewritten = self.adr_bit.as_ref().and_then(|(nwk, app)| super::frames::with_adr_bit(buf, nwk, app));
        let phy = rewritten.as_deref().unwrap_or(buf);
        self.air
            .uplink(rf.frequency, rf.bb.sf.factor(), rf.bb.bw.hz(), config.pw, phy)
            .await
            .map_err(RadioError::Uplink)?;
        // The windows count from the end of the uplink, which is the rxpk's tmst: no extra delay.
        Ok(0)
    }

    async fn setup_rx(&mut self, config: RxConfig) -> Result<(), RadioError> {
        self.rx = Some(config);
        self.open_us = self.air.now_us();
        Ok(())
    }

    async fn rx_continuous(&mut self, buf: &mut [u8]) -> Result<(usize, RxQuality), RadioError> {
        let (freq, sf, bw) = self.listening()?;
        if !matches!(self.rx.map(|c| c.mode), Some(RxMode::Continuous)) {
            self.air.add_finding("rx_continuous on a single-shot configuration".into());
        }
        let t = self.air.hear_continuous(CONTINUOUS_LIMIT, freq, sf, bw).await.ok_or(RadioError::NothingHeard)?;
        Ok((self.deliver(&t, buf), RxQuality::new(-60, 9)))
    }

    async fn rx_single(&mut self, buf: &mut [u8]) -> Result<RxStatus, RadioError> {
        let (freq, sf, bw) = self.listening()?;
        let lead_us = u64::from(LEAD_MS) * 1000;
        Ok(match self.air.hear_in_window(self.open_us, lead_us, freq, sf, bw) {
            Some(t) => RxStatus::Rx(self.deliver(&t, buf), RxQuality::new(-60, 9)),
            None => RxStatus::RxTimeout,
        })
    }
}

impl Timings for VirtualRadio {
    fn get_rx_window_lead_time_ms(&self) -> u32 {
        LEAD_MS
    }
}

/// The device's timer on the virtual concentrator clock: waiting is moving the clock.
pub struct VirtualTimer {
    air: Air,
    reset_us: u64,
}

impl VirtualTimer {
    pub fn new(air: Air) -> VirtualTimer {
        VirtualTimer { reset_us: air.now_us(), air }
    }
}

impl Timer for VirtualTimer {
    fn reset(&mut self) {
        self.reset_us = self.air.now_us();
    }

    async fn at(&mut self, millis: u64) {
        self.air.advance_to(self.reset_us + millis * 1000);
    }

    async fn delay_ms(&mut self, millis: u64) {
        self.air.advance_to(self.air.now_us() + millis * 1000);
    }
}
