//! Wired M-Bus long frames (EN 13757-2: `68 L L 68 C A CI ... CS 16`), which some meters' test telegrams
//! (and M-Bus-to-radio converters) use. Only frames with a long transport header (CI 0x72) are decoded:
//! it carries the meter's id, manufacturer, version and type that a wireless link header would.

use super::link::{id_string, manufacturer_letters};
use super::{LinkHeader, WmbusError};

/// If `frame` is a wired long frame: its link header (taken from the long TPL header) and the bytes from
/// the CI on (without checksum and stop byte). The checksum is checked when the frame is complete.
pub fn split(frame: &[u8]) -> Result<Option<(LinkHeader, &[u8])>, WmbusError> {
    let [0x68, l, l2, 0x68, c, _a, ..] = *frame else { return Ok(None) };
    if l != l2 {
        return Ok(None);
    }
    let end = 4 + usize::from(l);
    let user = frame.get(6..end).ok_or(WmbusError::TooShort { need: end, got: frame.len() })?;
    if let Some(&[cs, 0x16]) = frame.get(end..end + 2) {
        let sum = frame[4..end].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        if sum != cs {
            return Err(WmbusError::BadCrc);
        }
    }
    match user.first() {
        Some(0x72) => {}
        Some(&ci) => return Err(WmbusError::UnsupportedCi(ci)),
        None => return Err(WmbusError::TooShort { need: 7, got: frame.len() }),
    }
    let h = user.get(1..9).ok_or(WmbusError::TooShort { need: 15, got: frame.len() })?;
    let manufacturer_code = u16::from_le_bytes([h[4], h[5]]);
    let header = LinkHeader {
        l_field: l,
        c_field: c,
        manufacturer_code,
        manufacturer: manufacturer_letters(manufacturer_code),
        id: id_string([h[0], h[1], h[2], h[3]]),
        version: h[6],
        device_type: h[7],
    };
    Ok(Some((header, user)))
}
