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
use crate::io::gwmp::packet::TxPk;
use crate::keys::{DevAddr, Eui64, Key128};
use crate::lorawan::downlink::{
    DeviceClass, DownlinkEvent, DownlinkId, DownlinkQueue, EnqueueError, QueueConfig, Scheduler,
};
use crate::lorawan::join::{DevAddrAllocator, JoinConfig, JoinContext, JoinError, JoinServer, OtaaDevice};
use crate::lorawan::region::{Eu868, UplinkRadio};
use crate::lorawan::{Dedup, MType, Sessions, Uplink, UplinkError};
use crate::reading::{rfc3339, LoraMeta, Reading};

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
}

/// How a device is provisioned.
#[derive(Debug, Clone)]
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

/// State to write to the store (before the downlinks of the same result go out).
#[derive(Debug, Clone, PartialEq)]
pub enum Persist {
    FcntUp { device: String, fcnt: u32 },
    FcntDown { device: String, next: u32 },
    Session { device: String, dev_addr: DevAddr, nwk_s_key: Key128, app_s_key: Key128 },
    DevNonce { dev_eui: Eui64, nonce: u16 },
    JoinNonce { next: u32 },
}

/// A downlink to send through the source and gateway in `origin`.
#[derive(Debug, Clone)]
pub struct OutDownlink {
    pub origin: Origin,
    pub device: String,
    pub txpk: TxPk,
    /// The FCntDown the frame used (None for a join accept).
    pub f_cnt_down: Option<u32>,
    pub kind: DownlinkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownlinkKind {
    JoinAccept,
    ClassA,
    ClassC,
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
    /// Where each device was last heard: class C downlinks go out there.
    last_origin: HashMap<String, Origin>,
}

impl NetworkServer {
    pub fn new(cfg: NsConfig) -> Result<Self, String> {
        let rx = cfg.join.rx;
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
        })
    }

    /// Adds or replaces a device. ABP devices get their session at once; OTAA devices when they join
    /// (or from a stored session, see [`NetworkServer::restore_session`]).
    pub fn upsert_device(&mut self, name: &str, info: DeviceInfo, prov: Provisioning) {
        if !self.decoders.contains_key(&info.profile) {
            if let Some(d) = decode::native(&info.profile) {
                self.decoders.insert(info.profile.clone(), d);
            }
        }
        match prov {
            Provisioning::Abp { dev_addr, nwk_s_key, app_s_key, relax_fcnt } => {
                self.sessions.upsert(name, dev_addr, nwk_s_key, app_s_key, relax_fcnt);
                self.open_queue(name, info.class, dev_addr, nwk_s_key, app_s_key);
            }
            Provisioning::Otaa { dev_eui, join_eui, app_key } => {
                self.join.upsert_device(OtaaDevice { name: name.to_string(), dev_eui, join_eui, app_key });
            }
        }
        self.devices.insert(name.to_string(), info);
    }

    /// Installs a decoder for a profile (e.g. a JS codec the shell loaded).
    pub fn set_decoder(&mut self, profile: &str, decoder: Box<dyn Decoder>) {
        self.decoders.insert(profile.to_string(), decoder);
    }

    pub fn has_decoder(&self, profile: &str) -> bool {
        self.decoders.contains_key(profile)
    }

    pub fn remove_device(&mut self, name: &str) {
        self.sessions.remove(name);
        self.queues.remove(name);
        self.devices.remove(name);
        self.last_origin.remove(name);
    }

    fn open_queue(&mut self, name: &str, class: DeviceClass, dev_addr: DevAddr, nwk: Key128, app: Key128) {
        match self.queues.get_mut(name) {
            Some(q) => {
                q.set_class(class);
                if q.dev_addr() != dev_addr {
                    q.new_session(dev_addr, nwk, app);
                }
            }
            None => {
                let q = DownlinkQueue::new(name, class, dev_addr, nwk, app, self.queue_config);
                self.queues.insert(name.to_string(), q);
            }
        }
    }

    // ------------------------------------------------------------------ restore from the store

    pub fn restore_fcnt_up(&mut self, device: &str, fcnt: u32) {
        self.sessions.set_last_fcnt(device, fcnt);
    }

    pub fn restore_fcnt_down(&mut self, device: &str, next: u32) {
        if let Some(q) = self.queues.get_mut(device) {
            q.set_f_cnt_down(next);
        }
    }

    /// A session an OTAA device joined before the restart.
    pub fn restore_session(&mut self, device: &str, dev_addr: DevAddr, nwk: Key128, app: Key128) {
        let Some(info) = self.devices.get(device).cloned() else { return };
        self.sessions.upsert(device, dev_addr, nwk, app, false);
        self.open_queue(device, info.class, dev_addr, nwk, app);
    }

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
        self.last_origin.insert(up.device.clone(), frame.origin);
        let mut status_metrics = Map::new();
        let radio = radio_of(frame, now_ms);
        if let Some(q) = self.queues.get_mut(&up.device) {
            if let Some(radio) = &radio {
                for ev in q.on_uplink(&up, radio, now_ms) {
                    note_event(&up.device, ev, &mut out.notes, &mut status_metrics);
                }
                match self.scheduler.answer_uplink(q, radio, now_ms) {
                    Ok(Some(s)) => {
                        out.persist.push(Persist::FcntDown { device: up.device.clone(), next: q.f_cnt_down() });
                        out.downlinks.push(OutDownlink {
                            origin: frame.origin,
                            device: up.device.clone(),
                            txpk: txpk_of(&s.plan.params, s.frame.phy),
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
        let (nwk, app) = (j.keys.nwk_s_key, j.keys.app_s_key);
        self.sessions.upsert(&j.device, j.dev_addr, nwk, app, false);
        let class = self.devices.get(&j.device).map_or(DeviceClass::A, |d| d.class);
        self.open_queue(&j.device, class, j.dev_addr, nwk, app);
        if let Some(q) = self.queues.get_mut(&j.device) {
            q.new_session(j.dev_addr, nwk, app);
        }
        self.last_origin.insert(j.device.clone(), frame.origin);
        out.persist.push(Persist::DevNonce { dev_eui: j.dev_eui, nonce: j.dev_nonce });
        out.persist.push(Persist::JoinNonce { next: self.next_join_nonce });
        out.persist.push(Persist::Session {
            device: j.device.clone(),
            dev_addr: j.dev_addr,
            nwk_s_key: nwk,
            app_s_key: app,
        });
        out.persist.push(Persist::FcntDown { device: j.device.clone(), next: 0 });
        out.downlinks.push(OutDownlink {
            origin: frame.origin,
            device: j.device.clone(),
            txpk: txpk_of(&plan.params, j.accept),
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
        out
    }

    fn class_c_for(&mut self, device: &str, now_ms: u64, out: &mut Output) {
        let Some(q) = self.queues.get_mut(device) else { return };
        if q.class() != DeviceClass::C || q.is_empty() {
            return;
        }
        let Some(origin) = self.last_origin.get(device).copied() else {
            // Never heard: we do not know which gateway reaches it. Wait for its first uplink.
            return;
        };
        match self.scheduler.class_c(q, now_ms) {
            Ok(Some(s)) => {
                out.persist.push(Persist::FcntDown { device: device.to_string(), next: q.f_cnt_down() });
                out.downlinks.push(OutDownlink {
                    origin,
                    device: device.to_string(),
                    txpk: txpk_of(&s.plan.params, s.frame.phy),
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
            seq: 0,
            gateway: self.gateway_id.clone(),
            device: up.device,
            profile,
            at: rfc3339(now),
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
            error,
            warnings,
            errors,
        }
    }
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

fn txpk_of(p: &crate::lorawan::region::TxParams, phy: Vec<u8>) -> TxPk {
    TxPk::lorawan(p.imme, p.tmst, p.freq_hz, p.power_dbm, p.sf, p.bw_khz, phy)
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
