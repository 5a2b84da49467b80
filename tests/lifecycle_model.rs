//! Model-based test of a device's LoRaWAN state over the life of an installation (issue 15).
//!
//! Random sequences (proptest) of lifecycle events — uplinks, replays of any frame sent before,
//! downlinks, `device.upsert` with the same or other keys, `device.remove` and re-adding, OTAA joins
//! and re-joins, restarts (the network server rebuilt from a real store, reopened), re-keying an ABP
//! device in the config while the gateway is stopped — run against the real network server, with every
//! output persisted through the pipeline's own code (`ns_store`) into a real store. A small reference
//! model says what must happen, and two invariants are checked on every frame:
//! 1. no (key, FCntDown) pair is ever used twice (every downlink is opened with every key ever issued);
//! 2. no uplink at or below a counter already accepted under the same key is accepted again;
//!
//! and the model's liveness: a fresh frame under the device's current keys is accepted (a re-join
//! followed by a restart must not refuse FCnt 0), and a class C device heard before is reachable
//! after a restart, through the gateway that heard it last.
//!
//! `DG_MODEL_CASES` sets the number of sequences (default 500; each has up to 60 steps).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use district_gateway::ingest::{Origin, RadioFrame};
use district_gateway::keys::{DevAddr, Eui64, Key128};
use district_gateway::lorawan::downlink::{DeviceClass, QueueConfig};
use district_gateway::lorawan::join::JoinConfig;
use district_gateway::netserver::{
    DeviceInfo, DownlinkKind, NetworkServer, Note, NsConfig, Outcome, Output, Provisioning,
};
use district_gateway::ns_store;
use district_gateway::sim::frames::{build_join_request, build_uplink, open_downlink, open_join_accept, UplinkSpec};
use district_gateway::store::{Batch, Store};

const ABP: &str = "lamp-abp";
const OTAA: &str = "lamp-otaa";
const DEV_EUI: Eui64 = Eui64(0x70B3_D57E_D000_0001);
const JOIN_EUI: Eui64 = Eui64(0x70B3_D57E_D000_0000);
const GATEWAYS: [Eui64; 2] = [Eui64(0xAA01), Eui64(0xAA02)];
/// Two sources: no default route, so reachability depends on the remembered route alone.
const SOURCES: [&str; 2] = ["gw-a", "gw-b"];

static SEQUENCES: AtomicU64 = AtomicU64::new(0);
static STEPS: AtomicU64 = AtomicU64::new(0);
static RESTARTS: AtomicU64 = AtomicU64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static DOWNLINKS: AtomicU64 = AtomicU64::new(0);
static JOINS: AtomicU64 = AtomicU64::new(0);

fn abp_keys(i: usize) -> (Key128, Key128) {
    let i = i as u8;
    (Key128::new([0x10 + i; 16]), Key128::new([0x20 + i; 16]))
}

fn app_key() -> Key128 {
    Key128::new([0x5A; 16])
}

#[derive(Debug, Clone)]
enum Step {
    Uplink { otaa: bool, confirmed: bool, gateway: usize },
    Replay { pick: usize },
    Enqueue { otaa: bool },
    UpsertSame { otaa: bool },
    UpsertKeys { key: usize },
    Remove { otaa: bool },
    Readd { otaa: bool },
    Join { gateway: usize },
    Restart,
    RekeyWhileStopped { key: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (any::<bool>(), any::<bool>(), 0..2usize).prop_map(|(otaa, confirmed, gateway)| Step::Uplink { otaa, confirmed, gateway }),
        3 => any::<usize>().prop_map(|pick| Step::Replay { pick }),
        3 => any::<bool>().prop_map(|otaa| Step::Enqueue { otaa }),
        2 => any::<bool>().prop_map(|otaa| Step::UpsertSame { otaa }),
        2 => (0..3usize).prop_map(|key| Step::UpsertKeys { key }),
        1 => any::<bool>().prop_map(|otaa| Step::Remove { otaa }),
        2 => any::<bool>().prop_map(|otaa| Step::Readd { otaa }),
        2 => (0..2usize).prop_map(|gateway| Step::Join { gateway }),
        2 => Just(Step::Restart),
        1 => (0..3usize).prop_map(|key| Step::RekeyWhileStopped { key }),
    ]
}

