//! Any datagram a packet forwarder (or anybody on the network) could send.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = district_gateway::io::gwmp::packet::parse(data);
    let _ = district_gateway::io::gwmp::packet::classify_tx_ack(std::str::from_utf8(data).ok());
});
