//! End-to-end tests of the OTAA and downlink core with the simulated device of `device_frames`: join round
//! trip, class A / class C downlinks, confirmed retries, MAC answers, window choice and duty cycle.

use std::time::Duration;

use crate::device_frames::{
    build_data_uplink, build_join_request, build_uplink, open_downlink, open_downlink_after, open_join_accept,
    UplinkSpec,
};
use crate::keys::{DevAddr, Eui64, Key128};
use crate::lorawan::downlink::{link_margin_db, DownlinkQueue, WindowRefusal, MAX_DOWNLINK_PAYLOAD};
use crate::lorawan::join::{JoinConfig, JoinError};
use crate::lorawan::region::{DEFAULT_CF_LIST, RX2_FREQ_HZ};
use crate::lorawan::{
    DevAddrAllocator, DeviceClass, DownlinkEvent, Eu868, JoinContext, JoinServer, NetId, OtaaDevice, QueueConfig,
    RxSettings, ScheduleError, Scheduler, Sessions, UplinkRadio, Window,
};

const JOIN_EUI: Eui64 = Eui64(0x70b3_d57e_d000_0001);
const DEV_EUI: Eui64 = Eui64(0x0004_a30b_001c_0530);
const APP_KEY: Key128 =
    Key128::new([0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c]);

fn radio(tmst: u32, received_at_ms: u64) -> UplinkRadio {
    UplinkRadio { tmst, freq_hz: 868_300_000, sf: 7, bw_khz: 125, snr_db: Some(7.5), received_at_ms }
}

fn scheduler() -> Scheduler {
    Scheduler::new(Eu868::default(), RxSettings::default(), 100)
}

struct Device {
    addr: DevAddr,
    nwk: Key128,
    app: Key128,
    f_cnt: u32,
}

impl Device {
    fn uplink(&mut self, confirmed: bool, ack: bool, fopts: &[u8]) -> Vec<u8> {
        let f_cnt = self.f_cnt;
        self.f_cnt += 1;
        build_uplink(&UplinkSpec {
            dev_addr: self.addr,
            nwk_s_key: &self.nwk,
            app_s_key: &self.app,
            f_cnt,
            f_port: Some(1),
            payload: b"\x01\x02",
            confirmed,
            ack,
            adr: false,
            fopts,
        })
    }
}

fn abp(class: DeviceClass, config: QueueConfig) -> (Sessions, DownlinkQueue, Device) {
    let dev = Device { addr: DevAddr(0x2601_0203), nwk: Key128::new([1; 16]), app: Key128::new([2; 16]), f_cnt: 0 };
    let mut s = Sessions::new();
    s.upsert("lamp-01", dev.addr, dev.nwk, dev.app, false);
    let q = DownlinkQueue::new("lamp-01", class, dev.addr, dev.nwk, dev.app, config);
    (s, q, dev)
}

fn no_dev_status() -> QueueConfig {
    QueueConfig { dev_status_interval_ms: None, ..QueueConfig::default() }
}

