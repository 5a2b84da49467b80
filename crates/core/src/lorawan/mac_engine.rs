//! The MAC command engine: what the network server asks each device (LinkADRReq from ADR,
//! NewChannelReq, RXParamSetupReq, RXTimingSetupReq, DutyCycleReq, DevStatusReq), what the device
//! accepted, and the answers it owes (DeviceTimeAns, and a downlink for ADRACKReq and the sticky
//! RXParamSetupAns / RXTimingSetupAns).
//!
//! Flow for one verified uplink (the network server calls, in this order):
//! 1. [`MacEngine::on_uplink`]: the device's answers resolve its pending requests (a request is
//!    matched with the first answer of its CID); a request sent and not answered in this uplink
//!    counts one unanswered transmission, and after `max_tries` it is dropped (counted, noted). Then
//!    ADR (only for devices with the ADR bit set and ADR allowed) may add a LinkADRReq, and the
//!    configured channels and receive windows may add theirs. The result ([`MacWindow`]) is the list
//!    of commands for this uplink's class A window (answers first, then requests, each CID + payload)
//!    and whether a downlink is due even if nothing else goes.
//! 2. The downlink queue carries a prefix of those commands: in FOpts (≤ 15 bytes, clear text in
//!    1.0.x) beside application data, or alone on FPort 0 (encrypted with NwkSKey) when more than
//!    FOpts can hold is waiting and no application data goes.
//! 3. [`MacEngine::sent`] with how many were carried: their requests count a transmission.
//!
//! The device's state ([`MacState`]: what it accepted, its pending requests, what it refused) is
//! persisted with the device (`Persist::MacState`, JSON) whenever it changes, so a restart forgets
//! nothing asked. The ADR history (last 20 SNRs) is not: it refills from the next uplinks, and writing
//! it would cost a flash write per uplink.
//!
//! Decisions:
//! - The device's state follows only what it accepted: LinkADRReq applies only when all three ACK
//!   bits are set (the device applies none of it otherwise, LoRaWAN 1.0.3 §5.3).
//! - A refused LinkADRReq backs off: a refused data rate or power becomes the device's own bound, a
//!   refused channel mask falls back to the three default channels, and no LinkADRReq is sent for
//!   [`REFUSAL_HOLDOFF_UPLINKS`] uplinks (the one that carried the refusal counts as the first). A refused RXParamSetupReq / NewChannelReq is not asked
//!   again in this session.
//! - One request per CID is pending at a time; a new one of the same kind replaces an unsent one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lorawan::adr::{self, AdrConfig, Bounds, Decision, History, LinkSettings};
use crate::lorawan::mac::MacCommand;
use crate::lorawan::mac_down::{device_time_ans, MacRequest};
use crate::lorawan::region::{DataRate, RxSettings, UplinkRadio};
use crate::lorawan::uplink::Uplink;

/// Uplinks without a LinkADRReq after the device refused one.
pub const REFUSAL_HOLDOFF_UPLINKS: u16 = 20;
/// Requests waiting per device, at most.
pub const MAX_PENDING: usize = 8;
/// The three EU868 default channels (868.1, 868.3, 868.5 MHz) every device has.
pub const DEFAULT_CHANNELS_MASK: u16 = 0x0007;

/// `[lorawan.adr]` and `[lorawan.mac]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MacConfig {
    pub adr: AdrConfig,
    /// Transmissions of a request without an answer before it is dropped (>= 1).
    pub max_tries: u8,
    /// The receive windows every device should use (`[lorawan]`): devices whose accepted settings
    /// differ get RXParamSetupReq / RXTimingSetupReq. OTAA devices get them in the join accept; ABP
    /// devices are taken to start with them (they are provisioned so).
    pub rx: RxSettings,
    /// Channels 3.. (Hz) an OTAA device has from the join accept's CFList.
    pub cf_list: Vec<u32>,
    /// Extra channels (Hz) sent to ABP devices with NewChannelReq as channels 3.. (empty: none).
    pub abp_channels: Vec<u32>,
}

