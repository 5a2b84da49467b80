//! EU868 rules for the network side (LoRaWAN Regional Parameters RP002, EU863-870): data rates, receive
//! windows, downlink power and payload limits.
//!
//! Receive windows of a class A device after an uplink whose concentrator timestamp is `tmst` (µs):
//! - RX1: the uplink frequency, DR = uplink DR − RX1DROffset (not below DR0), at `tmst + RECEIVE_DELAY1`
//!   (1 s, or the RxDelay sent in the join accept) for data and `tmst + JOIN_ACCEPT_DELAY1` (5 s) for a
//!   join accept.
//! - RX2: 869.525 MHz at the RX2 data rate (DR0 = SF12BW125 unless the join accept said otherwise), one
//!   second after RX1.
//!
//! Join accepts always use the region defaults (RX1DROffset 0, RX2 DR0 on 869.525 MHz): the device does
//! not know the network's settings until it has decrypted the accept. Class C downlinks use the RX2
//! parameters and are sent immediately (`imme`).
//!
//! `tmst` is a wrapping 32-bit microsecond counter; window times wrap with it.

use std::time::Duration;

/// Default RX2 frequency.
pub const RX2_FREQ_HZ: u64 = 869_525_000;
/// Default RX2 data rate (SF12BW125).
pub const RX2_DR: u8 = 0;
/// RECEIVE_DELAY1 default.
pub const RECEIVE_DELAY1: Duration = Duration::from_secs(1);
/// JOIN_ACCEPT_DELAY1; JOIN_ACCEPT_DELAY2 is one second later.
pub const JOIN_ACCEPT_DELAY1: Duration = Duration::from_secs(5);
/// Lowest and highest frequency of the EU863-870 band.
pub const BAND_MIN_HZ: u64 = 863_000_000;
pub const BAND_MAX_HZ: u64 = 870_000_000;
/// The CFList a join accept carries: channels 3..=7 on 867.1–867.9 MHz (the three default channels
/// 868.1/868.3/868.5 MHz are known to every device).
pub const DEFAULT_CF_LIST: [u32; 5] = [867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000];

/// Demodulation floor (SNR in dB, SX127x/SX130x datasheets) per spreading factor, used for the LinkCheckAns
/// margin.
pub fn demodulation_floor_db(sf: u8) -> Option<f64> {
    Some(match sf {
        7 => -7.5,
        8 => -10.0,
        9 => -12.5,
        10 => -15.0,
        11 => -17.5,
        12 => -20.0,
        _ => return None,
    })
}

/// A LoRa data rate of EU868 (DR0..=DR6; DR7 is FSK and not used for downlinks here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate {
    pub dr: u8,
    pub sf: u8,
    pub bw_khz: u32,
}

impl DataRate {
    pub fn from_dr(dr: u8) -> Option<DataRate> {
        let (sf, bw_khz) = match dr {
            0..=5 => (12 - dr, 125),
            6 => (7, 250),
            _ => return None,
        };
        Some(DataRate { dr, sf, bw_khz })
    }

    pub fn from_lora(sf: u8, bw_khz: u32) -> Option<DataRate> {
        let dr = match (sf, bw_khz) {
            (7..=12, 125) => 12 - sf,
            (7, 250) => 6,
            _ => return None,
        };
        Some(DataRate { dr, sf, bw_khz })
    }

    /// The `datr` string of the packet-forwarder protocol, e.g. `SF12BW125`.
    pub fn datr(&self) -> String {
        format!("SF{}BW{}", self.sf, self.bw_khz)
    }

    /// Maximum MACPayload size M (bytes) at this data rate (no repeater): 59 for DR0–2, 123 for DR3,
    /// 250 for DR4–7. The PHYPayload is M + 5 (MHDR + MIC).
    pub fn max_mac_payload(&self) -> usize {
        match self.dr {
            0..=2 => 59,
            3 => 123,
            _ => 250,
        }
    }

    /// Maximum PHYPayload length at this data rate.
    pub fn max_phy_payload(&self) -> usize {
        self.max_mac_payload() + 5
    }
}

/// RX1 data rate from the uplink data rate and the RX1DROffset (EU868: `max(0, up − offset)`; offsets
/// above 5 are treated as 5).
pub fn rx1_dr(uplink_dr: u8, rx1_dr_offset: u8) -> u8 {
    uplink_dr.saturating_sub(rx1_dr_offset.min(5))
}