#[test]
fn join_round_trip() {
    let config = JoinConfig { net_id: NetId::from_hex("000013").unwrap(), ..JoinConfig::default() };
    let mut js = JoinServer::new(config.clone()).unwrap();
    js.upsert_device(OtaaDevice { name: "bin-017".into(), dev_eui: DEV_EUI, join_eui: JOIN_EUI, app_key: APP_KEY });
    let mut sessions = Sessions::new();
    // Someone already holds the first address of the range.
    sessions.upsert("abp", DevAddr(0x2600_0000), Key128::new([9; 16]), Key128::new([9; 16]), false);
    let (first, last) = config.net_id.type0_dev_addr_range();
    let mut alloc = DevAddrAllocator::new(first, last).unwrap();

    let dev_nonce = 0x1234;
    let req = build_join_request(JOIN_EUI, DEV_EUI, &APP_KEY, dev_nonce);
    let dev_addr = alloc.allocate(|a| sessions.dev_addr_in_use(a), 1000).unwrap();
    assert_eq!(dev_addr, DevAddr(0x2600_0001));
    let out = js.handle_join_request(&req, JoinContext { join_nonce: 7, dev_addr }).unwrap();
    assert_eq!((out.device.as_str(), out.dev_nonce, out.join_nonce, out.dev_addr), ("bin-017", dev_nonce, 7, dev_addr));
    assert_eq!(out.accept.len(), 33);
    assert_eq!(js.used_nonces(DEV_EUI).unwrap().collect::<Vec<_>>(), vec![dev_nonce]);

    // The device opens the accept and derives the same keys.
    let ds = open_join_accept(&out.accept, &APP_KEY, dev_nonce).unwrap();
    assert_eq!((ds.dev_addr, ds.nwk_s_key, ds.app_s_key), (dev_addr, out.keys.nwk_s_key, out.keys.app_s_key));
    assert_eq!((ds.net_id, ds.join_nonce, ds.rx1_dr_offset, ds.rx2_dr, ds.rx_delay), (config.net_id, 7, 0, 0, 1));
    assert_eq!(ds.cf_list, DEFAULT_CF_LIST.to_vec());
    assert_ne!(ds.nwk_s_key, ds.app_s_key);
    // A device with the wrong AppKey or DevNonce cannot use it.
    assert!(open_join_accept(&out.accept, &Key128::new([0; 16]), dev_nonce).is_err());
    assert_ne!(open_join_accept(&out.accept, &APP_KEY, dev_nonce + 1).unwrap().nwk_s_key, out.keys.nwk_s_key);

    // The caller creates the session; the device's uplinks are accepted.
    sessions.upsert(&out.device, out.dev_addr, out.keys.nwk_s_key, out.keys.app_s_key, false);
    let up = build_data_uplink(ds.dev_addr, &ds.nwk_s_key, &ds.app_s_key, 0, 85, b"\x01\x75\x5c", false);
    let up = sessions.accept_uplink(&up).unwrap();
    assert_eq!((up.device.as_str(), up.f_cnt, up.payload.as_slice()), ("bin-017", 0, &b"\x01\x75\x5c"[..]));

    // The join accept goes out in RX1, 5 s after the request.
    let mut sched = scheduler();
    let r = radio(1_000_000, 50_000);
    let plan = sched.join_accept(out.accept.len(), &r, 50_020).unwrap();
    assert_eq!((plan.params.window, plan.params.tmst, plan.params.freq_hz), (Window::Rx1, Some(6_000_000), r.freq_hz));

    // Replay of the same JoinRequest: refused, nothing changes.
    assert_eq!(
        js.handle_join_request(&req, JoinContext { join_nonce: 8, dev_addr: DevAddr(0x2600_0002) }),
        Err(JoinError::DevNonceReplay { dev_eui: DEV_EUI, dev_nonce })
    );
    // A tampered request: bad MIC.
    let mut bad = req.clone();
    bad[17] ^= 1;
    assert_eq!(
        js.handle_join_request(&bad, JoinContext { join_nonce: 8, dev_addr }),
        Err(JoinError::BadMic { dev_eui: DEV_EUI })
    );

    // Rejoin with a new nonce: a new session; the old keys stop working, counters restart.
    let req2 = build_join_request(JOIN_EUI, DEV_EUI, &APP_KEY, 0x1235);
    let dev_addr2 = alloc.allocate(|a| sessions.dev_addr_in_use(a), 1000).unwrap();
    let out2 = js.handle_join_request(&req2, JoinContext { join_nonce: 8, dev_addr: dev_addr2 }).unwrap();
    assert_ne!(out2.keys, out.keys);
    sessions.upsert(&out2.device, out2.dev_addr, out2.keys.nwk_s_key, out2.keys.app_s_key, false);
    assert_eq!(sessions.last_fcnt("bin-017"), None);
    let old = build_data_uplink(ds.dev_addr, &ds.nwk_s_key, &ds.app_s_key, 1, 85, b"x", false);
    assert!(sessions.accept_uplink(&old).is_err());
    let ds2 = open_join_accept(&out2.accept, &APP_KEY, 0x1235).unwrap();
    let new = build_data_uplink(ds2.dev_addr, &ds2.nwk_s_key, &ds2.app_s_key, 0, 85, b"x", false);
    assert_eq!(sessions.accept_uplink(&new).unwrap().f_cnt, 0);
    // What the store keeps: both nonces; restoring them into a fresh server refuses both.
    let stored: Vec<u16> = js.used_nonces(DEV_EUI).unwrap().collect();
    let mut restarted = JoinServer::new(config).unwrap();
    restarted.upsert_device(OtaaDevice {
        name: "bin-017".into(),
        dev_eui: DEV_EUI,
        join_eui: JOIN_EUI,
        app_key: APP_KEY,
    });
    assert!(restarted.load_nonces(DEV_EUI, stored));
    assert!(matches!(
        restarted.handle_join_request(&req2, JoinContext { join_nonce: 9, dev_addr }),
        Err(JoinError::DevNonceReplay { .. })
    ));
}

