//! `lamp-generic`: a lamp controller that reports (and takes) its level as one byte 0–100 on FPort 10.

use super::{put_int, DecodeError, Decoded};

/// The FPort of both the level report (uplink) and the level command (downlink).
pub(crate) const FPORT: u8 = 10;

pub(crate) fn decode(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    if f_port != FPORT {
        return Err(DecodeError::UnsupportedPort(f_port));
    }
    let level = match payload {
        [] => return Err(DecodeError::TooShort { need: 1, got: 0 }),
        [level] => *level,
        _ => return Err(DecodeError::Invalid(format!("lamp level report is 1 byte, got {}", payload.len()))),
    };
    if level > 100 {
        return Err(DecodeError::Invalid(format!("lamp level {level} out of range 0-100")));
    }
    let mut d = Decoded::new();
    put_int(&mut d.metrics, "lamp_level_pct", i64::from(level));
    Ok(d)
}
