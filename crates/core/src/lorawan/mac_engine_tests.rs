//! The MAC engine in simulated time: ADR requests and what the device accepted, resend bound, refusal
//! backoff, sticky answers, DeviceTimeAns, persistence, malformed answers; then through the network
//! server: FOpts (≤ 15 bytes) beside data, FPort 0 alone, decoded as the device sees them.

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::device_frames::{build_uplink, open_downlink, UplinkSpec};
use crate::ingest::{Origin, RadioFrame};
use crate::keys::{DevAddr, Eui64, Key128};
use crate::lorawan::join::JoinConfig;
use crate::lorawan::mac::parse_mac_uplink;
use crate::lorawan::mac_down::CID_LINK_ADR;
use crate::lorawan::{DeviceClass, QueueConfig};
use crate::netserver::{DeviceInfo, NetworkServer, NsConfig, Persist, Provisioning, StoredDevice};

const DEV: &str = "meter-1";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 20, 0, 0).single().expect("valid time")
}

fn uplink(f_cnt: u32, adr: bool, mac: Vec<MacCommand>) -> Uplink {
    Uplink {
        device: DEV.into(),
        dev_addr: DevAddr(1),
        f_cnt,
        f_port: Some(1),
        payload: vec![1],
        fopts: Vec::new(),
        mac_commands: mac,
        mac_error: None,
        confirmed: false,
        adr,
        adr_ack_req: false,
        ack: false,
        fcnt_reset: false,
    }
}

fn radio(sf: u8, snr: f64) -> UplinkRadio {
    UplinkRadio { tmst: 1_000_000, freq_hz: 868_100_000, sf, bw_khz: 125, snr_db: Some(snr), received_at_ms: 0 }
}

const OTAA: DeviceFacts = DeviceFacts { abp: false, adr_allowed: true };

/// One uplink; the window's frame carries everything offered.
fn round(e: &mut MacEngine, f_cnt: u32, sf: u8, snr: f64, mac: Vec<MacCommand>) -> MacWindow {
    let w = e.on_uplink(DEV, OTAA, &uplink(f_cnt, true, mac), Some(&radio(sf, snr)), t0());
    e.sent(DEV, w.commands.len());
    w
}

fn link_adr(w: &MacWindow) -> Option<MacRequest> {
    w.commands.iter().find(|c| c.first() == Some(&CID_LINK_ADR)).map(|c| MacRequest::LinkAdr {
        dr: c[1] >> 4,
        tx_power: c[1] & 0x0f,
        ch_mask: u16::from_le_bytes([c[2], c[3]]),
        nb_trans: c[4] & 0x0f,
    })
}

#[test]
fn adr_speeds_up_a_strong_device_and_follows_only_what_it_accepted() {
    let mut e = MacEngine::new(MacConfig::default());
    let w = round(&mut e, 0, 12, 10.0, vec![]);
    let first = link_adr(&w).expect("a LinkADRReq");
    assert_eq!(first, MacRequest::LinkAdr { dr: 5, tx_power: 1, ch_mask: 0x00ff, nb_trans: 1 });
    assert!(w.changed);
    assert!(matches!(w.events[..], [MacEvent::AdrRequested { .. }]));
    // Nothing accepted yet: the state has not moved.
    assert_eq!((e.state(DEV).unwrap().dr, e.state(DEV).unwrap().tx_power), (None, 0));

    // The device accepts and moves; its SNR falls 2 dB per TX power step. ADR converges without ever
    // asking the same thing twice, and the data rate stays at DR5.
    let mut asked = vec![first];
    let mut status = 0x07;
    let mut snr = 8.0;
    for f in 1..40 {
        let w = round(&mut e, f, 7, snr, vec![MacCommand::LinkAdrAns { status }]);
        status = 0;
        if let Some(MacRequest::LinkAdr { dr, tx_power, .. }) = link_adr(&w) {
            let req = link_adr(&w).unwrap();
            assert!(!asked.contains(&req), "asked again: {req:?}");
            assert_eq!(dr, 5);
            asked.push(req);
            status = 0x07;
            snr = 10.0 - 2.0 * f64::from(tx_power);
        }
    }
    let s = e.state(DEV).unwrap();
    assert_eq!((s.dr, s.tx_power, s.pending.len()), (Some(5), 3, 0));
    assert_eq!(asked.len(), 3, "{asked:?}");
    let st = e.status(DEV).unwrap();
    assert_eq!((st.dr, st.tx_power, st.nb_trans), (Some(5), 3, 1));
    assert!(st.snr_margin_db.unwrap() < 3.0);
    assert_eq!(e.counts().accepted, 3);
}

