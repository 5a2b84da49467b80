//! Manufacturer-specific decoders, for meter families whose value is not in generic records: a
//! manufacturer CI (0xA0–0xB7), a compact frame (0x79), manufacturer records (VIF 0xFF) or manufacturer
//! data after DIF 0x0F. A value the generic records already gave is never overwritten.
//! The layouts were read from wmbusmeters' driver descriptions and checked against its test telegrams.

use serde_json::Value;

use super::records::Leftovers;
use super::{Telegram, WmbusError};

/// Telegrams with a manufacturer-specific CI (or a compact frame): decoded where the family is known.
pub fn decode_ci(t: &mut Telegram, ci: u8, payload: &[u8]) -> Result<(), WmbusError> {
    let (v, ty) = (t.header.version, t.header.device_type);
    let found = match (t.header.manufacturer.as_str(), ci) {
        ("TCH", 0xA0..=0xA2) => techem(t, v, ty, payload),
        ("APT", 0xA0) => apator_a0(t, v, ty, payload),
        _ => false,
    };
    if found {
        Ok(())
    } else {
        Err(WmbusError::UnsupportedCi(ci))
    }
}

fn u16_at(p: &[u8], i: usize) -> Option<i64> {
    Some(i64::from(u16::from_le_bytes(p.get(i..i + 2)?.try_into().ok()?)))
}

fn u24_at(p: &[u8], i: usize) -> Option<i64> {
    let b = p.get(i..i + 3)?;
    Some(i64::from(u32::from_le_bytes([b[0], b[1], b[2], 0])))
}

fn u32_at(p: &[u8], i: usize) -> Option<i64> {
    Some(i64::from(u32::from_le_bytes(p.get(i..i + 4)?.try_into().ok()?)))
}

/// Techem (TCH) meters with a manufacturer CI. The meter sends the total at the last due date and the
/// consumption since; the total is their sum.
/// - Water (type 0x62 warm, 0x72 cold), versions 0x74 (MK Radio 3), 0x70/0x95 (MK Radio 4): due-date
///   total at bytes 3..5 and consumption at 7..9, both in 0.1 m³; version 0x50 (MK Radio 3a): the total
///   at bytes 4..6 in 0.1 m³.
/// - Heat (type 0x04/0x43/0xC3), versions 0x22/0x39/0x45 (Compact V/5): kWh, 3 bytes at 3 and 7;
///   version 0x27 (Vario 4.51): MJ, 2 bytes at 3 and 7.
fn techem(t: &mut Telegram, version: u8, ty: u8, p: &[u8]) -> bool {
    let (name, total) = match (ty, version) {
        (0x62 | 0x72, 0x74 | 0x70 | 0x95) => match (u16_at(p, 3), u16_at(p, 7)) {
            (Some(a), Some(b)) => ("volume_m3", super::records::decimal(a + b, -1)),
            _ => return false,
        },
        (0x62 | 0x72, 0x50) => match u16_at(p, 4) {
            Some(a) => ("volume_m3", super::records::decimal(a, -1)),
            None => return false,
        },
        (0x04 | 0x43 | 0xC3, 0x22 | 0x39 | 0x45) => match (u24_at(p, 3), u24_at(p, 7)) {
            (Some(a), Some(b)) => ("energy_kwh", Value::from(a + b)),
            _ => return false,
        },
        (0x04 | 0x43 | 0xC3, 0x27) => match (u16_at(p, 3), u16_at(p, 7)) {
            (Some(a), Some(b)) => ("energy_kwh", mj_to_kwh(a + b)),
            _ => return false,
        },
        _ => return false,
    };
    put_if_absent(t, name, total);
    true
}

fn mj_to_kwh(mj: i64) -> Value {
    serde_json::Number::from_f64(crate::decode::round_to(mj as f64 / 3.6, 6)).map_or(Value::Null, Value::Number)
}