/// What the devices themselves hold.
struct Devices {
    abp_key: usize,
    /// Next FCntUp per ABP key index (a device keeps its counter per key).
    abp_fcnt: HashMap<usize, u32>,
    otaa_nonce: u16,
    otaa_session: Option<(DevAddr, Key128, Key128)>,
    otaa_fcnt: u32,
}

/// The reference model: what the network server must know.
#[derive(Default)]
struct Model {
    /// Configured now.
    present: HashSet<&'static str>,
    abp_key: usize,
    /// The OTAA device's session as the network server must have it.
    otaa_session: Option<(Key128, Key128)>,
    /// Highest accepted FCntUp per NwkSKey.
    accepted_max: HashMap<[u8; 16], u32>,
    /// (NwkSKey, FCntDown) pairs used.
    down_used: HashSet<([u8; 16], u32)>,
    /// Where each device was last heard (forgotten when it is removed).
    route: HashMap<&'static str, Origin>,
    /// Every key pair ever issued, to open every downlink.
    keys: Vec<(Key128, Key128)>,
}

struct World {
    dir: tempfile::TempDir,
    store: Option<Store>,
    ns: NetworkServer,
    now_ms: u64,
    tmst: u32,
    devs: Devices,
    model: Model,
    /// Every uplink ever sent: the frame, the key pair it was built with and its FCnt.
    sent: Vec<(RadioFrame, (Key128, Key128), u32)>,
}

fn ns_config() -> NsConfig {
    NsConfig {
        gateway_id: "model".into(),
        join: JoinConfig::default(),
        dev_addr_range: (DevAddr(0x0000_0100), DevAddr(0x0000_01FF)),
        queue: QueueConfig { dev_status_interval_ms: None, ..QueueConfig::default() },
        min_lead_ms: 50,
    }
}

fn info(profile: &str) -> DeviceInfo {
    DeviceInfo { profile: profile.into(), class: DeviceClass::C, adr: true }
}

fn abp_prov(key: usize) -> Provisioning {
    let (nwk, app) = abp_keys(key);
    Provisioning::Abp { dev_addr: DevAddr(0x2601_0001), nwk_s_key: nwk, app_s_key: app, relax_fcnt: false }
}

fn otaa_prov() -> Provisioning {
    Provisioning::Otaa { dev_eui: DEV_EUI, join_eui: JOIN_EUI, app_key: app_key() }
}