impl Default for MacConfig {
    fn default() -> Self {
        MacConfig {
            adr: AdrConfig::default(),
            max_tries: 3,
            rx: RxSettings::default(),
            cf_list: crate::lorawan::region::DEFAULT_CF_LIST.to_vec(),
            abp_channels: Vec::new(),
        }
    }
}

/// A request waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub req: MacRequest,
    /// Transmissions so far.
    pub tries: u8,
    /// Sent in the last window: its answer is due in the next uplink.
    pub awaiting: bool,
}

/// What the network server knows of one device's MAC settings (persisted; a storage format: add
/// fields with `#[serde(default)]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacState {
    /// The data rate last accepted through LinkADRReq (None: the device's own choice so far).
    pub dr: Option<u8>,
    pub tx_power: u8,
    pub nb_trans: u8,
    /// Enabled channels 0..=15.
    pub ch_mask: u16,
    pub rx1_dr_offset: u8,
    pub rx2_dr: u8,
    pub rx2_freq_hz: u64,
    pub rx1_delay_s: u8,
    pub max_duty_cycle: u8,
    pub pending: Vec<Pending>,
    /// The device's own bounds, learnt from refused LinkADRReqs.
    pub max_dr: Option<u8>,
    pub max_tx_power: Option<u8>,
    /// Uplinks left before ADR may ask again after a refusal.
    pub holdoff: u16,
    /// Requests refused that are not asked again in this session.
    pub refused: Vec<MacRequest>,
    /// Requests dropped unanswered, and refused, in this session.
    pub dropped_count: u32,
    pub refused_count: u32,
}

impl MacState {
    /// A new session: OTAA devices have the CFList's channels, ABP devices the three defaults.
    pub fn new(cfg: &MacConfig, abp: bool) -> MacState {
        let n = if abp { 3 } else { 3 + cfg.cf_list.len().min(13) };
        // An ABP device never saw a join accept: it listens on the region's defaults until RXParamSetupReq
        // and RXTimingSetupReq move it (LoRaWAN 1.0.3 §5.4, §5.7; RP002 §2.1.2).
        let rx = if abp { crate::lorawan::region::RxSettings::default() } else { cfg.rx };
        MacState {
            dr: None,
            tx_power: 0,
            nb_trans: 1,
            ch_mask: ((1u32 << n) - 1) as u16,
            rx1_dr_offset: rx.rx1_dr_offset,
            rx2_dr: rx.rx2_dr,
            rx2_freq_hz: rx.rx2_freq_hz,
            rx1_delay_s: rx.rx1_delay_s,
            max_duty_cycle: 0,
            pending: Vec::new(),
            max_dr: None,
            max_tx_power: None,
            holdoff: 0,
            refused: Vec::new(),
            dropped_count: 0,
            refused_count: 0,
        }
    }

    /// The receive windows the device uses (what it accepted).
    pub fn rx(&self) -> RxSettings {
        RxSettings {
            rx1_dr_offset: self.rx1_dr_offset,
            rx2_dr: self.rx2_dr,
            rx2_freq_hz: self.rx2_freq_hz,
            rx1_delay_s: self.rx1_delay_s,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// None for bytes that are not a stored state (the caller logs it and starts afresh).
    pub fn from_bytes(b: &[u8]) -> Option<MacState> {
        let s: MacState = serde_json::from_slice(b).ok()?;
        let sane = s.pending.len() <= MAX_PENDING
            && s.pending.iter().all(|p| p.req.validate().is_ok())
            && s.rx().validate().is_ok()
            && s.tx_power <= 15
            && (1..=15).contains(&s.nb_trans);
        sane.then_some(s)
    }

    fn has_pending(&self, cid: u8) -> bool {
        self.pending.iter().any(|p| p.req.cid() == cid)
    }
}

/// What happened, for logs and counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MacEvent {
    Accepted {
        req: MacRequest,
    },
    /// The device answered with these status bits not all set.
    Refused {
        req: MacRequest,
        status: u8,
    },
    /// Sent `tries` times without an answer.
    Dropped {
        req: MacRequest,
        tries: u8,
    },
    /// An answer no request waited for (late, repeated, or a device's own mistake).
    Unexpected {
        cid: u8,
    },
    /// ADR asked for new settings.
    AdrRequested {
        decision: Decision,
    },
}

/// Counts since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MacCounts {
    pub requests_sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub dropped: u64,
    pub unexpected_answers: u64,
    pub adr_requests: u64,
    pub device_time_answers: u64,
    /// Windows forced by ADRACKReq or a sticky answer.
    pub forced_downlinks: u64,
}