#[test]
fn class_c_goes_out_immediately_on_rx2() {
    let (_, mut q, dev) = abp(DeviceClass::C, no_dev_status());
    let mut sched = scheduler();
    let id = q.enqueue(10, &[60], false).unwrap();
    let dl = sched.class_c(&mut q, 1_000).unwrap().unwrap();
    let p = dl.plan.params;
    assert_eq!(
        (p.window, p.imme, p.tmst, p.freq_hz, p.sf, p.bw_khz),
        (Window::ClassC, true, None, RX2_FREQ_HZ, 12, 125)
    );
    assert_eq!(p.power_dbm, 27);
    assert_eq!((dl.frame.item, dl.frame.f_cnt_down, dl.frame.confirmed), (Some(id), 0, false));
    assert_eq!(dl.plan.airtime, crate::lorawan::airtime::downlink_airtime(12, 125, dl.frame.phy.len()));
    let d = open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap();
    assert_eq!((d.f_cnt_down, d.f_port, d.payload.as_slice(), d.ack), (0, Some(10), &[60u8][..], false));
    assert!(q.is_empty());
    assert_eq!(q.f_cnt_down(), 1);
    assert_eq!(sched.class_c(&mut q, 1_001), Ok(None));
    // The next one increments FCntDown.
    q.enqueue(10, &[0], false).unwrap();
    let dl = sched.class_c(&mut q, 2_000).unwrap().unwrap();
    assert_eq!(open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap().f_cnt_down, 1);
}

#[test]
fn class_a_waits_for_the_next_uplink_and_uses_rx1() {
    let (mut s, mut q, mut dev) = abp(DeviceClass::A, no_dev_status());
    let mut sched = scheduler();
    q.enqueue(10, &[100], false).unwrap();
    // Nothing goes out on its own.
    assert_eq!(sched.class_c(&mut q, 0), Ok(None));
    assert_eq!(q.len(), 1);
    let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
    let r = radio(4_294_500_000, 10_000);
    assert!(q.on_uplink(&up, &r, 10_010).is_empty());
    let dl = sched.answer_uplink(&mut q, &r, 10_010).unwrap().unwrap();
    let p = dl.plan.params;
    assert_eq!((p.window, p.imme, p.tmst), (Window::Rx1, false, Some(4_294_500_000u32.wrapping_add(1_000_000))));
    assert_eq!((p.freq_hz, p.sf, p.bw_khz, p.power_dbm), (868_300_000, 7, 125, 14));
    let d = open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap();
    assert_eq!((d.f_port, d.payload.as_slice(), d.ack, d.f_pending), (Some(10), &[100u8][..], false, false));
    // The following uplink has nothing to answer.
    let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
    q.on_uplink(&up, &r, 20_000);
    assert_eq!(sched.answer_uplink(&mut q, &radio(5, 20_000), 20_000), Ok(None));
}

