//! Network → device MAC commands (LoRaWAN 1.0.3 §5, EU868): the requests the network server sends
//! ([`MacRequest`], encoded by [`MacRequest::encode`]) and the one answer built from the uplink's
//! reception time ([`device_time_ans`]). The uplink direction is parsed in [`crate::lorawan::mac`].
//!
//! Byte layouts (all multi-byte fields little endian):
//! - LinkADRReq 0x03: DataRate_TXPower (DR << 4 | TXPower), ChMask (u16), Redundancy (ChMaskCntl << 4 | NbTrans)
//! - DutyCycleReq 0x04: MaxDCycle (aggregate duty cycle 1 / 2^MaxDCycle)
//! - RXParamSetupReq 0x05: DLsettings (RX1DRoffset << 4 | RX2DataRate), Frequency (24 bit, 100 Hz units)
//! - DevStatusReq 0x06: no payload
//! - NewChannelReq 0x07: ChIndex, Freq (24 bit, 100 Hz units), DrRange (MaxDR << 4 | MinDR)
//! - RXTimingSetupReq 0x08: Settings (Del, seconds; 0 means 1)
//! - DeviceTimeAns 0x0D: GPS epoch seconds (u32), fractional second in 1/256 s

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lorawan::join::le24;

pub const CID_LINK_ADR: u8 = 0x03;
pub const CID_DUTY_CYCLE: u8 = 0x04;
pub const CID_RX_PARAM_SETUP: u8 = 0x05;
pub const CID_DEV_STATUS: u8 = 0x06;
pub const CID_NEW_CHANNEL: u8 = 0x07;
pub const CID_RX_TIMING_SETUP: u8 = 0x08;
pub const CID_DEVICE_TIME: u8 = 0x0D;

/// The GPS epoch (1980-01-06T00:00:00Z) in Unix seconds.
const GPS_EPOCH_UNIX_S: i64 = 315_964_800;
/// GPS time runs ahead of UTC by the leap seconds since 1980: 18 since 2017-01-01 (IERS Bulletin C
/// announces changes; none is scheduled as of this writing).
const GPS_LEAP_SECONDS: i64 = 18;

/// A request the network server sends to a device. Serialized with the device's MAC state (the
/// pending ones survive a restart), so variants and field names are a storage format: only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum MacRequest {
    /// Data rate (0..=15), TX power index (0 = max EIRP, EU868 steps of 2 dB down to 7), enabled
    /// channels 0..=15 (ChMaskCntl 0), transmissions per uplink (1..=15).
    LinkAdr { dr: u8, tx_power: u8, ch_mask: u16, nb_trans: u8 },
    /// Aggregate duty cycle limit 1 / 2^max_duty_cycle (0 = no limit), 0..=15.
    DutyCycle { max_duty_cycle: u8 },
    /// RX1 data-rate offset (0..=5), RX2 data rate (0..=15) and frequency (Hz, multiple of 100).
    RxParamSetup { rx1_dr_offset: u8, rx2_dr: u8, rx2_freq_hz: u64 },
    /// Battery and demodulation margin.
    DevStatus,
    /// Creates (or with `freq_hz` 0 disables) channel `index` (3..=15 in EU868) for data rates
    /// `min_dr..=max_dr`.
    NewChannel { index: u8, freq_hz: u64, min_dr: u8, max_dr: u8 },
    /// RECEIVE_DELAY1 in seconds (1..=15).
    RxTimingSetup { delay_s: u8 },
}

impl MacRequest {
    pub fn cid(&self) -> u8 {
        match self {
            MacRequest::LinkAdr { .. } => CID_LINK_ADR,
            MacRequest::DutyCycle { .. } => CID_DUTY_CYCLE,
            MacRequest::RxParamSetup { .. } => CID_RX_PARAM_SETUP,
            MacRequest::DevStatus => CID_DEV_STATUS,
            MacRequest::NewChannel { .. } => CID_NEW_CHANNEL,
            MacRequest::RxTimingSetup { .. } => CID_RX_TIMING_SETUP,
        }
    }

