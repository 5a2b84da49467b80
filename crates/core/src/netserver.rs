//! The network server of the district: one state machine that owns the LoRaWAN sessions, the join
//! server, the per-device downlink queues and the downlink scheduler (EU868 windows, duty cycle), and
//! turns frames into readings. Pure: time comes in as values, and everything that must be written
//! (frame counters, sessions, nonces) or sent (downlinks) comes out as data for the runtime to do.
//!
//! Ordering rule for the runtime: write `persist` to the store and flush it *before* sending the
//! `downlinks` of the same result, so that a crash can never reuse an FCntDown (keystream reuse) or
//! forget a DevNonce.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::decode::{self, Decoder};
use crate::ingest::{Origin, RadioFrame};
use crate::keys::{DevAddr, Eui64, Key128};
use crate::lorawan::downlink::{
    DeviceClass, DownlinkEvent, DownlinkId, DownlinkQueue, EnqueueError, QueueConfig, Scheduler,
};
use crate::lorawan::join::{DevAddrAllocator, JoinConfig, JoinContext, JoinError, JoinServer, OtaaDevice};
use crate::lorawan::lifecycle::{Counters, Resumable, SessionId, SessionRecord};
use crate::lorawan::mac_engine::{DeviceFacts, MacConfig, MacEngine, MacEvent};
use crate::lorawan::multicast::Multicast;
use crate::lorawan::region::{Eu868, TxParams, UplinkRadio};
use crate::lorawan::MacState;
use crate::lorawan::{Dedup, MType, Sessions, Uplink, UplinkError};
use crate::reading::{LoraMeta, Reading};

mod mac;

/// Same frame through several rxpk or sources: copies arrive within tens of milliseconds; a device
/// cannot legitimately send the very same bytes again (its counter advances), so a generous window is safe.
pub const DEDUP_WINDOW_MS: u64 = 2_000;
const DEDUP_MAX_ENTRIES: usize = 16_384;
/// JoinNonce is 24 bits.
const MAX_JOIN_NONCE: u32 = 0x00FF_FFFF;

/// Per-device facts from the config.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub profile: String,
    pub class: DeviceClass,
    /// ADR for this device (when it sets the ADR bit and `[lorawan.adr]` is enabled).
    pub adr: bool,
}

/// How a device is provisioned.
#[derive(Debug, Clone, PartialEq)]
pub enum Provisioning {
    Abp { dev_addr: DevAddr, nwk_s_key: Key128, app_s_key: Key128, relax_fcnt: bool },
    Otaa { dev_eui: Eui64, join_eui: Eui64, app_key: Key128 },
}

pub struct NsConfig {
    pub gateway_id: String,
    pub join: JoinConfig,
    pub dev_addr_range: (DevAddr, DevAddr),
    pub queue: QueueConfig,
    pub min_lead_ms: u64,
}

/// State to write to the store (before the downlinks of the same result go out). A new session
/// always comes as `Session` + `FcntUp`/`FcntUpReset` + `FcntDown` in one output, so the store has the
/// keys and their counters together or not at all.
#[derive(Debug, Clone, PartialEq)]
pub enum Persist {
    FcntUp {
        device: String,
        fcnt: u32,
    },
    /// A new session: no uplink accepted under its keys yet.
    FcntUpReset {
        device: String,
    },
    FcntDown {
        device: String,
        next: u32,
    },
    /// The device's sessions (current and retired), written whenever they change.
    Session {
        device: String,
        record: SessionRecord,
    },
    /// Where the device was last heard (None: forget it), written when it changes.
    Route {
        device: String,
        origin: Option<Origin>,
    },
    DevNonce {
        dev_eui: Eui64,
        nonce: u16,
    },
    JoinNonce {
        next: u32,
    },
    /// The device's MAC state (accepted settings, pending requests), written when it changes; None:
    /// forget it.
    MacState {
        device: String,
        state: Option<Box<MacState>>,
    },
    /// A multicast group's next frame counter (`lorawan::multicast`), written before its frame leaves.
    McFcntDown {
        group: String,
        next: u32,
    },
}

