//! FOpts / FPort-0 MAC commands: our own defensive parser (the lorawan 0.9 iterator can panic).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = district_gateway::lorawan::parse_mac_uplink(data);
});
