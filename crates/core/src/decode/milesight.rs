//! Milesight channel/type TLV devices (FPort 85).
//!
//! A payload is a sequence of `channel(1) type(1) data(N)` records; N follows from the pair.
//! Multi-byte values are little-endian. Channel 0xFF carries device attributes shared by all
//! models. A pair the model does not define is `DecodeError::UnknownChannel` (its length is
//! unknown, so the rest of the payload cannot be parsed).

use serde_json::{Map, Value};

use super::{num, put_bool, put_f, put_int, put_str, round_to, DecodeError, Decoded, Metrics, Reader};

pub(crate) const FPORT: u8 = 85;

/// A model's handler for one record; `Ok(false)` = pair not defined for this model.
type Channel = fn(u8, u8, &mut Reader, &mut Decoded) -> Result<bool, DecodeError>;

fn decode_tlv(f_port: u8, payload: &[u8], model: Channel) -> Result<Decoded, DecodeError> {
    if f_port != FPORT {
        return Err(DecodeError::UnsupportedPort(f_port));
    }
    if payload.is_empty() {
        return Err(DecodeError::TooShort { need: 2, got: 0 });
    }
    let mut r = Reader::new(payload);
    let mut d = Decoded::new();
    while !r.is_empty() {
        let channel = r.u8()?;
        let kind = r.u8()?;
        if !attribute(channel, kind, &mut r, &mut d)? && !model(channel, kind, &mut r, &mut d)? {
            return Err(DecodeError::UnknownChannel { channel, kind });
        }
    }
    Ok(d)
}