/// What the store had for a device at start.
#[derive(Debug, Clone, Default)]
pub struct StoredDevice {
    /// None: nothing stored (a new device, or a store from before sessions were recorded for ABP).
    pub record: Option<SessionRecord>,
    pub fcnt_up: Option<u32>,
    pub fcnt_down: Option<u32>,
    pub route: Option<Origin>,
    pub mac: Option<MacState>,
}

/// Why a class C device cannot be reached now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteWait {
    /// Never heard since it was installed, and more than one source could transmit.
    NeverHeard,
    /// An OTAA device that has not joined: it has no session to send with.
    NotJoined,
}

impl RouteWait {
    pub fn reason(self) -> &'static str {
        match self {
            RouteWait::NeverHeard => {
                "never heard since it was installed and several sources can transmit: waits for its first uplink"
            }
            RouteWait::NotJoined => "has not joined yet: no session to send with",
        }
    }
}

/// A downlink to send through the source and gateway in `origin`.
#[derive(Debug, Clone)]
pub struct OutDownlink {
    pub origin: Origin,
    pub device: String,
    /// How to transmit it (each source turns this into its own form at its edge: a GWMP `txpk`, an SX127x
    /// transmit request).
    pub params: TxParams,
    /// The PHYPayload.
    pub phy: Vec<u8>,
    /// The FCntDown the frame used (None for a join accept).
    pub f_cnt_down: Option<u32>,
    pub kind: DownlinkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownlinkKind {
    JoinAccept,
    ClassA,
    ClassC,
    /// To a multicast group (`device` is the group's name).
    Multicast,
}

/// Things worth a log line, a counter or an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    Joined {
        device: String,
        dev_addr: DevAddr,
    },
    JoinRefused {
        error: JoinError,
    },
    DownlinkAcked {
        device: String,
        id: DownlinkId,
        attempts: u8,
    },
    DownlinkFailed {
        device: String,
        id: DownlinkId,
        attempts: u8,
    },
    /// No window could take a downlink (too late, duty cycle, too large).
    DownlinkDeferred {
        device: String,
        reason: String,
        duty_cycle: bool,
    },
    DecodeError {
        device: String,
    },
    /// Downlinks queued under keys that are gone (new keys, device removed): dropped, never sent.
    DownlinksDropped {
        device: String,
        count: usize,
        reason: &'static str,
    },
    /// A MAC request accepted, refused, dropped; an unexpected answer; an ADR decision sent.
    Mac {
        device: String,
        event: MacEvent,
    },
    /// A multicast group's frame was built (it leaves once its counter is on disk).
    MulticastSent {
        group: String,
        f_cnt: u32,
        airtime_us: u64,
    },
}

/// What became of one frame.
#[derive(Debug)]
pub enum Outcome {
    /// A reading to journal (its `seq` is still 0).
    Reading(Box<Reading>),
    /// A valid frame with MAC commands only (FPort 0 or no FRMPayload): state advances, no reading.
    MacOnly {
        device: String,
    },
    Joined {
        device: String,
    },
    Duplicate,
    Rejected(UplinkError),
    JoinRejected(JoinError),
}

/// Everything one input produced.
#[derive(Debug, Default)]
pub struct Output {
    pub persist: Vec<Persist>,
    pub downlinks: Vec<OutDownlink>,
    pub notes: Vec<Note>,
}

pub struct NetworkServer {
    gateway_id: String,
    sessions: Sessions,
    dedup: Dedup,
    devices: HashMap<String, DeviceInfo>,
    decoders: HashMap<String, Box<dyn Decoder>>,
    join: JoinServer,
    alloc: DevAddrAllocator,
    next_join_nonce: u32,
    queues: HashMap<String, DownlinkQueue>,
    queue_config: QueueConfig,
    scheduler: Scheduler,
    /// Where each device was last heard: class C downlinks go out there (persisted: `Persist::Route`).
    last_origin: HashMap<String, Origin>,
    /// Each device's sessions, current and retired (also of removed devices: their counters must
    /// continue if they come back with the same keys).
    records: HashMap<String, SessionRecord>,
    provisioning: HashMap<String, Provisioning>,
    /// The one source that can transmit, when there is exactly one: class C devices never heard
    /// since they were installed are sent through it.
    default_route: Option<Origin>,
    /// MAC commands and ADR (`lorawan::mac_engine`).
    mac: MacEngine,
    /// Each device's last accepted frame, to credit its copies from other gateways to ADR.
    last_frame: HashMap<String, Vec<u8>>,
    /// Multicast groups of class C devices (lamps), with their own counters.
    multicast: Multicast,
}