fn sources() -> Vec<String> {
    SOURCES.iter().map(|s| s.to_string()).collect()
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20, district_gateway::clock::now()).expect("store");
        let mut w = World {
            dir,
            store: Some(store),
            ns: NetworkServer::new(ns_config()).expect("ns"),
            now_ms: 1_800_000_000_000,
            tmst: 1_000_000,
            devs: Devices { abp_key: 0, abp_fcnt: HashMap::new(), otaa_nonce: 0, otaa_session: None, otaa_fcnt: 0 },
            model: Model { keys: (0..3).map(abp_keys).collect(), ..Model::default() },
            sent: Vec::new(),
        };
        w.model.present.insert(ABP);
        w.model.present.insert(OTAA);
        w.restart();
        w
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store open")
    }

    fn configured(&self) -> Vec<(String, DeviceInfo, Provisioning)> {
        let mut v = Vec::new();
        if self.model.present.contains(ABP) {
            v.push((ABP.to_string(), info("raw"), abp_prov(self.model.abp_key)));
        }
        if self.model.present.contains(OTAA) {
            v.push((OTAA.to_string(), info("raw"), otaa_prov()));
        }
        v
    }

    /// A stop and a start: the store closed and reopened, the network server rebuilt from it.
    fn restart(&mut self) {
        RESTARTS.fetch_add(1, Ordering::Relaxed);
        self.store = None;
        self.store =
            Some(Store::open(self.dir.path(), 1 << 20, district_gateway::clock::now()).expect("store reopens"));
        self.ns = NetworkServer::new(ns_config()).expect("ns");
        let devices = self.configured();
        let store = self.store.as_ref().expect("store open");
        let out = ns_store::restore(&mut self.ns, store, devices, &sources()).expect("restore");
        self.absorb(out);
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms as i64).expect("time")
    }

    /// Checks every downlink against invariant 1, then persists the output as the pipeline does.
    fn absorb(&mut self, out: Output) {
        for d in &out.downlinks {
            if d.kind == DownlinkKind::JoinAccept {
                continue;
            }
            DOWNLINKS.fetch_add(1, Ordering::Relaxed);
            let opened = self.model.keys.iter().find_map(|(n, a)| open_downlink(&d.phy, n, a).ok().map(|o| (*n, o)));
            let (nwk, dl) = opened.expect("every downlink opens with a key the gateway issued");
            assert_eq!(Some(dl.f_cnt_down), d.f_cnt_down);
            assert!(
                self.model.down_used.insert((*nwk.expose(), dl.f_cnt_down)),
                "invariant 1 broken: FCntDown {} used twice under the same key (device {})",
                dl.f_cnt_down,
                d.device
            );
            if d.kind == DownlinkKind::ClassC {
                let name = if d.device == ABP { ABP } else { OTAA };
                if let Some(r) = self.model.route.get(name) {
                    assert_eq!(d.origin, *r, "a class C downlink goes where the device was last heard");
                }
            }
        }
        let mut batch = Batch::default();
        ns_store::persist_into(&mut batch, out.persist, &sources());
        let store = self.store();
        store.commit(batch, district_gateway::clock::now()).expect("commit");
        store.flush_blocking().expect("flush");
    }

    fn frame(&mut self, phy: Vec<u8>, gateway: usize) -> RadioFrame {
        self.tmst = self.tmst.wrapping_add(7_000_000);
        RadioFrame {
            phy,
            rssi: Some(-80),
            snr: Some(7.5),
            freq_hz: 868_100_000,
            sf: Some(7),
            bw_khz: 125,
            tmst: Some(self.tmst),
            origin: Origin { source: gateway, gateway: GATEWAYS[gateway] },
        }
    }

    /// What the model expects of a data frame built with `keys` and counter `f_cnt` by `name`.
    fn expect_accept(&self, name: &'static str, keys: &(Key128, Key128), f_cnt: u32) -> bool {
        if !self.model.present.contains(name) {
            return false;
        }
        let current = if name == ABP { Some(abp_keys(self.model.abp_key)) } else { self.model.otaa_session };
        if current != Some(*keys) {
            return false;
        }
        match self.model.accepted_max.get(keys.0.expose()) {
            None => f_cnt <= 16_384,
            Some(&m) => f_cnt > m && f_cnt - m <= 16_384,
        }
    }

    fn feed(&mut self, name: &'static str, frame: RadioFrame, keys: (Key128, Key128), f_cnt: u32) {
        let expected = self.expect_accept(name, &keys, f_cnt);
        let (outcome, out) = self.ns.handle_frame(self.now(), self.now_ms, &frame);
        let accepted = match &outcome {
            Outcome::Reading(r) => {
                let l = r.lorawan.as_ref().expect("lorawan meta");
                assert_eq!(l.f_cnt, f_cnt);
                true
            }
            Outcome::MacOnly { .. } => true,
            _ => false,
        };
        if accepted {
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            if let Some(&m) = self.model.accepted_max.get(keys.0.expose()) {
                assert!(f_cnt > m, "invariant 2 broken: FCnt {f_cnt} accepted again under the same key (last {m})");
            }
            self.model.accepted_max.insert(*keys.0.expose(), f_cnt);
            self.model.route.insert(name, frame.origin);
        } else {
            REFUSED.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(accepted, expected, "{name}: FCnt {f_cnt}: the model expected accepted={expected}, got {outcome:?}");
        self.absorb(out);
    }

    fn run(&mut self, s: &Step) {
        STEPS.fetch_add(1, Ordering::Relaxed);
        self.now_ms += 61_000;
        match *s {
            Step::Uplink { otaa: false, confirmed, gateway } => {
                let k = self.devs.abp_key;
                let keys = abp_keys(k);
                let f_cnt = *self.devs.abp_fcnt.get(&k).unwrap_or(&0);
                self.devs.abp_fcnt.insert(k, f_cnt + 1);
                let phy = uplink(DevAddr(0x2601_0001), &keys, f_cnt, confirmed);
                let frame = self.frame(phy, gateway);
                self.sent.push((frame.clone(), keys, f_cnt));
                self.feed(ABP, frame, keys, f_cnt);
            }
            Step::Uplink { otaa: true, confirmed, gateway } => {
                let Some((addr, n, a)) = self.devs.otaa_session else { return };
                let f_cnt = self.devs.otaa_fcnt;
                self.devs.otaa_fcnt += 1;
                let frame = self.frame(uplink(addr, &(n, a), f_cnt, confirmed), gateway);
                self.sent.push((frame.clone(), (n, a), f_cnt));
                self.feed(OTAA, frame, (n, a), f_cnt);
            }
            Step::Replay { pick } => {
                if self.sent.is_empty() {
                    return;
                }
                let (mut frame, keys, f_cnt) = self.sent[pick % self.sent.len()].clone();
                let name = if self.model.keys.iter().take(3).any(|k| *k == keys) { ABP } else { OTAA };
                self.tmst = self.tmst.wrapping_add(7_000_000);
                frame.tmst = Some(self.tmst);
                self.feed(name, frame, keys, f_cnt);
            }
            Step::Enqueue { otaa } => {
                let name = if otaa { OTAA } else { ABP };
                if let Ok((_, out)) = self.ns.enqueue(self.now_ms, name, 10, &[0x42], false) {
                    self.absorb(out);
                }
            }
            Step::UpsertSame { otaa } => {
                let name = if otaa { OTAA } else { ABP };
                if !self.model.present.contains(name) {
                    return;
                }
                let prov = if otaa { otaa_prov() } else { abp_prov(self.model.abp_key) };
                let queued = self.ns.queued_downlinks();
                let out = self.ns.upsert_device(name, info("lamp-profile-b"), prov);
                assert_eq!(self.ns.queued_downlinks(), queued, "the same keys keep the queued downlinks");
                assert!(out.persist.is_empty(), "the same keys change nothing in the store: {:?}", out.persist.len());
                self.absorb(out);
            }
            Step::UpsertKeys { key } => {
                if !self.model.present.contains(ABP) {
                    return;
                }
                self.model.abp_key = key;
                self.devs.abp_key = key;
                let out = self.ns.upsert_device(ABP, info("raw"), abp_prov(key));
                self.absorb(out);
            }
            Step::Remove { otaa } => {
                let name = if otaa { OTAA } else { ABP };
                let out = self.ns.remove_device(name);
                self.model.present.remove(name);
                self.model.route.remove(name);
                if otaa {
                    self.model.otaa_session = None;
                }
                self.absorb(out);
            }
            Step::Readd { otaa } => {
                let name = if otaa { OTAA } else { ABP };
                if self.model.present.contains(name) {
                    return;
                }
                self.model.present.insert(name);
                let prov = if otaa { otaa_prov() } else { abp_prov(self.model.abp_key) };
                let out = self.ns.upsert_device(name, info("raw"), prov);
                self.absorb(out);
            }
            Step::Join { gateway } => {
                self.devs.otaa_nonce = self.devs.otaa_nonce.wrapping_add(1);
                let nonce = self.devs.otaa_nonce;
                let phy = build_join_request(JOIN_EUI, DEV_EUI, &app_key(), nonce);
                let frame = self.frame(phy, gateway);
                let (outcome, out) = self.ns.handle_frame(self.now(), self.now_ms, &frame);
                let accept = out.downlinks.iter().find(|d| d.kind == DownlinkKind::JoinAccept).map(|d| d.phy.clone());
                let present = self.model.present.contains(OTAA);
                match (&outcome, accept) {
                    (Outcome::Joined { .. }, Some(phy)) => {
                        assert!(present, "a removed device may not join");
                        JOINS.fetch_add(1, Ordering::Relaxed);
                        let s = open_join_accept(&phy, &app_key(), nonce).expect("join accept opens");
                        self.devs.otaa_session = Some((s.dev_addr, s.nwk_s_key, s.app_s_key));
                        self.devs.otaa_fcnt = 0;
                        self.model.otaa_session = Some((s.nwk_s_key, s.app_s_key));
                        self.model.keys.push((s.nwk_s_key, s.app_s_key));
                        self.model.route.insert(OTAA, frame.origin);
                    }
                    _ => assert!(!present, "a configured device with a fresh DevNonce joins: {outcome:?}"),
                }
                self.absorb(out);
            }
            Step::Restart => self.restart(),
            Step::RekeyWhileStopped { key } => {
                self.model.abp_key = key;
                self.devs.abp_key = key;
                self.restart();
            }
        }
        // Reachability: a class C device heard since it was (re)added, with a session, has a route.
        let waiting: Vec<String> = self.ns.waiting_for_route().into_iter().map(|(d, _)| d).collect();
        for name in [ABP, OTAA] {
            let has_session = name == ABP || self.model.otaa_session.is_some();
            if self.model.present.contains(name) && has_session && self.model.route.contains_key(name) {
                assert!(!waiting.iter().any(|w| w == name), "{name} was heard but waits for a route");
            }
        }
        let out = self.ns.tick(self.now_ms);
        for n in &out.notes {
            if let Note::DownlinksDropped { .. } = n {
                panic!("a tick never drops downlinks");
            }
        }
        self.absorb(out);
    }
}