/// Channel 0xFF: device attributes (sent after join / on request).
fn attribute(channel: u8, kind: u8, r: &mut Reader, d: &mut Decoded) -> Result<bool, DecodeError> {
    if channel != 0xff {
        return Ok(false);
    }
    let m = &mut d.metrics;
    match kind {
        0x01 => put_int(m, "protocol_version", i64::from(r.u8()?)),
        0x08 => put_str(m, "sn", hex::encode(r.take(6)?)),
        0x16 => put_str(m, "sn", hex::encode(r.take(8)?)),
        0x09 => {
            let (major, minor) = (r.u8()?, r.u8()?);
            put_str(m, "hardware_version", format!("{major:x}.{}", minor >> 4));
        }
        0x0a => {
            let (major, minor) = (r.u8()?, r.u8()?);
            put_str(m, "firmware_version", format!("{major:x}.{minor:x}"));
        }
        0x1f => {
            let v = r.take(4)?;
            let parts: Vec<String> = v.iter().map(|b| b.to_string()).collect();
            put_str(m, "firmware_version", parts.join("."));
        }
        0xff => {
            let (major, minor) = (r.u8()?, r.u8()?);
            put_str(m, "tsl_version", format!("{major}.{minor}"));
        }
        0x0f => {
            let class = match r.u8()? {
                0 => "class_a",
                1 => "class_b",
                2 => "class_c",
                3 => "class_c_to_b",
                _ => "unknown",
            };
            put_str(m, "lorawan_class", class);
        }
        0xfe => {
            r.u8()?;
            put_bool(m, "reset_event", true);
        }
        0x0b => {
            r.u8()?;
            put_str(m, "device_status", "on");
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn battery(r: &mut Reader, m: &mut Metrics) -> Result<(), DecodeError> {
    put_int(m, "battery_pct", i64::from(r.u8()?));
    Ok(())
}

fn temperature(r: &mut Reader, m: &mut Metrics) -> Result<(), DecodeError> {
    put_f(m, "temperature_c", f64::from(r.i16_le()?) / 10.0, 1);
    Ok(())
}

fn alarm_label(v: u8) -> String {
    match v {
        0 => "threshold_alarm_release".into(),
        1 => "threshold_alarm".into(),
        other => format!("alarm_{other}"),
    }
}

/// An active alarm is a warning; its release is not.
fn warn_alarm(d: &mut Decoded, what: &str, alarm: &str) {
    if alarm != "threshold_alarm_release" {
        d.warnings.push(format!("{what} {alarm}"));
    }
}

fn position(r: &mut Reader, m: &mut Metrics) -> Result<(), DecodeError> {
    let p = match r.u8()? {
        0 => "normal",
        1 => "tilt",
        _ => "unknown",
    };
    put_str(m, "position", p);
    Ok(())
}

// EM310-UDL: ultrasonic distance.
fn em310_udl(ch: u8, ty: u8, r: &mut Reader, d: &mut Decoded) -> Result<bool, DecodeError> {
    let m = &mut d.metrics;
    match (ch, ty) {
        (0x01, 0x75) => battery(r, m)?,
        (0x03, 0x82) => put_int(m, "distance_mm", i64::from(r.u16_le()?)),
        (0x04, 0x00) => position(r, m)?,
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn decode_em310_udl(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    decode_tlv(f_port, payload, em310_udl)
}

// EM400-UDL: ultrasonic distance + temperature, with threshold alarms.
fn em400_udl(ch: u8, ty: u8, r: &mut Reader, d: &mut Decoded) -> Result<bool, DecodeError> {
    match (ch, ty) {
        (0x01, 0x75) => battery(r, &mut d.metrics)?,
        (0x03, 0x67) => temperature(r, &mut d.metrics)?,
        (0x04, 0x82) => put_int(&mut d.metrics, "distance_mm", i64::from(r.u16_le()?)),
        (0x05, 0x00) => position(r, &mut d.metrics)?,
        (0x83, 0x67) => {
            temperature(r, &mut d.metrics)?;
            let alarm = alarm_label(r.u8()?);
            warn_alarm(d, "temperature", &alarm);
            put_str(&mut d.metrics, "temperature_alarm", alarm);
        }
        (0x84, 0x82) => {
            put_int(&mut d.metrics, "distance_mm", i64::from(r.u16_le()?));
            let alarm = alarm_label(r.u8()?);
            warn_alarm(d, "distance", &alarm);
            put_str(&mut d.metrics, "distance_alarm", alarm);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn decode_em400_udl(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    decode_tlv(f_port, payload, em400_udl)
}

// EM500-SMTC: soil moisture, temperature, electrical conductivity.
fn em500_smtc(ch: u8, ty: u8, r: &mut Reader, d: &mut Decoded) -> Result<bool, DecodeError> {
    match (ch, ty) {
        (0x01, 0x75) => battery(r, &mut d.metrics)?,
        (0x03, 0x67) => temperature(r, &mut d.metrics)?,
        (0x04, 0x68) => put_f(&mut d.metrics, "soil_moisture_pct", f64::from(r.u8()?) / 2.0, 1),
        (0x04, 0xca) => put_f(&mut d.metrics, "soil_moisture_pct", f64::from(r.u16_le()?) / 10.0, 1),
        (0x05, 0x7f) => put_int(&mut d.metrics, "soil_conductivity_us_cm", i64::from(r.u16_le()?)),
        (0x83, 0xd7) => {
            temperature(r, &mut d.metrics)?;
            put_f(&mut d.metrics, "temperature_change_c", f64::from(r.i16_le()?) / 10.0, 1);
            let alarm = alarm_label(r.u8()?);
            warn_alarm(d, "temperature", &alarm);
            put_str(&mut d.metrics, "temperature_alarm", alarm);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn decode_em500_smtc(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    decode_tlv(f_port, payload, em500_smtc)
}

// WS202: PIR and daylight.
fn ws202(ch: u8, ty: u8, r: &mut Reader, d: &mut Decoded) -> Result<bool, DecodeError> {
    let m = &mut d.metrics;
    match (ch, ty) {
        (0x01, 0x75) => battery(r, m)?,
        (0x03, 0x00) => put_bool(m, "motion", r.u8()? == 1),
        (0x04, 0x00) => {
            let v = if r.u8()? == 1 { "light" } else { "dark" };
            put_str(m, "daylight", v);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn decode_ws202(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    decode_tlv(f_port, payload, ws202)
}

// WS203: occupancy (PIR), temperature, humidity, with history records.
fn ws203(ch: u8, ty: u8, r: &mut Reader, d: &mut Decoded) -> Result<bool, DecodeError> {
    match (ch, ty) {
        (0x01, 0x75) => battery(r, &mut d.metrics)?,
        (0x03, 0x67) => temperature(r, &mut d.metrics)?,
        (0x04, 0x68) => put_f(&mut d.metrics, "humidity_pct", f64::from(r.u8()?) / 2.0, 1),
        (0x05, 0x00) => put_bool(&mut d.metrics, "occupancy", r.u8()? == 1),
        (0x83, 0x67) => {
            temperature(r, &mut d.metrics)?;
            let alarm = alarm_label(r.u8()?);
            warn_alarm(d, "temperature", &alarm);
            put_str(&mut d.metrics, "temperature_alarm", alarm);
        }
        (0x20, 0xce) => {
            let timestamp = r.u32_le()?;
            let report_type = match r.u8()? {
                0 => "temperature_resume".to_string(),
                1 => "temperature_threshold".to_string(),
                2 => "pir_idle".to_string(),
                3 => "pir_occupancy".to_string(),
                4 => "period".to_string(),
                other => format!("report_type_{other}"),
            };
            let occupied = r.u8()? == 1;
            let t = f64::from(r.i16_le()?) / 10.0;
            let h = f64::from(r.u8()?) / 2.0;
            let mut e = Map::new();
            e.insert("timestamp".into(), Value::from(timestamp));
            e.insert("report_type".into(), Value::String(report_type));
            e.insert("occupancy".into(), Value::Bool(occupied));
            e.insert("temperature_c".into(), num(round_to(t, 1)));
            e.insert("humidity_pct".into(), num(round_to(h, 1)));
            let history = d.metrics.entry("history").or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = history {
                a.push(Value::Object(e));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn decode_ws203(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    decode_tlv(f_port, payload, ws203)
}

// VS121: AI people counter.
fn vs121(ch: u8, ty: u8, r: &mut Reader, d: &mut Decoded) -> Result<bool, DecodeError> {
    let m = &mut d.metrics;
    match (ch, ty) {
        (0x04, 0xc9) => {
            let all = r.u8()?;
            let regions = r.u8()?;
            let mask = r.u16_be()?;
            put_int(m, "people_count", i64::from(all));
            put_bool(m, "occupancy", all > 0);
            put_int(m, "region_count", i64::from(regions));
            for i in 0..regions.min(16) {
                put_int(m, &format!("region_{}", i + 1), i64::from((mask >> i) & 1));
            }
        }
        (0x05, 0xcc) => {
            put_int(m, "people_in", i64::from(r.u16_le()?));
            put_int(m, "people_out", i64::from(r.u16_le()?));
        }
        (0x06, 0xcd) => put_int(m, "people_count_max", i64::from(r.u8()?)),
        (0x07 | 0x08, 0xd5) => {
            let first = if ch == 0x07 { 1 } else { 9 };
            for i in 0..8 {
                put_int(m, &format!("region_{}_count", first + i), i64::from(r.u8()?));
            }
        }
        (0x09..=0x0c, 0xda) => {
            let from = char::from(b'a' + (ch - 0x09));
            for to in ['a', 'b', 'c', 'd'] {
                put_int(m, &format!("{from}_to_{to}"), i64::from(r.u16_le()?));
            }
        }
        (0x0d, 0xcc) => {
            put_int(m, "people_total_in", i64::from(r.u16_le()?));
            put_int(m, "people_total_out", i64::from(r.u16_le()?));
        }
        (0x0e, 0xe4) => {
            let region = r.u8()?;
            put_int(m, &format!("region_{region}_dwell_time_avg"), i64::from(r.u16_le()?));
            put_int(m, &format!("region_{region}_dwell_time_max"), i64::from(r.u16_le()?));
        }
        (0x0f, 0x85) => put_int(m, "timestamp", i64::from(r.u32_le()?)),
        _ => return Ok(false),
    }
    Ok(true)
}

pub(crate) fn decode_vs121(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    decode_tlv(f_port, payload, vs121)
}
