//! Amber/Würth AMB8465 (and AMB8465-M) on its UART (9600 8N1).
//!
//! Commands and their replies are framed `0xFF`, command, length, payload, XOR checksum over every
//! byte before it; a reply's command is the request's with bit 7 set, and its first payload byte is
//! the status (0 = success). In the stick's default transparent mode a received telegram comes as raw
//! bytes, L-field first, with one RSSI byte appended when RSSI is enabled (`CMD_SET_REQ` of the
//! `RSSI_Enable` parameter); in command-output mode it comes as a `CMD_DATA_IND` frame, also accepted.

use super::{InitStep, LinkMode, Parse, Resync, StickEvent};

pub const DEFAULT_BAUD: u32 = 9_600;
pub const SOF: u8 = 0xFF;

pub const CMD_DATA_IND: u8 = 0x03;
pub const CMD_SET_MODE_REQ: u8 = 0x04;
pub const CMD_SET_REQ: u8 = 0x09;
pub const CMD_SERIALNO_REQ: u8 = 0x0B;
/// Reply = request | 0x80.
pub const REPLY: u8 = 0x80;
/// The non-volatile parameter `RSSI_Enable` (user settings memory address).
pub const PARAM_RSSI_ENABLE: u8 = 0x45;

/// Shortest telegram: L C M M A A A A V T.
const MIN_L: u8 = 9;

/// The stick's mode codes for receiving from meters ("other" device modes).
pub fn mode_code(mode: LinkMode) -> u8 {
    match mode {
        LinkMode::S1 => 0x03,
        LinkMode::T1 => 0x08,
        LinkMode::C1 => 0x0E,
    }
}

pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |c, b| c ^ b)
}

/// A command frame (also how the stick frames its replies).
pub fn command(cmd: u8, payload: &[u8]) -> Vec<u8> {
    let payload = payload.get(..255).unwrap_or(payload);
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&[SOF, cmd, payload.len() as u8]); // ≤ 255 after the cut above
    out.extend_from_slice(payload);
    out.push(checksum(&out));
    out
}

pub fn set_mode(mode: LinkMode) -> InitStep {
    InitStep {
        what: format!("set link mode {}", mode.as_str()),
        request: command(CMD_SET_MODE_REQ, &[mode_code(mode)]),
        reply: u16::from(CMD_SET_MODE_REQ | REPLY),
    }
}

/// RSSI appended to every received telegram (`CMD_SET_REQ`: address, length, value).
pub fn enable_rssi() -> InitStep {
    InitStep {
        what: "enable RSSI".into(),
        request: command(CMD_SET_REQ, &[PARAM_RSSI_ENABLE, 0x01, 0x01]),
        reply: u16::from(CMD_SET_REQ | REPLY),
    }
}

pub fn serial_number() -> InitStep {
    InitStep {
        what: "read serial number".into(),
        request: command(CMD_SERIALNO_REQ, &[]),
        reply: u16::from(CMD_SERIALNO_REQ | REPLY),
    }
}

pub fn init_steps(mode: LinkMode) -> Vec<InitStep> {
    vec![serial_number(), enable_rssi(), set_mode(mode)]
}

/// The AMB8465's RSSI byte (two's complement, half-dB steps, offset 74 dB: its CC1101 radio) in dBm.
pub fn rssi_dbm(raw: u8) -> i32 {
    i32::from(raw as i8) / 2 - 74
}

/// The incremental decoder; `rssi_attached` says whether telegrams carry the RSSI byte (the init
/// sequence enables it, so true by default).
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    pub rssi_attached: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { buf: Vec::new(), rssi_attached: true }
    }
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StickEvent> {
        self.buf.extend_from_slice(bytes);
        let mut resync = Resync::default();
        loop {
            let parse = self.parse();
            if !resync.step(&mut self.buf, parse) {
                break;
            }
        }
        resync.finish()
    }

    fn parse(&self) -> Parse {
        let Some(&first) = self.buf.first() else { return Parse::Partial };
        let rssi_len = usize::from(self.rssi_attached);
        if first == SOF {
            let (Some(&cmd), Some(&plen)) = (self.buf.get(1), self.buf.get(2)) else { return Parse::Partial };
            let len = 3 + usize::from(plen) + 1;
            let Some(whole) = self.buf.get(..len) else { return Parse::Partial };
            if whole.last().copied() != Some(checksum(whole.get(..len - 1).unwrap_or(&[]))) {
                return Parse::Bad("command frame checksum mismatch");
            }
            let payload = whole.get(3..len - 1).unwrap_or(&[]);
            if cmd == CMD_DATA_IND {
                // The payload is the telegram, L-field first, then the RSSI when enabled.
                return match split_telegram(payload, rssi_len) {
                    Some(event) => Parse::Frame { len, event },
                    None => Parse::Frame { len, event: StickEvent::Skipped { bytes: len, why: "short telegram" } },
                };
            }
            let status =
                if cmd & REPLY != 0 && cmd != CMD_SERIALNO_REQ | REPLY { payload.first().copied() } else { None };
            return Parse::Frame { len, event: StickEvent::Reply { id: u16::from(cmd), status } };
        }
        if first < MIN_L {
            return Parse::Bad("telegram length too short");
        }
        let len = 1 + usize::from(first) + rssi_len;
        let Some(whole) = self.buf.get(..len) else { return Parse::Partial };
        match split_telegram(whole, rssi_len) {
            Some(event) => Parse::Frame { len, event },
            None => Parse::Bad("telegram length too short"),
        }
    }
}

/// `bytes` = L-field, L bytes, then `rssi_len` RSSI bytes.
fn split_telegram(bytes: &[u8], rssi_len: usize) -> Option<StickEvent> {
    let l = usize::from(*bytes.first()?);
    if l < usize::from(MIN_L) || bytes.len() != 1 + l + rssi_len {
        return None;
    }
    let frame = bytes.get(..1 + l)?.to_vec();
    let rssi_dbm = if rssi_len == 1 { bytes.get(1 + l).copied().map(rssi_dbm) } else { None };
    Some(StickEvent::Telegram { frame, rssi_dbm })
}

/// A reply as the stick sends it (for the scripted stick and tests).
pub fn reply(cmd: u8, payload: &[u8]) -> Vec<u8> {
    command(cmd | REPLY, payload)
}

/// A received telegram as the stick sends it in transparent mode with RSSI enabled.
pub fn telegram_output(telegram: &[u8], rssi_raw: u8) -> Vec<u8> {
    let mut out = telegram.to_vec();
    out.push(rssi_raw);
    out
}
