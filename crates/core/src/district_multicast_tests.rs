//! The district step with a multicast group of lamps, in simulated time: a zone-wide change is one
//! frame to the group (opened here with the group's keys), presence near a sensor stays unicast, a
//! lamp outside the group gets its own frame, and the group's counter comes out to persist.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::control::lighting::groups::LampGroup;
use crate::control::lighting::params::{LampSpec, ZoneParams};
use crate::device_frames::{build_uplink, open_downlink_after, UplinkSpec};
use crate::ingest::Origin;
use crate::keys::{DevAddr, Eui64, Key128};
use crate::loops::{LoopDevice, LoopsSetup};
use crate::lorawan::downlink::{DeviceClass, QueueConfig};
use crate::lorawan::join::JoinConfig;
use crate::lorawan::multicast::McGroup;
use crate::netserver::{DownlinkKind, NsConfig};

const ZONE: &str = "reiherhagen";
const PIR: &str = "pir-01";
const PIR_ADDR: DevAddr = DevAddr(0x2601_0100);
const LAMPS: usize = 6;
/// lamp-01..=lamp-05 hold the group's keys; lamp-06 does not.
const MEMBERS: usize = 5;

fn lamp(i: usize) -> String {
    format!("lamp-{i:02}")
}

fn group() -> McGroup {
    McGroup {
        name: "reiherhagen-lamps".into(),
        dev_addr: DevAddr(0x0200_0042),
        nwk_s_key: Key128::new([0x51; 16]),
        app_s_key: Key128::new([0x52; 16]),
        data_rate: 3,
        freq_hz: 869_525_000,
        members: (1..=MEMBERS).map(lamp).collect(),
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 20, 0, 0).single().expect("valid time")
}

fn abp(addr: u32, key: u8) -> Provisioning {
    Provisioning::Abp {
        dev_addr: DevAddr(addr),
        nwk_s_key: Key128::new([key; 16]),
        app_s_key: Key128::new([key + 1; 16]),
        relax_fcnt: false,
    }
}

/// Six class C lamps in one zone (a PIR at lamp-02 raises lamp-02 and lamp-03), the first five in the
/// group, all reached through the one transmitting source.
fn district() -> District {
    let mut ns = NetworkServer::new(NsConfig {
        gateway_id: "gw-test".into(),
        join: JoinConfig::default(),
        dev_addr_range: (DevAddr(0x0000_0100), DevAddr(0x0000_01FF)),
        queue: QueueConfig { dev_status_interval_ms: None, ..QueueConfig::default() },
        min_lead_ms: 50,
    })
    .expect("network server");
    let mut devices = vec![LoopDevice { name: PIR.into(), profile: "browan-tbms100".into(), ..LoopDevice::default() }];
    let pir = DeviceInfo { profile: "browan-tbms100".into(), class: DeviceClass::A, adr: true };
    let _ = ns.upsert_device(PIR, pir, abp(PIR_ADDR.0, 0x30));
    for i in 1..=LAMPS {
        let info = DeviceInfo { profile: "lamp-generic".into(), class: DeviceClass::C, adr: true };
        let _ = ns.upsert_device(&lamp(i), info, abp(0x2601_0000 + i as u32, 0x40 + 2 * i as u8));
        devices.push(LoopDevice { name: lamp(i), profile: "lamp-generic".into(), ..LoopDevice::default() });
    }
    ns.set_default_route(Some(Origin { source: 0, gateway: Eui64(0) }));
    ns.set_multicast_groups(vec![group()]);
    let zone = ZoneParams {
        lamps: (1..=LAMPS).map(|i| LampSpec::Name(lamp(i))).collect(),
        lamps_ahead: 1,
        lamps_behind: Some(0),
        ..ZoneParams::default()
    };
    let setup = LoopsSetup {
        gateway_id: "gw-test".into(),
        latitude: Some(53.55),
        longitude: Some(10.0),
        devices,
        lighting_zones: vec![zone],
        lamp_groups: vec![LampGroup { name: group().name, lamps: group().members }],
        ..LoopsSetup::default()
    };
    District::new(ns, Loops::new(&setup, t0()).expect("loops"), true)
}

fn multicast_frames(fx: &Effects) -> Vec<&OutDownlink> {
    fx.downlinks.iter().filter(|d| d.kind == DownlinkKind::Multicast).collect()
}

fn unicast_lamps(fx: &Effects) -> Vec<String> {
    let mut v: Vec<String> =
        fx.downlinks.iter().filter(|d| d.kind == DownlinkKind::ClassC).map(|d| d.device.clone()).collect();
    v.sort();
    v
}

