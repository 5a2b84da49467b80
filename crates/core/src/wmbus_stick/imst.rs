//! IMST iM871A (and iM170A) host controller interface (WMBus HCI spec 1.6).
//!
//! A frame: `0xA5`, a control/endpoint byte (high nibble: bit 1 timestamp attached, bit 2 RSSI
//! attached, bit 3 CRC16 attached; low nibble: the endpoint — 1 device management, 2 radio link,
//! 3 radio link test, 4 hardware test), the message id, the payload length, the payload, then the
//! optional 4-byte timestamp, 1-byte RSSI and 2-byte CRC (CRC-16/X-25 from the control byte on,
//! little-endian). A received telegram is a radio-link `WMBUSMSG_IND` whose payload is the telegram
//! from its C-field on: the stick drops the L-field, which is the payload length, put back here.

use super::{InitStep, LinkMode, Parse, Resync, StickEvent};
use crate::meter::crc16_x25;

pub const DEFAULT_BAUD: u32 = 57_600;
pub const SOF: u8 = 0xA5;

pub const DEVMGMT: u8 = 0x01;
pub const RADIOLINK: u8 = 0x02;
pub const RADIOLINKTEST: u8 = 0x03;
pub const HWTEST: u8 = 0x04;

pub const PING_REQ: u8 = 0x01;
pub const PING_RSP: u8 = 0x02;
pub const SET_CONFIG_REQ: u8 = 0x03;
pub const SET_CONFIG_RSP: u8 = 0x04;
pub const WMBUSMSG_IND: u8 = 0x03;

const CTRL_TIMESTAMP: u8 = 0x2;
const CTRL_RSSI: u8 = 0x4;
const CTRL_CRC: u8 = 0x8;

/// Reply ids as the decoder reports them: endpoint in the high byte, message id in the low byte.
pub fn reply_id(endpoint: u8, msg: u8) -> u16 {
    (u16::from(endpoint) << 8) | u16::from(msg)
}

/// The stick's link-mode codes (HCI spec: S1, S1-m, S2, T1, T2, R2, C1a, ...).
pub fn link_mode_code(mode: LinkMode) -> u8 {
    match mode {
        LinkMode::S1 => 0x00,
        LinkMode::T1 => 0x03,
        LinkMode::C1 => 0x06, // C1, frame format A
    }
}

/// A host → stick frame (no CRC, no attachments).
pub fn frame(endpoint: u8, msg: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&[SOF, endpoint & 0x0f, msg, u8::try_from(payload.len()).unwrap_or(u8::MAX)]);
    out.extend_from_slice(payload.get(..255).unwrap_or(payload));
    out
}

pub fn ping() -> InitStep {
    InitStep { what: "ping".into(), request: frame(DEVMGMT, PING_REQ, &[]), reply: reply_id(DEVMGMT, PING_RSP) }
}

/// SET_CONFIG (volatile, not stored in flash): the link mode, and RSSI attached to every received frame.
pub fn set_config(mode: LinkMode) -> InitStep {
    let payload = [
        0x00,                 // temporary: RAM only, the flash keeps its settings
        0x02,                 // IIFlag1: link mode follows
        link_mode_code(mode), // link mode
        0x10,                 // IIFlag2: auto RSSI attachment follows
        0x01,                 // attach the RSSI
    ];
    InitStep {
        what: format!("set link mode {}", mode.as_str()),
        request: frame(DEVMGMT, SET_CONFIG_REQ, &payload),
        reply: reply_id(DEVMGMT, SET_CONFIG_RSP),
    }
}

pub fn init_steps(mode: LinkMode) -> Vec<InitStep> {
    vec![ping(), set_config(mode)]
}

/// The iM871A's RSSI byte in dBm: a straight line through the receiver chip's (Si1002) curve,
/// 45 → −100 dBm and 205 → −20 dBm, 0 dBm from 230 up.
pub fn rssi_dbm(raw: u8) -> i32 {
    if raw >= 230 {
        return 0;
    }
    -100 + (i32::from(raw) - 45) / 2
}

/// The incremental HCI decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