/// The receive-window settings the network gives its devices (in the join accept for OTAA; ABP devices
/// must be provisioned with the same values, and EU868's defaults are what they start with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxSettings {
    /// 0..=5.
    pub rx1_dr_offset: u8,
    /// 0..=6.
    pub rx2_dr: u8,
    pub rx2_freq_hz: u64,
    /// RECEIVE_DELAY1 in seconds, 1..=15 (0 in a join accept also means 1).
    pub rx1_delay_s: u8,
}

impl Default for RxSettings {
    /// The EU868 defaults: RX1DROffset 0, RX2 DR0 on 869.525 MHz, RX1 after 1 s.
    fn default() -> Self {
        RxSettings { rx1_dr_offset: 0, rx2_dr: RX2_DR, rx2_freq_hz: RX2_FREQ_HZ, rx1_delay_s: 1 }
    }
}

impl RxSettings {
    /// The join accept's DLSettings byte (1.0.x: bit 7 RFU, bits 6..4 RX1DROffset, bits 3..0 RX2 DR).
    pub fn dl_settings(&self) -> u8 {
        ((self.rx1_dr_offset & 0x07) << 4) | (self.rx2_dr & 0x0f)
    }

    /// The join accept's RxDelay byte (the delay in seconds; 0 means 1).
    pub fn rx_delay_byte(&self) -> u8 {
        self.rx1_delay_s & 0x0f
    }

    pub fn rx1_delay(&self) -> Duration {
        Duration::from_secs(u64::from(self.rx1_delay_s.clamp(1, 15)))
    }

    /// Checks the values against what EU868 allows.
    pub fn validate(&self) -> Result<(), RegionError> {
        if self.rx1_dr_offset > 5 {
            return Err(RegionError::BadSetting("rx1_dr_offset must be 0..=5"));
        }
        if DataRate::from_dr(self.rx2_dr).is_none() {
            return Err(RegionError::BadSetting("rx2_dr must be 0..=6"));
        }
        if !(BAND_MIN_HZ..=BAND_MAX_HZ).contains(&self.rx2_freq_hz) {
            return Err(RegionError::BadSetting("rx2 frequency outside 863-870 MHz"));
        }
        if !(1..=15).contains(&self.rx1_delay_s) {
            return Err(RegionError::BadSetting("rx1 delay must be 1..=15 s"));
        }
        Ok(())
    }
}

/// What a downlink answers: decides the RX delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    Data,
    JoinRequest,
}

/// Which window a downlink goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Window {
    Rx1,
    Rx2,
    /// Class C: RX2 parameters, sent immediately.
    ClassC,
}

/// Radio metadata of the uplink being answered (from the gateway's `rxpk`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UplinkRadio {
    /// Concentrator timestamp (µs, wrapping) at the end of the uplink.
    pub tmst: u32,
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: u32,
    /// SNR in dB (`lsnr`), when the gateway reported it.
    pub snr_db: Option<f64>,
    /// When the shell received the uplink, in the caller's clock (ms). Used to tell whether a window can
    /// still be reached.
    pub received_at_ms: u64,
}

/// Everything the gateway needs to transmit a downlink except the bytes (see `TxPk` in the GWMP codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxParams {
    pub window: Window,
    /// Send immediately (class C).
    pub imme: bool,
    /// Concentrator time to transmit at (µs), for class A windows.
    pub tmst: Option<u32>,
    pub freq_hz: u64,
    pub power_dbm: i32,
    pub dr: u8,
    pub sf: u8,
    pub bw_khz: u32,
    /// Delay from the end of the uplink to the window (zero for class C). With `received_at_ms` it gives
    /// the transmit time in the caller's clock.
    pub delay: Duration,
}

