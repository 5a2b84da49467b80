//! The district step in simulated time: frames, meter samples, ticks and commands in; messages, state
//! to persist, downlinks, relay switches and counts out. No store, no sockets, no clock.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::*;
use crate::control::lighting::params::ZoneParams;
use crate::device_frames::{build_uplink, UplinkSpec};
use crate::ingest::Origin;
use crate::keys::{DevAddr, Eui64, Key128};
use crate::loops::{LoopDevice, LoopsSetup};
use crate::lorawan::downlink::{DeviceClass, QueueConfig};
use crate::lorawan::join::JoinConfig;
use crate::netserver::{DownlinkKind, NsConfig};

const GATEWAY: &str = "gw-test";
const SENSOR: &str = "sensor-01";
const SENSOR_ADDR: DevAddr = DevAddr(0x2601_0001);
const LAMP: &str = "lamp-01";
const LAMP_ADDR: DevAddr = DevAddr(0x2601_0002);

fn keys(i: u8) -> (Key128, Key128) {
    (Key128::new([0x10 + i; 16]), Key128::new([0x20 + i; 16]))
}

fn abp(addr: DevAddr, i: u8) -> Provisioning {
    let (nwk_s_key, app_s_key) = keys(i);
    Provisioning::Abp { dev_addr: addr, nwk_s_key, app_s_key, relax_fcnt: false }
}

/// An evening in December, after the release date (the lighting loop distrusts earlier clocks).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 20, 0, 0).single().expect("valid time")
}

/// A district with an ABP sensor (class A, `raw`) and an ABP lamp (class C, `lamp-generic`) reached
/// through the one transmitting source; with `lighting`, the example zone of PRODUCT.md.
fn district(lighting: bool, publish_readings: bool) -> District {
    district_with(lighting, publish_readings, None)
}

/// [`district`] with aggregates over windows of `aggregate_window_s`.
fn district_with(lighting: bool, publish_readings: bool, aggregate_window_s: Option<u32>) -> District {
    let mut ns = NetworkServer::new(NsConfig {
        gateway_id: GATEWAY.into(),
        join: JoinConfig::default(),
        dev_addr_range: (DevAddr(0x0000_0100), DevAddr(0x0000_01FF)),
        queue: QueueConfig { dev_status_interval_ms: None, ..QueueConfig::default() },
        min_lead_ms: 50,
    })
    .expect("network server");
    let sensor = DeviceInfo { profile: "raw".into(), class: DeviceClass::A, adr: true };
    let _ = ns.upsert_device(SENSOR, sensor, abp(SENSOR_ADDR, 0));
    let lamp = DeviceInfo { profile: "lamp-generic".into(), class: DeviceClass::C, adr: true };
    let _ = ns.upsert_device(LAMP, lamp, abp(LAMP_ADDR, 1));
    ns.set_default_route(Some(Origin { source: 0, gateway: Eui64(0) }));
    let setup = LoopsSetup {
        gateway_id: GATEWAY.into(),
        latitude: Some(53.55),
        longitude: Some(10.0),
        devices: vec![
            LoopDevice { name: SENSOR.into(), profile: "raw".into(), ..LoopDevice::default() },
            LoopDevice { name: LAMP.into(), profile: "lamp-generic".into(), ..LoopDevice::default() },
        ],
        lighting_zones: if lighting { vec![ZoneParams::default()] } else { vec![] },
        aggregate_window_s,
        ..LoopsSetup::default()
    };
    let loops = Loops::new(&setup, t0()).expect("loops");
    District::new(ns, loops, publish_readings)
}

fn sensor_frame(f_cnt: u32, payload: &[u8]) -> RadioFrame {
    let (nwk, app) = keys(0);
    let phy = build_uplink(&UplinkSpec {
        dev_addr: SENSOR_ADDR,
        nwk_s_key: &nwk,
        app_s_key: &app,
        f_cnt,
        f_port: Some(10),
        payload,
        confirmed: false,
        ack: false,
        adr: false,
        fopts: &[],
    });
    heard(phy)
}

/// A frame as the one gateway of source 0 hears it (SF7 on 868.1 MHz).
pub(super) fn heard(phy: Vec<u8>) -> RadioFrame {
    RadioFrame {
        phy,
        rssi: Some(-80),
        snr: Some(7.5),
        freq_hz: 868_100_000,
        sf: Some(7),
        bw_khz: 125,
        tmst: Some(1_000_000),
        origin: Origin { source: 0, gateway: Eui64(0xAA55) },
    }
}

