//! OBIS values out of SML frames, and their mapping to reading metrics (table in `mod.rs`).

use serde_json::{Map, Number, Value};

use super::parse::{parse_frame, SmlBody, SmlValue};
use super::SmlError;

/// One value of a GetListResponse's `valList`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObisValue {
    /// OBIS code A-B:C.D.E*F, e.g. `[1, 0, 1, 8, 0, 255]` = "1-0:1.8.0*255" (see [`format_obis`]).
    pub obis: [u8; 6],
    /// `raw * 10^scaler`. `NaN` for octet-string values (see `octets`), so that an identifier is never
    /// mistaken for a measurement (note that `NaN != NaN` for the derived `PartialEq`).
    pub value: f64,
    /// The integer exactly as sent (signed or unsigned, 1 to 8 bytes); booleans are 0/1, octet strings 0.
    pub raw: i128,
    /// 0 when the meter sent none.
    pub scaler: i8,
    /// DLMS unit code (27 W, 30 Wh, 33 A, 35 V, 44 Hz, ...), `None` when the meter sent none.
    pub unit: Option<u8>,
    /// For octet-string values (server id, manufacturer, firmware version, ...): the bytes.
    pub octets: Option<Vec<u8>>,
}

impl ObisValue {
    /// "1-0:1.8.0*255".
    pub fn obis_string(&self) -> String {
        format_obis(&self.obis)
    }

    /// True for integer (and boolean) values, false for octet strings.
    pub fn is_numeric(&self) -> bool {
        self.octets.is_none()
    }
}

/// "A-B:C.D.E*F", e.g. "1-0:1.8.0*255".
pub fn format_obis(o: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *o;
    format!("{a}-{b}:{c}.{d}.{e}*{f}")
}

/// Parses "1-0:1.8.0*255" (the `*F` part may be omitted and then means 255).
pub fn parse_obis(s: &str) -> Option<[u8; 6]> {
    let (a, rest) = s.split_once('-')?;
    let (b, rest) = rest.split_once(':')?;
    let (cde, f) = match rest.split_once('*') {
        Some((cde, f)) => (cde, f),
        None => (rest, "255"),
    };
    let mut it = cde.split('.');
    let (c, d, e) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some([a.parse().ok()?, b.parse().ok()?, c.parse().ok()?, d.parse().ok()?, e.parse().ok()?, f.parse().ok()?])
}

/// `raw * 10^scaler`, dividing for negative scalers so that e.g. 54301577 * 10^-1 is 5430157.7 exactly
/// as printed.
pub fn scale(raw: i128, scaler: i8) -> f64 {
    let r = raw as f64;
    if scaler < 0 {
        r / 10f64.powi(-i32::from(scaler))
    } else {
        r * 10f64.powi(i32::from(scaler))
    }
}

/// Every `valList` entry of every GetListResponse in one frame payload, in order. Entries whose
/// `objName` is not 6 bytes long, or whose value is a list (`SML_ListType`), are left out.
pub fn values(frame: &[u8]) -> Result<Vec<ObisValue>, SmlError> {
    let messages = parse_frame(frame)?;
    let mut out = Vec::new();
    for m in &messages {
        let SmlBody::GetListResponse(resp) = &m.body else {
            continue;
        };
        for e in &resp.entries {
            let Ok(obis) = <[u8; 6]>::try_from(e.obj_name.as_slice()) else {
                continue;
            };
            let scaler = e.scaler.unwrap_or(0);
            let (raw, octets) = match &e.value {
                SmlValue::Int { value, .. } => (i128::from(*value), None),
                SmlValue::UInt { value, .. } => (i128::from(*value), None),
                SmlValue::Bool(b) => (i128::from(*b), None),
                SmlValue::Octets(o) => (0, Some(o.clone())),
                SmlValue::Absent => (0, Some(Vec::new())),
                SmlValue::List(_) => continue,
            };
            let value = if octets.is_some() { f64::NAN } else { scale(raw, scaler) };
            out.push(ObisValue { obis, value, raw, scaler, unit: e.unit, octets });
        }
    }
    Ok(out)
}

/// DLMS unit codes used below.
pub mod unit {
    pub const W: u8 = 27;
    pub const WH: u8 = 30;
    pub const A: u8 = 33;
    pub const V: u8 = 35;
    pub const HZ: u8 = 44;
}

/// (C, D, E) of an electricity OBIS code, the metric name and the DLMS unit it must carry.
const TABLE: &[(u8, u8, u8, &str, u8)] = &[
    (1, 8, 0, "energy_import_wh", unit::WH),
    (2, 8, 0, "energy_export_wh", unit::WH),
    (16, 7, 0, "power_w", unit::W),
    (1, 7, 0, "power_import_w", unit::W),
    (2, 7, 0, "power_export_w", unit::W),
    (36, 7, 0, "power_l1_w", unit::W),
    (56, 7, 0, "power_l2_w", unit::W),
    (76, 7, 0, "power_l3_w", unit::W),
    (32, 7, 0, "voltage_l1_v", unit::V),
    (52, 7, 0, "voltage_l2_v", unit::V),
    (72, 7, 0, "voltage_l3_v", unit::V),
    (31, 7, 0, "current_l1_a", unit::A),
    (51, 7, 0, "current_l2_a", unit::A),
    (71, 7, 0, "current_l3_a", unit::A),
    (14, 7, 0, "frequency_hz", unit::HZ),
];

fn metric_name(o: &[u8; 6]) -> Option<(String, u8)> {
    let [a, _b, c, d, e, f] = *o;
    if a != 1 || f != 255 {
        return None;
    }
    if let Some(&(.., name, u)) = TABLE.iter().find(|&&(tc, td, te, ..)| (tc, td, te) == (c, d, e)) {
        return Some((name.to_string(), u));
    }
    match (c, d, e) {
        (1, 8, t @ 1..=9) => Some((format!("energy_import_t{t}_wh"), unit::WH)),
        (2, 8, t @ 1..=9) => Some((format!("energy_export_t{t}_wh"), unit::WH)),
        _ => None,
    }
}

/// Maps OBIS values to reading metrics (table in the `meter` module docs). Only numeric values with
/// A = 1 (electricity) and F = 255 (current value) are mapped; a value whose unit is present but not the
/// metric's unit (e.g. VAh on an energy register) is left out rather than mislabelled; a missing unit is
/// taken as the metric's unit. The first occurrence of a metric wins. If the meter sends no 16.7.0,
/// `power_w` is derived as 1.7.0 − 2.7.0 (2.7.0 taken as 0 when absent). Non-finite values are left out.
pub fn metrics(values: &[ObisValue]) -> Map<String, Value> {
    let mut out = Map::new();
    for v in values.iter().filter(|v| v.is_numeric()) {
        let Some((name, want_unit)) = metric_name(&v.obis) else {
            continue;
        };
        if v.unit.is_some_and(|u| u != want_unit) || out.contains_key(&name) {
            continue;
        }
        if let Some(n) = Number::from_f64(v.value) {
            out.insert(name, Value::Number(n));
        }
    }
    if !out.contains_key("power_w") {
        let get = |k: &str| out.get(k).and_then(Value::as_f64);
        if let Some(import) = get("power_import_w") {
            let net = import - get("power_export_w").unwrap_or(0.0);
            if let Some(n) = Number::from_f64(net) {
                out.insert("power_w".to_string(), Value::Number(n));
            }
        }
    }
    out
}