    /// Short name for logs, status and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MacRequest::LinkAdr { .. } => "link_adr_req",
            MacRequest::DutyCycle { .. } => "duty_cycle_req",
            MacRequest::RxParamSetup { .. } => "rx_param_setup_req",
            MacRequest::DevStatus => "dev_status_req",
            MacRequest::NewChannel { .. } => "new_channel_req",
            MacRequest::RxTimingSetup { .. } => "rx_timing_setup_req",
        }
    }

    /// Checks the fields against their bit widths and EU868, so that an encoded request always says
    /// what was asked (nothing is silently masked).
    pub fn validate(&self) -> Result<(), &'static str> {
        let freq_ok = |f: u64| f % 100 == 0 && f / 100 <= 0x00FF_FFFF;
        let problem = match *self {
            MacRequest::LinkAdr { dr, tx_power, .. } if dr > 15 || tx_power > 15 => {
                "LinkADRReq: data rate and TX power are 4-bit fields"
            }
            MacRequest::LinkAdr { nb_trans, .. } if !(1..=15).contains(&nb_trans) => {
                "LinkADRReq: NbTrans must be 1..=15"
            }
            MacRequest::DutyCycle { max_duty_cycle } if max_duty_cycle > 15 => "DutyCycleReq: MaxDCycle is 0..=15",
            MacRequest::RxParamSetup { rx1_dr_offset, rx2_dr, rx2_freq_hz }
                if rx1_dr_offset > 5 || rx2_dr > 15 || !freq_ok(rx2_freq_hz) || rx2_freq_hz == 0 =>
            {
                "RXParamSetupReq: offset 0..=5, data rate 0..=15, frequency in 100 Hz steps"
            }
            MacRequest::NewChannel { index, .. } if !(3..=15).contains(&index) => {
                "NewChannelReq: EU868 channels 0..=2 are fixed, index must be 3..=15"
            }
            MacRequest::NewChannel { freq_hz, min_dr, max_dr, .. }
                if !freq_ok(freq_hz) || min_dr > max_dr || max_dr > 15 =>
            {
                "NewChannelReq: frequency in 100 Hz steps, min_dr <= max_dr <= 15"
            }
            MacRequest::RxTimingSetup { delay_s } if !(1..=15).contains(&delay_s) => {
                "RXTimingSetupReq: delay is 1..=15 s"
            }
            _ => return Ok(()),
        };
        Err(problem)
    }

    /// CID and payload. Call [`MacRequest::validate`] first: out-of-range fields are masked here.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.cid()];
        match *self {
            MacRequest::LinkAdr { dr, tx_power, ch_mask, nb_trans } => {
                v.push(((dr & 0x0f) << 4) | (tx_power & 0x0f));
                v.extend_from_slice(&ch_mask.to_le_bytes());
                // ChMaskCntl 0: the mask applies to channels 0..=15.
                v.push(nb_trans & 0x0f);
            }
            MacRequest::DutyCycle { max_duty_cycle } => v.push(max_duty_cycle & 0x0f),
            MacRequest::RxParamSetup { rx1_dr_offset, rx2_dr, rx2_freq_hz } => {
                v.push(((rx1_dr_offset & 0x07) << 4) | (rx2_dr & 0x0f));
                v.extend_from_slice(&freq24(rx2_freq_hz));
            }
            MacRequest::DevStatus => {}
            MacRequest::NewChannel { index, freq_hz, min_dr, max_dr } => {
                v.push(index);
                v.extend_from_slice(&freq24(freq_hz));
                v.push(((max_dr & 0x0f) << 4) | (min_dr & 0x0f));
            }
            MacRequest::RxTimingSetup { delay_s } => v.push(delay_s & 0x0f),
        }
        v
    }
}

/// A frequency as the 24-bit little-endian count of 100 Hz the MAC commands carry.
fn freq24(hz: u64) -> [u8; 3] {
    le24(u32::try_from(hz / 100).unwrap_or(u32::MAX).min(0x00FF_FFFF))
}