fn frames(f: Vec<RadioFrame>) -> Input {
    Input::Ingest(f.into_iter().map(Received::Frame).collect())
}

fn json_of(m: &Message, seq: u64) -> Value {
    serde_json::from_slice(&m.to_json(seq, GATEWAY)).expect("the payload is JSON")
}

#[test]
fn an_abp_uplink_becomes_a_reading_its_frame_counter_and_counts() {
    let mut d = district(false, true);
    let fx = d.on_input(t0(), frames(vec![sensor_frame(1, b"hello")]));
    assert_eq!(fx.records.len(), 1);
    assert_eq!(fx.readings, 1);
    let m = &fx.records[0];
    assert!(m.is_reading());
    assert_eq!(m.topic().suffix(), format!("reading/{SENSOR}"));
    let v = json_of(m, 41);
    assert_eq!(v["seq"], 41);
    assert_eq!(v["gateway"], GATEWAY);
    assert_eq!(v["device"], SENSOR);
    assert_eq!(v["lorawan"]["f_cnt"], 1);
    assert_eq!(v["lorawan"]["payload_hex"], hex::encode("hello"));
    assert!(fx.persist.contains(&Persist::FcntUp { device: SENSOR.into(), fcnt: 1 }), "{:?}", fx.persist);
    let now_ms = u64::try_from(t0().timestamp_millis()).expect("after 1970");
    assert_eq!(fx.counts, Counts { frames_ok: 1, last_uplink_ms: Some(now_ms), ..Counts::default() });
    assert_eq!(fx.seen.len(), 1);
    assert!(fx.downlinks.is_empty() && fx.relays.is_empty() && !fx.save_loops && fx.answer.is_none());
}

#[test]
fn copies_replays_and_bad_frames_are_counted_not_journaled() {
    let mut d = district(false, true);
    let f = sensor_frame(5, b"x");
    // The same frame through a second gateway of the same source: a duplicate.
    let mut copy = f.clone();
    copy.origin.gateway = Eui64(0xBB66);
    let fx = d.on_input(t0(), frames(vec![f.clone(), copy]));
    assert_eq!(fx.readings, 1);
    assert_eq!((fx.counts.frames_ok, fx.counts.frames_duplicate), (1, 1));

    // Later (outside the dedup window) the same counter again: a replay.
    let fx = d.on_input(t0() + Duration::seconds(10), frames(vec![f]));
    assert!(fx.records.is_empty() && fx.persist.is_empty());
    assert_eq!(fx.counts, Counts { frames_replay: 1, ..Counts::default() });

    let mut bad = sensor_frame(6, b"y");
    let last = bad.phy.len() - 1;
    bad.phy[last] ^= 0xFF;
    let garbage = RadioFrame { phy: vec![0x40, 1, 2], ..sensor_frame(7, b"z") };
    let fx = d.on_input(t0() + Duration::seconds(11), frames(vec![bad, garbage]));
    assert!(fx.records.is_empty());
    assert_eq!(fx.counts, Counts { frames_bad_mic: 1, frames_malformed: 1, ..Counts::default() });
}

#[test]
fn a_meter_sample_becomes_a_reading() {
    let mut d = district(false, true);
    let mut metrics = Map::new();
    metrics.insert("power_w".into(), json!(1234.5));
    let at = t0() - Duration::seconds(1);
    let sample = MeterSample { device: "meter-01".into(), at, metrics, wmbus: None };
    let fx = d.on_input(t0(), Input::Ingest(vec![Received::Sample(sample)]));
    assert_eq!(fx.counts, Counts { meter_samples: 1, ..Counts::default() });
    assert_eq!(fx.records.len(), 1);
    assert_eq!(fx.records[0].topic().suffix(), "reading/meter-01");
    let v = json_of(&fx.records[0], 7);
    assert_eq!(
        (v["seq"].clone(), v["profile"].clone(), v["metrics"]["power_w"].clone()),
        (json!(7), json!("sml"), json!(1234.5))
    );
    assert_eq!(v["at"], crate::reading::rfc3339(at));
    assert!(fx.persist.is_empty());
}

