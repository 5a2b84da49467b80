//! Byte-level helpers of the outbox log: CRC-32, little-endian fields, and the compaction of JSON
//! payloads.
//!
//! Compaction exists for flash wear: a reading's JSON is ~300 bytes and more than half of it is the
//! same field names every time. Compact JSON (what serde_json writes) never contains a byte below
//! 0x20 (control characters inside strings are escaped), so those bytes are free to stand for the
//! common fragments below. The table is part of the on-disk format: append to it, never reorder it
//! (the format byte of a record says which table it was written with).

/// Fragments replaced by the bytes 0x01..=0x1f, in that order. Greedy longest match at each position.
const TOKENS: [&[u8]; 31] = [
    br#"{"seq":"#,
    br#","gateway":""#,
    br#"","device":""#,
    br#"","profile":""#,
    br#"","at":""#,
    br#"","metrics":{"#,
    br#"},"lorawan":{"dev_addr":""#,
    br#"","f_cnt":"#,
    br#","f_port":"#,
    br#","payload_hex":""#,
    br#"","rssi":"#,
    br#","snr":"#,
    br#","freq_hz":"#,
    br#","sf":"#,
    br#"}}"#,
    br#""battery_pct":"#,
    br#""distance_mm":"#,
    br#""temperature_c":"#,
    br#""humidity_pct":"#,
    br#""soil_moisture_pct":"#,
    br#""fill_pct":"#,
    br#""battery_v":"#,
    br#""power_w":"#,
    br#","window_start":""#,
    br#"","window_end":""#,
    br#","count":"#,
    br#"{"min":"#,
    br#","max":"#,
    br#","mean":"#,
    br#","last":"#,
    br#""event":""#,
];

/// Payload stored as is.
pub const RAW: u8 = 0;
/// Payload compacted with [`TOKENS`] (format 1).
pub const TOKENS_V1: u8 = 1;

/// Compacts `payload` if it is compact JSON (no control bytes); returns the format byte and the bytes.
pub fn compact(payload: &[u8]) -> (u8, Vec<u8>) {
    if payload.iter().any(|b| *b < 0x20) {
        return (RAW, payload.to_vec());
    }
    let mut out = Vec::with_capacity(payload.len() / 2 + 16);
    let mut i = 0;
    while i < payload.len() {
        let rest = &payload[i..];
        let mut best: Option<(usize, usize)> = None;
        for (n, t) in TOKENS.iter().enumerate() {
            if t[0] == rest[0] && rest.starts_with(t) && best.is_none_or(|(_, l)| t.len() > l) {
                best = Some((n, t.len()));
            }
        }
        match best {
            Some((n, len)) => {
                out.push(n as u8 + 1);
                i += len;
            }
            None => {
                out.push(rest[0]);
                i += 1;
            }
        }
    }
    (TOKENS_V1, out)
}

/// Reverses [`compact`]. None for an unknown format.
pub fn expand(format: u8, bytes: &[u8]) -> Option<Vec<u8>> {
    match format {
        RAW => Some(bytes.to_vec()),
        TOKENS_V1 => {
            let mut out = Vec::with_capacity(bytes.len() * 2 + 32);
            for b in bytes {
                match *b {
                    0 => return None,
                    1..=0x1f => out.extend_from_slice(TOKENS[*b as usize - 1]),
                    _ => out.push(*b),
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// CRC-32 (IEEE 802.3), the checksum of every log entry. crc32fast (already in the tree through
/// sled) uses the CPU's carry-less multiply where there is one (x86 PCLMULQDQ, Armv8 CRC32): the
/// drain checks every entry it reads, and a byte-wise table was 4 % of the drain's CPU.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// A cursor over a byte slice that says "truncated" (None) instead of panicking.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_roundtrips_and_shrinks_a_reading() {
        let r = br#"{"seq":18231,"gateway":"garstedt-01","device":"bin-017","profile":"milesight-em310-udl","at":"2026-11-26T03:10:00.123Z","metrics":{"distance_mm":2116,"battery_pct":92},"lorawan":{"dev_addr":"26011bda","f_cnt":1201,"f_port":85,"payload_hex":"01755c03824408040001","rssi":-97,"snr":7.5,"freq_hz":868100000,"sf":7}}"#;
        let (f, c) = compact(r);
        assert_eq!(f, TOKENS_V1);
        assert!(c.len() * 2 < r.len() + 40, "{} -> {}", r.len(), c.len());
        assert_eq!(expand(f, &c).unwrap(), r.to_vec());
        // Not compact JSON: stored raw, still round-trips.
        let odd = b"{\n \"a\": 1\n}";
        let (f, c) = compact(odd);
        assert_eq!(f, RAW);
        assert_eq!(expand(f, &c).unwrap(), odd.to_vec());
        assert_eq!(expand(9, b"x"), None);
    }

    #[test]
    fn crc_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
