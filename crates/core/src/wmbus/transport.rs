//! The layers between the link header and the application records: the extended link layer (ELL, CI
//! 0x8C–0x8F), the authentication and fragmentation layer (AFL, CI 0x90, skipped), and the transport
//! layer (TPL) headers: none (0x78), short (0x7A), long (0x72), with the configuration field that says
//! the security mode.

use crate::decode::Reader;

use super::WmbusError;

/// What the headers before the application data say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub access_number: Option<u8>,
    pub status: Option<u8>,
    /// Security mode from the TPL configuration field (0 = none, 5 = AES-CBC, 7 = AES-CBC with KDF, ...).
    pub security_mode: u8,
    /// Number of encrypted 16-byte blocks (configuration field bits 4–7).
    pub encrypted_blocks: u8,
    /// M ‖ A for the IV: the link header's, or the long TPL header's when present.
    pub m_a: [u8; 8],
    /// An ELL session number (CI 0x8D/0x8F) with its encryption bits set: the payload is AES-CTR encrypted.
    pub ell_encrypted: bool,
    /// The CI that starts the application data (0x72, 0x7A, 0x78, or a manufacturer CI 0xA0–0xB7).
    pub ci: u8,
}

/// Parses the headers of `rest` (the frame after the link header). Returns them and the remaining bytes
/// (the application data, possibly encrypted). `m_a` is the link header's M ‖ A.
pub fn parse(rest: &[u8], m_a: [u8; 8]) -> Result<(Headers, &[u8]), WmbusError> {
    let mut r = Reader::new(rest);
    let mut h = Headers { m_a, ..Headers::default() };
    loop {
        let ci = r.u8()?;
        match ci {
            // ELL I (CC, ACC), II (+ SN, payload CRC), III (+ M, A), IV (+ M, A, SN, CRC).
            0x8C..=0x8F => {
                let _cc = r.u8()?;
                h.access_number = Some(r.u8()?);
                if ci == 0x8E || ci == 0x8F {
                    r.take(8)?;
                }
                if ci == 0x8D || ci == 0x8F {
                    let sn = r.u32_le()?;
                    // Bits 29..31 of the session number: the ELL encryption (0 = none, 1 = AES-CTR).
                    h.ell_encrypted = sn >> 29 != 0;
                    // The payload CRC (2 bytes) belongs to the (possibly encrypted) payload.
                    r.take(2)?;
                }
            }
            // AFL: its own length byte says how much to skip (fragmentation/MAC we do not check).
            0x90 => {
                let len = r.u8()?;
                r.take(usize::from(len))?;
            }
            0x7A => {
                h.access_number = Some(r.u8()?);
                h.status = Some(r.u8()?);
                config(&mut h, &mut r)?;
                return Ok((Headers { ci, ..h }, r.rest()));
            }
            0x72 => {
                let id = r.take(4)?;
                let m = r.take(2)?;
                let ver_type = r.take(2)?;
                let mut m_a = [0u8; 8];
                m_a[..2].copy_from_slice(m);
                m_a[2..6].copy_from_slice(id);
                m_a[6..].copy_from_slice(ver_type);
                h.m_a = m_a;
                h.access_number = Some(r.u8()?);
                h.status = Some(r.u8()?);
                config(&mut h, &mut r)?;
                return Ok((Headers { ci, ..h }, r.rest()));
            }
            0x78 | 0x79 | 0xA0..=0xB7 => return Ok((Headers { ci, ..h }, r.rest())),
            other => return Err(WmbusError::UnsupportedCi(other)),
        }
    }
}

/// The TPL configuration field: 2 bytes, least significant first; mode 7 adds a third (extension) byte.
fn config(h: &mut Headers, r: &mut Reader<'_>) -> Result<(), WmbusError> {
    let cfg = r.u16_le()?;
    h.security_mode = ((cfg >> 8) & 0x1F) as u8;
    h.encrypted_blocks = ((cfg >> 4) & 0x0F) as u8;
    if h.security_mode == 7 {
        r.u8()?;
    }
    Ok(())
}