impl NetworkServer {
    pub fn new(cfg: NsConfig) -> Result<Self, String> {
        let rx = cfg.join.rx;
        let mac = MacEngine::new(MacConfig { rx, cf_list: cfg.join.cf_list.clone(), ..MacConfig::default() });
        let join = JoinServer::new(cfg.join).map_err(|e| e.to_string())?;
        let alloc = DevAddrAllocator::new(cfg.dev_addr_range.0, cfg.dev_addr_range.1).map_err(|e| e.to_string())?;
        Ok(NetworkServer {
            gateway_id: cfg.gateway_id,
            sessions: Sessions::new(),
            dedup: Dedup::new(DEDUP_WINDOW_MS, DEDUP_MAX_ENTRIES),
            devices: HashMap::new(),
            decoders: HashMap::new(),
            join,
            alloc,
            next_join_nonce: 0,
            queues: HashMap::new(),
            queue_config: cfg.queue,
            scheduler: Scheduler::new(Eu868::default(), rx, cfg.min_lead_ms),
            last_origin: HashMap::new(),
            records: HashMap::new(),
            provisioning: HashMap::new(),
            default_route: None,
            mac,
            last_frame: HashMap::new(),
            multicast: Multicast::default(),
        })
    }

    /// Adds or replaces a device (config load, `device.upsert`). The lifecycle rules
    /// (`lorawan::lifecycle`): the same keys keep the session, its counters, its route and its queued
    /// downlinks (only profile, class and `relax_fcnt` change); other ABP keys retire the session and
    /// start one whose counters are fresh only if these keys were never used by this device (else they
    /// continue), dropping the downlinks queued under the old keys. An OTAA device keeps a joined
    /// session until it joins again.
    pub fn upsert_device(&mut self, name: &str, info: DeviceInfo, prov: Provisioning) -> Output {
        let mut out = Output::default();
        if !self.decoders.contains_key(&info.profile) {
            if let Some(d) = decode::native(&info.profile) {
                self.decoders.insert(info.profile.clone(), d);
            }
        }
        let previous = self.provisioning.insert(name.to_string(), prov.clone());
        if let Some(Provisioning::Otaa { dev_eui, .. }) = &previous {
            let still = matches!(&prov, Provisioning::Otaa { dev_eui: e, .. } if e == dev_eui);
            if !still {
                self.join.remove_device(*dev_eui);
            }
        }
        match prov {
            Provisioning::Abp { dev_addr, nwk_s_key, app_s_key, relax_fcnt } => {
                let sid = SessionId { dev_addr, nwk_s_key, app_s_key };
                let running = self.sessions.dev_addr_of(name).is_some();
                let same = running && self.records.get(name).is_some_and(|r| r.is_current(&sid));
                if same {
                    let counters = self.counters(name);
                    self.install(name, info.class, sid, relax_fcnt, counters);
                    if let Some(r) = self.records.get_mut(name).filter(|r| r.current != Some(sid)) {
                        // Same keys, new DevAddr: the counters continue; remember the address.
                        r.current = Some(sid);
                        out.persist.push(Persist::Session { device: name.to_string(), record: r.clone() });
                    }
                } else {
                    self.start_session(name, info.class, sid, relax_fcnt, Resumable::Yes, &mut out);
                }
            }
            Provisioning::Otaa { dev_eui, join_eui, app_key } => {
                if matches!(previous, Some(Provisioning::Abp { .. })) {
                    self.end_session(name, "the device was switched to OTAA", &mut out);
                }
                self.join.upsert_device(OtaaDevice { name: name.to_string(), dev_eui, join_eui, app_key });
                if let Some(q) = self.queues.get_mut(name) {
                    q.set_class(info.class);
                }
            }
        }
        self.devices.insert(name.to_string(), info);
        out
    }

