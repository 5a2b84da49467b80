//! Wireless M-Bus (EN 13757-4 link layer, EN 13757-3 / OMS application layer) telegram decoding.
//!
//! Pure: bytes (and an optional AES key) in, a [`Telegram`] with metrics out. No I/O, no clock.
//! Every access to telegram bytes is bounds-checked; any input yields `Ok` or a [`WmbusError`],
//! never a panic. Error messages never contain the key.

use crate::decode::{DecodeError, Metrics};

pub mod crc;
pub mod crypt;
pub mod link;
mod records;
mod transport;
mod vendor;
mod wired;

#[cfg(test)]
mod tests;

/// The link-layer header of a telegram (EN 13757-4), as sticks deliver it: L-field first, block CRCs
/// removed (format A, the way iM871A/AMB8465 pass telegrams by default). Frames that still carry format
/// A/B block CRCs are recognised and stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHeader {
    pub l_field: u8,
    pub c_field: u8,
    pub manufacturer_code: u16,
    /// Three letters, e.g. "KAM".
    pub manufacturer: String,
    /// Eight digits as printed on the meter (BCD, little-endian on air), e.g. "12345678".
    pub id: String,
    pub version: u8,
    pub device_type: u8,
}

impl LinkHeader {
    /// The device type (EN 13757-3 table "Medium") as a snake_case name; "unknown" for others.
    pub fn device_type_name(&self) -> &'static str {
        link::device_type_name(self.device_type)
    }
}

/// A decoded telegram.
#[derive(Debug, Clone, PartialEq)]
pub struct Telegram {
    pub header: LinkHeader,
    pub access_number: Option<u8>,
    pub status: Option<u8>,
    /// Was it encrypted (security mode 5/7) and decrypted with the key.
    pub encrypted: bool,
    /// Metric name → value, names per PRODUCT.md (`volume_m3`, `energy_kwh`, ...).
    pub metrics: Metrics,
    /// Records skipped or not understood.
    pub warnings: Vec<String>,
}

/// Why a telegram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WmbusError {
    #[error("telegram too short: need {need} bytes, got {got}")]
    TooShort { need: usize, got: usize },
    #[error("block CRC mismatch")]
    BadCrc,
    #[error("unsupported CI field 0x{0:02x}")]
    UnsupportedCi(u8),
    #[error("telegram is encrypted and no key is configured for this meter")]
    KeyRequired,
    #[error("decryption failed: wrong key (no 2F2F filler after decrypting)")]
    WrongKey,
    #[error("unsupported security mode {0}")]
    UnsupportedSecurityMode(u8),
    #[error("invalid telegram: {0}")]
    Invalid(String),
}

impl From<DecodeError> for WmbusError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooShort { need, got } => WmbusError::TooShort { need, got },
            other => WmbusError::Invalid(other.to_string()),
        }
    }
}

/// How to decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The payload was already decrypted although the headers say it is encrypted (telegrams logged after
    /// decryption, as in wmbusmeters' test cases): take it as plaintext. Never set for telegrams off the air.
    pub already_decrypted: bool,
}

/// Parses the link-layer header (L, C, M, A) of `frame` (with or without block CRCs).
pub fn parse_link_header(frame: &[u8]) -> Result<LinkHeader, WmbusError> {
    Ok(split(frame)?.0)
}

/// The link header, the bytes after it (from the first CI on), M ‖ A for the IV, and warnings. Handles
/// wireless frames with or without block CRCs, and wired M-Bus long frames.
fn split(frame: &[u8]) -> Result<(LinkHeader, Vec<u8>, [u8; 8], Vec<String>), WmbusError> {
    if let Some((header, body)) = wired::split(frame)? {
        // M ‖ A for the IV comes from the long TPL header (CI 0x72), which `wired` requires.
        return Ok((header, body.to_vec(), [0; 8], Vec::new()));
    }
    let (frame, _framing) = crc::strip_crcs(frame)?;
    let header = link::parse(&frame)?;
    let mut warnings = Vec::new();
    if usize::from(header.l_field) + 1 != frame.len() {
        warnings.push(format!("L-field says {} bytes, frame has {}", usize::from(header.l_field) + 1, frame.len()));
    }
    let mut m_a = [0u8; 8];
    m_a.copy_from_slice(frame.get(2..link::HEADER_LEN).unwrap_or(&[0; 8]));
    let body = frame.get(link::HEADER_LEN..).unwrap_or(&[]).to_vec();
    Ok((header, body, m_a, warnings))
}

/// Decodes a whole telegram; `key` is the meter's AES-128 key for security mode 5.
/// A wrong key is [`WmbusError::WrongKey`], never a reading.
pub fn decode_telegram(frame: &[u8], key: Option<&[u8; 16]>) -> Result<Telegram, WmbusError> {
    decode_telegram_with(frame, key, DecodeOptions::default())
}

/// [`decode_telegram`] with options.
pub fn decode_telegram_with(frame: &[u8], key: Option<&[u8; 16]>, opts: DecodeOptions) -> Result<Telegram, WmbusError> {
    let (header, body, m_a, warnings) = split(frame)?;
    let (h, rest) = transport::parse(&body, m_a)?;
    let mut t = Telegram {
        header,
        access_number: h.access_number,
        status: h.status,
        encrypted: false,
        metrics: Metrics::new(),
        warnings,
    };
    if h.ell_encrypted && !opts.already_decrypted {
        return Err(WmbusError::UnsupportedSecurityMode(0x80)); // ELL AES-CTR: see docs/DECODERS.md
    }
    let mut payload = rest.to_vec();
    match h.security_mode {
        0 => {}
        5 | 7 if opts.already_decrypted => t.encrypted = true,
        5 => {
            let key = key.ok_or(WmbusError::KeyRequired)?;
            let acc = h.access_number.unwrap_or(0);
            let n = usize::from(h.encrypted_blocks) * 16;
            let n = if n == 0 { payload.len() - payload.len() % 16 } else { n };
            let part = payload.get_mut(..n).ok_or(WmbusError::TooShort { need: n, got: rest.len() })?;
            crypt::mode5_decrypt(key, &crypt::mode5_iv(&h.m_a, acc), part)?;
            t.encrypted = true;
        }
        other => return Err(WmbusError::UnsupportedSecurityMode(other)),
    }
    if h.ci == 0x79 || (0xA0..=0xB7).contains(&h.ci) {
        vendor::decode_ci(&mut t, h.ci, &payload)?;
        return Ok(t);
    }
    let left = records::decode(&payload, &mut t.metrics, &mut t.warnings)?;
    vendor::after_records(&mut t, &left);
    Ok(t)
}
