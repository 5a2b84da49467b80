//! Any PHYPayload from the air, through the whole network-server path: de-duplication, join
//! requests, session lookup, MIC, frame counters, decryption, MAC commands and the decoders.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use district_gateway::ingest::RadioFrame;
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::lorawan::downlink::{DeviceClass, QueueConfig};
use district_gateway::lorawan::join::JoinConfig;
use district_gateway::netserver::{DeviceInfo, NetworkServer, NsConfig, Provisioning};

fn server() -> NetworkServer {
    let mut ns = NetworkServer::new(NsConfig {
        gateway_id: "fuzz".into(),
        join: JoinConfig::default(),
        dev_addr_range: (DevAddr(0x0100_0000), DevAddr(0x01ff_ffff)),
        queue: QueueConfig::default(),
        min_lead_ms: 100,
    })
    .expect("valid config");
    // Devices whose addresses and keys the fuzzer can hit (the public brocaar vectors' keys).
    for (i, profile) in ["raw", "milesight-em310-udl", "dragino-lse01", "nas-ul20xx-lcu-fw1.1"].iter().enumerate() {
        ns.upsert_device(
            &format!("dev-{i}"),
            DeviceInfo { profile: profile.to_string(), class: DeviceClass::A, adr: true },
            Provisioning::Abp {
                dev_addr: DevAddr(0x0102_0304 + i as u32),
                nwk_s_key: Key128::new([2; 16]),
                app_s_key: Key128::new([1; 16]),
                relax_fcnt: i == 3,
            },
        );
    }
    ns.upsert_device(
        "otaa",
        DeviceInfo { profile: "raw".into(), class: DeviceClass::C, adr: true },
        Provisioning::Otaa { dev_eui: Eui64(0x0203_0405_0203_0405), join_eui: Eui64(0x0102_0304_0102_0304), app_key: Key128::new([1; 16]) },
    );
    ns
}

static START: OnceLock<()> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    START.get_or_init(|| ());
    let mut ns = server();
    let now = chrono::DateTime::from_timestamp(1_795_651_200, 0).unwrap_or_default();
    let frame = RadioFrame { phy: data.to_vec(), freq_hz: 868_100_000, sf: Some(7), bw_khz: 125, tmst: Some(1), ..Default::default() };
    let _ = ns.handle_frame(now, 1_000, &frame);
    let _ = ns.handle_frame(now, 1_001, &frame);
    let _ = ns.tick(10_000);
});
