//! NAS UL20xx luminaire controller (LCU), firmware 1.1.x (profile `nas-ul20xx-lcu-fw1.1`).
//!
//! Little-endian fields; bit fields are numbered from the least significant bit. Uplink FPorts:
//! 23 status, 26 usage (metering), 50 configuration reports, 60 command responses,
//! 61 alerts/notifications, 99 boot and downlink-error reports.
//!
//! Warnings and errors carry the vendor's own strings (e.g. `dali_connection_error`,
//! `dali_single_1 lamp_failure`) so that alarms look the same as under the vendor codec.
//! A packet whose header is unknown, or that ends early, is `Err`; a packet that decodes with
//! an unsupported part (e.g. an unknown sensor source) is `Ok` with `errors` set.

use serde_json::{Map, Value};

use super::{bit, num, put_bool, put_int, put_str, rfc3339_from_unix, round_to, DecodeError, Decoded, Metrics, Reader};

pub(crate) const FPORT_STATUS: u8 = 23;
pub(crate) const FPORT_USAGE: u8 = 26;
pub(crate) const FPORT_CONFIG: u8 = 50;
pub(crate) const FPORT_COMMAND: u8 = 60;
pub(crate) const FPORT_ALERT: u8 = 61;
pub(crate) const FPORT_SYSTEM: u8 = 99;

const DALI_BROADCAST: u8 = 0xfe;
/// Device time before 2015-01-01 means the LCU clock is not set.
const MIN_VALID_EPOCH: u32 = 1_420_070_400;

/// Manual dimming command (FPort 60, header 0x01): DALI broadcast to `level_pct`.
pub(crate) fn encode_manual_dimming(level_pct: u8) -> (u8, Vec<u8>) {
    (FPORT_COMMAND, vec![0x01, DALI_BROADCAST, level_pct])
}

pub(crate) fn decode(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::TooShort { need: 1, got: 0 });
    }
    let mut r = Reader::new(payload);
    let mut d = Decoded::new();
    match f_port {
        FPORT_STATUS => status(&mut r, &mut d)?,
        FPORT_USAGE => usage(&mut r, &mut d)?,
        FPORT_CONFIG => config(&mut r, &mut d)?,
        FPORT_COMMAND => command(&mut r, &mut d)?,
        FPORT_ALERT => alert(&mut r, &mut d)?,
        FPORT_SYSTEM => system(&mut r, &mut d)?,
        other => return Err(DecodeError::UnsupportedPort(other)),
    }
    if !r.is_empty() {
        d.errors.push("invalid_payload_length_long".into());
    }
    Ok(d)
}

fn invalid(what: &str) -> DecodeError {
    DecodeError::Invalid(what.to_string())
}

/// A DALI / interface address. `ff_name` names 0xFF where the packet gives it a meaning.
fn address(a: u8, ff_name: Option<&str>, d: &mut Decoded) -> String {
    match a {
        0x01 => "analog_0_10v".into(),
        0xfe => "dali_broadcast".into(),
        0xff => match ff_name {
            Some(n) => n.into(),
            None => {
                d.warnings.push("invalid_address".into());
                "invalid".into()
            }
        },
        a if a & 0x01 == 1 => {
            d.warnings.push("invalid_address".into());
            "invalid".into()
        }
        a if a & 0x80 != 0 => format!("dali_group_{}", (a >> 1) & 0x0f),
        a => format!("dali_single_{}", (a >> 1) & 0x3f),
    }
}

fn epoch(secs: u32, d: &mut Decoded) -> String {
    if secs < MIN_VALID_EPOCH {
        d.warnings.push("invalid_timestamp".into());
        "invalid_timestamp".into()
    } else {
        rfc3339_from_unix(secs)
    }
}

