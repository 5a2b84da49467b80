//! Decentlab devices, protocol version 2 (FPort 1).
//!
//! `version(1) = 2, device_id(2 BE), flags(2 BE)`, then for each sensor whose flag bit is set
//! (bit 0 = first sensor) that sensor's fixed number of big-endian `u16` words. Every device's
//! last sensor is the battery voltage (one word, mV).

use super::{put_f, put_int, DecodeError, Decoded, Metrics, Reader};

pub(crate) const FPORT_DATA: u8 = 1;
const PROTOCOL_VERSION: u8 = 2;

/// One sensor of a device: how many words it sends and how they become metrics.
struct Sensor {
    words: usize,
    convert: fn(&[u16], &mut Metrics),
}

fn battery(x: &[u16], m: &mut Metrics) {
    if let Some(v) = x.first() {
        put_f(m, "battery_v", f64::from(*v) / 1000.0, 3);
    }
}

const BATTERY: Sensor = Sensor { words: 1, convert: battery };

fn decode_v2(f_port: u8, payload: &[u8], sensors: &[Sensor]) -> Result<Decoded, DecodeError> {
    if f_port != FPORT_DATA {
        return Err(DecodeError::UnsupportedPort(f_port));
    }
    let mut r = Reader::new(payload);
    let version = r.u8()?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Invalid(format!("protocol version {version}, expected {PROTOCOL_VERSION}")));
    }
    let device_id = r.u16_be()?;
    let flags = r.u16_be()?;
    let mut d = Decoded::new();
    put_int(&mut d.metrics, "protocol_version", i64::from(version));
    put_int(&mut d.metrics, "device_id", i64::from(device_id));
    let known = u16::try_from((1u32 << sensors.len()) - 1).unwrap_or(u16::MAX);
    if flags & !known != 0 {
        return Err(DecodeError::Invalid(format!("sensor flags 0x{flags:04x} name sensors this device does not have")));
    }
    let mut words = Vec::new();
    for (i, sensor) in sensors.iter().enumerate() {
        if flags & (1 << i) == 0 {
            continue;
        }
        words.clear();
        for _ in 0..sensor.words {
            words.push(r.u16_be()?);
        }
        (sensor.convert)(&words, &mut d.metrics);
    }
    if !r.is_empty() {
        d.warnings.push(format!("{} unexpected trailing bytes", r.remaining()));
    }
    Ok(d)
}

fn word(x: &[u16], i: usize) -> f64 {
    x.get(i).copied().map(f64::from).unwrap_or(f64::NAN)
}

// DL-MBX: ultrasonic distance.
fn mbx_distance(x: &[u16], m: &mut Metrics) {
    put_f(m, "distance_mm", word(x, 0), 0);
    put_f(m, "number_of_valid_samples", word(x, 1), 0);
}

pub(crate) fn decode_dl_mbx(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    const S: &[Sensor] = &[Sensor { words: 2, convert: mbx_distance }, BATTERY];
    decode_v2(f_port, payload, S)
}

// DL-LID: laser distance statistics.
fn lid_distance(x: &[u16], m: &mut Metrics) {
    const NAMES: [&str; 9] = [
        "distance_mm", // distance average
        "distance_minimum_mm",
        "distance_maximum_mm",
        "distance_median_mm",
        "distance_10th_percentile_mm",
        "distance_25th_percentile_mm",
        "distance_75th_percentile_mm",
        "distance_90th_percentile_mm",
        "distance_most_frequent_value_mm",
    ];
    for (i, name) in NAMES.iter().enumerate() {
        put_f(m, name, word(x, i), 0);
    }
    put_f(m, "number_of_samples", word(x, 9), 0);
    put_f(m, "total_acquisition_time_ms", word(x, 10) / 1.024, 7);
}

pub(crate) fn decode_dl_lid(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    const S: &[Sensor] = &[Sensor { words: 11, convert: lid_distance }, BATTERY];
    decode_v2(f_port, payload, S)
}

// DL-SMTP: soil moisture and temperature at 8 depths, words interleaved (moisture, temperature).
fn smtp_profile(x: &[u16], m: &mut Metrics) {
    for depth in 0..8 {
        put_f(m, &format!("soil_moisture_at_depth_{depth}"), (word(x, 2 * depth) - 2500.0) / 500.0, 3);
        put_f(m, &format!("soil_temperature_at_depth_{depth}_c"), (word(x, 2 * depth + 1) - 32768.0) / 100.0, 2);
    }
}

pub(crate) fn decode_dl_smtp(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    const S: &[Sensor] = &[Sensor { words: 16, convert: smtp_profile }, BATTERY];
    decode_v2(f_port, payload, S)
}

// DL-5TM: METER 5TM soil moisture (Topp equation on the dielectric permittivity) and temperature.
fn tm5_soil(x: &[u16], m: &mut Metrics) {
    let eps = word(x, 0) / 50.0;
    let vwc = 0.0000043 * eps.powi(3) - 0.00055 * eps.powi(2) + 0.0292 * eps - 0.053;
    put_f(m, "dielectric_permittivity", eps, 2);
    // m³/m³ → %.
    put_f(m, "soil_moisture_pct", vwc * 100.0, 8);
    put_f(m, "temperature_c", (word(x, 1) - 400.0) / 10.0, 1);
}

pub(crate) fn decode_dl_5tm(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    const S: &[Sensor] = &[Sensor { words: 2, convert: tm5_soil }, BATTERY];
    decode_v2(f_port, payload, S)
}