#[test]
fn confirmed_downlink_retries_then_fails() {
    let (mut s, mut q, mut dev) = abp(DeviceClass::A, QueueConfig { max_attempts: 3, ..no_dev_status() });
    let mut sched = scheduler();
    let id = q.enqueue(10, &[42], true).unwrap();
    let next = q.enqueue(10, &[43], false).unwrap();
    let mut fcnts = Vec::new();
    let mut t = 0;
    for attempt in 1..=3u8 {
        t += 600_000;
        let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
        assert!(q.on_uplink(&up, &radio(0, t), t).is_empty(), "attempt {attempt}");
        let dl = sched.answer_uplink(&mut q, &radio(0, t), t).unwrap().unwrap();
        assert_eq!((dl.frame.item, dl.frame.attempt, dl.frame.confirmed), (Some(id), attempt, true));
        let d = open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap();
        assert!(d.confirmed && d.f_pending);
        assert_eq!(d.payload, [42]);
        fcnts.push(d.f_cnt_down);
        assert_eq!(q.in_flight(), Some(id));
    }
    // Each attempt is a new frame with a new FCntDown.
    assert_eq!(fcnts, [0, 1, 2]);
    // Fourth uplink without ACK: failed, and the FIFO moves on to the next item.
    t += 600_000;
    let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
    assert_eq!(q.on_uplink(&up, &radio(0, t), t), vec![DownlinkEvent::Failed { id, attempts: 3 }]);
    let dl = sched.answer_uplink(&mut q, &radio(0, t), t).unwrap().unwrap();
    assert_eq!(dl.frame.item, Some(next));
    assert_eq!(open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap().f_cnt_down, 3);
    assert!(q.is_empty());
}

#[test]
fn ack_clears_a_confirmed_downlink() {
    let (mut s, mut q, mut dev) = abp(DeviceClass::A, no_dev_status());
    let mut sched = scheduler();
    let id = q.enqueue(10, &[1], true).unwrap();
    let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
    q.on_uplink(&up, &radio(0, 0), 0);
    sched.answer_uplink(&mut q, &radio(0, 0), 0).unwrap().unwrap();
    // The device ACKs in its next uplink.
    let up = s.accept_uplink(&dev.uplink(false, true, &[])).unwrap();
    assert!(up.ack);
    assert_eq!(q.on_uplink(&up, &radio(0, 60_000), 60_000), vec![DownlinkEvent::Acked { id, attempts: 1 }]);
    assert_eq!(q.in_flight(), None);
    assert_eq!(sched.answer_uplink(&mut q, &radio(0, 60_000), 60_000), Ok(None));
    // An ACK with nothing in flight is ignored.
    let up = s.accept_uplink(&dev.uplink(false, true, &[])).unwrap();
    assert!(q.on_uplink(&up, &radio(0, 70_000), 70_000).is_empty());
}

#[test]
fn confirmed_uplink_gets_an_ack_and_mac_answers() {
    let (mut s, mut q, mut dev) =
        abp(DeviceClass::A, QueueConfig { dev_status_interval_ms: Some(3_600_000), ..QueueConfig::default() });
    let mut sched = scheduler();
    // Confirmed uplink with LinkCheckReq: ACK + LinkCheckAns + the first DevStatusReq, no FPort.
    let up = s.accept_uplink(&dev.uplink(true, false, &[0x02])).unwrap();
    let r = UplinkRadio { snr_db: Some(-3.0), sf: 9, ..radio(0, 0) };
    q.on_uplink(&up, &r, 0);
    let dl = sched.answer_uplink(&mut q, &r, 0).unwrap().unwrap();
    let d = open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap();
    // margin: -3 dB vs the SF9 floor of -12.5 dB → 9 dB; one gateway.
    assert_eq!(link_margin_db(-3.0, 9), 9);
    assert_eq!((d.ack, d.f_port, d.payload.len(), d.confirmed), (true, None, 0, false));
    assert_eq!(d.fopts, [0x02, 9, 1, 0x06]);
    assert_eq!(dl.frame.item, None);
    // The DevStatusAns comes back and is exposed; no new DevStatusReq until the interval is over.
    let up = s.accept_uplink(&dev.uplink(false, false, &[0x06, 0xfe, 0x3d])).unwrap();
    let ev = q.on_uplink(&up, &r, 1_000);
    let DownlinkEvent::DevStatus(st) = ev[0] else { panic!("{ev:?}") };
    assert_eq!((st.battery, st.margin_db, st.received_at_ms, st.battery_pct()), (254, -3, 1_000, Some(100)));
    assert_eq!(q.last_dev_status(), Some(st));
    assert_eq!(sched.answer_uplink(&mut q, &r, 1_000), Ok(None));
    let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
    let r = UplinkRadio { received_at_ms: 3_600_000, ..r };
    q.on_uplink(&up, &r, 3_600_000);
    let dl = sched.answer_uplink(&mut q, &r, 3_600_000).unwrap().unwrap();
    assert_eq!(open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap().fopts, [0x06]);
    // Application data plus the ACK of a confirmed uplink in one frame.
    q.enqueue(10, &[5], false).unwrap();
    let up = s.accept_uplink(&dev.uplink(true, false, &[])).unwrap();
    let r = UplinkRadio { received_at_ms: 3_700_000, ..r };
    q.on_uplink(&up, &r, 3_700_000);
    let dl = sched.answer_uplink(&mut q, &r, 3_700_000).unwrap().unwrap();
    let d = open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap();
    assert_eq!((d.ack, d.f_port, d.payload.as_slice()), (true, Some(10), &[5u8][..]));
}