/// Why the LCU dims to the level it reports.
fn reason(v: u8, d: &mut Decoded) -> String {
    match v {
        0..=7 => format!("profile_{v}"),
        0x21 => "calendar_day".into(),
        0x22 => "calendar_night".into(),
        0x30..=0x3f => format!("calendar_dawn_step_{}", v - 0x30),
        0x50..=0x5f => format!("calendar_dusk_step_{}", v - 0x50),
        0x70 => "dig_inactive".into(),
        0x71 => "dig_active".into(),
        0x80..=0x87 => format!("light_monitor_step_{}", v - 0x80),
        245 => "relay_off".into(),
        246 => "driver_not_found".into(),
        248 => "fallback_active".into(),
        250 => "ldr_input_active".into(),
        252 => "dig_input_active".into(),
        253 => "manual_active".into(),
        255 => {
            d.errors.push("unknown_reason".into());
            "unknown".into()
        }
        _ => {
            d.errors.push("invalid_reason".into());
            "invalid_reason".into()
        }
    }
}

/// DALI driver status bits, flattened into `obj`. 0xFF = status not available (all false).
fn dali_status(b: u8, addr: &str, obj: &mut Metrics, d: &mut Decoded) {
    const NAMES: [&str; 8] = [
        "driver_error",
        "lamp_failure",
        "lamp_on",
        "limit_error",
        "fade_running",
        "reset_state",
        "missing_short_address",
        "power_failure",
    ];
    const WARN: [bool; 8] = [true, true, false, true, false, true, false, true];
    let b = if b == 0xff { 0 } else { b };
    for (i, name) in (0u8..).zip(NAMES) {
        let on = bit(b, i);
        put_bool(obj, name, on);
        if on && WARN[usize::from(i)] {
            d.warnings.push(format!("{addr} {name}"));
        }
    }
}

/// A dimming level byte: 0xFF is not a level (`None`).
fn level(v: u8) -> Option<i64> {
    (v != 0xff).then_some(i64::from(v))
}

/// Lux from the LCU's logarithmic light sensor code, rounded like the vendor (4 significant
/// digits up to 1000 lx). `None` = sensor unavailable (0xFFFF).
fn light_lux(raw: u16) -> Option<f64> {
    if raw == 0xffff {
        return None;
    }
    let lx = 10f64.powf(f64::from(raw & 0x7fff) / 4000.0) / 1000.0;
    let exp = lx.log10().clamp(0.0, 3.0).trunc();
    // exp is 0..=3, so the cast is exact.
    Some(round_to(lx, 3 - exp as i32))
}

