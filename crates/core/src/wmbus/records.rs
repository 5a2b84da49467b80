//! The application layer (EN 13757-3 with the OMS extensions): DIF/DIFE/VIF/VIFE data records into metrics.
//!
//! Naming rule (see docs/DECODERS.md): the VIF gives a base name with its unit (`volume_m3`, `energy_kwh`,
//! `power_w`, `flow_m3h`, `flow_temperature_c`, `return_temperature_c`, `hca_units`, `meter_time`, ...);
//! then, in this order, a suffix for each of these that is not the plain value:
//! `_max` / `_min` / `_during_error` (DIF function field), `_forward` / `_backward` (VIFE 0x3B/0x3C),
//! `_storage_N`, `_tariff_N`, `_subunit_N` (non-zero storage number, tariff, subunit). So the current total
//! volume is `volume_m3`, the one at the last due date `volume_m3_storage_1`. Values are converted to the
//! unit in the name (Wh, MWh, GJ and J to kWh; m³/min and m³/s to m³/h). The first record of a name wins;
//! a repeated name, a manufacturer-specific record or one we do not understand becomes a warning.

use serde_json::Value;

use crate::decode::{Metrics, Reader};

use super::WmbusError;

/// One record's data, before scaling.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Text(String),
    /// BCD with a non-digit nibble (a meter's "no value" marker, e.g. all F).
    Invalid,
}

