use std::time::Duration;

use super::*;
use crate::decode::encode_lamp_level;
use crate::device_frames::open_downlink_after;
use crate::lorawan::airtime::downlink_airtime;
use crate::lorawan::region::{Eu868, RxSettings, Window};

fn key(b: u8) -> Key128 {
    Key128::new([b; 16])
}

fn group() -> McGroup {
    McGroup {
        name: "main-street".into(),
        dev_addr: DevAddr(0x0200_0001),
        nwk_s_key: Key128::from_hex("2b7e151628aed2a6abf7158809cf4f3c").unwrap(),
        app_s_key: Key128::from_hex("000102030405060708090a0b0c0d0e0f").unwrap(),
        data_rate: 3,
        freq_hz: 869_525_000,
        members: vec!["lamp-01".into(), "lamp-02".into()],
    }
}

fn scheduler() -> Scheduler {
    Scheduler::new(Eu868::default(), RxSettings::default(), 100)
}

fn multicast() -> Multicast {
    let mut m = Multicast::default();
    m.set_groups(vec![group()]);
    m
}

#[test]
fn frame_opens_with_the_group_keys_only() {
    let g = group();
    let phy = build_frame(&g, 0x0001_0005, 10, &[42]).unwrap();
    // MHDR: unconfirmed data down; FCtrl 0: no ADR, no ACK, no FPending, no FOpts.
    assert_eq!(phy[0], 0x60);
    assert_eq!(phy[5], 0);
    assert_eq!(phy.len(), OVERHEAD + 1);
    let d = open_downlink_after(&phy, &g.nwk_s_key, &g.app_s_key, Some(0x0001_0004)).unwrap();
    assert_eq!(
        (d.dev_addr, d.f_cnt_down, d.f_port, d.payload.as_slice()),
        (g.dev_addr, 0x0001_0005, Some(10), &[42][..])
    );
    assert!(!d.confirmed && !d.ack && !d.f_pending && d.fopts.is_empty());
    // Another network key: the MIC fails; another application key: the level is garbage.
    assert!(open_downlink_after(&phy, &key(7), &g.app_s_key, Some(0x0001_0004)).is_err());
    let wrong = open_downlink_after(&phy, &g.nwk_s_key, &key(7), Some(0x0001_0004)).unwrap();
    assert_ne!(wrong.payload, vec![42]);
}

/// The frame checked by an implementation written from the specification in Python (`cryptography`),
/// not by the `lorawan` crate that built it.
#[test]
fn frame_verifies_with_an_independent_implementation() {
    let what = "python3 with the `cryptography` package (tests/data/open_downlink.py)";
    if !crate::test_support::require(
        what,
        "apt-get install -y python3-cryptography",
        crate::test_support::python_has("cryptography"),
    ) {
        return;
    }
    let g = group();
    let (f_port, payload) = encode_lamp_level("lamp-generic", 70).unwrap();
    for f_cnt in [0u32, 1, 0x0001_0002] {
        let phy = build_frame(&g, f_cnt, f_port, &payload).unwrap();
        let out = std::process::Command::new("python3")
            .arg(crate::test_support::repo_root().join("tests/data/open_downlink.py"))
            .args([hex::encode(&phy), hex::encode(g.nwk_s_key.expose()), hex::encode(g.app_s_key.expose())])
            .arg(f_cnt.to_string())
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["mic_ok"], true, "{v}");
        assert_eq!(v["mtype"], 3, "unconfirmed data down");
        assert_eq!(v["dev_addr"], "02000001");
        assert_eq!(v["fctrl"], 0);
        assert_eq!(v["f_port"], u64::from(f_port));
        assert_eq!(v["payload"], hex::encode(&payload));
    }
}

#[test]
fn counter_moves_on_with_every_frame_and_never_back() {
    let mut m = multicast();
    let mut s = scheduler();
    assert_eq!(m.send_pending("main-street", 0, &mut s), Ok(None));
    for i in 0..3u32 {
        m.set_pending("main-street", 10, &[i as u8]).unwrap();
        let sent = m.send_pending("main-street", 1000 * u64::from(i), &mut s).unwrap().unwrap();
        assert_eq!((sent.f_cnt, sent.next_f_cnt), (i, i + 1));
        assert_eq!(
            (sent.params.window, sent.params.imme, sent.params.dr, sent.params.sf),
            (Window::ClassC, true, 3, 9)
        );
        assert_eq!(sent.params.freq_hz, 869_525_000);
        assert_eq!(sent.airtime, downlink_airtime(9, 125, sent.phy.len()));
    }
    assert_eq!(m.next_f_cnt("main-street"), Some(3));
    // The store's counter is applied, but never moves it back.
    m.restore_f_cnt("main-street", 10);
    m.restore_f_cnt("main-street", 4);
    assert_eq!(m.next_f_cnt("main-street"), Some(10));
    // A reload keeps the counter of a group that keeps its name.
    m.set_groups(vec![McGroup { data_rate: 2, ..group() }]);
    assert_eq!(m.next_f_cnt("main-street"), Some(10));
    assert_eq!(m.group_of("lamp-02").map(|g| g.name.as_str()), Some("main-street"));
    assert!(m.group_of("lamp-03").is_none());
}