fn status(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    let header = r.u8()?;
    // 0x00: firmware before 1.1.4; 0x01: 1.1.4 and later.
    let legacy = match header {
        0x00 => true,
        0x01 => false,
        _ => return Err(invalid("invalid_packet_type")),
    };
    put_str(&mut d.metrics, "packet_type", "status_packet");
    let t = epoch(r.u32_le()?, d);
    put_str(&mut d.metrics, "device_unix_epoch", t);

    let s = r.u8()?;
    let flags = [
        ("dali_connection_error", bit(s, 1), true),
        ("metering_com_error", bit(s, 5), true),
        ("ext_rtc_warning", bit(s, 6), true),
        ("internal_relay_closed", bit(s, 7), false),
    ];
    for (name, on, warn) in flags {
        put_bool(&mut d.metrics, name, on);
        if on && warn {
            d.warnings.push(name.into());
        }
    }
    if legacy {
        put_bool(&mut d.metrics, "ldr_input_on", bit(s, 2));
        put_bool(&mut d.metrics, "dig_input_on", bit(s, 4));
    } else {
        let s2 = r.u8()?;
        put_bool(&mut d.metrics, "open_drain_output_on", bit(s2, 2));
        put_bool(&mut d.metrics, "lumalink_connected", bit(s2, 6));
        put_bool(&mut d.metrics, "lumalink_connected_after_boot", bit(s2, 7));
    }
    put_int(&mut d.metrics, "downlink_rssi_dbm", -i64::from(r.u8()?));
    put_int(&mut d.metrics, "downlink_snr_db", i64::from(r.i8()?));
    put_int(&mut d.metrics, "mcu_temperature_c", i64::from(r.i8()?));

    let mut alerts_sent = true;
    if legacy {
        let b = r.u8()?;
        put_bool(&mut d.metrics, "open_drain_output_on", bit(b, 2));
        alerts_sent = bit(b, 4);
        if bit(b, 1) {
            put_int(&mut d.metrics, "ldr_input_value", i64::from(r.u8()?));
        }
    }
    if alerts_sent {
        let a = r.u8()?;
        let alerts = [
            ("voltage_alert_in_24h", bit(a, 4)),
            ("lamp_error_alert_in_24h", bit(a, 5)),
            ("power_alert_in_24h", bit(a, 6)),
            ("power_factor_alert_in_24h", bit(a, 7)),
        ];
        for (name, on) in alerts {
            put_bool(&mut d.metrics, name, on);
            if on {
                d.warnings.push(name.into());
            }
        }
    }
    if !legacy {
        sensor_sources(r, d)?;
    }

    let mut sources = Vec::new();
    let mut lamp_level = None;
    while !r.is_empty() {
        let addr = address(r.u8()?, None, d);
        let why = reason(r.u8()?, d);
        let lvl = level(r.u8()?);
        let st = r.u8()?;
        let mut e = Map::new();
        e.insert("address".into(), Value::String(addr.clone()));
        e.insert("reason".into(), Value::String(why));
        if let Some(l) = lvl {
            e.insert("lamp_level_pct".into(), Value::from(l));
            lamp_level = lamp_level.or(Some(l));
        }
        dali_status(st, &addr, &mut e, d);
        sources.push(Value::Object(e));
    }
    if let Some(l) = lamp_level {
        put_int(&mut d.metrics, "lamp_level_pct", l);
    }
    d.metrics.insert("dimming_source".into(), Value::Array(sources));
    Ok(())
}

/// Status sensor sources: a byte count, then `header(1) value(n)` items.
fn sensor_sources(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    let mut left = usize::from(r.u8()?);
    while left > 0 {
        let header = r.u8()?;
        left -= 1;
        let used = match header {
            0x01 => {
                put_int(&mut d.metrics, "ldr_input", i64::from(r.u8()?));
                1
            }
            0x02 | 0x03 => {
                let key = if header == 0x02 { "illuminance_lux" } else { "d4i_illuminance_lux" };
                match light_lux(r.u16_le()?) {
                    Some(lx) => {
                        d.metrics.insert(key.into(), num(lx));
                    }
                    None => d.warnings.push(format!("{key} unavailable")),
                }
                2
            }
            0x04 => {
                put_bool(&mut d.metrics, "dig_input_1_on", bit(r.u8()?, 0));
                1
            }
            0x08 => {
                let deg = r.u8()?;
                if deg != 0xff {
                    put_int(&mut d.metrics, "tilt_sensor_deg", i64::from(deg));
                }
                1
            }
            _ => {
                d.errors.push("unsupported_sensor_source".into());
                r.take(left)?;
                left = 0;
                0
            }
        };
        if used > left {
            d.errors.push("error_decoding_sensor_source".into());
            break;
        }
        left -= used;
    }
    Ok(())
}