/// What a VIF (with its extensions) means.
#[derive(Debug, Clone, PartialEq)]
enum Meaning {
    /// A number: base name with unit, and the decimal exponent to that unit (plus a non-decimal factor).
    Number { name: String, exp: i32, factor: f64 },
    /// Date (type G) or date and time (type F, I).
    Time { name: &'static str },
    /// Bits/ids kept as an integer or text without a unit.
    Plain { name: &'static str },
    /// Understood but not a metric (e.g. access number, fill).
    Skip,
    /// A manufacturer-specific VIF: left to the vendor decoders.
    Manufacturer,
    /// Not understood: the record is skipped with a warning naming the VIF.
    Unknown(String),
}

fn num(name: &str, exp: i32) -> Meaning {
    Meaning::Number { name: name.to_string(), exp, factor: 1.0 }
}

/// Primary VIF table (EN 13757-3 table 10), without the extension bit.
fn primary(vif: u8) -> Meaning {
    let n = i32::from(vif & 0x07);
    let nn = i32::from(vif & 0x03);
    match vif & 0x7F {
        0x00..=0x07 => num("energy_kwh", n - 6),
        0x08..=0x0F => Meaning::Number { name: "energy_kwh".into(), exp: n, factor: 1.0 / 3.6e6 },
        0x10..=0x17 => num("volume_m3", n - 6),
        0x18..=0x1F => num("mass_kg", n - 3),
        0x20..=0x23 => duration("on_time_h", nn),
        0x24..=0x27 => duration("operating_time_h", nn),
        0x28..=0x2F => num("power_w", n - 3),
        0x30..=0x37 => Meaning::Number { name: "power_w".into(), exp: n, factor: 1.0 / 3600.0 },
        0x38..=0x3F => num("flow_m3h", n - 6),
        0x40..=0x47 => Meaning::Number { name: "flow_m3h".into(), exp: n - 7, factor: 60.0 },
        0x48..=0x4F => Meaning::Number { name: "flow_m3h".into(), exp: n - 9, factor: 3600.0 },
        0x50..=0x57 => num("mass_flow_kgh", n - 3),
        0x58..=0x5B => num("flow_temperature_c", nn - 3),
        0x5C..=0x5F => num("return_temperature_c", nn - 3),
        0x60..=0x63 => num("temperature_difference_k", nn - 3),
        0x64..=0x67 => num("external_temperature_c", nn - 3),
        0x68..=0x6B => num("pressure_bar", nn - 3),
        0x6C => Meaning::Time { name: "meter_date" },
        0x6D => Meaning::Time { name: "meter_time" },
        0x6E => num("hca_units", 0),
        0x70..=0x73 => duration("averaging_duration_h", nn),
        0x74..=0x77 => duration("actuality_duration_h", nn),
        0x78 => Meaning::Plain { name: "fabrication_no" },
        0x79 => Meaning::Plain { name: "enhanced_id" },
        0x7A => Meaning::Plain { name: "bus_address" },
        other => Meaning::Unknown(format!("VIF 0x{other:02x}")),
    }
}

/// A duration VIF (nn = seconds, minutes, hours, days) as hours.
fn duration(name: &str, nn: i32) -> Meaning {
    let factor = [1.0 / 3600.0, 1.0 / 60.0, 1.0, 24.0][nn as usize & 3];
    Meaning::Number { name: name.into(), exp: 0, factor }
}

/// First extension table (VIF 0xFD, EN 13757-3 table 14) with the OMS additions.
fn ext_fd(e: u8) -> Meaning {
    let n = i32::from(e & 0x0F);
    match e & 0x7F {
        0x08..=0x0B => Meaning::Skip, // access number, medium, manufacturer, parameter set
        0x0C => Meaning::Plain { name: "model_version" },
        0x0D => Meaning::Plain { name: "hardware_version" },
        0x0E => Meaning::Plain { name: "firmware_version" },
        0x0F => Meaning::Plain { name: "software_version" },
        0x10 => Meaning::Plain { name: "customer_location" },
        0x11 => Meaning::Plain { name: "customer" },
        0x16 => Meaning::Skip, // password: never a metric
        0x17 => Meaning::Plain { name: "error_flags" },
        0x18 => Meaning::Plain { name: "error_mask" },
        0x1A => Meaning::Plain { name: "digital_output" },
        0x1B => Meaning::Plain { name: "digital_input" },
        0x3A => num("dimensionless", 0),
        0x40..=0x4F => num("voltage_v", n - 9),
        0x50..=0x5F => num("current_a", n - 12),
        0x60 => num("reset_counter", 0),
        0x61 => num("cumulation_counter", 0),
        0x70 => Meaning::Time { name: "battery_change_time" },
        0x71 => num("rssi_dbm", 0),
        0x74 => num("remaining_battery_life_d", 0),
        other => Meaning::Unknown(format!("VIF 0xFD 0x{other:02x}")),
    }
}

/// Second extension table (VIF 0xFB, EN 13757-3 table 12) with the OMS additions.
fn ext_fb(e: u8) -> Meaning {
    let n = i32::from(e & 0x01);
    match e & 0x7F {
        0x00 | 0x01 => num("energy_kwh", n - 1 + 3),
        0x02 | 0x03 => num("reactive_energy_kvarh", n - 1),
        0x08 | 0x09 => Meaning::Number { name: "energy_kwh".into(), exp: n - 1 + 9, factor: 1.0 / 3.6e6 },
        0x10 | 0x11 => num("volume_m3", n + 2),
        0x18 | 0x19 => num("mass_kg", n + 5),
        0x1A | 0x1B => num("humidity_pct", n - 1),
        0x28 | 0x29 => num("power_w", n - 1 + 6),
        0x30 | 0x31 => Meaning::Number { name: "power_w".into(), exp: n - 1 + 9, factor: 1.0 / 3600.0 },
        other => Meaning::Unknown(format!("VIF 0xFB 0x{other:02x}")),
    }
}

/// A record with a manufacturer-specific VIF (0x7F/0xFF), kept for the vendor decoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfctRecord {
    pub dif: u8,
    /// The VIFE bytes after the 0xFF VIF.
    pub vifes: Vec<u8>,
    /// The data field (for variable length data, without its LVAR byte).
    pub data: Vec<u8>,
}

/// What the records leave for the vendor decoders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers<'a> {
    /// Manufacturer-specific data after a DIF 0x0F/0x1F.
    pub tail: Option<&'a [u8]>,
    pub mfct_records: Vec<MfctRecord>,
}

