//! Manufacturer-specific decoders, for meter families whose value is not in generic records: a
//! manufacturer CI (0xA0–0xB7), a compact frame (0x79), or manufacturer data after DIF 0x0F.

use super::{Telegram, WmbusError};

/// Telegrams with a manufacturer-specific CI (or a compact frame): decoded where the family is known.
pub fn decode_ci(t: &mut Telegram, ci: u8, payload: &[u8]) -> Result<(), WmbusError> {
    let _ = (t, payload);
    Err(WmbusError::UnsupportedCi(ci))
}

/// Manufacturer data after the generic records (DIF 0x0F/0x1F), where the family is known.
pub fn after_records(t: &mut Telegram, mfct: Option<&[u8]>) {
    let _ = (t, mfct);
}