fn usage(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    if r.u8()? != 0x00 {
        return Err(invalid("invalid_packet_type"));
    }
    put_str(&mut d.metrics, "packet_type", "usage_packet");
    let mut entries = Vec::new();
    while !r.is_empty() {
        let addr = address(r.u8()?, Some("internal_measurement"), d);
        let fields = r.u8()?;
        let mut e = Map::new();
        e.insert("address".into(), Value::String(addr));
        if bit(fields, 0) {
            e.insert("energy_import_wh".into(), Value::from(r.u32_le()?));
        }
        if bit(fields, 1) {
            e.insert("power_w".into(), Value::from(r.u16_le()?));
        }
        if bit(fields, 2) {
            e.insert("load_side_energy_wh".into(), Value::from(r.u32_le()?));
        }
        if bit(fields, 3) {
            e.insert("load_side_power_w".into(), Value::from(r.u16_le()?));
        }
        if bit(fields, 4) {
            let pf = r.u8()?;
            if pf != 0xff {
                e.insert("power_factor".into(), num(f64::from(pf) / 100.0));
            }
        }
        if bit(fields, 5) {
            e.insert("voltage_v".into(), Value::from(r.u8()?));
        }
        if bit(fields, 6) {
            let h = (f64::from(r.u32_le()?) / 3600.0).round();
            e.insert("driver_operating_time_h".into(), num(h));
        }
        if bit(fields, 7) {
            let h = round_to(f64::from(r.u32_le()?) / 3600.0, 1);
            e.insert("lamp_on_time_h".into(), num(h));
        }
        entries.push(e);
    }
    // Top-level metrics: the LCU's own meter if it reports the quantity, else the first driver.
    for key in [
        "energy_import_wh",
        "power_w",
        "voltage_v",
        "power_factor",
        "load_side_energy_wh",
        "load_side_power_w",
        "lamp_on_time_h",
    ] {
        let internal =
            entries.iter().filter(|e| e.get("address").and_then(Value::as_str) == Some("internal_measurement"));
        let any = entries.iter();
        if let Some(v) = internal.chain(any).find_map(|e| e.get(key)) {
            d.metrics.insert(key.into(), v.clone());
        }
    }
    d.metrics.insert("consumption".into(), Value::Array(entries.into_iter().map(Value::Object).collect()));
    Ok(())
}

/// FPort 50: configuration reports. Only the packet type is decoded natively.
fn config(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    let name = match r.u8()? {
        0x01 => "deprecated_ldr_input_config_packet",
        0x03 => "deprecated_dig_input_config_packet",
        0x05 => "open_drain_output_config_packet",
        0x07 => "status_config_packet",
        0x09 => "time_config_packet",
        0x0b => "usage_config_packet",
        0x0d => "boot_delay_config_packet",
        0x15 => "onboard_led_config_packet",
        0x16 => "metering_alert_config_packet",
        0x20 => "calendar_config_packet",
        0x21 => "profile_config_packet",
        0x22 => "fade_config_packet",
        0x23 => "holiday_config_packet",
        0x24 => "dali_monitor_config_packet",
        0x25 => "fallback_dim_config_packet",
        0x26 => "location_config_packet",
        0x27 => "lumalink_config_packet",
        0x28 => "dig_input_config_packet",
        0x29 => "light_sensor_config_packet",
        0x2a => "dim_notify_config_packet",
        0x2b => "interface_type_config_packet",
        0x52 => "multicast_config_packet",
        0x53 => "multicast_fcnt_config_packet",
        0xfe => "chained_config_packet",
        0xff => "clear_config_packet",
        _ => return Err(invalid("invalid_packet_type")),
    };
    put_str(&mut d.metrics, "packet_type", name);
    r.rest();
    d.warnings.push("configuration contents are not decoded natively".into());
    Ok(())
}

fn hex_upper(b: &[u8]) -> Value {
    Value::String(hex::encode_upper(b))
}