    /// A device as the store had it at start, provisioned as configured now: its stored session and
    /// counters are installed, then [`NetworkServer::upsert_device`]'s rules apply (a device re-keyed in
    /// the config while the gateway was stopped gets a new session here). The output must be persisted
    /// before anything is sent.
    pub fn restore_device(&mut self, name: &str, info: DeviceInfo, prov: Provisioning, stored: StoredDevice) -> Output {
        let legacy = stored.record.is_none();
        let mut record = stored.record.unwrap_or_default();
        let counters = Counters { fcnt_up: stored.fcnt_up, fcnt_down: stored.fcnt_down.unwrap_or(0) };
        let mut migrated = false;
        if let Provisioning::Abp { dev_addr, nwk_s_key, app_s_key, .. } = &prov {
            if legacy && (stored.fcnt_up.is_some() || stored.fcnt_down.is_some()) {
                // A store from before ABP sessions were recorded: its counters (kept by device name)
                // belong to the keys configured now.
                record.current = Some(SessionId { dev_addr: *dev_addr, nwk_s_key: *nwk_s_key, app_s_key: *app_s_key });
                migrated = true;
            }
        }
        if let Some(cur) = record.current {
            let relax = matches!(prov, Provisioning::Abp { relax_fcnt: true, .. });
            self.install(name, info.class, cur, relax, counters);
        }
        self.records.insert(name.to_string(), record);
        if let Some(o) = stored.route {
            self.last_origin.insert(name.to_string(), o);
        }
        if let (Some(m), Some(_)) = (stored.mac, self.records.get(name).and_then(|r| r.current)) {
            self.mac.restore(name, m);
        }
        let mut out = self.upsert_device(name, info, prov);
        let wrote_session = out.persist.iter().any(|p| matches!(p, Persist::Session { .. }));
        if migrated && !wrote_session {
            if let Some(r) = self.records.get(name) {
                out.persist.push(Persist::Session { device: name.to_string(), record: r.clone() });
            }
        }
        out
    }

    /// A device the store remembers that is not configured now (removed): its sessions are kept so
    /// that it continues its counters if it comes back with the same keys.
    pub fn restore_removed(&mut self, name: &str, record: SessionRecord, counters: Counters) {
        let mut record = record;
        record.retire(counters, Resumable::Yes);
        self.records.insert(name.to_string(), record);
    }

    /// Installs a decoder for a profile (e.g. a JS codec the shell loaded).
    pub fn set_decoder(&mut self, profile: &str, decoder: Box<dyn Decoder>) {
        self.decoders.insert(profile.to_string(), decoder);
    }

    pub fn has_decoder(&self, profile: &str) -> bool {
        self.decoders.contains_key(profile)
    }

    /// The device as provisioned now (to undo a change whose persisting failed).
    pub fn device_config(&self, name: &str) -> Option<(DeviceInfo, Provisioning)> {
        Some((self.devices.get(name)?.clone(), self.provisioning.get(name)?.clone()))
    }

    /// Removes a device: its session is retired (kept with its counters), its queued downlinks are
    /// dropped and it may not join any more.
    pub fn remove_device(&mut self, name: &str) -> Output {
        let mut out = Output::default();
        self.end_session(name, "the device was removed", &mut out);
        self.queues.remove(name);
        self.last_frame.remove(name);
        if let Some(Provisioning::Otaa { dev_eui, .. }) = self.provisioning.remove(name) {
            self.join.remove_device(dev_eui);
        }
        self.devices.remove(name);
        if self.last_origin.remove(name).is_some() {
            out.persist.push(Persist::Route { device: name.to_string(), origin: None });
        }
        out
    }

    /// The one source that can transmit (the shell knows), for class C devices never heard.
    pub fn set_default_route(&mut self, origin: Option<Origin>) {
        self.default_route = origin;
    }

