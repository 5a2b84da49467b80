//! Microchip RN2483 (RN2903 alike), firmware 1.0.x: the text dialect, radio-only use. Pure.
//!
//! Commands end in CRLF; replies are `ok`, `invalid_param`, `busy`, or a value. The LoRaWAN stack is
//! paused (`mac pause`) before `radio set …`. `radio set wdt 0` disables the receive watchdog and
//! `radio rx 0` listens until a frame arrives: `ok` at once, later `radio_rx  <hex>` (two spaces) or
//! `radio_err`. The module then stops listening: SNR (`radio get snr`) and RSSI of the last packet
//! (`radio get pktrssi`, firmware 1.0.5; older firmware says `invalid_param`) are read before `radio rx
//! 0` again. `radio rxstop` leaves receive mode.

use super::protocol::{parse_hex, Capture, Expect, Line, Step};
use super::RadioSettings;

pub const DEFAULT_BAUD: u32 = 57_600;

const ERRORS: &[&str] = &[
    "invalid_param",
    "busy",
    "err",
    "not_joined",
    "no_free_ch",
    "silent",
    "frame_counter_err_rejoin_needed",
    "mac_paused",
    "invalid_data_len",
    "keys_not_init",
];

pub fn classify(line: &str) -> Line {
    let l = line.trim();
    if l == "ok" {
        return Line::Ok;
    }
    if let Some(rest) = l.strip_prefix("radio_rx") {
        if rest.starts_with(' ') {
            return match parse_hex(rest.trim()) {
                Some(phy) => Line::Frame { phy, rssi: None, snr: None },
                None => Line::RxError(format!("malformed radio_rx: {l}")),
            };
        }
    }
    if l == "radio_err" {
        return Line::RxError(l.to_string());
    }
    if ERRORS.contains(&l) {
        return Line::Error(l.to_string());
    }
    Line::Other(l.to_string())
}

pub fn init_steps(s: &RadioSettings) -> Vec<Step> {
    vec![
        Step::expect("sys get ver", Expect::Prefix("RN2")).attempts(3),
        Step::expect("mac pause", Expect::Number),
        // Stop a receive left running from before (whatever it answers when idle).
        Step::expect("radio rxstop", Expect::OkOrError),
        Step::ok("radio set mod lora"),
        Step::ok(format!("radio set freq {}", s.freq_hz)),
        Step::ok(format!("radio set sf sf{}", s.sf)),
        Step::ok(format!("radio set bw {}", s.bw_khz)),
        Step::ok(format!("radio set cr 4/{}", s.cr)),
        Step::ok(format!("radio set sync {:02x}", s.sync_word)),
        Step::ok("radio set crc on"),
        Step::ok("radio set iqi off"),
        Step::ok(format!("radio set prlen {}", s.preamble_len)),
        Step::ok(format!("radio set pwr {}", s.tx_power_dbm.clamp(-3, 15))),
        Step::ok("radio set wdt 0"),
        Step::ok("radio rx 0"),
    ]
}

/// After `radio_rx`: the packet's SNR and RSSI, then listen again.
pub fn after_frame_steps() -> Vec<Step> {
    vec![
        Step::expect("radio get snr", Expect::Number).capture(Capture::Snr),
        Step::expect("radio get pktrssi", Expect::NumberOrError).capture(Capture::Rssi),
        Step::ok("radio rx 0"),
    ]
}

pub fn probe_steps() -> Vec<Step> {
    vec![Step::ok("radio rxstop"), Step::ok("radio rx 0")]
}

pub fn rearm_steps() -> Vec<Step> {
    vec![Step::ok("radio rx 0")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_rn2483_lines() {
        assert_eq!(classify("ok"), Line::Ok);
        assert_eq!(classify("invalid_param"), Line::Error("invalid_param".into()));
        assert_eq!(classify("busy"), Line::Error("busy".into()));
        assert_eq!(classify("radio_rx  40AABB"), Line::Frame { phy: vec![0x40, 0xAA, 0xBB], rssi: None, snr: None });
        assert_eq!(classify("radio_rx 40"), Line::Frame { phy: vec![0x40], rssi: None, snr: None });
        assert!(matches!(classify("radio_rx  4"), Line::RxError(_)));
        assert!(matches!(classify("radio_err"), Line::RxError(_)));
        assert_eq!(classify("4294967245"), Line::Other("4294967245".into()));
        assert_eq!(
            classify("RN2483 1.0.5 Oct 31 2018 15:06:52"),
            Line::Other("RN2483 1.0.5 Oct 31 2018 15:06:52".into())
        );
    }

    #[test]
    fn init_sequence() {
        let s = RadioSettings {
            freq_hz: 868_100_000,
            sf: 9,
            bw_khz: 125,
            cr: 5,
            sync_word: 0x34,
            preamble_len: 8,
            tx_power_dbm: 14,
        };
        let cmds: Vec<String> = init_steps(&s).into_iter().map(|s| s.cmd).collect();
        assert!(cmds.contains(&"radio set sf sf9".to_string()));
        assert!(cmds.contains(&"radio set sync 34".to_string()));
        assert_eq!(cmds.last().map(String::as_str), Some("radio rx 0"));
    }
}