/// The engine's answer to one uplink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MacWindow {
    /// Commands for this uplink's window, answers first, each CID + payload.
    pub commands: Vec<Vec<u8>>,
    /// A downlink must go even if it carries nothing (ADRACKReq, sticky answers).
    pub force_downlink: bool,
    pub events: Vec<MacEvent>,
    /// The device's state changed: persist it.
    pub changed: bool,
}

/// Per device, what the engine keeps in memory only.
#[derive(Debug, Clone, Default)]
struct Track {
    history: History,
    last_decision: Option<Decision>,
    last_dr: Option<u8>,
    last_snr_db: Option<f64>,
    /// Answers offered in the last window (they come before the requests).
    answers_offered: usize,
}

/// Facts about the device for one uplink.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts {
    pub abp: bool,
    /// `adr = false` in the device's config turns ADR off for it.
    pub adr_allowed: bool,
}

/// A device's MAC view for status and metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MacStatus {
    /// The data rate of the last uplink.
    pub dr: Option<u8>,
    pub tx_power: u8,
    pub nb_trans: u8,
    pub snr_margin_db: Option<f64>,
    pub last_snr_db: Option<f64>,
    pub rx2_dr: u8,
    pub rx1_delay_s: u8,
    pub ch_mask: u16,
    pub pending: Vec<&'static str>,
    pub last_adr: Option<Decision>,
    pub dropped: u32,
    pub refused: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacEnqueueError {
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error("{0} MAC requests already wait for this device")]
    Full(usize),
}

pub struct MacEngine {
    cfg: MacConfig,
    states: HashMap<String, MacState>,
    tracks: HashMap<String, Track>,
    counts: MacCounts,
}

impl MacEngine {
    pub fn new(cfg: MacConfig) -> Self {
        MacEngine { cfg, states: HashMap::new(), tracks: HashMap::new(), counts: MacCounts::default() }
    }

    pub fn config(&self) -> &MacConfig {
        &self.cfg
    }

    pub fn counts(&self) -> MacCounts {
        self.counts
    }

    /// A new session: the device starts from the session's defaults (returned, to persist).
    pub fn start_session(&mut self, device: &str, abp: bool) -> MacState {
        let s = MacState::new(&self.cfg, abp);
        self.states.insert(device.to_string(), s.clone());
        self.tracks.remove(device);
        s
    }

    /// The state the store had for the device's current session.
    pub fn restore(&mut self, device: &str, state: MacState) {
        self.states.insert(device.to_string(), state);
    }

    pub fn remove(&mut self, device: &str) -> bool {
        self.tracks.remove(device);
        self.states.remove(device).is_some()
    }

    pub fn state(&self, device: &str) -> Option<&MacState> {
        self.states.get(device)
    }

    /// The receive windows to answer the device in: what it accepted (the network's until it has a state).
    pub fn rx(&self, device: &str) -> RxSettings {
        self.states.get(device).map_or(self.cfg.rx, MacState::rx)
    }

    /// Queues a request for the device's next class A window (replacing an unsent one of the same
    /// kind). Ok(true) when the state changed (persist it).
    pub fn enqueue(&mut self, device: &str, abp: bool, req: MacRequest) -> Result<bool, MacEnqueueError> {
        req.validate().map_err(MacEnqueueError::Invalid)?;
        let cfg = &self.cfg;
        let s = self.states.entry(device.to_string()).or_insert_with(|| MacState::new(cfg, abp));
        push_request(s, req)
    }

    /// Another gateway's copy of the device's last uplink (dropped as a duplicate frame): ADR keeps
    /// its better SNR.
    pub fn merge_copy(&mut self, device: &str, f_cnt16: u16, snr_db: f64) {
        if let Some(t) = self.tracks.get_mut(device) {
            t.history.merge_copy(f_cnt16, snr_db);
        }
    }