#[test]
fn a_failing_link_is_slowed_down_after_a_full_history() {
    let mut e = MacEngine::new(MacConfig::default());
    let w = round(&mut e, 0, 7, 0.0, vec![]);
    assert!(link_adr(&w).is_none(), "margin −2.5 dB is inside the dead band");
    for f in 1..(adr::HISTORY_LEN as u32 - 1) {
        assert!(link_adr(&round(&mut e, f, 7, -12.0, vec![])).is_none(), "uplink {f}: history not full");
    }
    // 20 uplinks: best SNR 0 dB → margin −2.5 → no steps; the 0 dB sample must leave the history first.
    let mut got = None;
    for f in 19..25 {
        got = link_adr(&round(&mut e, f, 7, -12.0, vec![]));
        if got.is_some() {
            break;
        }
    }
    // −12 + 7.5 − 10 = −14.5 → −4 steps: power is already max (index 0), so DR5 → DR1.
    assert_eq!(got, Some(MacRequest::LinkAdr { dr: 1, tx_power: 0, ch_mask: 0x00ff, nb_trans: 1 }));
}

#[test]
fn a_refused_link_adr_backs_off_and_bounds_the_device() {
    let mut e = MacEngine::new(MacConfig::default());
    assert!(link_adr(&round(&mut e, 0, 12, 10.0, vec![])).is_some());
    // Data rate refused (power and channel mask ACKed): nothing applies, DR4 becomes its bound.
    let w = round(&mut e, 1, 12, 10.0, vec![MacCommand::LinkAdrAns { status: 0b101 }]);
    assert!(matches!(w.events[0], MacEvent::Refused { status: 0b101, .. }));
    let s = e.state(DEV).unwrap();
    assert_eq!((s.dr, s.max_dr, s.holdoff, s.refused_count), (None, Some(4), REFUSAL_HOLDOFF_UPLINKS - 1, 1));
    assert!(link_adr(&w).is_none());
    let mut quiet = 0;
    let mut next = None;
    for f in 2..40 {
        match link_adr(&round(&mut e, f, 12, 10.0, vec![])) {
            None => quiet += 1,
            Some(r) => {
                next = Some(r);
                break;
            }
        }
    }
    // The uplink that carried the refusal counts as the first of the hold-off.
    assert_eq!(quiet, usize::from(REFUSAL_HOLDOFF_UPLINKS) - 1);
    // 6 steps: DR0 → DR4 (its bound), then two power steps.
    assert_eq!(next, Some(MacRequest::LinkAdr { dr: 4, tx_power: 2, ch_mask: 0x00ff, nb_trans: 1 }));
}

#[test]
fn an_unanswered_request_is_resent_then_dropped_and_counted() {
    let mut e = MacEngine::new(MacConfig { max_tries: 3, ..MacConfig::default() });
    let req = MacRequest::DutyCycle { max_duty_cycle: 7 };
    assert_eq!(e.enqueue(DEV, false, req), Ok(true));
    let mut carried = 0;
    let mut dropped = None;
    for f in 0..6 {
        let w = round(&mut e, f, 9, -5.0, vec![]);
        carried += usize::from(w.commands.contains(&req.encode()));
        if let Some(MacEvent::Dropped { tries, .. }) = w.events.first() {
            dropped = Some((f, *tries));
        }
    }
    assert_eq!(carried, 3);
    assert_eq!(dropped, Some((3, 3)));
    let s = e.state(DEV).unwrap();
    assert_eq!((s.pending.len(), s.dropped_count), (0, 1));
    assert_eq!(e.counts().dropped, 1);
    // A late answer is unexpected, not applied.
    let w = round(&mut e, 9, 9, -5.0, vec![MacCommand::DutyCycleAns]);
    assert_eq!(w.events, vec![MacEvent::Unexpected { cid: 0x04 }]);
    assert_eq!(e.state(DEV).unwrap().max_duty_cycle, 0);
}

