//! Dragino fixed-layout sensors (big-endian fields, FPort 2).
//!
//! - LDDS75 ultrasonic distance (profiles `dragino-ldds75`, `dragino-ldds75-v1.1.4`):
//!   fw ≥ 1.1.4, 8 bytes: `battery(2, mV, & 0x3FFF) distance(2, mm) interrupt_flag(1)
//!   ds18b20(2, signed, 0.1 °C) sensor_flag(1)`; older firmware, 5 bytes:
//!   `battery(2) distance(2) interrupt_flag(1)`. Any other length is what the vendor codec
//!   reports as "No Sensor" (no distance frame).
//! - LSE01 soil moisture / EC, 11 bytes: `battery(2, mV) ds18b20(2, signed, 0.1 °C, reserved)
//!   soil_moisture(2, 0.01 %) soil_temperature(2, signed, 0.01 °C) soil_conductivity(2, µS/cm)
//!   mod_and_interrupt(1)`.

use super::{put_f, put_int, put_str, DecodeError, Decoded, Metrics, Reader};

pub(crate) const FPORT_DATA: u8 = 2;

/// Distances below this are "Invalid Reading" per the vendor (0 = no sensor attached).
const LDDS75_MIN_VALID_MM: u16 = 20;

fn battery_v(m: &mut Metrics, raw: u16) {
    put_f(m, "battery_v", f64::from(raw & 0x3fff) / 1000.0, 3);
}

pub(crate) fn decode_ldds75(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    if f_port != FPORT_DATA {
        return Err(DecodeError::UnsupportedPort(f_port));
    }
    let mut d = Decoded::new();
    if payload.len() != 5 && payload.len() != 8 {
        if payload.is_empty() {
            return Err(DecodeError::TooShort { need: 5, got: 0 });
        }
        put_str(&mut d.metrics, "distance_status", "no_sensor");
        d.warnings.push(format!("no sensor: a distance frame is 5 or 8 bytes, got {}", payload.len()));
        return Ok(d);
    }
    let mut r = Reader::new(payload);
    let bat = r.u16_be()?;
    let distance = r.u16_be()?;
    let interrupt = r.u8()?;
    let m = &mut d.metrics;
    battery_v(m, bat);
    if distance == 0 {
        put_str(m, "distance_status", "no_sensor");
        d.warnings.push("no ultrasonic sensor detected".into());
    } else if distance < LDDS75_MIN_VALID_MM {
        put_str(m, "distance_status", "invalid_reading");
        d.warnings.push(format!("invalid distance reading {distance}"));
    } else {
        put_int(m, "distance_mm", i64::from(distance));
    }
    put_int(m, "interrupt_flag", i64::from(interrupt));
    if payload.len() == 8 {
        let temp = r.i16_be()?;
        let sensor_flag = r.u8()?;
        put_f(m, "temperature_c", f64::from(temp) / 10.0, 1);
        put_int(m, "sensor_flag", i64::from(sensor_flag));
    }
    Ok(d)
}

pub(crate) fn decode_lse01(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    if f_port != FPORT_DATA {
        return Err(DecodeError::UnsupportedPort(f_port));
    }
    let mut r = Reader::new(payload);
    let bat = r.u16_be()?;
    let ds18b20 = r.i16_be()?;
    let moisture = r.u16_be()?;
    let soil_temp = r.i16_be()?;
    let conductivity = r.u16_be()?;
    let mut d = Decoded::new();
    let m = &mut d.metrics;
    battery_v(m, bat);
    put_f(m, "ds18b20_temperature_c", f64::from(ds18b20) / 10.0, 1);
    put_f(m, "soil_moisture_pct", f64::from(moisture) / 100.0, 2);
    put_f(m, "temperature_c", f64::from(soil_temp) / 100.0, 2);
    put_int(m, "soil_conductivity_us_cm", i64::from(conductivity));
    // Byte 10 ("MOD & Digital Interrupt", optional): bit 0 is the interrupt flag.
    if let Ok(flags) = r.u8() {
        put_int(m, "interrupt_flag", i64::from(flags & 0x01));
    }
    if !r.is_empty() {
        d.warnings.push(format!("{} unexpected trailing bytes", r.remaining()));
    }
    Ok(d)
}
