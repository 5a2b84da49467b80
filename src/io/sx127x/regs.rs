//! SX1276/77/78/79 LoRa-mode register map and the datasheet's conversions (Semtech SX1276/77/78/79
//! datasheet rev. 7, chapter 6.4 "LoRa mode register map", 4.1.6 RF frequency, 5.5.5 RSSI/SNR).
//! Pure: used by the driver and by the register-level model alike.

pub const REG_FIFO: u8 = 0x00;
pub const REG_OP_MODE: u8 = 0x01;
pub const REG_FRF_MSB: u8 = 0x06;
pub const REG_FRF_MID: u8 = 0x07;
pub const REG_FRF_LSB: u8 = 0x08;
pub const REG_PA_CONFIG: u8 = 0x09;
pub const REG_OCP: u8 = 0x0B;
pub const REG_LNA: u8 = 0x0C;
pub const REG_FIFO_ADDR_PTR: u8 = 0x0D;
pub const REG_FIFO_TX_BASE_ADDR: u8 = 0x0E;
pub const REG_FIFO_RX_BASE_ADDR: u8 = 0x0F;
pub const REG_FIFO_RX_CURRENT_ADDR: u8 = 0x10;
pub const REG_IRQ_FLAGS_MASK: u8 = 0x11;
pub const REG_IRQ_FLAGS: u8 = 0x12;
pub const REG_RX_NB_BYTES: u8 = 0x13;
pub const REG_RX_HEADER_CNT_MSB: u8 = 0x14;
pub const REG_RX_HEADER_CNT_LSB: u8 = 0x15;
pub const REG_RX_PACKET_CNT_MSB: u8 = 0x16;
pub const REG_RX_PACKET_CNT_LSB: u8 = 0x17;
pub const REG_MODEM_STAT: u8 = 0x18;
pub const REG_PKT_SNR_VALUE: u8 = 0x19;
pub const REG_PKT_RSSI_VALUE: u8 = 0x1A;
pub const REG_RSSI_VALUE: u8 = 0x1B;
pub const REG_HOP_CHANNEL: u8 = 0x1C;
pub const REG_MODEM_CONFIG1: u8 = 0x1D;
pub const REG_MODEM_CONFIG2: u8 = 0x1E;
pub const REG_SYMB_TIMEOUT_LSB: u8 = 0x1F;
pub const REG_PREAMBLE_MSB: u8 = 0x20;
pub const REG_PREAMBLE_LSB: u8 = 0x21;
pub const REG_PAYLOAD_LENGTH: u8 = 0x22;
pub const REG_MAX_PAYLOAD_LENGTH: u8 = 0x23;
pub const REG_FIFO_RX_BYTE_ADDR: u8 = 0x25;
pub const REG_MODEM_CONFIG3: u8 = 0x26;
pub const REG_DETECT_OPTIMIZE: u8 = 0x31;
pub const REG_INVERT_IQ: u8 = 0x33;
pub const REG_DETECTION_THRESHOLD: u8 = 0x37;
pub const REG_SYNC_WORD: u8 = 0x39;
pub const REG_INVERT_IQ2: u8 = 0x3B;
pub const REG_DIO_MAPPING1: u8 = 0x40;
pub const REG_VERSION: u8 = 0x42;
pub const REG_PA_DAC: u8 = 0x4D;

/// SPI: the first byte of a transaction is the address, with this bit set for a write.
pub const SPI_WRITE: u8 = 0x80;

/// RegVersion of every SX1276/77/78/79 silicon revision in the field.
pub const VERSION_SX127X: u8 = 0x12;

// RegOpMode
pub const OPMODE_LONG_RANGE: u8 = 0x80;
pub const OPMODE_LOW_FREQ: u8 = 0x08;
pub const OPMODE_MODE_MASK: u8 = 0x07;
pub const MODE_SLEEP: u8 = 0x00;
pub const MODE_STDBY: u8 = 0x01;
pub const MODE_FSTX: u8 = 0x02;
pub const MODE_TX: u8 = 0x03;
pub const MODE_FSRX: u8 = 0x04;
pub const MODE_RX_CONTINUOUS: u8 = 0x05;
pub const MODE_RX_SINGLE: u8 = 0x06;
pub const MODE_CAD: u8 = 0x07;

