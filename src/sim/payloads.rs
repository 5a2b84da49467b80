//! Plausible application payloads per device profile, for the demo and the traffic generator.
//! Formats follow the vendors' documented layouts (see docs/DECODERS.md); values drift with `n`.

/// (FPort, payload) for the `n`-th uplink of a device with `profile`.
pub fn for_profile(profile: &str, n: u32) -> (u8, Vec<u8>) {
    let k = (n % 1000) as u16;
    match profile {
        "milesight-em310-udl" | "milesight-em400-udl" => {
            let mm = 2400u16.saturating_sub(k.wrapping_mul(37) % 2000);
            let [lo, hi] = mm.to_le_bytes();
            (85, vec![0x01, 0x75, 95 - (k % 10) as u8, 0x03, 0x82, lo, hi, 0x04, 0x00, 0x00])
        }
        "milesight-ws202" => (85, vec![0x01, 0x75, 0x64, 0x03, 0x00, (k % 2) as u8, 0x04, 0x00, (k % 2) as u8]),
        "lamp-generic" => (10, vec![(k * 10 % 101) as u8]),
        _ => (85, vec![0x01, (k & 0xff) as u8, (k >> 8) as u8]),
    }
}