#[test]
fn sticky_rx_answers_are_applied_once_and_always_get_a_downlink() {
    let rx = RxSettings { rx2_dr: 3, rx1_delay_s: 2, ..RxSettings::default() };
    let mut e = MacEngine::new(MacConfig { rx, ..MacConfig::default() });
    // A session from before the windows changed: it has the region defaults.
    let mut old = MacState::new(&MacConfig::default(), false);
    old.pending.clear();
    e.restore(DEV, old);
    let w = round(&mut e, 0, 9, -5.0, vec![]);
    let want_param = MacRequest::RxParamSetup { rx1_dr_offset: 0, rx2_dr: 3, rx2_freq_hz: 869_525_000 };
    let want_timing = MacRequest::RxTimingSetup { delay_s: 2 };
    assert_eq!(w.commands, vec![want_param.encode(), want_timing.encode()]);
    assert!(!w.force_downlink);
    assert_eq!(e.rx(DEV), RxSettings::default());

    let answers = vec![MacCommand::RxParamSetupAns { status: 0x07 }, MacCommand::RxTimingSetupAns];
    let w = round(&mut e, 1, 9, -5.0, answers.clone());
    assert!(w.force_downlink, "a sticky answer needs a downlink");
    assert_eq!(w.events.len(), 2);
    assert!(w.commands.is_empty());
    assert_eq!(e.rx(DEV), rx, "the next window already uses what the device accepted");
    // The device repeats them until a downlink reaches it: still a downlink, no state change, not unexpected.
    let w = round(&mut e, 2, 9, -5.0, answers);
    assert!(w.force_downlink && w.events.is_empty() && !w.changed);
    assert_eq!(e.rx(DEV), rx);
}

#[test]
fn refused_rx_setup_is_not_asked_again() {
    let rx = RxSettings { rx2_dr: 3, ..RxSettings::default() };
    let mut e = MacEngine::new(MacConfig { rx, ..MacConfig::default() });
    e.restore(DEV, MacState::new(&MacConfig::default(), true));
    assert_eq!(round(&mut e, 0, 9, -5.0, vec![]).commands.len(), 1);
    let w = round(&mut e, 1, 9, -5.0, vec![MacCommand::RxParamSetupAns { status: 0b101 }]);
    assert!(matches!(w.events[0], MacEvent::Refused { .. }));
    for f in 2..10 {
        assert!(round(&mut e, f, 9, -5.0, vec![]).commands.is_empty());
    }
    assert_eq!(e.rx(DEV).rx2_dr, 0);
}

#[test]
fn device_time_and_adr_ack_req_are_answered() {
    let mut e = MacEngine::new(MacConfig::default());
    let mut up = uplink(0, false, vec![MacCommand::DeviceTimeReq]);
    up.adr_ack_req = true;
    let w = e.on_uplink(DEV, OTAA, &up, Some(&radio(12, -25.0)), t0());
    assert_eq!(w.commands, vec![device_time_ans(t0())]);
    assert!(w.force_downlink);
    // ADR off for the device: ADRACKReq is still answered, no LinkADRReq.
    let facts = DeviceFacts { abp: false, adr_allowed: false };
    let mut up = uplink(1, true, vec![]);
    up.adr_ack_req = true;
    let w = e.on_uplink(DEV, facts, &up, Some(&radio(12, 10.0)), t0());
    assert!(w.force_downlink && link_adr(&w).is_none());
}

#[test]
fn abp_devices_get_the_configured_channels() {
    let channels = crate::lorawan::region::DEFAULT_CF_LIST.to_vec();
    let mut e = MacEngine::new(MacConfig { abp_channels: channels, ..MacConfig::default() });
    let abp = DeviceFacts { abp: true, adr_allowed: true };
    let w = e.on_uplink(DEV, abp, &uplink(0, false, vec![]), Some(&radio(9, 0.0)), t0());
    assert_eq!(w.commands.len(), 5);
    assert_eq!(w.commands[0], [0x07, 3, 0x18, 0x4f, 0x84, 0x50]);
    assert_eq!(e.state(DEV).unwrap().ch_mask, DEFAULT_CHANNELS_MASK);
    e.sent(DEV, 2);
    let acks = vec![MacCommand::NewChannelAns { status: 3 }, MacCommand::NewChannelAns { status: 1 }];
    let w = e.on_uplink(DEV, abp, &uplink(1, false, acks), Some(&radio(9, 0.0)), t0());
    // Channel 3 accepted, channel 4 refused (data-rate range): 4 is not asked again, 5..7 still are.
    assert_eq!(e.state(DEV).unwrap().ch_mask, 0b1111);
    assert_eq!(w.commands.len(), 3);
    assert_eq!(w.commands[0][1], 5);
}

