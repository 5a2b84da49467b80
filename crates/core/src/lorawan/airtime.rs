//! LoRa time on air, per the Semtech formula (SX1272/76 datasheet §4.1.1.7, AN1200.13).
//!
//! ```text
//! Tsym      = 2^SF / BW
//! Tpreamble = (n_preamble + 4.25) · Tsym
//! n_payload = 8 + max(ceil((8·PL − 4·SF + 28 + 16·CRC − 20·IH) / (4·(SF − 2·DE))) · (CR + 4), 0)
//! Tair      = Tpreamble + n_payload · Tsym
//! ```
//! LoRaWAN always uses an explicit header (IH = 0) and coding rate 4/5 (CR = 1). Uplinks carry a payload
//! CRC, downlinks do not (CRC = 0). Low-data-rate optimisation (DE = 1) is on when a symbol lasts 16 ms or
//! more: SF11 and SF12 at 125 kHz, SF12 at 250 kHz.
//!
//! The arithmetic is integer (nanoseconds), so the result is exact for 125/250/500 kHz and never panics.

use std::time::Duration;

/// Radio parameters that decide the time on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraParams {
    /// Spreading factor 5..=12.
    pub sf: u8,
    /// Bandwidth in kHz (125, 250, 500).
    pub bw_khz: u32,
    /// Coding rate denominator minus 4: 1 for 4/5 (LoRaWAN), up to 4 for 4/8.
    pub coding_rate: u8,
    /// Programmed preamble length in symbols (8 for LoRaWAN).
    pub preamble: u16,
    /// True for an explicit header (LoRaWAN).
    pub explicit_header: bool,
    /// Payload CRC: on for uplinks, off for downlinks.
    pub crc: bool,
}

impl LoraParams {
    /// LoRaWAN uplink framing: CR 4/5, preamble 8, explicit header, CRC on.
    pub fn uplink(sf: u8, bw_khz: u32) -> Self {
        LoraParams { sf, bw_khz, coding_rate: 1, preamble: 8, explicit_header: true, crc: true }
    }

    /// LoRaWAN downlink framing: as an uplink but without the payload CRC.
    pub fn downlink(sf: u8, bw_khz: u32) -> Self {
        LoraParams { crc: false, ..Self::uplink(sf, bw_khz) }
    }

    /// Low-data-rate optimisation: mandated when the symbol time is 16 ms or more.
    pub fn low_data_rate_optimize(&self) -> bool {
        self.symbol_ns() >= 16_000_000
    }

    /// Symbol duration in nanoseconds (0 for a zero bandwidth, which no caller should pass).
    pub fn symbol_ns(&self) -> u64 {
        let sf = u32::from(self.sf.min(12));
        if self.bw_khz == 0 {
            return 0;
        }
        (1u64 << sf) * 1_000_000 / u64::from(self.bw_khz)
    }

    /// Number of payload symbols for a PHYPayload of `len` bytes.
    pub fn payload_symbols(&self, len: usize) -> u64 {
        let sf = i64::from(self.sf.min(12));
        let pl = i64::try_from(len).unwrap_or(i64::MAX / 16).min(1 << 20);
        let crc = i64::from(self.crc);
        let ih = i64::from(!self.explicit_header);
        let de = i64::from(self.low_data_rate_optimize());
        let num = 8 * pl - 4 * sf + 28 + 16 * crc - 20 * ih;
        let den = (4 * (sf - 2 * de)).max(1);
        let blocks = if num > 0 { (num + den - 1) / den } else { 0 };
        let cr = i64::from(self.coding_rate.clamp(1, 4));
        // `blocks` is non-negative and bounded by the clamp on `pl`.
        8 + u64::try_from(blocks * (cr + 4)).unwrap_or(0)
    }

    /// Time on air of a PHYPayload of `len` bytes.
    pub fn time_on_air(&self, len: usize) -> Duration {
        let tsym = self.symbol_ns();
        // (n_preamble + 4.25) symbols = (4·n + 17) / 4 symbols; Tsym is a multiple of 4 ns for SF >= 2.
        let preamble_ns = tsym * (4 * u64::from(self.preamble) + 17) / 4;
        let payload_ns = tsym * self.payload_symbols(len);
        Duration::from_nanos(preamble_ns + payload_ns)
    }
}

