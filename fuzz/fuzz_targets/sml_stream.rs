//! Any byte stream on a meter's serial line, in any chunking.
#![no_main]
use libfuzzer_sys::fuzz_target;

use district_gateway::meter::{self, FrameEvent, SmlFramer};

fuzz_target!(|data: &[u8]| {
    let mut framer = SmlFramer::new();
    let split = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    for chunk in data.chunks(split) {
        for ev in framer.push(chunk) {
            if let FrameEvent::Frame(f) = ev {
                if let Ok(values) = meter::values(&f) {
                    let _ = meter::metrics(&values);
                }
            }
        }
    }
    let _ = framer.finish();
    let _ = meter::values(data);
});