/// Decodes every record of `payload` into `metrics`; returns what only a vendor decoder can read.
pub fn decode<'a>(
    payload: &'a [u8],
    metrics: &mut Metrics,
    warnings: &mut Vec<String>,
) -> Result<Leftovers<'a>, WmbusError> {
    let mut left = Leftovers::default();
    let mut r = Reader::new(payload);
    while !r.is_empty() {
        let dif = r.u8()?;
        match dif {
            0x2F => continue, // idle filler
            0x0F | 0x1F => {
                left.tail = Some(r.rest());
                return Ok(left);
            }
            0x7F => continue, // global readout request
            _ => {}
        }
        let function = (dif >> 4) & 0x03;
        let mut storage = u64::from((dif >> 6) & 1);
        let (mut tariff, mut subunit) = (0u64, 0u64);
        let mut ext = dif & 0x80 != 0;
        let mut shift = 0u32;
        while ext {
            let dife = r.u8()?;
            // EN 13757-3 allows at most 10 DIFEs (and an eleventh would shift the storage number past 64 bits).
            if shift >= 10 {
                return Err(WmbusError::Invalid("more than 10 DIFE bytes".into()));
            }
            storage |= u64::from(dife & 0x0F) << (1 + 4 * shift);
            tariff |= u64::from((dife >> 4) & 0x03) << (2 * shift);
            subunit |= u64::from((dife >> 6) & 1) << shift;
            ext = dife & 0x80 != 0;
            shift += 1;
        }
        let (mut meaning, vifes) = read_vif(&mut r)?;
        let start = payload.len() - r.remaining();
        let raw = read_data(&mut r, dif & 0x0F)?;
        let data = payload.get(start..payload.len() - r.remaining()).unwrap_or(&[]);
        if meaning == Meaning::Manufacturer {
            let data = if dif & 0x0F == 0x0D { data.get(1..).unwrap_or(&[]) } else { data };
            left.mfct_records.push(MfctRecord { dif, vifes, data: data.to_vec() });
            continue;
        }
        let mut suffix = String::new();
        let mut exp_adj = 0;
        for &v in &vifes {
            match v & 0x7F {
                0x3B => suffix.push_str("_forward"),
                0x3C => suffix.push_str("_backward"),
                // 0x00: "no error" code; 0x3A: the VIF's unit is uncorrected.
                0x00 | 0x3A => {}
                0x70..=0x77 => exp_adj += i32::from(v & 0x07) - 6,
                0x7D => exp_adj += 3,
                other => {
                    meaning = Meaning::Unknown(format!("VIFE 0x{other:02x}"));
                }
            }
        }
        suffix.push_str(match function {
            1 => "_max",
            2 => "_min",
            3 => "_during_error",
            _ => "",
        });
        for (v, n) in [(storage, "storage"), (tariff, "tariff"), (subunit, "subunit")] {
            if v != 0 {
                suffix.push_str(&format!("_{n}_{v}"));
            }
        }
        let (name, value) = match meaning {
            Meaning::Skip | Meaning::Manufacturer => continue,
            Meaning::Unknown(what) => {
                warnings.push(format!("record with {what} skipped"));
                continue;
            }
            Meaning::Number { name, exp, factor: f } => match scaled(&raw, exp + exp_adj, f) {
                Some(v) => (name, v),
                None => {
                    warnings.push(format!("{name}{suffix}: no valid value"));
                    continue;
                }
            },
            Meaning::Time { name } => match time(data) {
                Some(v) => (name.to_string(), Value::String(v)),
                None => {
                    warnings.push(format!("{name}{suffix}: invalid date/time"));
                    continue;
                }
            },
            Meaning::Plain { name } => match plain(&raw) {
                Some(v) => (name.to_string(), v),
                None => continue,
            },
        };
        let key = format!("{name}{suffix}");
        if metrics.contains_key(&key) {
            warnings.push(format!("{key}: repeated, first kept"));
        } else {
            metrics.insert(key, value);
        }
    }
    Ok(left)
}