/// The level the group's frame carries, opened with the group's keys as a lamp would.
fn level_of(d: &OutDownlink) -> u8 {
    let g = group();
    let opened = open_downlink_after(&d.phy, &g.nwk_s_key, &g.app_s_key, None).expect("opens with the group keys");
    assert_eq!((opened.dev_addr, opened.f_port, opened.confirmed), (g.dev_addr, Some(10), false));
    assert_eq!((d.params.dr, d.params.freq_hz, d.params.imme), (3, 869_525_000, true));
    opened.payload[0]
}

fn override_to(level: u8) -> Input {
    Input::Command {
        cmd: CommandName::LightingOverride,
        args: json!({"zone": ZONE, "level_pct": level, "duration_s": 3600}),
    }
}

#[test]
fn a_zone_wide_change_is_one_multicast_frame_and_presence_stays_unicast() {
    let mut d = district();
    // The first step: every lamp to the schedule's level, the group in one frame.
    let fx = d.on_input(t0(), Input::Tick);
    let m = multicast_frames(&fx);
    assert_eq!(m.len(), 1, "{:?}", fx.downlinks);
    assert_eq!(unicast_lamps(&fx), vec![lamp(6)], "the lamp outside the group gets its own frame");
    assert!(fx.persist.contains(&Persist::McFcntDown { group: group().name, next: 1 }), "{:?}", fx.persist);
    assert_eq!((fx.counts.multicast_frames, fx.counts.multicast_airtime_us > 0), (1, true));

    // An override of the whole zone: again one frame (counter 1), carrying the override's level.
    let t1 = t0() + Duration::seconds(60);
    let fx = d.on_input(t1, override_to(70));
    let m = multicast_frames(&fx);
    assert_eq!((m.len(), m[0].f_cnt_down, level_of(m[0])), (1, Some(1), 70));
    assert_eq!(m[0].device, group().name);
    assert_eq!(unicast_lamps(&fx), vec![lamp(6)]);
    let state = fx.records.iter().find(|r| r.topic().suffix() == format!("lighting/{ZONE}")).expect("zone state");
    let v: serde_json::Value = serde_json::from_slice(&state.to_json(1, "gw-test")).expect("json");
    for i in 1..=LAMPS {
        assert_eq!(v["lamps"][lamp(i)]["level_pct"], 70, "{v}");
    }
    let fx = d.on_input(
        t1 + Duration::seconds(60),
        Input::Command { cmd: CommandName::LightingClear, args: json!({"zone": ZONE}) },
    );
    assert_eq!(multicast_frames(&fx).len(), 1, "back to the schedule: the whole zone again");

    // Presence at lamp-02 raises lamp-02 and lamp-03 only: two unicast frames, no multicast.
    let t2 = t1 + Duration::seconds(120);
    let phy = build_uplink(&UplinkSpec {
        dev_addr: PIR_ADDR,
        nwk_s_key: &Key128::new([0x30; 16]),
        app_s_key: &Key128::new([0x31; 16]),
        f_cnt: 1,
        f_port: Some(102),
        payload: &[1, 0x0b, 0x3a, 0, 0, 1, 0, 0],
        confirmed: false,
        ack: false,
        adr: false,
        fopts: &[],
    });
    let fx = d.on_input(t2, Input::Ingest(vec![Received::Frame(super::tests::heard(phy))]));
    assert!(multicast_frames(&fx).is_empty(), "{:?}", fx.downlinks);
    assert_eq!(unicast_lamps(&fx), vec![lamp(2), lamp(3)]);

    let status = d.status(t2);
    assert_eq!(status["lorawan"]["multicast"][0]["frames_sent"], 3, "{status}");
    assert_eq!(status["lorawan"]["multicast"][0]["next_f_cnt"], 3);
}

#[test]
fn a_multicast_frame_the_gateway_did_not_send_goes_again_under_a_new_counter() {
    let mut d = district();
    let fx = d.on_input(t0(), override_to(30));
    let sent = multicast_frames(&fx)[0].clone();
    let _ = d.on_input(t0(), Input::TxFailed { device: sent.device.clone(), f_cnt_down: sent.f_cnt_down.unwrap_or(0) });
    let fx = d.on_input(t0() + Duration::seconds(1), Input::Tick);
    let again = multicast_frames(&fx);
    assert_eq!(again.len(), 1, "{:?}", fx.downlinks);
    assert_eq!((again[0].f_cnt_down, level_of(again[0])), (Some(1), 30));
}