#[test]
fn rx2_when_rx1_is_too_late_or_over_the_duty_cycle() {
    let (mut s, mut q, mut dev) = abp(DeviceClass::A, no_dev_status());
    let mut sched = scheduler();
    // Too late for RX1 (received at 0, now 950 ms, lead 100 ms): RX2 at +2 s.
    q.enqueue(10, &[1], false).unwrap();
    let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
    q.on_uplink(&up, &radio(1_000, 0), 950);
    let dl = sched.answer_uplink(&mut q, &radio(1_000, 0), 950).unwrap().unwrap();
    assert_eq!((dl.plan.params.window, dl.plan.params.tmst, dl.plan.params.sf), (Window::Rx2, Some(2_001_000), 12));
    assert!(open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).is_ok());
    // Too late for both: refused, the data stays queued, the refusal says why.
    let id = q.enqueue(10, &[2], false).unwrap();
    let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
    q.on_uplink(&up, &radio(0, 10_000), 12_000);
    let err = sched.answer_uplink(&mut q, &radio(0, 10_000), 12_000).unwrap_err();
    assert!(
        matches!(
            err,
            ScheduleError::NoWindow { rx1: WindowRefusal::TooLate { .. }, rx2: WindowRefusal::TooLate { .. } }
        ),
        "{err}"
    );
    assert!(!err.is_duty_cycle());
    assert_eq!(q.len(), 1);
    // Use up the g1 budget (868.3 MHz) in the scheduler: RX1 refused for the duty cycle, RX2 (g3) taken.
    let mut t = 100_000;
    let mut rx1 = 0;
    loop {
        let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
        q.on_uplink(&up, &radio(0, t), t);
        q.enqueue(10, &[3; 40], false).unwrap();
        let dl = sched.answer_uplink(&mut q, &radio(0, t), t).unwrap().unwrap();
        t += 1_000;
        if dl.plan.params.window == Window::Rx2 {
            break;
        }
        rx1 += 1;
        assert!(rx1 < 1_000, "RX1 never refused");
    }
    // 36 s of budget / ~92 ms (SF7, 53 bytes) per frame.
    assert!(rx1 > 300, "{rx1}");
    assert!(sched.duty_cycle().used(t, crate::lorawan::SubBand::G1) <= Duration::from_secs(36));
    assert!(!q.cancel(id), "sent in the first round");
}

