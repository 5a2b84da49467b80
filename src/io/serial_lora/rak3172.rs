//! RAKwireless RAK3172 (STM32WLE5) with RUI3 firmware, LoRa P2P mode: the AT dialect. Pure.
//!
//! Commands end in CRLF; replies are `OK` or an `AT_…` error (`AT_ERROR`, `AT_PARAM_ERROR`,
//! `AT_BUSY_ERROR`, `AT_MODE_NO_SUPPORT`, `AT_COMMAND_NOT_FOUND`, …). `AT+NWM=0` selects P2P (the
//! module restarts if the mode changes), `AT+P2P=freq:sf:bw:cr:preamble:txpower` sets the radio
//! (bandwidth in kHz, cr 0..3 = 4/5..4/8), `AT+SYNCWORD` takes the SX126x two-byte sync word
//! (0x3444 ≙ SX127x 0x34), `AT+PRECV=65534` listens continuously until `AT+PRECV=0`. Frames arrive as
//! `+EVT:RXP2P:<rssi>:<snr>:<hex payload>`.

use super::protocol::{parse_hex, Line, Step};
use super::RadioSettings;

pub const DEFAULT_BAUD: u32 = 115_200;

pub fn classify(line: &str) -> Line {
    let l = line.trim();
    if l == "OK" {
        return Line::Ok;
    }
    if let Some(rest) = l.strip_prefix("+EVT:RXP2P") {
        if let Some(fields) = rest.strip_prefix(':') {
            return parse_rxp2p(fields).unwrap_or_else(|| Line::RxError(format!("malformed RXP2P event: {l}")));
        }
        let r = rest.trim().to_ascii_uppercase();
        if r.contains("TIMEOUT") {
            return Line::RxEnded;
        }
        return Line::RxError(l.to_string());
    }
    if l.starts_with("AT_") && l != "AT_" {
        // Every RUI3 error reply: AT_ERROR, AT_PARAM_ERROR, AT_BUSY_ERROR, AT_MODE_NO_SUPPORT, ...
        return Line::Error(l.to_string());
    }
    Line::Other(l.to_string())
}

/// `<rssi>:<snr>:<hex>`
fn parse_rxp2p(fields: &str) -> Option<Line> {
    let mut it = fields.splitn(3, ':');
    let rssi = it.next()?.trim().parse::<i32>().ok()?;
    let snr = it.next()?.trim().parse::<f64>().ok()?;
    let phy = parse_hex(it.next()?)?;
    Some(Line::Frame { phy, rssi: Some(rssi), snr: Some(snr) })
}

/// SX127x one-byte sync word as the SX126x two-byte one: 0xXY -> 0xX4Y4.
pub fn sync_word_sx126x(sync: u8) -> u16 {
    (u16::from(sync & 0xF0) << 8) | 0x0400 | (u16::from(sync & 0x0F) << 4) | 0x0004
}

pub fn init_steps(s: &RadioSettings) -> Vec<Step> {
    vec![
        Step::ok("AT").attempts(3),
        Step::ok("AT+NWM=0"),
        // The module restarts when the mode changed: poll until it answers again (up to ~5 s).
        Step::ok("AT").attempts(10).timeout_ms(500),
        // A receive left running from before makes the P2P settings fail with AT_BUSY_ERROR.
        Step::ok("AT+PRECV=0"),
        Step::ok(format!(
            "AT+P2P={}:{}:{}:{}:{}:{}",
            s.freq_hz,
            s.sf,
            s.bw_khz,
            s.cr.saturating_sub(5),
            s.preamble_len,
            s.tx_power_dbm
        )),
        Step::ok(format!("AT+SYNCWORD={:04X}", sync_word_sx126x(s.sync_word))),
        Step::ok("AT+IQINVER=0"),
        Step::ok("AT+PRECV=65534"),
    ]
}

/// Is the module alive while it listens? Stop and restart the receiver.
pub fn probe_steps() -> Vec<Step> {
    vec![Step::ok("AT+PRECV=0"), Step::ok("AT+PRECV=65534")]
}

pub fn rearm_steps() -> Vec<Step> {
    vec![Step::ok("AT+PRECV=0"), Step::ok("AT+PRECV=65534")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_rui3_lines() {
        assert_eq!(classify("OK"), Line::Ok);
        assert_eq!(classify("AT_PARAM_ERROR"), Line::Error("AT_PARAM_ERROR".into()));
        assert_eq!(classify("AT_BUSY_ERROR"), Line::Error("AT_BUSY_ERROR".into()));
        assert_eq!(
            classify("+EVT:RXP2P:-36:9:4142"),
            Line::Frame { phy: vec![0x41, 0x42], rssi: Some(-36), snr: Some(9.0) }
        );
        assert_eq!(
            classify("+EVT:RXP2P:-118:-12:00ff"),
            Line::Frame { phy: vec![0x00, 0xFF], rssi: Some(-118), snr: Some(-12.0) }
        );
        assert!(matches!(classify("+EVT:RXP2P:-36:x:41"), Line::RxError(_)));
        assert!(matches!(classify("+EVT:RXP2P:-36:9:414"), Line::RxError(_)));
        assert_eq!(classify("+EVT:RXP2P RECEIVE TIMEOUT"), Line::RxEnded);
        assert!(matches!(classify("+EVT:RXP2P RECEIVE ERROR"), Line::RxError(_)));
        assert_eq!(classify("AT+NWM=0"), Line::Other("AT+NWM=0".into()));
        assert_eq!(classify("Current Work Mode: LoRa P2P."), Line::Other("Current Work Mode: LoRa P2P.".into()));
    }

    #[test]
    fn init_sequence() {
        let s = RadioSettings {
            freq_hz: 868_100_000,
            sf: 7,
            bw_khz: 125,
            cr: 5,
            sync_word: 0x34,
            preamble_len: 8,
            tx_power_dbm: 14,
        };
        let cmds: Vec<String> = init_steps(&s).into_iter().map(|s| s.cmd).collect();
        assert_eq!(
            cmds,
            [
                "AT",
                "AT+NWM=0",
                "AT",
                "AT+PRECV=0",
                "AT+P2P=868100000:7:125:0:8:14",
                "AT+SYNCWORD=3444",
                "AT+IQINVER=0",
                "AT+PRECV=65534"
            ]
        );
        assert_eq!(sync_word_sx126x(0x12), 0x1424);
    }
}