/// Apator (APT) meters with CI 0xA0: the first 4 bytes are the total in thirds of a unit: litres for
/// the AT-WMBUS-08 (version/type 0x03/0x03, 0x0F/0x0F), m³ for the AT-WMBUS-17-2 (0x04/0x11).
fn apator_a0(t: &mut Telegram, version: u8, ty: u8, p: &[u8]) -> bool {
    let Some(thirds) = u32_at(p, 0) else { return false };
    let m3 = match (version, ty) {
        (0x03, 0x03) | (0x0F, 0x0F) => thirds as f64 / 3000.0,
        (0x04, 0x11) => thirds as f64 / 3.0,
        _ => return false,
    };
    if let Some(n) = serde_json::Number::from_f64(crate::decode::round_to(m3, 6)) {
        put_if_absent(t, "volume_m3", Value::Number(n));
    }
    true
}

/// Manufacturer data after the generic records, where the family is known.
pub fn after_records(t: &mut Telegram, left: &Leftovers<'_>) {
    match t.header.manufacturer.as_str() {
        "QDS" | "LSE" => qundis(t, left),
        "APA" => {
            if let Some(tail) = left.tail {
                apator_fields(t, tail);
            }
        }
        _ => {}
    }
}

fn put_if_absent(t: &mut Telegram, key: &str, v: Value) {
    t.metrics.entry(key.to_string()).or_insert(v);
}

fn bcd_u32(b: &[u8]) -> Option<u64> {
    b.iter().rev().try_fold(0u64, |acc, &x| {
        let (hi, lo) = (x >> 4, x & 0x0F);
        (hi <= 9 && lo <= 9).then(|| acc * 100 + u64::from(hi) * 10 + u64::from(lo))
    })
}

/// Is the device type a water meter (cold, warm, hot)?
fn is_water(t: &Telegram) -> bool {
    matches!(t.header.device_type, 0x06 | 0x07 | 0x15 | 0x16)
}

/// Qundis (QDS, LSE) water and heat meters: a 53-byte manufacturer record (DIF 0x0D, VIF 0xFF 0x5F) whose
/// bytes 12..16 are the current total as 8 BCD digits: litres for water, 0.1 kWh (VIF 0x05) for heat.
fn qundis(t: &mut Telegram, left: &Leftovers<'_>) {
    let Some(rec) = left.mfct_records.iter().find(|r| r.dif == 0x0D && r.vifes.first() == Some(&0x5F)) else {
        return;
    };
    if rec.data.len() != 53 {
        return;
    }
    let Some(v) = rec.data.get(12..16).and_then(bcd_u32) else { return };
    if is_water(t) {
        put_if_absent(t, "volume_m3", super::records::decimal(v as i64, -3));
    } else if matches!(t.header.device_type, 0x04 | 0x0C | 0x0D) {
        put_if_absent(t, "energy_kwh", super::records::decimal(v as i64, -1));
    }
}

/// Apator water meters (162 and relatives): after DIF 0x0F, 7 status bytes, then tagged fields until
/// padding (0xFF) or the checksum; tag 0x10 is the total volume in litres (4 bytes, little-endian).
fn apator_fields(t: &mut Telegram, tail: &[u8]) {
    let mut i = 7;
    while let Some(&tag) = tail.get(i) {
        let len = match tag {
            0x10 => {
                if let Some(b) = tail.get(i + 1..i + 5) {
                    let litres = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    put_if_absent(t, "volume_m3", super::records::decimal(i64::from(litres), -3));
                }
                return;
            }
            0x00 | 0x42 | 0xA0 | 0xA1 | 0xA4 | 0xF0 => 4,
            0x01 | 0x44 | 0xA6 | 0xB6..=0xBF | 0xC0..=0xC7 | 0xD0 | 0xD3 => 3,
            0x11 | 0x41 | 0x43 | 0xA7 | 0xA8 | 0xAA..=0xAD | 0xB4 => 2,
            0x40 | 0x8B | 0x8C => 6,
            0x71..=0x7C => 1 + 4 * (usize::from(tag - 0x70) + 1),
            0x80..=0x84 | 0x86 | 0x87 => 10,
            0x85 | 0x88 | 0x8F => 11,
            0x8A => 9,
            0x8E | 0xA3 => 7,
            0xA2 | 0xA5 | 0xA9 | 0xAF => 1,
            0xB0 => 5,
            0xB1 | 0xB3 => 8,
            0xB2 | 0xB5 => 16,
            _ => return,
        };
        i += 1 + len;
    }
}
