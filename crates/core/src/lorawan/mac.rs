//! Defensive parser for uplink MAC commands (LoRaWAN 1.0.x, end-device → network direction).
//!
//! Why not the `lorawan` crate's iterator: in 0.9.0 it can panic on a truncated command, and these bytes
//! come from the air (FOpts are not even encrypted in 1.0.x). Here every read is bounds-checked; a
//! truncated command or an unknown CID stops parsing and the commands read so far are returned together
//! with the reason.

use serde::Serialize;

/// One uplink MAC command. Status bytes are kept raw; the helpers on [`MacCommand`] decode the bits that
/// the rest of the daemon looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum MacCommand {
    /// 0x02: the device asks for a link check (answer: margin + gateway count).
    LinkCheckReq,
    /// 0x03: bit 2 power ACK, bit 1 data-rate ACK, bit 0 channel-mask ACK.
    LinkAdrAns { status: u8 },
    /// 0x04
    DutyCycleAns,
    /// 0x05: bit 2 RX1DROffset ACK, bit 1 RX2 data-rate ACK, bit 0 channel ACK.
    RxParamSetupAns { status: u8 },
    /// 0x06: battery 0 = external power, 1..=254 level, 255 = unknown; margin = demodulation SNR in dB
    /// (6-bit signed, -32..=31).
    DevStatusAns { battery: u8, margin: i8 },
    /// 0x07: bit 1 data-rate range OK, bit 0 channel frequency OK.
    NewChannelAns { status: u8 },
    /// 0x08
    RxTimingSetupAns,
    /// 0x09 (1.0.2+)
    TxParamSetupAns,
    /// 0x0A (1.0.2+): bit 1 uplink frequency exists, bit 0 channel frequency OK.
    DlChannelAns { status: u8 },
    /// 0x0D (1.0.3+)
    DeviceTimeReq,
    /// 0x10 (class B): periodicity in the low 3 bits.
    PingSlotInfoReq { periodicity: u8 },
    /// 0x11 (class B)
    PingSlotChannelAns { status: u8 },
    /// 0x12 (class B, deprecated in 1.0.3)
    BeaconTimingReq,
    /// 0x13 (class B)
    BeaconFreqAns { status: u8 },
    /// A CID this parser does not know (RFU or proprietary 0x80..). Its length is unknown, so parsing
    /// stops here.
    Unknown { cid: u8 },
}

impl MacCommand {
    pub fn cid(&self) -> u8 {
        match self {
            MacCommand::LinkCheckReq => 0x02,
            MacCommand::LinkAdrAns { .. } => 0x03,
            MacCommand::DutyCycleAns => 0x04,
            MacCommand::RxParamSetupAns { .. } => 0x05,
            MacCommand::DevStatusAns { .. } => 0x06,
            MacCommand::NewChannelAns { .. } => 0x07,
            MacCommand::RxTimingSetupAns => 0x08,
            MacCommand::TxParamSetupAns => 0x09,
            MacCommand::DlChannelAns { .. } => 0x0A,
            MacCommand::DeviceTimeReq => 0x0D,
            MacCommand::PingSlotInfoReq { .. } => 0x10,
            MacCommand::PingSlotChannelAns { .. } => 0x11,
            MacCommand::BeaconTimingReq => 0x12,
            MacCommand::BeaconFreqAns { .. } => 0x13,
            MacCommand::Unknown { cid } => *cid,
        }
    }

    /// For a LinkADRAns: true when the device accepted the whole request (all three ACK bits set).
    pub fn link_adr_fully_acked(&self) -> Option<bool> {
        match self {
            MacCommand::LinkAdrAns { status } => Some(status & 0x07 == 0x07),
            _ => None,
        }
    }
}

/// Why parsing stopped before the end of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MacParseError {
    #[error("MAC command 0x{cid:02x} at offset {offset} needs {needed} payload bytes, {available} left")]
    Truncated { cid: u8, offset: usize, needed: usize, available: usize },
    #[error("unknown MAC command 0x{cid:02x} at offset {offset}; the rest was not parsed")]
    UnknownCid { cid: u8, offset: usize },
}

/// Payload length of each known uplink CID (LoRaWAN 1.0.4 table 4 + class B), `None` when unknown.
fn payload_len(cid: u8) -> Option<usize> {
    Some(match cid {
        0x02 | 0x04 | 0x08 | 0x09 | 0x0D | 0x12 => 0,
        0x03 | 0x05 | 0x07 | 0x0A | 0x10 | 0x11 | 0x13 => 1,
        0x06 => 2,
        _ => return None,
    })
}

