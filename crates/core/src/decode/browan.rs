//! Browan (Tabs) TBMS100 PIR motion / occupancy sensor.
//!
//! FPort 102, 8 bytes:
//! `status(1, bit0 = occupied) battery(1, low nibble n → (25 + n) / 10 V)
//!  temperature(1, bits0-6 − 32 °C) time(2 LE, minutes since last event) count(3 LE, event count)`.

use super::{put_bool, put_f, put_int, DecodeError, Decoded, Reader};

pub(crate) const FPORT_TBMS100: u8 = 102;

pub(crate) fn decode_tbms100(f_port: u8, payload: &[u8]) -> Result<Decoded, DecodeError> {
    if f_port != FPORT_TBMS100 {
        return Err(DecodeError::UnsupportedPort(f_port));
    }
    let mut d = Decoded::new();
    if !payload.is_empty() && payload.iter().all(|b| *b == 0) {
        // The vendor treats an all-zero frame as empty: decoding it would report 2.5 V and −32 °C.
        d.warnings.push("all-zero payload carries no reading".into());
        return Ok(d);
    }
    let mut r = Reader::new(payload);
    let status = r.u8()?;
    let battery = r.u8()?;
    let temperature = r.u8()?;
    let time = r.u16_le()?;
    let count = r.u24_le()?;
    let m = &mut d.metrics;
    put_bool(m, "occupancy", status & 0x01 == 1);
    put_f(m, "battery_v", f64::from(25 + (battery & 0x0f)) / 10.0, 1);
    put_int(m, "temperature_c", i64::from(temperature & 0x7f) - 32);
    put_int(m, "time", i64::from(time));
    put_int(m, "count", i64::from(count));
    if !r.is_empty() {
        d.warnings.push(format!("{} unexpected trailing bytes", r.remaining()));
    }
    Ok(d)
}