    /// One verified uplink of the device (see the module's flow).
    pub fn on_uplink(
        &mut self,
        device: &str,
        facts: DeviceFacts,
        up: &Uplink,
        radio: Option<&UplinkRadio>,
        now: DateTime<Utc>,
    ) -> MacWindow {
        let cfg = &self.cfg;
        let s = self.states.entry(device.to_string()).or_insert_with(|| MacState::new(cfg, facts.abp));
        let before = s.clone();
        let t = self.tracks.entry(device.to_string()).or_default();
        let mut w = MacWindow::default();
        let mut answers = Vec::new();

        if let Some(r) = radio {
            t.last_dr = DataRate::from_lora(r.sf, r.bw_khz).map(|d| d.dr);
            t.last_snr_db = r.snr_db;
            if let Some(snr) = r.snr_db {
                t.history.push(up.f_cnt, snr);
            }
        }
        for cmd in &up.mac_commands {
            match cmd {
                MacCommand::DeviceTimeReq => {
                    answers.push(device_time_ans(now));
                    self.counts.device_time_answers += 1;
                }
                MacCommand::RxParamSetupAns { .. } | MacCommand::RxTimingSetupAns => {
                    // Sticky (1.0.3 §5.4, §5.7): repeated in every uplink until a class A downlink
                    // reaches the device, so one must go.
                    w.force_downlink = true;
                    answer(s, t, cmd, &mut w.events);
                }
                _ => answer(s, t, cmd, &mut w.events),
            }
        }
        // Sent last window and not answered now: one unanswered transmission.
        let max_tries = cfg.max_tries.max(1);
        s.pending.retain_mut(|p| {
            if !p.awaiting {
                return true;
            }
            p.awaiting = false;
            if p.tries >= max_tries {
                w.events.push(MacEvent::Dropped { req: p.req, tries: p.tries });
                s.dropped_count = s.dropped_count.saturating_add(1);
                return false;
            }
            true
        });
        if up.adr && cfg.adr.enabled && facts.adr_allowed {
            run_adr(cfg, s, t, &mut w.events);
        }
        if up.adr_ack_req {
            // The device has had no downlink for ADR_ACK_LIMIT uplinks and will start lowering its data
            // rate unless it hears from the network within ADR_ACK_DELAY: any downlink will do.
            w.force_downlink = true;
        }
        wanted_settings(cfg, s, facts.abp);

        for e in &w.events {
            match e {
                MacEvent::Accepted { .. } => self.counts.accepted += 1,
                MacEvent::Refused { .. } => self.counts.refused += 1,
                MacEvent::Dropped { .. } => self.counts.dropped += 1,
                MacEvent::Unexpected { .. } => self.counts.unexpected_answers += 1,
                MacEvent::AdrRequested { .. } => self.counts.adr_requests += 1,
            }
        }
        if w.force_downlink {
            self.counts.forced_downlinks += 1;
        }
        t.answers_offered = answers.len();
        w.commands = answers;
        w.commands.extend(s.pending.iter().map(|p| p.req.encode()));
        w.changed = *s != before;
        w
    }

    /// The window's frame carried the first `n` commands of the last [`MacWindow`]. True when the
    /// state changed (persist it).
    pub fn sent(&mut self, device: &str, n: usize) -> bool {
        let answers = self.tracks.get(device).map_or(0, |t| t.answers_offered);
        let Some(s) = self.states.get_mut(device) else { return false };
        let requests = n.saturating_sub(answers);
        for p in s.pending.iter_mut().take(requests) {
            p.tries = p.tries.saturating_add(1);
            p.awaiting = true;
            self.counts.requests_sent += 1;
        }
        requests > 0
    }

