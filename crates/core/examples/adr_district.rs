//! Uplink air time of a simulated district of 200 devices before and after ADR.
//!
//! Every device starts at SF12 (DR0, max power), sends a 12-byte payload (25-byte PHYPayload) with
//! the ADR bit set, and is heard with an SNR drawn once per device (uniform −17 … +10 dB at max
//! power: from the far end of the district to the next lamp post), minus 2 dB per TX power step it
//! takes, ± 1.5 dB of noise per uplink. The network server's real MAC engine and ADR decide; the
//! device accepts every LinkADRReq and answers it in its next uplink (no frame is lost). After 40
//! uplinks per device the air time of one uplink round is compared with the all-SF12 start.
//!
//! Run: `cargo run --release -p district-core --example adr_district`

use chrono::{TimeZone, Utc};
use district_core::keys::DevAddr;
use district_core::lorawan::airtime::uplink_airtime;
use district_core::lorawan::mac_engine::DeviceFacts;
use district_core::lorawan::region::DataRate;
use district_core::lorawan::{MacCommand, MacConfig, MacEngine, Uplink, UplinkRadio};
use district_core::test_support::XorShift;

const DEVICES: usize = 200;
const ROUNDS: u32 = 40;
/// 12-byte payload + MHDR, FHDR (7), FPort, MIC.
const PHY_LEN: usize = 12 + 13;

struct Device {
    name: String,
    snr_at_max_db: f64,
    dr: u8,
    tx_power: u8,
    nb_trans: u8,
    answer: bool,
}

fn uniform(rng: &mut XorShift, lo: f64, hi: f64) -> f64 {
    lo + (rng.next() % 1_000_000) as f64 / 1_000_000.0 * (hi - lo)
}

fn round_airtime_ms(devices: &[Device]) -> f64 {
    devices
        .iter()
        .map(|d| {
            let r = DataRate::from_dr(d.dr).expect("EU868 DR");
            uplink_airtime(r.sf, r.bw_khz, PHY_LEN).as_secs_f64() * 1000.0 * f64::from(d.nb_trans)
        })
        .sum()
}

fn main() {
    let mut rng = XorShift(0x00ad_2026);
    let mut devices: Vec<Device> = (0..DEVICES)
        .map(|i| Device {
            name: format!("dev-{i:03}"),
            snr_at_max_db: uniform(&mut rng, -17.0, 10.0),
            dr: 0,
            tx_power: 0,
            nb_trans: 1,
            answer: false,
        })
        .collect();
    let before = round_airtime_ms(&devices);
    let mut engine = MacEngine::new(MacConfig::default());
    let facts = DeviceFacts { abp: false, adr_allowed: true };
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).single().expect("valid time");
    let mut requests = 0;
    for f_cnt in 0..ROUNDS {
        for d in &mut devices {
            let snr = d.snr_at_max_db - 2.0 * f64::from(d.tx_power) + uniform(&mut rng, -1.5, 1.5);
            let r = DataRate::from_dr(d.dr).expect("EU868 DR");
            let radio = UplinkRadio {
                tmst: 0,
                freq_hz: 868_100_000,
                sf: r.sf,
                bw_khz: 125,
                snr_db: Some(snr),
                received_at_ms: 0,
            };
            let mac_commands = if d.answer { vec![MacCommand::LinkAdrAns { status: 0x07 }] } else { vec![] };
            let up = Uplink {
                device: d.name.clone(),
                dev_addr: DevAddr(0),
                f_cnt,
                f_port: Some(1),
                payload: vec![0; 12],
                fopts: Vec::new(),
                mac_commands,
                mac_error: None,
                confirmed: false,
                adr: true,
                adr_ack_req: false,
                ack: false,
                fcnt_reset: false,
            };
            let w = engine.on_uplink(&d.name, facts, &up, Some(&radio), now);
            engine.sent(&d.name, w.commands.len());
            d.answer = false;
            // The device applies a LinkADRReq (CID 0x03) and answers it in its next uplink.
            if let Some(c) = w.commands.iter().find(|c| c.first() == Some(&0x03) && c.len() == 5) {
                (d.dr, d.tx_power, d.nb_trans, d.answer) = (c[1] >> 4, c[1] & 0x0f, (c[4] & 0x0f).max(1), true);
                requests += 1;
            }
        }
    }
    let after = round_airtime_ms(&devices);
    let mut per_dr = [0usize; 6];
    for d in &devices {
        per_dr[usize::from(d.dr.min(5))] += 1;
    }
    let mean_power_db = devices.iter().map(|d| 2.0 * f64::from(d.tx_power)).sum::<f64>() / DEVICES as f64;
    println!("district of {DEVICES} devices, {PHY_LEN}-byte uplinks, SNR uniform −17…+10 dB at max power");
    println!(
        "before ADR (all SF12): {:.1} s of air time per uplink round ({:.0} ms per uplink)",
        before / 1000.0,
        before / DEVICES as f64
    );
    println!(
        "after ADR ({ROUNDS} uplinks each, {requests} LinkADRReqs): {:.1} s per round ({:.0} ms per uplink)",
        after / 1000.0,
        after / DEVICES as f64
    );
    println!("air time saved: {:.1} % ({:.1}× less)", 100.0 * (1.0 - after / before), before / after);
    println!("devices per data rate DR0..DR5: {per_dr:?}; mean TX power reduction {mean_power_db:.1} dB");
}
