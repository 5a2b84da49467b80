//! SML (Smart Message Language, BSI TR-03109-1 / SML 1.04) for the smart meters on an optical head:
//! a pure, streaming transport framer ([`SmlFramer`]), a message parser ([`parse_frame`]), the OBIS values
//! of a frame ([`values`]) and their mapping to reading metrics ([`metrics`]). No I/O, no clock: the
//! serial source pushes bytes into the framer and turns each [`FrameEvent::Frame`] into a reading.
//!
//! ```text
//! serial bytes ──▶ SmlFramer::push ──▶ FrameEvent::Frame(payload) ──▶ values(payload) ──▶ metrics(&values)
//! ```
//!
//! # OBIS → metric table
//!
//! Only A = 1 (electricity) and F = 255 (current value) codes are mapped; B (channel) is ignored.
//! Values are `raw × 10^scaler` in the metric's base unit; the DLMS unit code must be the one listed
//! or absent (a different unit, e.g. 31 = VAh or 32 = varh on an energy register, is not mapped).
//! DLMS has no kWh unit code: meters that count in kWh send unit 30 (Wh) with scaler 3, which the
//! scaling already handles.
//!
//! | OBIS (C.D.E) | metric | DLMS unit |
//! |---|---|---|
//! | 1.8.0 | `energy_import_wh` | 30 Wh |
//! | 2.8.0 | `energy_export_wh` | 30 Wh |
//! | 1.8.1 … 1.8.9 | `energy_import_t1_wh` … `energy_import_t9_wh` (tariffs) | 30 Wh |
//! | 2.8.1 … 2.8.9 | `energy_export_t1_wh` … `energy_export_t9_wh` (tariffs) | 30 Wh |
//! | 16.7.0 | `power_w` (signed; import positive) | 27 W |
//! | 1.7.0 / 2.7.0 | `power_import_w` / `power_export_w`; `power_w` = 1.7.0 − 2.7.0 when 16.7.0 is absent | 27 W |
//! | 36.7.0 / 56.7.0 / 76.7.0 | `power_l1_w` / `power_l2_w` / `power_l3_w` | 27 W |
//! | 32.7.0 / 52.7.0 / 72.7.0 | `voltage_l1_v` / `voltage_l2_v` / `voltage_l3_v` | 35 V |
//! | 31.7.0 / 51.7.0 / 71.7.0 | `current_l1_a` / `current_l2_a` / `current_l3_a` | 33 A |
//! | 14.7.0 | `frequency_hz` | 44 Hz |
//!
//! Other codes (server id 96.1.0, manufacturer 96.50.1, status words, signatures ...) are not turned
//! into metrics: they are identifiers or vendor data, not measurements.
//!
//! Values are decoded exactly as the meter sends them. Known firmware bug, deliberately not "fixed":
//! DZG DVS-7412.2 sends a true 356.24 W as the signed 16-bit −299.12 W.
//!
//! # Findings on the real dumps (`shared/vectors/sml`)
//! * Transport CRC: CRC-16/X-25, **little-endian** on the wire, for all 15 meter types; see
//!   [`framing`]. Fed whole, byte by byte or chunked with garbage between frames, the framer yields
//!   exactly the frames sml-rs accepts (227), and the same CRC errors.
//! * Message CRC (`crc16` field of each message): the same CRC-16/X-25, its two bytes also low byte
//!   first, i.e. the big-endian SML integer is the byte-swapped CRC; all 681 real messages verify. A
//!   mismatch is reported in [`SmlMessage::crc_ok`], not rejected (the transport CRC already verified
//!   the frame). See [`parse`].

mod crc;
pub mod framing;
pub mod obis;
pub mod parse;

#[cfg(test)]
mod tests;

pub use crc::crc16_x25;
pub use framing::{encode_frame, FrameEvent, FrameInvalid, FramerStats, SmlFramer, DEFAULT_MAX_FRAME};
pub use obis::{format_obis, metrics, parse_obis, values, ObisValue};
pub use parse::{parse_frame, CloseResponse, GetListResponse, ListEntry, OpenResponse, SmlBody, SmlMessage, SmlValue};

/// Why an SML payload could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmlError {
    #[error("SML data ends early at offset {offset}")]
    Truncated { offset: usize },
    #[error("invalid SML type-length field 0x{tl:02x} at offset {offset}")]
    InvalidTl { offset: usize, tl: u8 },
    #[error("SML integer of {bytes} bytes at offset {offset} (1 to 8 supported)")]
    BadInteger { offset: usize, bytes: usize },
    #[error("SML nesting too deep at offset {offset}")]
    TooDeep { offset: usize },
    #[error("malformed SML message at offset {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
}