/// FPort 60: responses to commands.
fn command(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    let m_type = |d: &mut Decoded, t: &str| put_str(&mut d.metrics, "packet_type", t);
    match r.u8()? {
        header @ (0x01 | 0x09) => {
            // Manual dimming: (address, level)*; timed dimming: (address, level, minutes)*.
            let timed = header == 0x09;
            m_type(d, if timed { "manual_timed_dimming" } else { "manual_dimming" });
            let mut dest = Vec::new();
            let mut first_level = None;
            while !r.is_empty() {
                let addr = address(r.u8()?, Some("all_devices"), d);
                let lvl = r.u8()?;
                let mut e = Map::new();
                e.insert("address".into(), Value::String(addr));
                match level(lvl) {
                    Some(l) => {
                        e.insert("lamp_level_pct".into(), Value::from(l));
                        first_level = first_level.or(Some(l));
                    }
                    None => {
                        e.insert("lamp_level_pct".into(), Value::String("resume".into()));
                    }
                }
                if timed {
                    e.insert("duration_minutes".into(), Value::from(r.u8()?));
                }
                dest.push(Value::Object(e));
            }
            if let Some(l) = first_level {
                put_int(&mut d.metrics, "lamp_level_pct", l);
            }
            d.metrics.insert("destination".into(), Value::Array(dest));
        }
        0x03 => {
            m_type(d, "custom_dali_request");
            let raw = r.rest();
            d.metrics.insert("query_data_raw".into(), hex_upper(raw));
            // address + query (+ answer); longer payloads cannot be split reliably.
            if raw.len() <= 3 {
                let mut q = Reader::new(raw);
                let addr = address(q.u8()?, None, d);
                put_str(&mut d.metrics, "address", addr);
                put_int(&mut d.metrics, "dali_query", i64::from(q.u8()?));
                if let Ok(answer) = q.u8() {
                    put_int(&mut d.metrics, "dali_response", i64::from(answer));
                }
            }
        }
        0x04 => {
            m_type(d, "custom_dali_command");
            let raw = r.rest();
            d.metrics.insert("dali_command".into(), hex_upper(raw));
        }
        0x05 => {
            m_type(d, "status_usage_request");
            let b = r.u8()?;
            put_bool(&mut d.metrics, "usage_requested", bit(b, 0));
            put_bool(&mut d.metrics, "status_requested", bit(b, 1));
            put_bool(&mut d.metrics, "dim_map_report_requested", bit(b, 2));
            put_bool(&mut d.metrics, "request_gnss_notification", bit(b, 3));
            if bit(b, 2) && !r.is_empty() {
                let mut drivers = Vec::new();
                while !r.is_empty() {
                    let addr = address(r.u8()?, None, d);
                    let mut e = Map::new();
                    e.insert("address".into(), Value::String(addr));
                    e.insert("dali_min_level".into(), Value::from(r.u8()?));
                    e.insert("dali_max_level".into(), Value::from(r.u8()?));
                    let curve = if r.u8()? == 0 { "logarithmic" } else { "linear" };
                    e.insert("dimming_curve".into(), Value::String(curve.into()));
                    drivers.push(Value::Object(e));
                }
                d.metrics.insert("drivers".into(), Value::Array(drivers));
            }
        }
        header @ (0x07 | 0x08) => {
            let read = header == 0x07;
            m_type(d, if read { "driver_memory_read" } else { "driver_memory_write" });
            if r.is_empty() {
                d.warnings.push(if read { "driver_memory_read_failed" } else { "driver_memory_write_failed" }.into());
                return Ok(());
            }
            let addr = address(r.u8()?, None, d);
            put_str(&mut d.metrics, "address", addr);
            put_int(&mut d.metrics, "memory_bank", i64::from(r.u8()?));
            put_int(&mut d.metrics, "memory_address", i64::from(r.u8()?));
            let value = if read {
                let size = r.u8()?;
                put_int(&mut d.metrics, "read_size_bytes", i64::from(size));
                if r.is_empty() {
                    None
                } else {
                    Some(r.take(usize::from(size))?)
                }
            } else {
                Some(r.rest())
            };
            if let Some(v) = value {
                d.metrics.insert("memory_value".into(), hex_upper(v));
            }
        }
        0x0a => {
            m_type(d, "address_dali_driver");
            let addr = address(r.u8()?, Some("rescan_dali_bus"), d);
            put_str(&mut d.metrics, "address", addr);
        }
        0x0b => m_type(d, "dali_identify"),
        0x0c => {
            m_type(d, "open_drain_output_control");
            put_bool(&mut d.metrics, "open_drain_output_on", bit(r.u8()?, 0));
        }
        _ => return Err(invalid("invalid_command")),
    }
    Ok(())
}