#[test]
fn both_windows_over_the_duty_cycle_is_a_counted_refusal() {
    let (mut s, mut q, mut dev) = abp(DeviceClass::A, no_dev_status());
    // A tiny-budget scheduler: RX2 in g2 (0.1 %) as well as RX1 in g2.
    let rx = RxSettings { rx2_freq_hz: 868_900_000, ..RxSettings::default() };
    let mut sched = Scheduler::new(Eu868::default(), rx, 100);
    let r = |t| UplinkRadio { freq_hz: 868_900_000, sf: 12, ..radio(0, t) };
    let mut refused = 0;
    for i in 0..10u64 {
        let t = i * 10_000;
        q.enqueue(10, &[0; 20], false).unwrap();
        let up = s.accept_uplink(&dev.uplink(false, false, &[])).unwrap();
        q.on_uplink(&up, &r(t), t);
        match sched.answer_uplink(&mut q, &r(t), t) {
            Ok(Some(_)) => {}
            Err(e) => {
                assert!(e.is_duty_cycle(), "{e}");
                refused += 1;
            }
            Ok(None) => panic!("data queued"),
        }
    }
    // 3.6 s per hour shared by RX1 and RX2 (both in g2); an SF12 frame of 33 bytes takes 1.81 s: one goes
    // out, the rest is refused and stays queued.
    assert_eq!(crate::lorawan::airtime::downlink_airtime(12, 125, 33), Duration::from_micros(1_810_432));
    assert_eq!(refused, 9);
    assert_eq!(q.len(), 9);
}

#[test]
fn class_c_duty_cycle_waits() {
    let (_, mut q, _) = abp(DeviceClass::C, QueueConfig { max_queued: 1000, ..no_dev_status() });
    let mut sched = scheduler();
    let mut sent = 0;
    let err = loop {
        q.enqueue(10, &[0; 51], false).unwrap();
        match sched.class_c(&mut q, 0) {
            Ok(Some(_)) => sent += 1,
            Err(e) => break e,
            Ok(None) => panic!(),
        }
    };
    // 360 s of g3 budget at ~2.8 s (SF12, 64 bytes) per frame.
    assert_eq!(sent, 360_000 / 2_793);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(q.len(), 1, "the refused downlink stays queued");
    assert!(sched.class_c(&mut q, 3_600_000).unwrap().is_some());
}

#[test]
fn class_c_confirmed_is_resent_after_the_ack_timeout() {
    let cfg = QueueConfig { max_attempts: 2, class_c_ack_timeout_ms: 30_000, ..no_dev_status() };
    let (mut s, mut q, mut dev) = abp(DeviceClass::C, cfg);
    let mut sched = scheduler();
    let id = q.enqueue(10, &[7], true).unwrap();
    let a = sched.class_c(&mut q, 0).unwrap().unwrap();
    assert_eq!(a.frame.attempt, 1);
    // Waiting for the ACK: nothing else goes out, wake-up at the timeout.
    q.enqueue(10, &[8], false).unwrap();
    assert_eq!(sched.class_c(&mut q, 10_000), Ok(None));
    assert_eq!(q.class_c_wake_at(), Some(30_000));
    assert!(q.check_timeouts(29_999).is_empty());
    assert!(q.check_timeouts(30_000).is_empty());
    let b = sched.class_c(&mut q, 30_000).unwrap().unwrap();
    assert_eq!((b.frame.item, b.frame.attempt, b.frame.f_cnt_down), (Some(id), 2, 1));
    assert_eq!(q.check_timeouts(60_000), vec![DownlinkEvent::Failed { id, attempts: 2 }]);
    let c = sched.class_c(&mut q, 60_000).unwrap().unwrap();
    assert_eq!(open_downlink(&c.frame.phy, &dev.nwk, &dev.app).unwrap().payload, [8]);
    // An ACK in an uplink clears a class C confirmed downlink too.
    let id2 = q.enqueue(10, &[9], true).unwrap();
    sched.class_c(&mut q, 70_000).unwrap().unwrap();
    let up = s.accept_uplink(&dev.uplink(false, true, &[])).unwrap();
    assert_eq!(q.on_uplink(&up, &radio(0, 71_000), 71_000), vec![DownlinkEvent::Acked { id: id2, attempts: 1 }]);
}