/// Parses a sequence of uplink MAC commands (FOpts, or a decrypted FPort-0 FRMPayload).
/// Never panics: on a truncated command or an unknown CID it returns what was parsed plus the reason.
pub fn parse_mac_uplink(bytes: &[u8]) -> (Vec<MacCommand>, Option<MacParseError>) {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Some(&cid) = bytes.get(offset) {
        let Some(len) = payload_len(cid) else {
            out.push(MacCommand::Unknown { cid });
            return (out, Some(MacParseError::UnknownCid { cid, offset }));
        };
        let start = offset + 1;
        let Some(p) = bytes.get(start..start + len) else {
            let available = bytes.len().saturating_sub(start);
            return (out, Some(MacParseError::Truncated { cid, offset, needed: len, available }));
        };
        let b0 = p.first().copied().unwrap_or(0);
        let cmd = match cid {
            0x02 => MacCommand::LinkCheckReq,
            0x03 => MacCommand::LinkAdrAns { status: b0 },
            0x04 => MacCommand::DutyCycleAns,
            0x05 => MacCommand::RxParamSetupAns { status: b0 },
            0x06 => {
                let margin_raw = p.get(1).copied().unwrap_or(0) & 0x3f;
                // Sign-extend the 6-bit two's complement value.
                let margin = ((margin_raw << 2) as i8) >> 2;
                MacCommand::DevStatusAns { battery: b0, margin }
            }
            0x07 => MacCommand::NewChannelAns { status: b0 },
            0x08 => MacCommand::RxTimingSetupAns,
            0x09 => MacCommand::TxParamSetupAns,
            0x0A => MacCommand::DlChannelAns { status: b0 },
            0x0D => MacCommand::DeviceTimeReq,
            0x10 => MacCommand::PingSlotInfoReq { periodicity: b0 & 0x07 },
            0x11 => MacCommand::PingSlotChannelAns { status: b0 },
            0x12 => MacCommand::BeaconTimingReq,
            0x13 => MacCommand::BeaconFreqAns { status: b0 },
            // payload_len() and this match list the same CIDs.
            _ => MacCommand::Unknown { cid },
        };
        out.push(cmd);
        offset = start + len;
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brocaar_fopts() {
        let (cmds, err) = parse_mac_uplink(&[0x02, 0x03, 0x05]);
        assert_eq!(err, None);
        assert_eq!(cmds, vec![MacCommand::LinkCheckReq, MacCommand::LinkAdrAns { status: 0x05 }]);
        assert_eq!(cmds[1].link_adr_fully_acked(), Some(false));
    }

    #[test]
    fn dev_status_margin_is_signed_6_bit() {
        let (cmds, err) = parse_mac_uplink(&[0x06, 0x73, 0x07, 0x06, 0xff, 0x3f, 0x06, 0x00, 0x20]);
        assert_eq!(err, None);
        assert_eq!(
            cmds,
            vec![
                MacCommand::DevStatusAns { battery: 0x73, margin: 7 },
                MacCommand::DevStatusAns { battery: 255, margin: -1 },
                MacCommand::DevStatusAns { battery: 0, margin: -32 },
            ]
        );
    }

    #[test]
    fn real_device_fopts_issue18() {
        // lora-packet issue 18: TxParamSetupAns followed by PingSlotChannelAns.
        let (cmds, err) = parse_mac_uplink(&[0x09, 0x11, 0x03]);
        assert_eq!(err, None);
        assert_eq!(cmds, vec![MacCommand::TxParamSetupAns, MacCommand::PingSlotChannelAns { status: 3 }]);
    }

    #[test]
    fn every_truncation_returns_without_panic() {
        let all = [
            0x02, 0x03, 0x07, 0x04, 0x05, 0x07, 0x06, 0xfe, 0x3e, 0x07, 0x03, 0x08, 0x09, 0x0a, 0x03, 0x0d, 0x10, 0x05,
            0x11, 0x01, 0x12, 0x13, 0x01,
        ];
        let (full, err) = parse_mac_uplink(&all);
        assert_eq!(err, None);
        assert_eq!(full.len(), 14);
        let cids: Vec<u8> = full.iter().map(MacCommand::cid).collect();
        assert_eq!(cids, [0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0d, 0x10, 0x11, 0x12, 0x13]);
        for cut in 0..all.len() {
            let (cmds, err) = parse_mac_uplink(&all[..cut]);
            // What was parsed is always a prefix of the full parse.
            assert_eq!(cmds[..], full[..cmds.len()]);
            if let Some(MacParseError::Truncated { needed, available, .. }) = err {
                assert!(available < needed);
            }
        }
        // A cut in the middle of DevStatusAns is reported as truncated.
        let (cmds, err) = parse_mac_uplink(&[0x02, 0x06, 0x10]);
        assert_eq!(cmds, vec![MacCommand::LinkCheckReq]);
        assert_eq!(err, Some(MacParseError::Truncated { cid: 0x06, offset: 1, needed: 2, available: 1 }));
    }

    #[test]
    fn unknown_cid_stops() {
        let (cmds, err) = parse_mac_uplink(&[0x02, 0x80, 0x02]);
        assert_eq!(cmds, vec![MacCommand::LinkCheckReq, MacCommand::Unknown { cid: 0x80 }]);
        assert_eq!(err, Some(MacParseError::UnknownCid { cid: 0x80, offset: 1 }));
        assert_eq!(parse_mac_uplink(&[]), (vec![], None));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::test_support::XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 20) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = parse_mac_uplink(&bytes);
        }
    }
}