/// FPort 61: alerts and notifications. Byte 2's high nibble is the data length for the input
/// notifications; for the metering alert it holds the alert condition bits.
fn alert(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    let header = r.u8()?;
    let b2 = r.u8()?;
    let len = b2 >> 4;
    let m_type = |d: &mut Decoded, t: &str| put_str(&mut d.metrics, "packet_type", t);
    match header {
        0x80 => {
            m_type(d, "dig_input_notification");
            match len {
                2 => put_int(&mut d.metrics, "dig_input_event_counter", i64::from(r.u16_le()?)),
                4 => {
                    put_bool(&mut d.metrics, "dig_input_on", bit(b2, 0));
                    put_int(&mut d.metrics, "dig_input_event_counter", i64::from(r.u32_le()?));
                }
                _ => return Err(invalid("invalid_packet_length")),
            }
        }
        0x81 => {
            m_type(d, "ldr_input_notification");
            if len != 2 {
                return Err(invalid("invalid_packet_length"));
            }
            put_bool(&mut d.metrics, "ldr_input_on", bit(r.u8()?, 0));
            put_int(&mut d.metrics, "ldr_input_value", i64::from(r.u8()?));
        }
        0x83 => {
            m_type(d, "dali_driver_alert");
            // Byte 2 is the length byte; (address, status) pairs follow.
            let mut drivers = Vec::new();
            while !r.is_empty() {
                let addr = address(r.u8()?, None, d);
                let st = r.u8()?;
                let mut e = Map::new();
                e.insert("address".into(), Value::String(addr.clone()));
                dali_status(st, &addr, &mut e, d);
                drivers.push(Value::Object(e));
            }
            d.metrics.insert("drivers".into(), Value::Array(drivers));
        }
        0x84 => {
            m_type(d, "metering_alert");
            let conditions = [
                ("lamp_error_alert", "metering_lamp_error"),
                ("over_current_alert", "metering_over_current"),
                ("under_voltage_alert", "metering_under_voltage"),
                ("over_voltage_alert", "metering_over_voltage"),
                ("low_power_factor_alert", "metering_low_power_factor"),
            ];
            for (i, (name, warning)) in (0u8..).zip(conditions) {
                let on = bit(b2, i);
                put_bool(&mut d.metrics, name, on);
                if on {
                    d.warnings.push(warning.into());
                }
            }
            put_int(&mut d.metrics, "power_w", i64::from(r.u16_le()?));
            put_int(&mut d.metrics, "voltage_v", i64::from(r.u16_le()?));
            d.metrics.insert("power_factor".into(), num(f64::from(r.u8()?) / 100.0));
        }
        0x85 => {
            m_type(d, "deprecated_light_sensor_notification");
            put_int(&mut d.metrics, "active_dim_step", i64::from(b2));
        }
        0x86 => {
            m_type(d, "location_notification");
            let status = match b2 {
                0x00 => "good_fix",
                0x01 => "no_fix",
                0x02 | 0xff => "internal_error",
                _ => "invalid_status",
            };
            put_str(&mut d.metrics, "location_status", status);
            if b2 == 0x00 {
                let lat = f64::from(r.f32_le()?);
                let lon = f64::from(r.f32_le()?);
                d.metrics.insert("latitude_deg".into(), num(round_to(lat, 6)));
                d.metrics.insert("longitude_deg".into(), num(round_to(lon, 6)));
                let t = epoch(r.u32_le()?, d);
                put_str(&mut d.metrics, "last_fix_utc_time", t);
            }
        }
        _ => return Err(invalid("invalid_packet_type")),
    }
    Ok(())
}