/// DeviceTimeAns for an uplink received at `at` (LoRaWAN 1.0.3 §5.9: the time "captured at the end of
/// the uplink transmission", in seconds since the GPS epoch, plus a fraction in 1/256 s).
pub fn device_time_ans(at: DateTime<Utc>) -> Vec<u8> {
    let gps_s = at.timestamp() - GPS_EPOCH_UNIX_S + GPS_LEAP_SECONDS;
    // The field is 32 bits: it wraps (in 2116), as the specification's counter does.
    let secs = (gps_s.rem_euclid(1 << 32)) as u32;
    let frac = (u64::from(at.timestamp_subsec_millis()) * 256 / 1000) as u8;
    let mut v = vec![CID_DEVICE_TIME];
    v.extend_from_slice(&secs.to_le_bytes());
    v.push(frac);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn encodings_match_the_specification_layout() {
        let adr = MacRequest::LinkAdr { dr: 5, tx_power: 1, ch_mask: 0x00ff, nb_trans: 1 };
        assert_eq!(adr.encode(), [0x03, 0x51, 0xff, 0x00, 0x01]);
        let rx = MacRequest::RxParamSetup { rx1_dr_offset: 1, rx2_dr: 3, rx2_freq_hz: 869_525_000 };
        // 869525000 / 100 = 8695250 = 0x84_ad_d2.
        assert_eq!(rx.encode(), [0x05, 0x13, 0xd2, 0xad, 0x84]);
        let ch = MacRequest::NewChannel { index: 3, freq_hz: 867_100_000, min_dr: 0, max_dr: 5 };
        // 8671000 = 0x84_4f_18.
        assert_eq!(ch.encode(), [0x07, 0x03, 0x18, 0x4f, 0x84, 0x50]);
        assert_eq!(MacRequest::RxTimingSetup { delay_s: 2 }.encode(), [0x08, 0x02]);
        assert_eq!(MacRequest::DutyCycle { max_duty_cycle: 7 }.encode(), [0x04, 0x07]);
        assert_eq!(MacRequest::DevStatus.encode(), [0x06]);
        for r in [adr, rx, ch] {
            assert_eq!(r.validate(), Ok(()));
        }
    }

    #[test]
    fn out_of_range_requests_are_refused() {
        let bad = [
            MacRequest::LinkAdr { dr: 16, tx_power: 0, ch_mask: 7, nb_trans: 1 },
            MacRequest::LinkAdr { dr: 5, tx_power: 0, ch_mask: 7, nb_trans: 0 },
            MacRequest::RxParamSetup { rx1_dr_offset: 6, rx2_dr: 3, rx2_freq_hz: 869_525_000 },
            MacRequest::RxParamSetup { rx1_dr_offset: 0, rx2_dr: 3, rx2_freq_hz: 869_525_050 },
            MacRequest::NewChannel { index: 2, freq_hz: 867_100_000, min_dr: 0, max_dr: 5 },
            MacRequest::NewChannel { index: 3, freq_hz: 867_100_000, min_dr: 5, max_dr: 0 },
            MacRequest::RxTimingSetup { delay_s: 0 },
            MacRequest::DutyCycle { max_duty_cycle: 16 },
        ];
        for r in bad {
            assert!(r.validate().is_err(), "{r:?}");
        }
    }

    #[test]
    fn device_time_is_gps_seconds_and_256ths() {
        // 2026-01-01T00:00:00.5Z: Unix 1767225600 → GPS 1767225600 - 315964800 + 18 = 1451260818.
        let at = Utc.timestamp_millis_opt(1_767_225_600_500).single().unwrap();
        let ans = device_time_ans(at);
        assert_eq!(ans[0], 0x0D);
        assert_eq!(u32::from_le_bytes([ans[1], ans[2], ans[3], ans[4]]), 1_451_260_818);
        assert_eq!(ans[5], 128);
        assert_eq!(ans.len(), 6);
    }
}