    /// Class C devices that cannot be reached now, and why.
    pub fn waiting_for_route(&self) -> Vec<(String, RouteWait)> {
        let mut v: Vec<(String, RouteWait)> = self
            .devices
            .iter()
            .filter(|(_, i)| i.class == DeviceClass::C)
            .filter_map(|(name, _)| {
                if self.sessions.dev_addr_of(name).is_none() {
                    Some((name.clone(), RouteWait::NotJoined))
                } else if !self.last_origin.contains_key(name) && self.default_route.is_none() {
                    Some((name.clone(), RouteWait::NeverHeard))
                } else {
                    None
                }
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The live counters of a device's current session.
    fn counters(&self, name: &str) -> Counters {
        Counters {
            fcnt_up: self.sessions.last_fcnt(name),
            fcnt_down: self.queues.get(name).map_or(0, |q| q.f_cnt_down()),
        }
    }

    /// Makes `sid` the device's session with these counters (uplink acceptance and downlink queue).
    fn install(&mut self, name: &str, class: DeviceClass, sid: SessionId, relax: bool, c: Counters) {
        let (addr, nwk, app) = (sid.dev_addr, sid.nwk_s_key, sid.app_s_key);
        self.sessions.upsert(name, addr, nwk, app, relax);
        self.sessions.set_last_fcnt_opt(name, c.fcnt_up);
        let q = match self.queues.get_mut(name) {
            Some(q) => {
                q.set_class(class);
                if !q.session_is(addr, &nwk, &app) {
                    q.new_session(addr, nwk, app);
                }
                q
            }
            None => self
                .queues
                .entry(name.to_string())
                .or_insert_with(|| DownlinkQueue::new(name, class, addr, nwk, app, self.queue_config)),
        };
        q.set_f_cnt_down(c.fcnt_down);
    }

    /// Retires the current session (if any) and starts `sid`: fresh counters for keys this device never
    /// had, its old counters for keys it had. Downlinks queued under the old keys are dropped.
    fn start_session(
        &mut self,
        name: &str,
        class: DeviceClass,
        sid: SessionId,
        relax: bool,
        resumable: Resumable,
        out: &mut Output,
    ) {
        let old = self.counters(name);
        let had_session = self.sessions.dev_addr_of(name).is_some();
        let record = self.records.entry(name.to_string()).or_default();
        if had_session {
            record.retire(old, resumable);
        }
        let c = record.start(sid);
        let record = record.clone();
        if resumable == Resumable::Yes {
            // ABP re-keying: what was queued was meant for the old session (a join, below, keeps the
            // queue: the application data is simply sent under the new keys).
            self.drop_queued(name, "the device got new session keys", out);
        }
        self.install(name, class, sid, relax, c);
        push_session(name, record, c, out);
        // A new session: the device starts again from its defaults (channels, windows, data rate).
        let abp = self.is_abp(name);
        self.mac.start_session(name, abp);
        self.push_mac_state(name, out);
    }

    /// Retires the current session (device removed or switched to OTAA), keeping its counters.
    fn end_session(&mut self, name: &str, why: &'static str, out: &mut Output) {
        if self.sessions.dev_addr_of(name).is_none() {
            return;
        }
        let c = self.counters(name);
        self.sessions.remove(name);
        self.drop_queued(name, why, out);
        let record = self.records.entry(name.to_string()).or_default();
        record.retire(c, Resumable::Yes);
        out.persist.push(Persist::Session { device: name.to_string(), record: record.clone() });
        if self.mac.remove(name) {
            out.persist.push(Persist::MacState { device: name.to_string(), state: None });
        }
    }

    fn drop_queued(&mut self, name: &str, reason: &'static str, out: &mut Output) {
        if let Some(q) = self.queues.get_mut(name) {
            let count = q.drop_all();
            if count > 0 {
                out.notes.push(Note::DownlinksDropped { device: name.to_string(), count, reason });
            }
        }
    }

    /// Remembers where a device was heard; the store learns it only when it changed.
    fn heard_at(&mut self, device: &str, origin: Origin, out: &mut Output) {
        if self.last_origin.insert(device.to_string(), origin) != Some(origin) {
            out.persist.push(Persist::Route { device: device.to_string(), origin: Some(origin) });
        }
    }

    // ------------------------------------------------------------------ restore from the store

    pub fn restore_nonces(&mut self, dev_eui: Eui64, nonces: impl IntoIterator<Item = u16>) {
        self.join.load_nonces(dev_eui, nonces);
    }

    pub fn restore_join_nonce(&mut self, next: u32) {
        self.next_join_nonce = next;
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    pub fn devices(&self) -> impl Iterator<Item = (&String, &DeviceInfo)> {
        self.devices.iter()
    }

    // ------------------------------------------------------------------ inputs

    /// One received frame. `now_ms` is the shell's monotonic-enough wall clock in ms (the same clock
    /// for every call), `now` the same instant as a date for the reading.
    pub fn handle_frame(&mut self, now: DateTime<Utc>, now_ms: u64, frame: &RadioFrame) -> (Outcome, Output) {
        let mut out = Output::default();
        if self.dedup.is_duplicate(now_ms, &frame.phy) {
            self.copy_heard(frame);
            return (Outcome::Duplicate, out);
        }
        let mtype = frame.phy.first().map(|b| MType::from_mhdr(*b));
        if mtype == Some(MType::JoinRequest) {
            let outcome = self.join_request(now_ms, frame, &mut out);
            return (outcome, out);
        }
        let up = match self.sessions.accept_uplink(&frame.phy) {
            Ok(up) => up,
            Err(e) => return (Outcome::Rejected(e), out),
        };
        out.persist.push(Persist::FcntUp { device: up.device.clone(), fcnt: up.f_cnt });
        self.heard_at(&up.device.clone(), frame.origin, &mut out);
        let mut status_metrics = Map::new();
        let radio = radio_of(frame, now_ms);
        let facts = DeviceFacts {
            abp: self.is_abp(&up.device),
            adr_allowed: self.devices.get(&up.device).is_none_or(|d| d.adr),
        };
        let window = self.mac.on_uplink(&up.device, facts, &up, radio.as_ref(), now);
        let mut mac_changed = window.changed;
        for event in window.events {
            out.notes.push(Note::Mac { device: up.device.clone(), event });
        }
        self.last_frame.insert(up.device.clone(), frame.phy.clone());
        let rx = self.mac.rx(&up.device);
        if let Some(q) = self.queues.get_mut(&up.device) {
            if let Some(radio) = &radio {
                for ev in q.on_uplink(&up, radio, now_ms) {
                    note_event(&up.device, ev, &mut out.notes, &mut status_metrics);
                }
                q.set_mac_commands(window.commands, window.force_downlink);
                match self.scheduler.answer_uplink_rx(q, radio, &rx, now_ms) {
                    Ok(Some(s)) => {
                        mac_changed |= self.mac.sent(&up.device, s.frame.mac_sent);
                        out.persist.push(Persist::FcntDown { device: up.device.clone(), next: q.f_cnt_down() });
                        out.downlinks.push(OutDownlink {
                            origin: frame.origin,
                            device: up.device.clone(),
                            params: s.plan.params,
                            phy: s.frame.phy,
                            f_cnt_down: Some(s.frame.f_cnt_down),
                            kind: DownlinkKind::ClassA,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => out.notes.push(Note::DownlinkDeferred {
                        device: up.device.clone(),
                        reason: e.to_string(),
                        duty_cycle: e.is_duty_cycle(),
                    }),
                }
            }
        }
        if mac_changed {
            self.push_mac_state(&up.device, &mut out);
        }
        if !up.is_application_data() {
            return (Outcome::MacOnly { device: up.device }, out);
        }
        let reading = self.reading(now, frame, up, status_metrics, &mut out.notes);
        (Outcome::Reading(Box::new(reading)), out)
    }

    fn join_request(&mut self, now_ms: u64, frame: &RadioFrame, out: &mut Output) -> Outcome {
        let Some(radio) = radio_of(frame, now_ms) else {
            return Outcome::JoinRejected(JoinError::Malformed("no concentrator timestamp: cannot answer in time"));
        };
        let sessions = &self.sessions;
        let dev_addr = match self.alloc.allocate(|a| sessions.dev_addr_in_use(a), 4096) {
            Ok(a) => a,
            Err(e) => {
                out.notes.push(Note::DownlinkDeferred {
                    device: String::new(),
                    reason: e.to_string(),
                    duty_cycle: false,
                });
                return Outcome::JoinRejected(JoinError::Config("no free DevAddr in the configured range"));
            }
        };
        if self.next_join_nonce > MAX_JOIN_NONCE {
            return Outcome::JoinRejected(JoinError::JoinNonceOutOfRange(self.next_join_nonce));
        }
        let ctx = JoinContext { join_nonce: self.next_join_nonce, dev_addr };
        let j = match self.join.handle_join_request(&frame.phy, ctx) {
            Ok(j) => j,
            Err(e) => {
                out.notes.push(Note::JoinRefused { error: e.clone() });
                return Outcome::JoinRejected(e);
            }
        };
        self.next_join_nonce += 1;
        let plan = match self.scheduler.join_accept(j.accept.len(), &radio, now_ms) {
            Ok(p) => p,
            Err(e) => {
                // The DevNonce is spent either way (the device will retry with a new one).
                out.persist.push(Persist::DevNonce { dev_eui: j.dev_eui, nonce: j.dev_nonce });
                out.persist.push(Persist::JoinNonce { next: self.next_join_nonce });
                out.notes.push(Note::DownlinkDeferred {
                    device: j.device.clone(),
                    reason: e.to_string(),
                    duty_cycle: e.is_duty_cycle(),
                });
                return Outcome::JoinRejected(JoinError::Build("no receive window for the join accept"));
            }
        };
        let sid = SessionId { dev_addr: j.dev_addr, nwk_s_key: j.keys.nwk_s_key, app_s_key: j.keys.app_s_key };
        let class = self.devices.get(&j.device).map_or(DeviceClass::A, |d| d.class);
        // A join is a new session: FCntUp and FCntDown start again, persisted with the keys and the
        // route in this one output (a restart before the first uplink must not apply the old counters).
        self.start_session(&j.device, class, sid, false, Resumable::No, out);
        self.heard_at(&j.device.clone(), frame.origin, out);
        out.persist.push(Persist::DevNonce { dev_eui: j.dev_eui, nonce: j.dev_nonce });
        out.persist.push(Persist::JoinNonce { next: self.next_join_nonce });
        out.downlinks.push(OutDownlink {
            origin: frame.origin,
            device: j.device.clone(),
            params: plan.params,
            phy: j.accept,
            f_cnt_down: None,
            kind: DownlinkKind::JoinAccept,
        });
        out.notes.push(Note::Joined { device: j.device.clone(), dev_addr: j.dev_addr });
        Outcome::Joined { device: j.device }
    }

    /// Queues a downlink (from a control loop or a command). Class C devices get it at once if the
    /// duty cycle allows; class A devices with their next uplink.
    pub fn enqueue(
        &mut self,
        now_ms: u64,
        device: &str,
        f_port: u8,
        payload: &[u8],
        confirmed: bool,
    ) -> Result<(DownlinkId, Output), EnqueueError> {
        let q = self.queues.get_mut(device).ok_or(EnqueueError::NoSession)?;
        let id = q.enqueue(f_port, payload, confirmed)?;
        let mut out = Output::default();
        self.class_c_for(device, now_ms, &mut out);
        Ok((id, out))
    }

    /// Timers: confirmed class C downlinks that timed out, class C queues that can send now.
    pub fn tick(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in names {
            if let Some(q) = self.queues.get_mut(&name) {
                for ev in q.check_timeouts(now_ms) {
                    note_event(&name, ev, &mut out.notes, &mut Map::new());
                }
            }
            self.class_c_for(&name, now_ms, &mut out);
        }
        for group in self.multicast.pending() {
            self.multicast_for(&group, now_ms, &mut out);
        }
        out
    }

    fn class_c_for(&mut self, device: &str, now_ms: u64, out: &mut Output) {
        let rx = self.mac.rx(device);
        let Some(q) = self.queues.get_mut(device) else { return };
        if q.class() != DeviceClass::C || q.is_empty() {
            return;
        }
        let Some(origin) = self.last_origin.get(device).copied().or(self.default_route) else {
            // Never heard and several sources could send: we do not know which one reaches it. Wait
            // for its first uplink (`waiting_for_route` says so in status).
            return;
        };
        match self.scheduler.class_c_rx(q, &rx, now_ms) {
            Ok(Some(s)) => {
                out.persist.push(Persist::FcntDown { device: device.to_string(), next: q.f_cnt_down() });
                out.downlinks.push(OutDownlink {
                    origin,
                    device: device.to_string(),
                    params: s.plan.params,
                    phy: s.frame.phy,
                    f_cnt_down: Some(s.frame.f_cnt_down),
                    kind: DownlinkKind::ClassC,
                });
            }
            Ok(None) => {}
            Err(e) => out.notes.push(Note::DownlinkDeferred {
                device: device.to_string(),
                reason: e.to_string(),
                duty_cycle: e.is_duty_cycle(),
            }),
        }
    }

    /// The gateway reported that a downlink could not be sent (TX_ACK error).
    pub fn tx_failed(&mut self, device: &str, f_cnt_down: u32) {
        if self.multicast.tx_failed(device, f_cnt_down) {
            return;
        }
        if let Some(q) = self.queues.get_mut(device) {
            q.tx_failed(f_cnt_down);
        }
    }

    /// Downlinks waiting, per device (for status).
    pub fn queued_downlinks(&self) -> usize {
        self.queues.values().map(|q| q.len()).sum()
    }

    fn reading(
        &mut self,
        now: DateTime<Utc>,
        frame: &RadioFrame,
        up: Uplink,
        extra_metrics: Map<String, Value>,
        notes: &mut Vec<Note>,
    ) -> Reading {
        let profile = self.devices.get(&up.device).map_or_else(|| "raw".to_string(), |d| d.profile.clone());
        let mut metrics = Map::new();
        let (mut warnings, mut errors, mut error) = (Vec::new(), Vec::new(), None);
        if let (Some(dec), Some(port)) = (self.decoders.get_mut(&profile), up.f_port) {
            match dec.decode(port, &up.payload) {
                Ok(d) => {
                    metrics = d.metrics;
                    warnings = d.warnings;
                    errors = d.errors;
                }
                Err(e) => {
                    error = Some(e.to_string());
                    notes.push(Note::DecodeError { device: up.device.clone() });
                }
            }
        } else if profile != "raw" {
            error = Some(format!("no decoder for profile `{profile}`"));
            notes.push(Note::DecodeError { device: up.device.clone() });
        }
        for (k, v) in extra_metrics {
            metrics.entry(k).or_insert(v);
        }
        Reading {
            gateway: self.gateway_id.clone(),
            device: up.device,
            profile,
            at: now,
            metrics,
            lorawan: Some(LoraMeta {
                dev_addr: up.dev_addr.to_string(),
                f_cnt: up.f_cnt,
                f_port: up.f_port,
                payload_hex: hex::encode(&up.payload),
                rssi: frame.rssi,
                snr: frame.snr,
                freq_hz: frame.freq_hz,
                sf: frame.sf,
            }),
            wmbus: None,
            error,
            warnings,
            errors,
        }
    }
}

/// A new or resumed session's state: the record and both counters, together.
fn push_session(name: &str, record: SessionRecord, c: Counters, out: &mut Output) {
    out.persist.push(Persist::Session { device: name.to_string(), record });
    out.persist.push(match c.fcnt_up {
        Some(fcnt) => Persist::FcntUp { device: name.to_string(), fcnt },
        None => Persist::FcntUpReset { device: name.to_string() },
    });
    out.persist.push(Persist::FcntDown { device: name.to_string(), next: c.fcnt_down });
}

fn radio_of(frame: &RadioFrame, now_ms: u64) -> Option<UplinkRadio> {
    Some(UplinkRadio {
        tmst: frame.tmst?,
        freq_hz: frame.freq_hz,
        sf: frame.sf?,
        bw_khz: if frame.bw_khz == 0 { 125 } else { frame.bw_khz },
        snr_db: frame.snr,
        received_at_ms: now_ms,
    })
}

fn note_event(device: &str, ev: DownlinkEvent, notes: &mut Vec<Note>, metrics: &mut Map<String, Value>) {
    match ev {
        DownlinkEvent::Acked { id, attempts } => {
            notes.push(Note::DownlinkAcked { device: device.into(), id, attempts })
        }
        DownlinkEvent::Failed { id, attempts } => {
            notes.push(Note::DownlinkFailed { device: device.into(), id, attempts })
        }
        DownlinkEvent::DevStatus(s) => {
            // DevStatusAns: the device's own battery and link margin, kept apart from decoder metrics.
            if let Some(b) = s.battery_pct() {
                metrics.insert("lorawan_battery_pct".into(), Value::from(b));
            }
            metrics.insert("lorawan_external_power".into(), Value::from(s.external_power()));
            metrics.insert("lorawan_margin_db".into(), Value::from(s.margin_db));
        }
    }
}

#[path = "netserver_multicast.rs"]
mod multicast;