// RegIrqFlags (write 1 to clear)
pub const IRQ_RX_TIMEOUT: u8 = 0x80;
pub const IRQ_RX_DONE: u8 = 0x40;
pub const IRQ_PAYLOAD_CRC_ERROR: u8 = 0x20;
pub const IRQ_VALID_HEADER: u8 = 0x10;
pub const IRQ_TX_DONE: u8 = 0x08;
pub const IRQ_CAD_DONE: u8 = 0x04;
pub const IRQ_FHSS_CHANGE: u8 = 0x02;
pub const IRQ_CAD_DETECTED: u8 = 0x01;

/// RegHopChannel bit 6: the received header announced a payload CRC.
pub const HOP_CHANNEL_CRC_ON_PAYLOAD: u8 = 0x40;

// RegDioMapping1, DIO0 field (bits 7-6) in LoRa mode
pub const DIO0_MASK: u8 = 0xC0;
pub const DIO0_RX_DONE: u8 = 0x00;
pub const DIO0_TX_DONE: u8 = 0x40;
pub const DIO0_CAD_DONE: u8 = 0x80;

// RegModemConfig2
pub const MC2_RX_PAYLOAD_CRC_ON: u8 = 0x04;
// RegModemConfig3
pub const MC3_LOW_DATA_RATE_OPTIMIZE: u8 = 0x08;
pub const MC3_AGC_AUTO_ON: u8 = 0x04;

// RegPaConfig
pub const PA_SELECT_BOOST: u8 = 0x80;
// RegPaDac
pub const PA_DAC_DEFAULT: u8 = 0x84;
pub const PA_DAC_20DBM: u8 = 0x87;

/// RegLna: G1 (maximum gain), LnaBoostHf on (150 % LNA current, for the HF port).
pub const LNA_MAX_GAIN_BOOST: u8 = 0x23;

// RegInvertIQ / RegInvertIQ2. Bit 6 inverts RX; bit 0 is the TX path, and on silicon (unlike the
// datasheet's table) 0 means inverted — Semtech's own driver (LoRaMac-node) and RadioLib agree.
pub const INVERT_IQ_NORMAL: u8 = 0x27;
pub const INVERT_IQ_TX_INVERTED: u8 = 0x26;
pub const INVERT_IQ_RX_INVERTED: u8 = 0x67;
pub const INVERT_IQ2_NORMAL: u8 = 0x1D;
pub const INVERT_IQ2_INVERTED: u8 = 0x19;

// RegDetectOptimize / RegDetectionThreshold for SF7..SF12.
pub const DETECT_OPTIMIZE_SF7_12: u8 = 0xC3;
pub const DETECTION_THRESHOLD_SF7_12: u8 = 0x0A;

/// The crystal all SX127x designs use.
pub const FXOSC_HZ: u64 = 32_000_000;

/// Below this frequency the chip's low-frequency port (and RSSI offset) applies.
pub const LF_HF_THRESHOLD_HZ: u64 = 525_000_000;
pub const RSSI_OFFSET_HF: i32 = -157;
pub const RSSI_OFFSET_LF: i32 = -164;

pub use crate::config::radio::SYNC_WORD_LORAWAN_PUBLIC;

/// Frf register value for a carrier frequency: Frf = f · 2^19 / Fxosc, rounded.
pub fn frf_from_hz(hz: u64) -> u32 {
    let v = (hz.saturating_mul(1 << 19) + FXOSC_HZ / 2) / FXOSC_HZ;
    u32::try_from(v.min(0x00FF_FFFF)).unwrap_or(0x00FF_FFFF)
}

/// Carrier frequency of an Frf register value, rounded to the hertz.
pub fn hz_from_frf(frf: u32) -> u64 {
    (u64::from(frf) * FXOSC_HZ + (1 << 18)) >> 19
}

/// RegModemConfig1 bandwidth field for the LoRaWAN bandwidths.
pub fn bw_code(bw_khz: u32) -> Option<u8> {
    match bw_khz {
        125 => Some(0x07),
        250 => Some(0x08),
        500 => Some(0x09),
        _ => None,
    }
}