#[test]
fn tx_ack_error_requeues_without_reusing_the_counter() {
    let (_, mut q, dev) = abp(DeviceClass::C, no_dev_status());
    let mut sched = scheduler();
    let id = q.enqueue(10, &[1], true).unwrap();
    let a = sched.class_c(&mut q, 0).unwrap().unwrap();
    assert!(!q.tx_failed(a.frame.f_cnt_down + 1));
    assert!(q.tx_failed(a.frame.f_cnt_down));
    assert!(!q.tx_failed(a.frame.f_cnt_down), "only once");
    assert_eq!(q.in_flight(), None);
    let b = sched.class_c(&mut q, 1_000).unwrap().unwrap();
    assert_eq!((b.frame.item, b.frame.attempt, b.frame.f_cnt_down), (Some(id), 1, 1));
    assert!(open_downlink(&b.frame.phy, &dev.nwk, &dev.app).is_ok());
}

#[test]
fn f_cnt_down_persists_and_resets_on_join() {
    let (_, mut q, dev) = abp(DeviceClass::C, no_dev_status());
    let mut sched = scheduler();
    q.set_f_cnt_down(70_000);
    q.enqueue(10, &[1], false).unwrap();
    let a = sched.class_c(&mut q, 0).unwrap().unwrap();
    assert_eq!(q.f_cnt_down(), 70_001);
    let d = open_downlink_after(&a.frame.phy, &dev.nwk, &dev.app, Some(69_999)).unwrap();
    assert_eq!(d.f_cnt_down, 70_000);
    // Only the low 16 bits are on air: without the device's last counter the MIC does not verify.
    assert!(open_downlink(&a.frame.phy, &dev.nwk, &dev.app).is_err());
    q.new_session(DevAddr(0x2600_0009), Key128::new([3; 16]), Key128::new([4; 16]));
    assert_eq!(q.f_cnt_down(), 0);
    q.enqueue(10, &[2], false).unwrap();
    let b = sched.class_c(&mut q, 100_000).unwrap().unwrap();
    let d = open_downlink(&b.frame.phy, &Key128::new([3; 16]), &Key128::new([4; 16])).unwrap();
    assert_eq!((d.dev_addr, d.f_cnt_down), (DevAddr(0x2600_0009), 0));
}

#[test]
fn enqueue_limits() {
    let (_, mut q, _) = abp(DeviceClass::A, QueueConfig { max_queued: 2, ..no_dev_status() });
    use crate::lorawan::downlink::EnqueueError;
    assert_eq!(q.enqueue(0, &[], false), Err(EnqueueError::BadPort(0)));
    assert_eq!(q.enqueue(224, &[], false), Err(EnqueueError::BadPort(224)));
    assert_eq!(
        q.enqueue(1, &[0; MAX_DOWNLINK_PAYLOAD + 1], false),
        Err(EnqueueError::TooLarge { len: 52, max: MAX_DOWNLINK_PAYLOAD })
    );
    q.enqueue(1, &[0; MAX_DOWNLINK_PAYLOAD], false).unwrap();
    q.enqueue(1, &[], false).unwrap();
    assert_eq!(q.enqueue(1, &[], false), Err(EnqueueError::QueueFull { max: 2 }));
    assert!(q.cancel(2));
    assert!(!q.cancel(2));
    assert_eq!(q.len(), 1);
}

#[test]
fn full_payload_with_mac_answers_stays_within_dr0() {
    // A 51-byte payload leaves no room for FOpts at DR0: the LinkCheckAns is dropped, the frame fits RX2.
    let (mut s, mut q, mut dev) =
        abp(DeviceClass::A, QueueConfig { dev_status_interval_ms: Some(1), ..QueueConfig::default() });
    let mut sched = scheduler();
    q.enqueue(10, &[0xaa; MAX_DOWNLINK_PAYLOAD], false).unwrap();
    let up = s.accept_uplink(&dev.uplink(true, false, &[0x02])).unwrap();
    let r = UplinkRadio { sf: 12, ..radio(0, 0) };
    q.on_uplink(&up, &r, 0);
    let dl = sched.answer_uplink(&mut q, &r, 0).unwrap().unwrap();
    assert_eq!(dl.frame.phy.len(), 64);
    let d = open_downlink(&dl.frame.phy, &dev.nwk, &dev.app).unwrap();
    assert!(d.fopts.is_empty() && d.ack);
    assert_eq!(d.payload.len(), MAX_DOWNLINK_PAYLOAD);
}