#[test]
fn state_round_trips_and_bad_bytes_are_refused() {
    let mut e = MacEngine::new(MacConfig::default());
    round(&mut e, 0, 12, 10.0, vec![]);
    e.enqueue(DEV, false, MacRequest::DevStatus).unwrap();
    let s = e.state(DEV).unwrap().clone();
    assert_eq!(s.pending.len(), 2);
    assert_eq!(MacState::from_bytes(&s.to_bytes()), Some(s.clone()));
    assert_eq!(MacState::from_bytes(b"{"), None);
    assert_eq!(MacState::from_bytes(&[0xff; 40]), None);
    // A stored request that is out of range is not loaded.
    let mut bad = s;
    bad.pending[0].req = MacRequest::RxTimingSetup { delay_s: 0 };
    assert_eq!(MacState::from_bytes(&bad.to_bytes()), None);
    let mut bad = MacState::new(&MacConfig::default(), true);
    bad.rx2_dr = 200;
    assert_eq!(MacState::from_bytes(&bad.to_bytes()), None);
    assert_eq!(
        e.enqueue(DEV, false, MacRequest::LinkAdr { dr: 3, tx_power: 0, ch_mask: 7, nb_trans: 0 }),
        Err(MacEnqueueError::Invalid("LinkADRReq: NbTrans must be 1..=15"))
    );
}

#[test]
fn malformed_and_random_answers_never_panic_or_apply() {
    let mut e = MacEngine::new(MacConfig::default());
    let mut rng = crate::test_support::XorShift(0x5eed_1234);
    for f in 0..3_000u32 {
        let len = (rng.next() % 16) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let (cmds, _) = parse_mac_uplink(&bytes);
        let w = round(&mut e, f, 7 + (rng.next() % 6) as u8, (rng.next() % 40) as f64 - 25.0, cmds);
        assert!(w.commands.iter().map(Vec::len).sum::<usize>() <= 64);
        let s = e.state(DEV).unwrap();
        assert!(s.pending.len() <= MAX_PENDING);
        assert!(s.tx_power <= adr::EU868_MIN_TX_POWER_INDEX && s.nb_trans >= 1);
    }
}

// ------------------------------------------------------------------ through the network server

const ADDR: DevAddr = DevAddr(0x2601_0001);
const NWK: Key128 = Key128::new([3; 16]);
const APP: Key128 = Key128::new([4; 16]);

fn ns(rx: RxSettings) -> NetworkServer {
    let mut ns = NetworkServer::new(NsConfig {
        gateway_id: "gw".into(),
        join: JoinConfig { rx, ..JoinConfig::default() },
        dev_addr_range: (DevAddr(0x100), DevAddr(0x1ff)),
        queue: QueueConfig { dev_status_interval_ms: None, ..QueueConfig::default() },
        min_lead_ms: 50,
    })
    .expect("network server");
    ns.set_mac_options(AdrConfig::default(), 3, crate::lorawan::region::DEFAULT_CF_LIST.to_vec());
    ns
}

fn provision() -> (DeviceInfo, Provisioning) {
    let info = DeviceInfo { profile: "raw".into(), class: DeviceClass::A, adr: true };
    (info, Provisioning::Abp { dev_addr: ADDR, nwk_s_key: NWK, app_s_key: APP, relax_fcnt: false })
}

fn frame(f_cnt: u32, sf: u8, snr: f64, fopts: &[u8]) -> RadioFrame {
    let phy = build_uplink(&UplinkSpec {
        dev_addr: ADDR,
        nwk_s_key: &NWK,
        app_s_key: &APP,
        f_cnt,
        f_port: Some(1),
        payload: &[1, 2, 3],
        confirmed: false,
        ack: false,
        adr: true,
        fopts,
    });
    RadioFrame {
        phy,
        rssi: Some(-100),
        snr: Some(snr),
        freq_hz: 868_100_000,
        sf: Some(sf),
        bw_khz: 125,
        tmst: Some(5_000_000),
        origin: Origin { source: 0, gateway: Eui64(1) },
    }
}

#[test]
fn commands_go_in_fopts_beside_data_and_on_fport_0_alone() {
    let mut ns = ns(RxSettings::default());
    let (info, prov) = provision();
    let _ = ns.upsert_device(DEV, info, prov);
    // Five NewChannelReqs (30 bytes) and a LinkADRReq (5): more than FOpts hold, nothing else queued.
    let (outcome, out) = ns.handle_frame(t0(), 10_000, &frame(0, 12, 10.0, &[]));
    assert!(!out.downlinks.is_empty(), "{outcome:?} {:?}", out.notes);
    let dl = open_downlink(&out.downlinks[0].phy, &NWK, &APP).expect("the device opens it");
    assert_eq!(dl.f_port, Some(0));
    assert!(dl.fopts.is_empty());
    assert_eq!(dl.payload.len(), 30 + 5, "all commands in the encrypted FPort-0 payload");
    assert_eq!((dl.payload[0], dl.payload[5]), (0x03, 0x07), "the LinkADRReq, then the channels");
    assert!(out.persist.iter().any(|p| matches!(p, Persist::MacState { state: Some(_), .. })));

    // With application data queued, the resent commands ride in FOpts, at most 15 bytes.
    ns.enqueue(10_500, DEV, 5, &[9; 20], false).expect("queued");
    let (_, out) = ns.handle_frame(t0(), 20_000, &frame(1, 12, 10.0, &[]));
    let dl = open_downlink(&out.downlinks[0].phy, &NWK, &APP).expect("the device opens it");
    assert_eq!((dl.f_port, dl.payload.len()), (Some(5), 20));
    assert!(!dl.fopts.is_empty() && dl.fopts.len() <= 15, "{} bytes", dl.fopts.len());
    assert_eq!(dl.fopts.len(), 11, "the LinkADRReq and one NewChannelReq: the next would pass 15");
}

