//! Security mode 5 of the transport layer (EN 13757-7 / OMS): AES-128-CBC, no padding, IV = M ‖ A ‖ ACC × 8.
//! The RustCrypto `aes` and `cbc` crates do the cipher; nothing here is home-made crypto.

use aes::Aes128;
use cbc::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};

use super::WmbusError;

/// The mode 5 IV: manufacturer (2 bytes as on air), address (id 4, version, type), then the access number 8 times.
pub fn mode5_iv(m_a: &[u8; 8], acc: u8) -> [u8; 16] {
    let mut iv = [acc; 16];
    iv[..8].copy_from_slice(m_a);
    iv
}

/// Decrypts `data` (a whole number of 16-byte blocks) in place and checks the 0x2F2F filler that every
/// mode 5 payload starts with: without it the key is wrong (or the telegram corrupt), and nothing of the
/// payload may be used. The key never appears in an error.
pub fn mode5_decrypt(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) -> Result<(), WmbusError> {
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(WmbusError::Invalid(format!("encrypted part is {} bytes, not a multiple of 16", data.len())));
    }
    cbc::Decryptor::<Aes128>::new(key.into(), iv.into())
        .decrypt_padded_mut::<NoPadding>(data)
        .map_err(|_| WmbusError::Invalid("encrypted part is not a whole number of blocks".into()))?;
    if data.get(..2) != Some(&[0x2F, 0x2F][..]) {
        return Err(WmbusError::WrongKey);
    }
    Ok(())
}

/// Encrypts `data` (a whole number of 16-byte blocks, starting with 2F2F) in place: the inverse of
/// [`mode5_decrypt`], for tests, benchmarks and simulated meters.
pub fn mode5_encrypt(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) -> Result<(), WmbusError> {
    let len = data.len();
    cbc::Encryptor::<Aes128>::new(key.into(), iv.into())
        .encrypt_padded_mut::<NoPadding>(data, len)
        .map_err(|_| WmbusError::Invalid("plaintext is not a whole number of blocks".into()))?;
    Ok(())
}
