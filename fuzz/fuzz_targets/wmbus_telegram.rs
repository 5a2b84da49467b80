//! Any bytes as a wireless M-Bus telegram: without a key, with a key (reaching the AES path), taken as
//! already decrypted (reaching the records behind an encrypted header), and with format A block CRCs
//! added (reaching the CRC stripping). Never a panic; a wrong key never yields metrics.
#![no_main]
use libfuzzer_sys::fuzz_target;

use district_core::wmbus::{self, crc, DecodeOptions};

const KEY: [u8; 16] = [0x42; 16];

fuzz_target!(|data: &[u8]| {
    let _ = wmbus::parse_link_header(data);
    let _ = wmbus::decode_telegram(data, None);
    let _ = wmbus::decode_telegram(data, Some(&KEY));
    let _ = wmbus::decode_telegram_with(data, None, DecodeOptions { already_decrypted: true });
    let _ = wmbus::decode_telegram(&crc::add_format_a_crcs(data), None);
});