impl TxParams {
    pub fn data_rate(&self) -> DataRate {
        DataRate { dr: self.dr, sf: self.sf, bw_khz: self.bw_khz }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("uplink frequency {0} Hz is outside EU863-870")]
    FrequencyOutOfBand(u64),
    #[error("SF{sf}BW{bw_khz} is not an EU868 LoRa data rate")]
    UnknownDataRate { sf: u8, bw_khz: u32 },
    #[error("invalid receive-window setting: {0}")]
    BadSetting(&'static str),
}

/// EU868 downlink parameters of this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eu868 {
    /// Conducted TX power for downlinks outside 869.4–869.65 MHz (EIRP limit 16 dBm there; 14 dBm leaves
    /// room for a 2 dBi antenna).
    pub power_dbm: i32,
    /// TX power in 869.4–869.65 MHz (limit 27 dBm ERP, 500 mW).
    pub power_g3_dbm: i32,
}

impl Default for Eu868 {
    fn default() -> Self {
        Eu868 { power_dbm: 14, power_g3_dbm: 27 }
    }
}

impl Eu868 {
    pub fn power_for(&self, freq_hz: u64) -> i32 {
        if (869_400_000..=869_650_000).contains(&freq_hz) {
            self.power_g3_dbm
        } else {
            self.power_dbm
        }
    }

    /// RX1 parameters for an answer to `up`.
    pub fn rx1(&self, up: &UplinkRadio, rx: &RxSettings, answering: Answering) -> Result<TxParams, RegionError> {
        if !(BAND_MIN_HZ..=BAND_MAX_HZ).contains(&up.freq_hz) {
            return Err(RegionError::FrequencyOutOfBand(up.freq_hz));
        }
        let up_dr = DataRate::from_lora(up.sf, up.bw_khz)
            .ok_or(RegionError::UnknownDataRate { sf: up.sf, bw_khz: up.bw_khz })?;
        let (offset, delay) = match answering {
            Answering::Data => (rx.rx1_dr_offset, rx.rx1_delay()),
            Answering::JoinRequest => (0, JOIN_ACCEPT_DELAY1),
        };
        let dr = DataRate::from_dr(rx1_dr(up_dr.dr, offset)).unwrap_or(up_dr);
        Ok(self.params(Window::Rx1, Some(up.tmst), delay, up.freq_hz, dr))
    }

    /// RX2 parameters for an answer to `up` (join accepts: the region defaults).
    pub fn rx2(&self, up: &UplinkRadio, rx: &RxSettings, answering: Answering) -> Result<TxParams, RegionError> {
        let (rx, delay) = match answering {
            Answering::Data => (*rx, rx.rx1_delay() + Duration::from_secs(1)),
            Answering::JoinRequest => (RxSettings::default(), JOIN_ACCEPT_DELAY1 + Duration::from_secs(1)),
        };
        let dr = DataRate::from_dr(rx.rx2_dr).ok_or(RegionError::BadSetting("rx2_dr must be 0..=6"))?;
        Ok(self.params(Window::Rx2, Some(up.tmst), delay, rx.rx2_freq_hz, dr))
    }

    /// Class C: RX2 frequency and data rate, immediately.
    pub fn class_c(&self, rx: &RxSettings) -> Result<TxParams, RegionError> {
        let dr = DataRate::from_dr(rx.rx2_dr).ok_or(RegionError::BadSetting("rx2_dr must be 0..=6"))?;
        Ok(self.class_c_on(rx.rx2_freq_hz, dr))
    }

    /// Immediately on `freq_hz` at `dr` (class C, also a multicast group's own settings).
    pub fn class_c_on(&self, freq_hz: u64, dr: DataRate) -> TxParams {
        let mut p = self.params(Window::ClassC, None, Duration::ZERO, freq_hz, dr);
        p.imme = true;
        p
    }