/// Reads the VIF and its VIFEs: what the record means, and the combinable VIFEs that follow.
fn read_vif(r: &mut Reader<'_>) -> Result<(Meaning, Vec<u8>), WmbusError> {
    let vif = r.u8()?;
    let mut ext = vif & 0x80 != 0;
    let meaning = match vif {
        0xFD | 0xFB => {
            let e = r.u8()?;
            ext = e & 0x80 != 0;
            if vif == 0xFD {
                ext_fd(e)
            } else {
                ext_fb(e)
            }
        }
        0x7C | 0xFC => {
            let len = r.u8()?;
            let text = r.take(usize::from(len))?;
            let unit: String = text.iter().rev().map(|&c| char::from(c)).collect();
            Meaning::Unknown(format!("plain-text unit {unit:?}"))
        }
        0x7E | 0xFE => Meaning::Unknown("VIF 0x7e (any)".into()),
        0x7F | 0xFF => Meaning::Manufacturer,
        v => primary(v),
    };
    let mut vifes = Vec::new();
    while ext {
        let e = r.u8()?;
        if vifes.len() >= 10 {
            return Err(WmbusError::Invalid("more than 10 VIFE bytes".into()));
        }
        vifes.push(e);
        ext = e & 0x80 != 0;
        // 0x7F / 0xFF: the VIFEs that follow are manufacturer-specific; the data length is still the DIF's.
    }
    Ok((meaning, vifes))
}

/// Reads the data field the DIF's low nibble announces.
fn read_data(r: &mut Reader<'_>, coding: u8) -> Result<Raw, WmbusError> {
    Ok(match coding {
        0x0 | 0x8 => Raw::Bytes(Vec::new()),
        0x1 => Raw::Int(i64::from(r.i8()?)),
        0x2 => Raw::Int(i64::from(r.i16_le()?)),
        0x3 => Raw::Int(sign_extend(r.take(3)?)),
        0x4 => Raw::Int(i64::from(r.u32_le()? as i32)),
        0x5 => Raw::Float(f64::from(r.f32_le()?)),
        0x6 => Raw::Int(sign_extend(r.take(6)?)),
        0x7 => Raw::Int(sign_extend(r.take(8)?)),
        0x9 => bcd(r.take(1)?),
        0xA => bcd(r.take(2)?),
        0xB => bcd(r.take(3)?),
        0xC => bcd(r.take(4)?),
        0xE => bcd(r.take(6)?),
        0xD => {
            let lvar = r.u8()?;
            match lvar {
                0x00..=0xBF => {
                    let t = r.take(usize::from(lvar))?;
                    Raw::Text(
                        t.iter()
                            .rev()
                            .filter(|c| c.is_ascii_graphic() || **c == b' ')
                            .map(|&c| char::from(c))
                            .collect(),
                    )
                }
                0xC0..=0xC9 => bcd(r.take(usize::from(lvar - 0xC0))?),
                0xD0..=0xD9 => match bcd(r.take(usize::from(lvar - 0xD0))?) {
                    Raw::Int(v) => Raw::Int(-v),
                    other => other,
                },
                0xE0..=0xEF => Raw::Bytes(r.take(usize::from(lvar - 0xE0))?.to_vec()),
                0xF0..=0xF4 => Raw::Bytes(r.take(4 * usize::from(lvar - 0xEC))?.to_vec()),
                0xF5 => Raw::Bytes(r.take(48)?.to_vec()),
                0xF6 => Raw::Bytes(r.take(64)?.to_vec()),
                _ => return Err(WmbusError::Invalid(format!("reserved LVAR 0x{lvar:02x}"))),
            }
        }
        _ => return Err(WmbusError::Invalid("special DIF in a record".into())),
    })
}