pub fn bw_khz_from_code(code: u8) -> Option<u32> {
    match code {
        0x07 => Some(125),
        0x08 => Some(250),
        0x09 => Some(500),
        _ => None,
    }
}

/// RegModemConfig1 coding-rate field for 4/`denominator` (5..=8).
pub fn cr_code(denominator: u8) -> Option<u8> {
    match denominator {
        5..=8 => Some(denominator - 4),
        _ => None,
    }
}

/// SNR of the last packet in dB: RegPktSnrValue is two's complement in quarter dB.
pub fn packet_snr_db(raw: u8) -> f64 {
    f64::from(raw as i8) / 4.0
}

/// RSSI of the last packet in dBm, datasheet 5.5.5: -157 (HF port) or -164 (LF port) + PacketRssi;
/// with SNR < 0 the SNR is added; with SNR ≥ 0 the 16/15 correction for linearity applies.
pub fn packet_rssi_dbm(raw_rssi: u8, raw_snr: u8, freq_hz: u64) -> i32 {
    let offset = if freq_hz < LF_HF_THRESHOLD_HZ { RSSI_OFFSET_LF } else { RSSI_OFFSET_HF };
    let snr_quarters = i32::from(raw_snr as i8);
    let p = i32::from(raw_rssi);
    if snr_quarters < 0 {
        // offset + PacketRssi + PacketSnr · 0.25, rounded half away from zero
        let quarters = 4 * (offset + p) + snr_quarters;
        (f64::from(quarters) / 4.0).round() as i32
    } else {
        // offset + PacketRssi · 16/15, rounded
        offset + (f64::from(p) * 16.0 / 15.0).round() as i32
    }
}

/// LowDataRateOptimize is mandated when the symbol time exceeds 16 ms (SF11/SF12 at 125 kHz).
pub fn low_data_rate_optimize(sf: u8, bw_khz: u32) -> bool {
    bw_khz > 0 && (1u64 << sf.min(12)) * 1000 / u64::from(bw_khz) > 16_000
}

/// Time on air in microseconds (Semtech AN1200.13 / datasheet 4.1.1.7), explicit header.
pub fn time_on_air_us(payload_len: usize, sf: u8, bw_khz: u32, cr_denominator: u8, preamble: u16, crc: bool) -> u64 {
    if bw_khz == 0 {
        return 0;
    }
    let sf_f = f64::from(sf);
    let t_sym_us = f64::from(1u32 << sf.min(12)) * 1000.0 / f64::from(bw_khz);
    let de = if low_data_rate_optimize(sf, bw_khz) { 1.0 } else { 0.0 };
    let crc_f = if crc { 1.0 } else { 0.0 };
    let cr = f64::from(cr_denominator.clamp(5, 8) - 4);
    let num = 8.0 * payload_len as f64 - 4.0 * sf_f + 28.0 + 16.0 * crc_f;
    let den = 4.0 * (sf_f - 2.0 * de);
    let payload_symbols = 8.0 + ((num / den).ceil() * (cr + 4.0)).max(0.0);
    let preamble_symbols = f64::from(preamble) + 4.25;
    ((preamble_symbols + payload_symbols) * t_sym_us).ceil() as u64
}

/// The register values the driver programs for a set of modem parameters (pure; unit-tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModemRegs {
    pub frf: u32,
    pub modem_config1: u8,
    pub modem_config2: u8,
    pub modem_config3: u8,
}

/// Modem register values for explicit-header LoRa at `freq_hz`, SF `sf`, `bw_khz`, CR 4/`cr`.
pub fn modem_regs(freq_hz: u64, sf: u8, bw_khz: u32, cr: u8, crc: bool) -> Option<ModemRegs> {
    if !(7..=12).contains(&sf) {
        return None;
    }
    let bw = bw_code(bw_khz)?;
    let cr = cr_code(cr)?;
    let mc2 = (sf << 4) | if crc { MC2_RX_PAYLOAD_CRC_ON } else { 0 };
    let mut mc3 = MC3_AGC_AUTO_ON;
    if low_data_rate_optimize(sf, bw_khz) {
        mc3 |= MC3_LOW_DATA_RATE_OPTIMIZE;
    }
    Some(ModemRegs {
        frf: frf_from_hz(freq_hz),
        modem_config1: (bw << 4) | (cr << 1),
        modem_config2: mc2,
        modem_config3: mc3,
    })
}