#[test]
fn readings_not_published_are_still_seen() {
    let mut d = district(false, false);
    let fx = d.on_input(t0(), frames(vec![sensor_frame(1, b"hello")]));
    assert!(fx.records.is_empty());
    assert_eq!(fx.readings, 0);
    assert_eq!(fx.seen.len(), 1);
    assert_eq!(fx.seen[0].device, SENSOR);
    // The frame counter is persisted all the same.
    assert!(fx.persist.contains(&Persist::FcntUp { device: SENSOR.into(), fcnt: 1 }), "{:?}", fx.persist);
}

#[test]
fn ingest_keeps_arrival_order_and_puts_what_the_loops_derived_after_the_readings() {
    let mut d = district(false, true);
    let sample = MeterSample { device: "meter-01".into(), at: t0(), metrics: Map::new(), wmbus: None };
    let input = Input::Ingest(vec![
        Received::Frame(sensor_frame(1, b"a")),
        Received::Sample(sample),
        Received::Frame(sensor_frame(2, b"b")),
    ]);
    let fx = d.on_input(t0(), input);
    let topics: Vec<String> = fx.records.iter().map(|m| m.topic().suffix()).collect();
    assert_eq!(topics, vec![format!("reading/{SENSOR}"), "reading/meter-01".into(), format!("reading/{SENSOR}")]);
}

#[test]
fn a_lighting_override_journals_the_zone_state_and_queues_lamp_downlinks() {
    let mut d = district(true, true);
    let cmd = Input::Command {
        cmd: CommandName::LightingOverride,
        args: json!({"zone": "reiherhagen", "level_pct": 80, "duration_s": 600}),
    };
    let fx = d.on_input(t0(), cmd);
    match &fx.answer {
        Some(Answer::Command(Ok(state))) => assert!(state.is_object(), "{state}"),
        other => panic!("expected the zone's state, got {other:?}"),
    }
    let topics: Vec<String> = fx.records.iter().map(|m| m.topic().suffix()).collect();
    assert!(topics.contains(&"lighting/reiherhagen".to_string()), "{topics:?}");
    let state = fx.records.iter().find(|m| m.topic().suffix() == "lighting/reiherhagen").expect("zone state");
    assert!(state.topic().retained());
    assert_eq!(json_of(state, 99)["seq"], 99, "the loops' JSON messages get their seq when journaled");
    // lamp-01 is a class C device with a route: its level command leaves at once, after its FCntDown
    // is persisted. The other lamps of the zone have no session: nothing is queued for them.
    assert_eq!(fx.downlinks.len(), 1, "{:?}", fx.downlinks);
    let dl = &fx.downlinks[0];
    assert_eq!((dl.device.as_str(), dl.kind), (LAMP, DownlinkKind::ClassC));
    assert!(fx.persist.iter().any(|p| matches!(p, Persist::FcntDown { device, .. } if device == LAMP)));
    assert!(fx.relays.is_empty());
}

#[test]
fn a_loop_command_for_a_loop_that_is_not_configured_is_refused_and_does_nothing() {
    let mut d = district(false, true);
    let fx = d.on_input(t0(), Input::Command { cmd: CommandName::DrEvent, args: json!({}) });
    assert!(matches!(fx.answer, Some(Answer::Command(Err((RefusalCode::UnknownCommand, _))))));
    assert!(fx.is_empty());
}

#[test]
fn enqueue_answers_with_an_id_or_why_not() {
    let mut d = district(false, true);
    let fx = d.on_input(t0(), Input::Enqueue { device: LAMP.into(), f_port: 2, payload: vec![50], confirmed: false });
    assert!(matches!(fx.answer, Some(Answer::Enqueued(Ok(_)))));
    assert_eq!(fx.downlinks.len(), 1, "a class C device with a route gets it at once");
    let fx =
        d.on_input(t0(), Input::Enqueue { device: "nobody".into(), f_port: 2, payload: vec![50], confirmed: false });
    assert!(matches!(fx.answer, Some(Answer::Enqueued(Err(_)))));
    assert!(fx.is_empty());
}