/// Time on air of a LoRaWAN downlink (no CRC) of `len` PHYPayload bytes.
pub fn downlink_airtime(sf: u8, bw_khz: u32, len: usize) -> Duration {
    LoraParams::downlink(sf, bw_khz).time_on_air(len)
}

/// Time on air of a LoRaWAN uplink (with CRC) of `len` PHYPayload bytes.
pub fn uplink_airtime(sf: u8, bw_khz: u32, len: usize) -> Duration {
    LoraParams::uplink(sf, bw_khz).time_on_air(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Worked by hand from the formula:
        // SF7/125, PL 13, CRC: Tsym 1.024 ms; preamble 12.25 sym = 12.544 ms;
        // ceil((104 - 28 + 28 + 16) / 28) = 5 → 8 + 25 = 33 sym = 33.792 ms; total 46.336 ms.
        assert_eq!(uplink_airtime(7, 125, 13), Duration::from_micros(46_336));
        // SF12/125, PL 13, CRC, DE: Tsym 32.768 ms; preamble 401.408 ms;
        // ceil((104 - 48 + 28 + 16) / 40) = 3 → 8 + 15 = 23 sym = 753.664 ms; total 1155.072 ms.
        assert_eq!(uplink_airtime(12, 125, 13), Duration::from_micros(1_155_072));
        // Without CRC (downlink): SF7 ceil(104/28) = 4 → 28 sym; 12.544 + 28.672 = 41.216 ms.
        assert_eq!(downlink_airtime(7, 125, 13), Duration::from_micros(41_216));
        // SF12 downlink: ceil(84/40) = 3 → same 23 symbols as with CRC here.
        assert_eq!(downlink_airtime(12, 125, 13), Duration::from_micros(1_155_072));
        // The usual "max payload" figures (51-byte FRMPayload + 13 bytes of LoRaWAN overhead):
        // SF12: 73 payload symbols → 2793.472 ms; SF7: 103 symbols → 118.016 ms.
        assert_eq!(uplink_airtime(12, 125, 64), Duration::from_micros(2_793_472));
        assert_eq!(uplink_airtime(7, 125, 64), Duration::from_micros(118_016));
        // SF7/250 (EU868 DR6): Tsym 0.512 ms → (12.25 + 33) · 0.512 = 23.168 ms.
        assert_eq!(uplink_airtime(7, 250, 13), Duration::from_micros(23_168));
    }

    /// The integer implementation equals the floating-point formula as written in the datasheet.
    #[test]
    fn matches_float_formula() {
        for sf in 7u8..=12 {
            for bw in [125u32, 250, 500] {
                for crc in [false, true] {
                    for len in 0..=255usize {
                        let p = LoraParams { crc, ..LoraParams::uplink(sf, bw) };
                        let tsym = f64::from(1u32 << sf) / (f64::from(bw) * 1000.0);
                        let de = if tsym >= 0.016 { 1.0 } else { 0.0 };
                        let num = 8.0 * len as f64 - 4.0 * f64::from(sf) + 28.0 + if crc { 16.0 } else { 0.0 };
                        let n = 8.0 + ((num / (4.0 * (f64::from(sf) - 2.0 * de))).ceil() * 5.0).max(0.0);
                        let expect = (8.0 + 4.25) * tsym + n * tsym;
                        let got = p.time_on_air(len).as_secs_f64();
                        assert!((got - expect).abs() < 1e-9, "sf{sf} bw{bw} crc{crc} len{len}: {got} vs {expect}");
                    }
                }
            }
        }
    }

    #[test]
    fn ldro_rule() {
        assert!(!LoraParams::uplink(10, 125).low_data_rate_optimize());
        assert!(LoraParams::uplink(11, 125).low_data_rate_optimize());
        assert!(LoraParams::uplink(12, 125).low_data_rate_optimize());
        assert!(!LoraParams::uplink(11, 250).low_data_rate_optimize());
        assert!(LoraParams::uplink(12, 250).low_data_rate_optimize());
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        for sf in 0..=20 {
            for bw in [0, 1, 125, 250, 500, u32::MAX] {
                for len in [0, 1, 255, usize::MAX] {
                    let _ = LoraParams::uplink(sf, bw).time_on_air(len);
                    let _ = LoraParams::downlink(sf, bw).time_on_air(len);
                }
            }
        }
    }
}
