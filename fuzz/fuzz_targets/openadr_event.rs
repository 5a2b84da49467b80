//! The OpenADR VEN's path from the VTN's bytes to the loop's events: JSON → openleadr-wire's `Event` →
//! the core's `VtnEvent` → `to_dr_events`. Hostile durations, periods and payloads must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((events, refused)) = district_gateway::io::openadr::map_json(data) {
        for e in &events {
            assert!(e.id.starts_with("oadr:"));
            assert!(e.limit_kw.is_some() || e.level.is_some());
        }
        let _ = refused;
    }
});