#[test]
fn a_failed_confirmed_downlink_is_retried_on_the_tick_and_counted_when_it_gives_up() {
    let mut d = district(false, true);
    let enqueue = Input::Enqueue { device: LAMP.into(), f_port: 2, payload: vec![50], confirmed: true };
    let fx = d.on_input(t0(), enqueue);
    let first = fx.downlinks[0].f_cnt_down.expect("a data downlink");
    d.on_input(t0(), Input::TxFailed { device: LAMP.into(), f_cnt_down: first });
    // Ticks over the next minutes: the downlink is sent again until its attempts run out.
    let mut sent = 1;
    let mut failed = 0;
    for s in 1..=600 {
        let fx = d.on_input(t0() + Duration::seconds(s), Input::Tick);
        sent += fx.downlinks.len();
        failed += fx.counts.downlinks_failed;
        assert_eq!(fx.persist.len(), fx.downlinks.len(), "each send persists its FCntDown first");
    }
    assert!(sent >= 2, "the downlink was sent again after the gateway refused it");
    assert_eq!(failed, 1, "never acknowledged: counted as failed once");
}

#[test]
fn a_tick_reports_status() {
    let mut d = district(true, true);
    let fx = d.on_input(t0(), Input::Tick);
    assert!(fx.answer.is_none());
    let status = d.status(t0());
    assert_eq!(status["lorawan"]["devices"], 2);
    assert_eq!(status["lorawan"]["sessions"], 2);
    assert_eq!(status["lorawan"]["queued_downlinks"], 0);
    // Both ABP devices have a MAC state from their session's start; nothing asked yet.
    let mac = &status["lorawan"]["mac"];
    assert_eq!(mac["devices"][SENSOR]["pending"], serde_json::json!([]), "{status}");
    assert_eq!(
        (mac["devices"][SENSOR]["tx_power"].as_u64(), mac["devices"][SENSOR]["nb_trans"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(mac["counts"]["requests_sent"], 0);
    assert!(status.get("lighting").is_some_and(|l| !l.is_null()), "{status}");
}

#[test]
fn loop_state_saved_before_a_restart_is_restored_and_its_open_window_closes_on_the_first_tick() {
    let mut d = district_with(false, true, Some(60));
    let mut metrics = Map::new();
    metrics.insert("power_w".into(), json!(1000.0));
    let sample = MeterSample { device: "meter-01".into(), at: t0(), metrics, wmbus: None };
    let fx = d.on_input(t0(), Input::Ingest(vec![Received::Sample(sample)]));
    assert_eq!(fx.records.len(), 1, "the window is still open: only the reading");
    let saved = d.loops_snapshot(t0());

    // A restart five minutes later: the window closed while the gateway was down.
    let later = t0() + Duration::minutes(5);
    let mut fresh = district_with(false, true, Some(60));
    assert!(fresh.on_input(later, Input::Tick).records.is_empty(), "without the saved state: nothing");
    let mut again = district_with(false, true, Some(60));
    let fx = again.on_input(later, Input::RestoreLoops(saved));
    assert!(fx.records.is_empty() && fx.answer.is_none());
    let fx = again.on_input(later, Input::Tick);
    let topics: Vec<String> = fx.records.iter().map(|m| m.topic().suffix()).collect();
    assert_eq!(topics, vec!["agg/meter-01".to_string()]);
    let v = json_of(&fx.records[0], 3);
    assert_eq!((v["seq"].clone(), v["gateway"].clone()), (json!(3), json!(GATEWAY)));
    assert_eq!(fx.readings, 0);
}

#[test]
fn device_changes_go_through_the_district() {
    let mut d = district(false, true);
    let before = d.device_config(SENSOR).expect("configured");
    let info = DeviceInfo { profile: "raw".into(), class: DeviceClass::A, adr: true };
    // New keys: a new session, whose counters are persisted with it.
    let fx = d.upsert_device(SENSOR, info, abp(SENSOR_ADDR, 7), None);
    assert!(fx.persist.iter().any(|p| matches!(p, Persist::Session { device, .. } if device == SENSOR)));
    assert_eq!(fx.downlinks_dropped(), 0);
    // Put back (the shell's undo when the change cannot be written).
    let (info, prov) = before;
    let _ = d.upsert_device(SENSOR, info, prov, None);
    let fx = d.on_input(t0(), frames(vec![sensor_frame(1, b"back")]));
    assert_eq!(fx.readings, 1, "the old keys work again");

    // A class C device with queued downlinks: removing it drops them.
    d.on_input(t0(), Input::Enqueue { device: LAMP.into(), f_port: 2, payload: vec![1], confirmed: false });
    let fx = d.remove_device(LAMP);
    assert!(d.device_config(LAMP).is_none());
    assert!(fx.downlinks.is_empty());
    assert_eq!(d.network_server().device_count(), 1);
}
