//! The link layer (EN 13757-4): L, C, M (manufacturer), A (id, version, device type).

use super::{LinkHeader, WmbusError};

/// Length of the link-layer header: L, C, M (2), A (6).
pub const HEADER_LEN: usize = 10;

/// Three-letter manufacturer (FLAG association) code from its 15-bit packed form.
pub fn manufacturer_letters(code: u16) -> String {
    [10u16, 5, 0].iter().map(|s| char::from(b'@' + ((code >> s) & 0x1F) as u8)).collect()
}

/// The meter id as printed on the meter: four BCD bytes, least significant first on air.
pub fn id_string(a: [u8; 4]) -> String {
    format!("{:02x}{:02x}{:02x}{:02x}", a[3], a[2], a[1], a[0])
}

/// Parses the 10-byte link header. The frame must already be CRC-free (see `crc::strip_crcs`).
pub fn parse(frame: &[u8]) -> Result<LinkHeader, WmbusError> {
    let h: &[u8; HEADER_LEN] = frame
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(WmbusError::TooShort { need: HEADER_LEN, got: frame.len() })?;
    let manufacturer_code = u16::from_le_bytes([h[2], h[3]]);
    Ok(LinkHeader {
        l_field: h[0],
        c_field: h[1],
        manufacturer_code,
        manufacturer: manufacturer_letters(manufacturer_code),
        id: id_string([h[4], h[5], h[6], h[7]]),
        version: h[8],
        device_type: h[9],
    })
}

/// The device type (EN 13757-3 "medium" table, with the OMS additions) as a snake_case name.
pub fn device_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "other",
        0x01 => "oil",
        0x02 => "electricity",
        0x03 => "gas",
        0x04 | 0x0C => "heat",
        0x05 => "steam",
        0x06 => "warm_water",
        0x07 => "water",
        0x08 => "heat_cost_allocator",
        0x09 => "compressed_air",
        0x0A | 0x0B => "cooling",
        0x0D => "heat_cooling",
        0x0E => "bus_system",
        0x15 => "hot_water",
        0x16 => "cold_water",
        0x17 => "dual_water",
        0x18 => "pressure",
        0x19 => "ad_converter",
        0x1A => "smoke_detector",
        0x1B => "room_sensor",
        0x1C => "gas_detector",
        0x20 => "breaker",
        0x21 => "valve",
        0x25 => "customer_unit",
        0x28 => "waste_water",
        0x29 => "garbage",
        0x31..=0x33 => "radio_converter",
        0x37 => "radio_converter",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let frame = [0x2E, 0x44, 0x2D, 0x2C, 0x78, 0x56, 0x34, 0x12, 0x30, 0x04, 0x7A];
        let h = parse(&frame).unwrap();
        assert_eq!(h.manufacturer, "KAM");
        assert_eq!(h.manufacturer_code, 0x2C2D);
        assert_eq!(h.id, "12345678");
        assert_eq!((h.version, h.device_type), (0x30, 0x04));
        assert_eq!(h.device_type_name(), "heat");
        assert_eq!(parse(&frame[..9]), Err(WmbusError::TooShort { need: 10, got: 9 }));
    }
}