#[test]
fn accepted_rx2_settings_are_used_by_the_scheduler_and_survive_a_restart() {
    let rx = RxSettings { rx2_dr: 3, ..RxSettings::default() };
    let mut a = ns(rx);
    let (info, prov) = provision();
    // The device's stored state is from before the network moved RX2 to DR3.
    let old = MacState::new(&MacConfig { cf_list: vec![], ..MacConfig::default() }, true);
    let stored = |mac| StoredDevice { fcnt_up: Some(0), mac, ..StoredDevice::default() };
    let _ = a.restore_device(DEV, info.clone(), prov.clone(), stored(Some(old)));
    let (_, out) = a.handle_frame(t0(), 10_000, &frame(1, 12, -15.0, &[]));
    let dl = open_downlink(&out.downlinks[0].phy, &NWK, &APP).unwrap();
    assert!(dl.payload.windows(5).any(|w| w == [0x05, 0x03, 0xd2, 0xad, 0x84]), "RXParamSetupReq");
    let saved = |out: &crate::netserver::Output| {
        out.persist.iter().rev().find_map(|p| match p {
            Persist::MacState { state: Some(s), .. } => Some((**s).clone()),
            _ => None,
        })
    };
    let state = saved(&out).expect("persisted with its pending requests");
    assert!(state.pending.iter().all(|p| p.tries == 1));

    // Restart: the pending requests come back and are resent.
    let mut b = ns(rx);
    let _ = b.restore_device(DEV, info.clone(), prov.clone(), stored(Some(state.clone())));
    assert_eq!(b.mac_state(DEV), Some(&state));
    // The device answers (ACK) with a frame at SF12 too weak for RX1 → the scheduler's RX2 is DR3.
    let (_, out) = b.handle_frame(t0(), 20_000, &frame(2, 12, -15.0, &[0x05, 0x07]));
    assert_eq!(b.mac_state(DEV).unwrap().rx2_dr, 3);
    assert_eq!(out.downlinks.len(), 1, "the sticky answer gets a downlink");
    assert_eq!(b.mac_state(DEV).unwrap().rx().rx2_dr, 3);
}

#[test]
fn the_scheduler_uses_the_windows_the_device_accepted() {
    use crate::lorawan::{DownlinkQueue, Eu868, Scheduler, Window};
    let mut sched = Scheduler::new(Eu868::default(), RxSettings::default(), 100);
    let accepted = RxSettings { rx2_dr: 3, rx1_delay_s: 2, ..RxSettings::default() };
    let mut q = DownlinkQueue::new(DEV, DeviceClass::C, ADDR, NWK, APP, QueueConfig::default());
    q.enqueue(5, &[1], false).unwrap();
    let c = sched.class_c_rx(&mut q, &accepted, 0).unwrap().unwrap();
    assert_eq!((c.plan.params.window, c.plan.params.dr), (Window::ClassC, 3));
    // Class A: RX1 after the accepted 2 s; RX1 missed (the uplink came 1.5 s ago) → RX2 at DR3.
    q.set_class(DeviceClass::A);
    q.enqueue(5, &[2], false).unwrap();
    let r = UplinkRadio { received_at_ms: 10_000, ..radio(12, -10.0) };
    let a = sched.answer_uplink_rx(&mut q, &r, &accepted, 10_000).unwrap().unwrap();
    assert_eq!((a.plan.params.window, a.plan.params.delay.as_secs()), (Window::Rx1, 2));
    q.enqueue(5, &[3], false).unwrap();
    let a = sched.answer_uplink_rx(&mut q, &r, &accepted, 12_000).unwrap().unwrap();
    assert_eq!((a.plan.params.window, a.plan.params.dr, a.plan.params.delay.as_secs()), (Window::Rx2, 3, 3));
}
