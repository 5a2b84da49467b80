//! CRC-16/X-25 (poly 0x1021 reflected = 0x8408, init 0xFFFF, xorout 0xFFFF), as used by SML for both
//! the transport frame checksum and the per-message `crc16` field. Table-driven, no dependency.

#[allow(clippy::indexing_slicing)] // i < 256 = table length
const fn make_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x8408 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static TABLE: [u16; 256] = make_table();

/// Incremental CRC-16/X-25.
#[derive(Debug, Clone, Copy)]
pub struct Crc16X25(u16);

impl Default for Crc16X25 {
    fn default() -> Self {
        Self(0xFFFF)
    }
}

impl Crc16X25 {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut crc = self.0;
        for &b in data {
            let idx = usize::from((crc ^ u16::from(b)) & 0xff); // < 256: always in the table
            crc = (crc >> 8) ^ TABLE.get(idx).copied().unwrap_or(0);
        }
        self.0 = crc;
    }

    pub fn finish(self) -> u16 {
        !self.0
    }
}

/// CRC-16/X-25 of `data` (check value: `b"123456789"` → `0x906E`).
pub fn crc16_x25(data: &[u8]) -> u16 {
    let mut c = Crc16X25::new();
    c.update(data);
    c.finish()
}