/// RegPaConfig, RegPaDac and RegOcp for an output power. PA_BOOST (RFM95/96 modules): 2..=17 dBm,
/// 20 dBm with the high-power DAC; RFO: 0..=14 dBm. Out-of-range values are clamped.
pub fn pa_regs(power_dbm: i8, pa_boost: bool) -> (u8, u8, u8) {
    if pa_boost {
        let p = power_dbm.clamp(2, 20);
        if p > 17 {
            // Pout = 20 - (15 - OutputPower) with PaDac 0x87; OCP to 140 mA.
            let out = (p - 5).clamp(0, 15) as u8;
            (PA_SELECT_BOOST | 0x70 | out, PA_DAC_20DBM, 0x20 | 0x11)
        } else {
            let out = (p - 2).clamp(0, 15) as u8;
            (PA_SELECT_BOOST | 0x70 | out, PA_DAC_DEFAULT, 0x20 | 0x0B)
        }
    } else {
        // MaxPower 7: Pmax = 15 dBm, Pout = Pmax - (15 - OutputPower)
        let p = power_dbm.clamp(0, 14) as u8;
        (0x70 | p, PA_DAC_DEFAULT, 0x20 | 0x0B)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frf_matches_datasheet_examples() {
        // 868.1 MHz -> 0xD9 0x06 0x66 ; 915 MHz -> 0xE4 0xC0 0x00 ; 434 MHz (reset value) -> 0x6C8000
        assert_eq!(frf_from_hz(868_100_000), 0xD9_0666);
        assert_eq!(frf_from_hz(915_000_000), 0xE4_C000);
        assert_eq!(frf_from_hz(434_000_000), 0x6C_8000);
        for f in [863_000_000u64, 868_100_000, 868_300_000, 869_525_000, 433_175_000] {
            let back = hz_from_frf(frf_from_hz(f));
            assert!(back.abs_diff(f) <= 31, "{f} -> {back}"); // one step is 61.035 Hz
        }
    }

    #[test]
    fn snr_and_rssi_follow_the_datasheet() {
        assert_eq!(packet_snr_db(0x28), 10.0);
        assert_eq!(packet_snr_db(0xEC), -5.0);
        // SNR >= 0: -157 + 16/15 · 75 = -77
        assert_eq!(packet_rssi_dbm(75, 0x28, 868_100_000), -77);
        // SNR < 0: -157 + 40 + (-5) = -122
        assert_eq!(packet_rssi_dbm(40, 0xEC, 868_100_000), -122);
        // LF port offset
        assert_eq!(packet_rssi_dbm(40, 0xEC, 433_175_000), -129);
    }

    #[test]
    fn modem_registers() {
        let m = modem_regs(868_100_000, 7, 125, 5, true).expect("valid");
        assert_eq!(m.modem_config1, 0x72);
        assert_eq!(m.modem_config2, 0x74);
        assert_eq!(m.modem_config3, 0x04);
        let m = modem_regs(868_100_000, 12, 125, 5, false).expect("valid");
        assert_eq!(m.modem_config2, 0xC0);
        assert_eq!(m.modem_config3, 0x0C);
        assert!(modem_regs(868_100_000, 6, 125, 5, true).is_none());
        assert!(modem_regs(868_100_000, 7, 62, 5, true).is_none());
        assert!(modem_regs(868_100_000, 7, 125, 9, true).is_none());
    }

    #[test]
    fn time_on_air() {
        // SF7/125 kHz, 13-byte payload, CR 4/5, CRC on: 46.336 ms (Semtech calculator: 46.3 ms)
        assert_eq!(time_on_air_us(13, 7, 125, 5, 8, true), 46_336);
        // SF12/125, 13 bytes: 1 155 072 us (1.155 s)
        assert_eq!(time_on_air_us(13, 12, 125, 5, 8, true), 1_155_072);
    }

    #[test]
    fn power_registers() {
        assert_eq!(pa_regs(14, true), (0xFC, 0x84, 0x2B));
        assert_eq!(pa_regs(20, true), (0xFF, 0x87, 0x31));
        assert_eq!(pa_regs(14, false), (0x7E, 0x84, 0x2B));
    }
}