#[test]
fn newest_frame_wins_and_a_failed_transmission_waits_again() {
    let mut m = multicast();
    let mut s = scheduler();
    m.set_pending("main-street", 10, &[10]).unwrap();
    m.set_pending("main-street", 10, &[80]).unwrap();
    assert_eq!(m.pending(), vec!["main-street".to_string()]);
    let sent = m.send_pending("main-street", 0, &mut s).unwrap().unwrap();
    let d = open_downlink_after(&sent.phy, &group().nwk_s_key, &group().app_s_key, None).unwrap();
    assert_eq!(d.payload, vec![80]);
    assert!(m.pending().is_empty());
    assert!(!m.tx_failed("main-street", sent.f_cnt + 1));
    assert!(m.tx_failed("main-street", sent.f_cnt));
    // Sent again under a new counter (a counter is never used twice).
    let again = m.send_pending("main-street", 10, &mut s).unwrap().unwrap();
    assert_eq!((again.f_cnt, again.phy.len()), (sent.f_cnt + 1, sent.phy.len()));
    assert!(!m.tx_failed("nope", 0));
}

#[test]
fn refusals_keep_the_counter_and_the_frame() {
    let mut m = multicast();
    let mut s = scheduler();
    assert_eq!(m.set_pending("nope", 10, &[1]), Err(McError::UnknownGroup("nope".into())));
    assert_eq!(m.set_pending("main-street", 0, &[1]), Err(McError::BadPort(0)));
    let max = group().max_payload();
    assert_eq!(max, 123 + 5 - OVERHEAD);
    assert_eq!(m.set_pending("main-street", 10, &vec![0; max + 1]), Err(McError::TooLarge { len: max + 1, max }));
    // Fill the g3 sub-band's hour (10 %): the duty cycle refuses, the frame keeps waiting.
    m.set_pending("main-street", 10, &vec![0; max]).unwrap();
    let mut sent = 0u32;
    let refusal = loop {
        match m.send_pending("main-street", 0, &mut s) {
            Ok(Some(_)) => {
                sent += 1;
                m.set_pending("main-street", 10, &vec![0; max]).unwrap();
            }
            Ok(None) => panic!("a frame was waiting"),
            Err(e) => break e,
        }
        assert!(sent < 10_000, "the duty cycle never refused");
    };
    assert!(refusal.is_duty_cycle(), "{refusal}");
    assert_eq!(m.next_f_cnt("main-street"), Some(sent));
    assert_eq!(m.pending(), vec!["main-street".to_string()]);
    // An hour later it goes.
    let later = m.send_pending("main-street", 3_600_001, &mut s).unwrap().unwrap();
    assert_eq!(later.f_cnt, sent);
}

#[test]
fn status_shows_no_keys() {
    let mut m = multicast();
    m.set_pending("main-street", 10, &[5]).unwrap();
    m.send_pending("main-street", 0, &mut scheduler()).unwrap();
    let text = m.status().to_string();
    assert!(text.contains("\"frames_sent\":1") && text.contains("02000001"), "{text}");
    for k in [group().nwk_s_key, group().app_s_key] {
        assert!(!text.contains(&hex::encode(k.expose())), "{text}");
    }
    assert!(!format!("{:?}", group()).contains("2b7e1516"));
}

/// The figure of issue 18: air time of one zone-wide schedule step, unicast at RX2's DR0 (one frame
/// per lamp) against one multicast frame at DR3, for the real frame (`lamp-generic`'s level command).
/// `cargo test --release -p district-core multicast_airtime_figure -- --nocapture` prints the table.
#[test]
fn multicast_airtime_figure() {
    let (f_port, payload) = encode_lamp_level("lamp-generic", 40).unwrap();
    let g = group();
    let unicast_len = build_frame(&g, 0, f_port, &payload).unwrap().len(); // the same header and payload
    let one = |dr: u8| {
        let d = DataRate::from_dr(dr).unwrap();
        downlink_airtime(d.sf, d.bw_khz, unicast_len)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!("one zone-wide step, PHYPayload {unicast_len} bytes (lamp-generic level, FPort {f_port}):");
    eprintln!("| lamps | unicast at DR0 (before) | unicast at DR3 (RX2 moved) | one multicast at DR3 (after) |");
    eprintln!("|---|---|---|---|");
    for lamps in [10u32, 50] {
        let before = one(0) * lamps;
        let rx2_dr3 = one(3) * lamps;
        let after = one(3);
        eprintln!(
            "| {lamps} | {:.0} ms | {:.0} ms | {:.1} ms ({:.0}x less than before) |",
            ms(before),
            ms(rx2_dr3),
            ms(after),
            before.as_secs_f64() / after.as_secs_f64()
        );
        assert!(after * 10 < before);
    }
    assert_eq!(unicast_len, 14);
}