/// FPort 99: boot packet and rejected-downlink reports.
fn system(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    match r.u8()? {
        0x00 => boot(r, d),
        0x13 => {
            put_str(&mut d.metrics, "packet_type", "invalid_downlink_packet");
            put_int(&mut d.metrics, "downlink_from_fport", i64::from(r.u8()?));
            let why = match r.u8()? {
                0x00 | 0x01 => "n/a",
                0x02 => "unknown_fport",
                0x03 => "packet_size_short",
                0x04 => "packet_size_long",
                0x05 => "value_error",
                0x06 => "protocol_parse_error",
                0x07 => "reserved_flag_set",
                0x08 => "invalid_flag_combination",
                0x09 => "unavailable_feature_request",
                0x0a => "unsupported_header",
                0x0b => "unreachable_hw_request",
                0x0c => "address_not_available",
                0x0d => "internal_error",
                0x0e => "packet_size_error",
                0x81 => "profile_id_seq_error",
                0x82 => "profile_destination_eror",
                0x83 => "profile_days_error",
                0x84 => "profile_step_count_error",
                0x85 => "profile_step_value_error",
                0x86 => "profile_step_unsorted_error",
                _ => "invalid_error_code",
            };
            put_str(&mut d.metrics, "error_reason", why);
            d.warnings.push(format!("downlink_error {why}"));
            Ok(())
        }
        _ => Err(invalid("invalid_packet_type")),
    }
}

fn boot(r: &mut Reader, d: &mut Decoded) -> Result<(), DecodeError> {
    put_str(&mut d.metrics, "packet_type", "boot_packet");
    let serial = r.u32_le()?;
    put_str(&mut d.metrics, "device_serial", format!("{serial:08X}"));
    let (a, b, c) = (r.u8()?, r.u8()?, r.u8()?);
    put_str(&mut d.metrics, "firmware_version", format!("{a}.{b}.{c}"));
    let t = epoch(r.u32_le()?, d);
    put_str(&mut d.metrics, "device_unix_epoch", t);
    let config = match r.u8()? {
        0 => "dali",
        1 => "dali_nc",
        2 => "dali_no",
        3 => "analog_nc",
        4 => "analog_no",
        5 => "dali_analog_nc",
        6 => "dali_analog_no",
        7 => "dali_analog_nc_no",
        _ => {
            d.errors.push("invalid_device_config".into());
            "invalid_config"
        }
    };
    put_str(&mut d.metrics, "device_config", config);
    let f = r.u8()?;
    let mut features = Map::new();
    for (name, n) in [("dig_input", 2), ("ldr_input", 3), ("open_drain_output", 4), ("metering", 5)] {
        features.insert(name.into(), Value::Bool(bit(f, n)));
    }
    d.metrics.insert("optional_features".into(), Value::Object(features));
    let dali = r.u8()?;
    let supply = dali & 0x7f;
    let supply_v = match supply {
        0..=0x6f => Value::from(supply),
        0x7e => Value::String("bus_high".into()),
        0x7f => {
            d.warnings.push("dali_bus_error".into());
            Value::String("bus_error".into())
        }
        _ => Value::String("invalid_value".into()),
    };
    d.metrics.insert("dali_supply_state_v".into(), supply_v);
    let source = if bit(dali, 7) { "external" } else { "internal" };
    put_str(&mut d.metrics, "dali_power_source_external", source);
    let drivers = r.u8()?;
    put_int(&mut d.metrics, "dali_addressed_driver_count", i64::from(drivers & 0x7f));
    let unaddressed = bit(drivers, 7);
    put_bool(&mut d.metrics, "dali_unaddressed_driver_found", unaddressed);
    if unaddressed {
        d.warnings.push("unadressed_dali_driver_on_bus".into());
    }
    if let Ok(reset) = r.u8() {
        let mut reasons = Vec::new();
        for i in 0..8u8 {
            if !bit(reset, i) {
                continue;
            }
            let name = match i {
                1 => "watchdog_reset".to_string(),
                2 => "soft_reset".to_string(),
                n => format!("reset_{n}"),
            };
            if i == 1 {
                d.warnings.push(name.clone());
            }
            reasons.push(Value::String(name));
        }
        d.metrics.insert("reset_reason".into(), Value::Array(reasons));
    }
    Ok(())
}