    fn params(&self, window: Window, tmst: Option<u32>, delay: Duration, freq_hz: u64, dr: DataRate) -> TxParams {
        let delay_us = u32::try_from(delay.as_micros()).unwrap_or(u32::MAX);
        TxParams {
            window,
            imme: false,
            tmst: tmst.map(|t| t.wrapping_add(delay_us)),
            freq_hz,
            power_dbm: self.power_for(freq_hz),
            dr: dr.dr,
            sf: dr.sf,
            bw_khz: dr.bw_khz,
            delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(sf: u8) -> UplinkRadio {
        UplinkRadio {
            tmst: 4_294_000_000,
            freq_hz: 868_300_000,
            sf,
            bw_khz: 125,
            snr_db: Some(5.0),
            received_at_ms: 10_000,
        }
    }

    #[test]
    fn data_rates() {
        assert_eq!(DataRate::from_dr(0), Some(DataRate { dr: 0, sf: 12, bw_khz: 125 }));
        assert_eq!(DataRate::from_dr(5), Some(DataRate { dr: 5, sf: 7, bw_khz: 125 }));
        assert_eq!(DataRate::from_dr(6), Some(DataRate { dr: 6, sf: 7, bw_khz: 250 }));
        assert_eq!(DataRate::from_dr(7), None);
        for dr in 0..=6 {
            let d = DataRate::from_dr(dr).unwrap();
            assert_eq!(DataRate::from_lora(d.sf, d.bw_khz), Some(d));
        }
        assert_eq!(DataRate::from_lora(8, 500), None);
        assert_eq!(DataRate::from_dr(0).unwrap().datr(), "SF12BW125");
        assert_eq!(rx1_dr(5, 0), 5);
        assert_eq!(rx1_dr(5, 2), 3);
        assert_eq!(rx1_dr(1, 3), 0);
    }

    #[test]
    fn windows() {
        let eu = Eu868::default();
        let rx = RxSettings::default();
        let r1 = eu.rx1(&up(7), &rx, Answering::Data).unwrap();
        assert_eq!((r1.window, r1.freq_hz, r1.sf, r1.bw_khz, r1.imme), (Window::Rx1, 868_300_000, 7, 125, false));
        // tmst wraps.
        assert_eq!(r1.tmst, Some(4_294_000_000u32.wrapping_add(1_000_000)));
        assert_eq!(r1.power_dbm, 14);
        let r2 = eu.rx2(&up(7), &rx, Answering::Data).unwrap();
        assert_eq!((r2.window, r2.freq_hz, r2.sf, r2.bw_khz), (Window::Rx2, RX2_FREQ_HZ, 12, 125));
        assert_eq!(r2.tmst, Some(4_294_000_000u32.wrapping_add(2_000_000)));
        assert_eq!(r2.power_dbm, 27);
        let j1 = eu.rx1(&up(9), &rx, Answering::JoinRequest).unwrap();
        assert_eq!((j1.tmst, j1.sf), (Some(4_294_000_000u32.wrapping_add(5_000_000)), 9));
        let j2 = eu.rx2(&up(9), &RxSettings { rx2_dr: 3, ..rx }, Answering::JoinRequest).unwrap();
        assert_eq!((j2.tmst, j2.sf, j2.freq_hz), (Some(4_294_000_000u32.wrapping_add(6_000_000)), 12, RX2_FREQ_HZ));
        let c = eu.class_c(&rx).unwrap();
        assert_eq!((c.window, c.imme, c.tmst, c.freq_hz, c.sf), (Window::ClassC, true, None, RX2_FREQ_HZ, 12));
        // Offsets apply to data only.
        let off = RxSettings { rx1_dr_offset: 2, ..rx };
        assert_eq!(eu.rx1(&up(7), &off, Answering::Data).unwrap().sf, 9);
        assert_eq!(eu.rx1(&up(7), &off, Answering::JoinRequest).unwrap().sf, 7);
        // Out of band / unknown DR.
        let bad = UplinkRadio { freq_hz: 915_000_000, ..up(7) };
        assert_eq!(eu.rx1(&bad, &rx, Answering::Data), Err(RegionError::FrequencyOutOfBand(915_000_000)));
        let bad = UplinkRadio { bw_khz: 500, ..up(7) };
        assert!(matches!(eu.rx1(&bad, &rx, Answering::Data), Err(RegionError::UnknownDataRate { .. })));
    }

    #[test]
    fn settings_bytes() {
        let rx = RxSettings { rx1_dr_offset: 1, rx2_dr: 2, ..RxSettings::default() };
        assert_eq!(rx.dl_settings(), 0x12);
        assert_eq!(rx.rx_delay_byte(), 1);
        assert!(rx.validate().is_ok());
        assert!(RxSettings { rx1_dr_offset: 6, ..rx }.validate().is_err());
        assert!(RxSettings { rx2_dr: 7, ..rx }.validate().is_err());
        assert!(RxSettings { rx1_delay_s: 0, ..rx }.validate().is_err());
        assert_eq!(demodulation_floor_db(12), Some(-20.0));
        assert_eq!(demodulation_floor_db(6), None);
    }
}