    /// The device's MAC view (None: never heard and nothing asked).
    pub fn status(&self, device: &str) -> Option<MacStatus> {
        let s = self.states.get(device)?;
        let t = self.tracks.get(device);
        let last_adr = t.and_then(|t| t.last_decision);
        let margin = t.and_then(|t| {
            let dr = DataRate::from_dr(t.last_dr?)?;
            let floor = crate::lorawan::region::demodulation_floor_db(dr.sf)?;
            Some(t.history.best_snr_db()? - floor - self.cfg.adr.margin_db)
        });
        Some(MacStatus {
            dr: t.and_then(|t| t.last_dr),
            tx_power: s.tx_power,
            nb_trans: s.nb_trans,
            snr_margin_db: margin,
            last_snr_db: t.and_then(|t| t.last_snr_db),
            rx2_dr: s.rx2_dr,
            rx1_delay_s: s.rx1_delay_s,
            ch_mask: s.ch_mask,
            pending: s.pending.iter().map(|p| p.req.name()).collect(),
            last_adr,
            dropped: s.dropped_count,
            refused: s.refused_count,
        })
    }

    /// Devices with a MAC state, sorted.
    pub fn devices(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.states.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// Adds a request (an unsent one of the same kind is replaced; one in flight stays).
fn push_request(s: &mut MacState, req: MacRequest) -> Result<bool, MacEnqueueError> {
    let same = |p: &Pending| match (p.req, req) {
        (MacRequest::NewChannel { index: a, .. }, MacRequest::NewChannel { index: b, .. }) => a == b,
        (a, b) => a.cid() == b.cid(),
    };
    if let Some(p) = s.pending.iter_mut().find(|p| same(p) && !p.awaiting) {
        let changed = p.req != req;
        *p = Pending { req, tries: 0, awaiting: false };
        return Ok(changed);
    }
    if s.pending.len() >= MAX_PENDING {
        return Err(MacEnqueueError::Full(MAX_PENDING));
    }
    s.pending.push(Pending { req, tries: 0, awaiting: false });
    Ok(true)
}

/// Resolves the first pending request an answer belongs to.
fn answer(s: &mut MacState, t: &mut Track, cmd: &MacCommand, events: &mut Vec<MacEvent>) {
    let (cid, status, all) = match cmd {
        MacCommand::LinkAdrAns { status } => (0x03, *status, 0x07),
        MacCommand::DutyCycleAns => (0x04, 0, 0),
        MacCommand::RxParamSetupAns { status } => (0x05, *status, 0x07),
        MacCommand::DevStatusAns { .. } => (0x06, 0, 0),
        MacCommand::NewChannelAns { status } => (0x07, *status, 0x03),
        MacCommand::RxTimingSetupAns => (0x08, 0, 0),
        // Requests from the device (LinkCheckReq, DeviceTimeReq) and class B commands: not answers.
        _ => return,
    };
    let Some(i) = s.pending.iter().position(|p| p.awaiting && p.req.cid() == cid) else {
        // Sticky answers repeat until a downlink reaches the device: expected, not counted.
        if !matches!(cmd, MacCommand::RxParamSetupAns { .. } | MacCommand::RxTimingSetupAns) {
            events.push(MacEvent::Unexpected { cid });
        }
        return;
    };
    let req = s.pending.remove(i).req;
    if status & all != all {
        events.push(MacEvent::Refused { req, status });
        s.refused_count = s.refused_count.saturating_add(1);
        back_off(s, t, req, status);
        return;
    }
    events.push(MacEvent::Accepted { req });
    match req {
        MacRequest::LinkAdr { dr, tx_power, ch_mask, nb_trans } => {
            if s.dr != Some(dr) || s.tx_power != tx_power {
                // The SNRs heard so far were at other settings.
                t.history.clear();
            }
            (s.dr, s.tx_power, s.ch_mask, s.nb_trans) = (Some(dr), tx_power, ch_mask, nb_trans);
        }
        MacRequest::DutyCycle { max_duty_cycle } => s.max_duty_cycle = max_duty_cycle,
        MacRequest::RxParamSetup { rx1_dr_offset, rx2_dr, rx2_freq_hz } => {
            (s.rx1_dr_offset, s.rx2_dr, s.rx2_freq_hz) = (rx1_dr_offset, rx2_dr, rx2_freq_hz);
        }
        MacRequest::NewChannel { index, freq_hz, .. } => {
            let bit = 1u16 << (index & 0x0f);
            s.ch_mask = if freq_hz == 0 { s.ch_mask & !bit } else { s.ch_mask | bit };
        }
        MacRequest::RxTimingSetup { delay_s } => s.rx1_delay_s = delay_s,
        MacRequest::DevStatus => {}
    }
}

/// What a refusal teaches (LinkADRAns bits: 2 power, 1 data rate, 0 channel mask).
fn back_off(s: &mut MacState, t: &Track, req: MacRequest, status: u8) {
    match req {
        MacRequest::LinkAdr { dr, tx_power, ch_mask, .. } => {
            let current_dr = s.dr.or(t.last_dr).unwrap_or(0);
            if status & 0x02 == 0 && dr > current_dr {
                s.max_dr = Some(s.max_dr.map_or(dr - 1, |m| m.min(dr - 1)));
            }
            if status & 0x04 == 0 && tx_power > s.tx_power {
                s.max_tx_power = Some(s.max_tx_power.map_or(tx_power - 1, |m| m.min(tx_power - 1)));
            }
            if status & 0x01 == 0 {
                if ch_mask == DEFAULT_CHANNELS_MASK {
                    // Even the default channels were refused: ADR is not asked again this session.
                    s.refused.push(req);
                }
                s.ch_mask = DEFAULT_CHANNELS_MASK;
            }
            s.holdoff = REFUSAL_HOLDOFF_UPLINKS;
        }
        other => s.refused.push(other),
    }
}

fn run_adr(cfg: &MacConfig, s: &mut MacState, t: &mut Track, events: &mut Vec<MacEvent>) {
    if s.has_pending(0x03) || s.refused.iter().any(|r| r.cid() == 0x03) {
        return;
    }
    if s.holdoff > 0 {
        s.holdoff -= 1;
        return;
    }
    let Some(dr) = t.last_dr else { return };
    let current = LinkSettings { dr, tx_power: s.tx_power, nb_trans: s.nb_trans };
    let bounds = Bounds {
        min_dr: cfg.adr.min_dr,
        max_dr: s.max_dr.map_or(cfg.adr.max_dr, |m| m.min(cfg.adr.max_dr)),
        max_tx_power: s.max_tx_power.unwrap_or(adr::EU868_MIN_TX_POWER_INDEX),
    };
    let Some(d) = adr::decide(&cfg.adr, &t.history, current, bounds) else { return };
    t.last_decision = Some(d);
    if d.changes() {
        let req =
            MacRequest::LinkAdr { dr: d.to.dr, tx_power: d.to.tx_power, ch_mask: s.ch_mask, nb_trans: d.to.nb_trans };
        if push_request(s, req).is_ok() {
            events.push(MacEvent::AdrRequested { decision: d });
        }
    }
}

/// Requests that bring the device to the configured channels and receive windows (each once; a
/// refused one is not asked again this session).
fn wanted_settings(cfg: &MacConfig, s: &mut MacState, abp: bool) {
    let mut want = Vec::new();
    if abp {
        for (i, f) in cfg.abp_channels.iter().enumerate().take(13) {
            let index = 3 + i as u8;
            if s.ch_mask & (1 << index) == 0 {
                want.push(MacRequest::NewChannel { index, freq_hz: u64::from(*f), min_dr: 0, max_dr: 5 });
            }
        }
    }
    let rx = cfg.rx;
    if (s.rx1_dr_offset, s.rx2_dr, s.rx2_freq_hz) != (rx.rx1_dr_offset, rx.rx2_dr, rx.rx2_freq_hz) {
        want.push(MacRequest::RxParamSetup {
            rx1_dr_offset: rx.rx1_dr_offset,
            rx2_dr: rx.rx2_dr,
            rx2_freq_hz: rx.rx2_freq_hz,
        });
    }
    if s.rx1_delay_s != rx.rx1_delay_s {
        want.push(MacRequest::RxTimingSetup { delay_s: rx.rx1_delay_s });
    }
    for req in want {
        let asked = s.pending.iter().any(|p| p.req == req) || s.refused.contains(&req);
        if !asked && req.validate().is_ok() {
            // A full list waits for the next uplink.
            let _ = push_request(s, req);
        }
    }
}

#[cfg(test)]
#[path = "mac_engine_tests.rs"]
mod tests;