/// Little-endian two's complement integer of 1..=8 bytes.
fn sign_extend(b: &[u8]) -> i64 {
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate() {
        v |= u64::from(x) << (8 * i);
    }
    let bits = 8 * b.len() as u32;
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        v |= u64::MAX << bits;
    }
    v as i64
}

/// Packed BCD, least significant byte first; a high nibble 0xF in the last byte means negative.
fn bcd(b: &[u8]) -> Raw {
    let mut v: i64 = 0;
    let mut negative = false;
    for (i, &x) in b.iter().enumerate().rev() {
        let (hi, lo) = (x >> 4, x & 0x0F);
        let hi = if i + 1 == b.len() && hi == 0x0F {
            negative = true;
            0
        } else {
            hi
        };
        if hi > 9 || lo > 9 {
            return Raw::Invalid;
        }
        v = v * 100 + i64::from(hi) * 10 + i64::from(lo);
    }
    Raw::Int(if negative { -v } else { v })
}

/// Scales a raw number by 10^exp and `factor`. Decimal scaling divides by a power of ten so that
/// 12345 × 10⁻³ prints as 12.345, not 12.345000000000001.
fn scaled(raw: &Raw, exp: i32, factor: f64) -> Option<Value> {
    let v = match raw {
        Raw::Int(i) if exp >= 0 && factor == 1.0 => {
            let p = 10i64.checked_pow(exp as u32)?;
            return i.checked_mul(p).map(Value::from);
        }
        Raw::Int(i) => *i as f64,
        Raw::Float(f) => *f,
        _ => return None,
    };
    let v = if exp >= 0 { v * 10f64.powi(exp) } else { v / 10f64.powi(-exp) };
    let v = if factor == 1.0 { v } else { crate::decode::round_to(v * factor, 6) };
    serde_json::Number::from_f64(v).map(Value::Number)
}

/// `v` × 10^exp as a JSON number, exact to the decimal (12345, -3 → 12.345).
pub fn decimal(v: i64, exp: i32) -> Value {
    scaled(&Raw::Int(v), exp, 1.0).unwrap_or(Value::Null)
}

fn plain(raw: &Raw) -> Option<Value> {
    match raw {
        Raw::Int(i) => Some(Value::from(*i)),
        Raw::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number),
        Raw::Text(t) => Some(Value::String(t.clone())),
        Raw::Bytes(b) if !b.is_empty() => Some(Value::String(hex::encode(b))),
        _ => None,
    }
}

/// Date (type G, 2 bytes), date and time (type F, 4 bytes) or with seconds (type I, 6 bytes) as
/// `YYYY-MM-DD` / `YYYY-MM-DDTHH:MM[:SS]` (the meter's local time, no zone). `None` if the meter marks it
/// invalid or a field is out of range.
fn time(b: &[u8]) -> Option<String> {
    let year = |d: u8, m: u8| 2000 + u32::from(((d & 0xE0) >> 5) | ((m & 0xF0) >> 1));
    let date = |d: u8, m: u8| -> Option<String> {
        let (day, month) = (d & 0x1F, m & 0x0F);
        if day == 0 || month == 0 || month > 12 {
            return None;
        }
        Some(format!("{:04}-{month:02}-{day:02}", year(d, m)))
    };
    match *b {
        [d, m] => date(d, m),
        [mi, h, d, m] => {
            let (min, hour) = (mi & 0x3F, h & 0x1F);
            if mi & 0x80 != 0 || min > 59 || hour > 23 {
                return None; // bit 7 of the minute byte: time invalid
            }
            Some(format!("{}T{hour:02}:{min:02}", date(d, m)?))
        }
        [s, mi, h, d, m, _] => {
            let (sec, min, hour) = (s & 0x3F, mi & 0x3F, h & 0x1F);
            if sec > 59 || min > 59 || hour > 23 {
                return None;
            }
            Some(format!("{}T{hour:02}:{min:02}:{sec:02}", date(d, m)?))
        }
        _ => None,
    }
}