fn uplink(addr: DevAddr, keys: &(Key128, Key128), f_cnt: u32, confirmed: bool) -> Vec<u8> {
    build_uplink(&UplinkSpec {
        dev_addr: addr,
        nwk_s_key: &keys.0,
        app_s_key: &keys.1,
        f_cnt,
        f_port: Some(1),
        payload: &[0x01, 0x02],
        confirmed,
        ack: false,
        adr: false,
        fopts: &[],
    })
}

fn cases() -> u32 {
    std::env::var("DG_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500)
}

#[test]
fn lifecycle_sequences_keep_both_invariants() {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&proptest::collection::vec(step(), 1..60), |steps| {
        SEQUENCES.fetch_add(1, Ordering::Relaxed);
        let mut w = World::new();
        for s in &steps {
            w.run(s);
        }
        Ok(())
    });
    eprintln!(
        "lifecycle model: {} sequences, {} steps, {} restarts, {} joins, {} uplinks accepted, {} refused, {} downlinks checked",
        SEQUENCES.load(Ordering::Relaxed),
        STEPS.load(Ordering::Relaxed),
        RESTARTS.load(Ordering::Relaxed),
        JOINS.load(Ordering::Relaxed),
        ACCEPTED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        DOWNLINKS.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The three black-box cases of issue 15, as fixed sequences (the random ones find them too).
#[test]
fn the_issue_cases_as_fixed_sequences() {
    use Step::*;
    let mut w = World::new();
    // 1. Confirmed uplinks, then an upsert with the same keys: counters and queue stay; a replay of an
    // uplink sent before the upsert is refused.
    for _ in 0..3 {
        w.run(&Uplink { otaa: false, confirmed: true, gateway: 0 });
    }
    w.run(&UpsertSame { otaa: false });
    w.run(&Replay { pick: 1 });
    w.run(&Uplink { otaa: false, confirmed: true, gateway: 0 });
    // 2. Join, uplinks, re-join, restart before the first uplink of the new session: FCnt 0 accepted.
    w.run(&Join { gateway: 1 });
    w.run(&Uplink { otaa: true, confirmed: false, gateway: 1 });
    w.run(&Uplink { otaa: true, confirmed: false, gateway: 1 });
    w.run(&Join { gateway: 1 });
    w.run(&Restart);
    w.run(&Uplink { otaa: true, confirmed: false, gateway: 1 });
    // ABP re-keyed in the config while stopped: the new keys start at 0.
    w.run(&RekeyWhileStopped { key: 2 });
    w.run(&Uplink { otaa: false, confirmed: true, gateway: 0 });
    // 3. Lamps reachable after a restart, through the gateway that heard them last.
    w.run(&Restart);
    assert!(w.ns.waiting_for_route().is_empty(), "{:?}", w.ns.waiting_for_route());
    let (_, out) = w.ns.enqueue(w.now_ms, ABP, 10, &[1], false).expect("enqueue");
    assert_eq!(out.downlinks.len(), 1, "the lamp gets its command at once after a restart");
    assert_eq!(out.downlinks[0].origin, Origin { source: 0, gateway: GATEWAYS[0] });
    w.absorb(out);
}
