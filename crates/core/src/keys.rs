//! Identifiers and secrets shared by the config, the LoRaWAN core and the store.
//!
//! Invariant: a [`Key128`] never prints its bytes. `Debug` shows a redaction marker and there is no
//! `Display`, so a key cannot leak into a log line, a metric label, a status reply or an error message
//! by accident. Code that really needs the bytes (crypto, the key file in the data dir) calls
//! [`Key128::expose`].

use std::fmt;

/// A 128-bit AES key (NwkSKey, AppSKey, AppKey).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key128([u8; 16]);

impl Key128 {
    pub const fn new(bytes: [u8; 16]) -> Self {
        Key128(bytes)
    }

    /// Parses 32 hex digits, MSB first (the order of the config file and of the LoRaWAN specification).
    /// The error never contains the input.
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        parse_hex_array::<16>(s).map(Key128)
    }

    /// The raw bytes, for cryptography only. Never log them.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for Key128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key128(<redacted>)")
    }
}

/// A LoRaWAN device address, held as the number whose big-endian hex is the usual display form
/// (`26011bda`). On air it is little-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevAddr(pub u32);

impl DevAddr {
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        parse_hex_array::<4>(s).map(|b| DevAddr(u32::from_be_bytes(b)))
    }
}

impl fmt::Display for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevAddr({:08x})", self.0)
    }
}

/// A 64-bit EUI (DevEUI, JoinEUI, gateway EUI), MSB first as displayed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Eui64(pub u64);

impl Eui64 {
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        parse_hex_array::<8>(s).map(|b| Eui64(u64::from_be_bytes(b)))
    }
}

impl fmt::Display for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Eui64({:016x})", self.0)
    }
}

/// Why a hex string was refused. Carries lengths only, never the text (it may be a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("expected {expected} hex digits, got {got}")]
    Length { expected: usize, got: usize },
    #[error("expected hex digits (0-9, a-f), found another character at position {position}")]
    NotHex { position: usize },
}

fn parse_hex_array<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let digits = s.chars().count();
    if digits != 2 * N {
        return Err(HexError::Length { expected: 2 * N, got: digits });
    }
    if let Some(position) = s.chars().position(|c| !c.is_ascii_hexdigit()) {
        return Err(HexError::NotHex { position: position + 1 });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| HexError::NotHex { position: 0 })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_is_redacted() {
        let k = Key128::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        let s = format!("{k:?}");
        assert!(!s.contains("0001"));
        assert_eq!(k.expose()[15], 0x0f);
    }

    #[test]
    fn hex_errors_name_lengths_not_content() {
        let e = Key128::from_hex("0001020304050607080910111213").unwrap_err();
        assert_eq!(e.to_string(), "expected 32 hex digits, got 28");
        assert!(matches!(Key128::from_hex("zz0102030405060708090a0b0c0d0e0f"), Err(HexError::NotHex { position: 1 })));
        assert_eq!(DevAddr::from_hex("26011bda").unwrap().to_string(), "26011bda");
    }
}