/// Longest frame: header 4 + payload 255 + timestamp 4 + RSSI 1 + CRC 2.
const MAX_FRAME: usize = 4 + 255 + 4 + 1 + 2;

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StickEvent> {
        self.buf.extend_from_slice(bytes);
        let mut resync = Resync::default();
        loop {
            // Resynchronise on the start byte.
            match self.buf.iter().position(|b| *b == SOF) {
                Some(0) => {}
                Some(n) => {
                    resync.skip(n, "no start byte");
                    self.buf.drain(..n);
                }
                None => {
                    resync.skip(self.buf.len(), "no start byte");
                    self.buf.clear();
                    break;
                }
            }
            let parsed = parse(&self.buf);
            if !resync.step(&mut self.buf, parsed) {
                break;
            }
        }
        debug_assert!(self.buf.len() < MAX_FRAME);
        resync.finish()
    }
}

fn parse(buf: &[u8]) -> Parse {
    let (Some(&ctrl_ep), Some(&msg), Some(&plen)) = (buf.get(1), buf.get(2), buf.get(3)) else {
        return Parse::Partial;
    };
    let ctrl = ctrl_ep >> 4;
    let endpoint = ctrl_ep & 0x0f;
    if ctrl & 0x1 != 0 || !(DEVMGMT..=HWTEST).contains(&endpoint) || msg == 0 {
        return Parse::Bad("invalid HCI header");
    }
    let plen = usize::from(plen);
    let ts = if ctrl & CTRL_TIMESTAMP != 0 { 4 } else { 0 };
    let rssi_len = usize::from(ctrl & CTRL_RSSI != 0);
    let crc_len = if ctrl & CTRL_CRC != 0 { 2 } else { 0 };
    let len = 4 + plen + ts + rssi_len + crc_len;
    let Some(whole) = buf.get(..len) else { return Parse::Partial };
    if crc_len == 2 {
        let covered = whole.get(1..len - 2).unwrap_or(&[]);
        let got = whole.get(len - 2..).and_then(|c| <[u8; 2]>::try_from(c).ok()).map(u16::from_le_bytes);
        if got != Some(crc16_x25(covered)) {
            return Parse::Bad("HCI CRC mismatch");
        }
    }
    let payload = whole.get(4..4 + plen).unwrap_or(&[]);
    let rssi = (rssi_len == 1).then(|| whole.get(4 + plen + ts).copied()).flatten();
    let event = match (endpoint, msg) {
        (RADIOLINK, WMBUSMSG_IND) => {
            if payload.is_empty() {
                return Parse::Frame { len, event: StickEvent::Skipped { bytes: len, why: "empty telegram" } };
            }
            let mut frame = Vec::with_capacity(plen + 1);
            frame.push(payload.len() as u8); // ≤ 255: it came from one length byte
            frame.extend_from_slice(payload);
            StickEvent::Telegram { frame, rssi_dbm: rssi.map(rssi_dbm) }
        }
        _ => StickEvent::Reply { id: reply_id(endpoint, msg), status: payload.first().copied() },
    };
    Parse::Frame { len, event }
}

/// Stick → host frame, as a real stick sends it (for the scripted stick and tests): optional RSSI and CRC.
pub fn device_frame(endpoint: u8, msg: u8, payload: &[u8], rssi_raw: Option<u8>, with_crc: bool) -> Vec<u8> {
    let mut ctrl = 0u8;
    if rssi_raw.is_some() {
        ctrl |= CTRL_RSSI;
    }
    if with_crc {
        ctrl |= CTRL_CRC;
    }
    let mut out = frame(endpoint, msg, payload);
    if let Some(b) = out.get_mut(1) {
        *b |= ctrl << 4;
    }
    if let Some(r) = rssi_raw {
        out.push(r);
    }
    if with_crc {
        let crc = crc16_x25(out.get(1..).unwrap_or(&[]));
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

/// A received telegram (L-field first) as the stick indicates it: the L-field dropped.
pub fn telegram_indication(telegram: &[u8], rssi_raw: Option<u8>, with_crc: bool) -> Vec<u8> {
    device_frame(RADIOLINK, WMBUSMSG_IND, telegram.get(1..).unwrap_or(&[]), rssi_raw, with_crc)
}
