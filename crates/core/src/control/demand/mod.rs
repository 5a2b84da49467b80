//! Demand response: a pure state machine that keeps the district's feeder under its limit by holding back
//! flexible loads (SG-Ready heat pumps, set-point loads such as wallboxes, on/off loads) at peaks and
//! encouraging them in a surplus. No clock reads, no I/O, no randomness source: the shell calls
//! [`Demand::handle`] with the current time for every meter reading, city command and tick (at least at
//! [`Demand::next_wakeup`], normally every `interval_s`), and executes the [`LoadCommand`]s.
//!
//! # The limit in force
//! The tightest of: the configured `limit_kw` (reason `config`); every active city event's limit
//! (`event:<id>`, ramped over its `ramp_s`, see [`events`]); while the city's heartbeat is lost, the
//! `failsafe_limit_kw` for `failsafe_duration_s` (`heartbeat_lost`; city events are suspended meanwhile,
//! because a missed cancel must not hold loads back; after the fail-safe time only the configured limit
//! holds, EEBUS LPC's pattern); while the feeder meter is silent, `meter_lost_limit_kw` (`meter_lost`).
//!
//! # The estimated feeder power
//! The last valid reading plus the expected effect of the loop's own commands that the reading cannot show
//! yet (those issued less than `settle_s` before it). For shedding all of them count (so a shed is not
//! repeated while the meter catches up); for restoring only the increases count (so restores are never
//! optimistic). While the meter is lost, every command since the last reading counts; if there never was a
//! reading, the feeder is assumed to be at `limit_kw`.
//!
//! # Shedding and restoring
//! - Over the limit: loads are shed in priority order (lower first, then config order) until their
//!   estimated reduction covers the excess: SG-Ready → state 1 and switch → off (reduction: the load's
//!   reported power if fresh, else `rated_kw`), setpoint → reduced just enough, never below `min_kw`
//!   (≥ 4.2 kW, §14a EnWG). A load is not shed before `min_on_s` after its last restore, nor within
//!   `recovery_s` after a forced release.
//! - A load shed for its `max_blocked_s` is released (reason `max_blocked`) even when over the limit; the
//!   release time is spread by a random `0..=restore_delay_max_s` before the maximum, so loads shed
//!   together are not released together. The shed order then moves on to the next loads.
//! - Under the limit: one load at a time is restored (highest priority first) when the estimated power
//!   plus its increase stays below `limit - hysteresis_kw`, it has been off for `min_off_s`, and the
//!   random restore delay (`restore_delay_min_s..=restore_delay_max_s` after the previous restore or shed,
//!   or after the limit in force was relaxed) has passed. A setpoint load may be raised in part.
//! - Surplus (an active surplus event, while not over the limit): SG-Ready loads are encouraged (state 3,
//!   or 4 with `allow_forced`), one after the other over the event's `ramp_s`; switch loads are on and
//!   setpoint loads at rated (their normal states); shed loads are restored to these states. When the
//!   surplus ends, encouraged loads return to state 2 at once (that only lowers consumption).
//!
//! # Outputs
//! A [`LoadCommand`] only when a load's state differs from the one last commanded (the first call
//! commands every load's normal state, so relays start from a known state); an [`ActionLog`] entry for
//! every change with its reason; the retained [`DrStatus`] on any change and every `status_interval_s`;
//! [`Report`]s per window and per event.
//!
//! # Time
//! Durations (blocked time, min on/off, delays) are measured on a monotonic clock built from the forward
//! steps of `now`, so a clock jumping backwards cannot keep a load blocked beyond its maximum. Event and
//! heartbeat times are wall-clock times. A report window whose wall-clock end lies ahead after a backward
//! jump simply lasts longer.

pub mod events;
pub mod params;
pub mod report;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

pub use events::{DrEvent, EventAck, EventError, MAX_EVENTS};
pub use params::{DemandParams, LoadKind, LoadParams, OutputSpec, ParamsError, Problem, SECTION_14A_MIN_KW};
pub use report::{LoadReport, Report, ReportScope};

use events::{Booked, EventBook};
use report::{Acc, Span};

/// Readings above this (in W) are treated as garbage.
pub const MAX_POWER_W: f64 = 1.0e9;
/// Most pending own-action effects kept for the estimate.
const MAX_PENDING: usize = 100_000;
/// Windows emitted at most per call after a forward clock jump; further ones are skipped.
const MAX_WINDOWS_PER_CALL: usize = 96;

/// FNV-1a: a stable seed from a string (e.g. the gateway id), for `seed`.
pub fn seed_from_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64: small, deterministic, good enough for spreading delays.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n == 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform milliseconds in `lo_s..=hi_s` seconds.
    fn range_ms(&mut self, lo_s: u32, hi_s: u32) -> i64 {
        let (lo, hi) = (i64::from(lo_s.min(hi_s)) * 1000, i64::from(hi_s.max(lo_s)) * 1000);
        lo + i64::try_from(self.below(u64::try_from(hi - lo + 1).unwrap_or(1))).unwrap_or(0)
    }
}

/// A load's commanded state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadState {
    /// SG-Ready operating state 1..=4.
    SgReady(u8),
    /// Power set-point, kW.
    Setpoint { kw: f64 },
    /// On/off.
    Switch(bool),
}

impl LoadState {
    /// The two SG-Ready relays (relay 1 "EVU block", relay 2) for state 1..=4: 1 = (on, off),
    /// 2 = (off, off), 3 = (off, on), 4 = (on, on).
    pub fn sg_ready_relays(self) -> Option<[bool; 2]> {
        match self {
            LoadState::SgReady(1) => Some([true, false]),
            LoadState::SgReady(2) => Some([false, false]),
            LoadState::SgReady(3) => Some([false, true]),
            LoadState::SgReady(4) => Some([true, true]),
            _ => None,
        }
    }

    /// The `state` of `dr/status`: `normal`, `blocked` (SG-Ready 1, switch off), `reduced` (setpoint below
    /// `rated_kw`), `encouraged` (SG-Ready 3), `forced` (SG-Ready 4).
    pub fn label(self, rated_kw: f64) -> &'static str {
        match self {
            LoadState::SgReady(1) | LoadState::Switch(false) => "blocked",
            LoadState::SgReady(3) => "encouraged",
            LoadState::SgReady(4) => "forced",
            LoadState::Setpoint { kw } if kw < rated_kw - 1e-9 => "reduced",
            _ => "normal",
        }
    }

    /// `{"sg_ready": 1}`, `{"setpoint_kw": 4.2}` or `{"on": false}`.
    pub fn to_value(self) -> Value {
        match self {
            LoadState::SgReady(n) => json!({"sg_ready": n}),
            LoadState::Setpoint { kw } => json!({"setpoint_kw": kw}),
            LoadState::Switch(on) => json!({"on": on}),
        }
    }
}

impl std::fmt::Display for LoadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadState::SgReady(n) => write!(f, "sg-ready {n}"),
            LoadState::Setpoint { kw } => write!(f, "setpoint {kw:.1} kW"),
            LoadState::Switch(on) => write!(f, "{}", if *on { "on" } else { "off" }),
        }
    }
}

/// Why a load got a new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The first command after start: the normal state.
    Init,
    /// Shed because the estimated feeder power was over the limit in force.
    OverLimit,
    /// Restored under the limit.
    Restore,
    /// Released because it had been blocked for its `max_blocked_s` (even if over the limit).
    MaxBlocked,
    /// Encouraged by a surplus event.
    Surplus,
    /// The surplus ended.
    SurplusEnd,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Init => "init",
            Reason::OverLimit => "over_limit",
            Reason::Restore => "restore",
            Reason::MaxBlocked => "max_blocked",
            Reason::Surplus => "surplus",
            Reason::SurplusEnd => "surplus_end",
        }
    }
}

/// Why the limit in force is what it is (`limit_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitReason {
    Config,
    Event(String),
    MeterLost,
    HeartbeatLost,
}

impl std::fmt::Display for LimitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitReason::Config => f.write_str("config"),
            LimitReason::Event(id) => write!(f, "event:{id}"),
            LimitReason::MeterLost => f.write_str("meter_lost"),
            LimitReason::HeartbeatLost => f.write_str("heartbeat_lost"),
        }
    }
}

/// A state for the shell to put a load in (GPIO relays, LoRaWAN downlink or MQTT, see
/// [`Demand::load_output`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadCommand {
    pub load: String,
    pub state: LoadState,
    pub reason: Reason,
}

/// One action of the loop, with its reason and the situation that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionLog {
    pub at: DateTime<Utc>,
    pub load: String,
    pub from: LoadState,
    pub to: LoadState,
    pub reason: Reason,
    pub limit_kw: f64,
    pub limit_reason: LimitReason,
    /// The estimated feeder power the decision was based on.
    pub estimated_kw: Option<f64>,
}

impl std::fmt::Display for ActionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {} -> {} ({}; limit {:.1} kW, {}",
            rfc3339(self.at),
            self.load,
            self.from,
            self.to,
            self.reason.as_str(),
            self.limit_kw,
            self.limit_reason
        )?;
        match self.estimated_kw {
            Some(e) => write!(f, "; estimated {e:.1} kW)"),
            None => write!(f, "; no meter reading)"),
        }
    }
}

/// A load's entry in [`DrStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadStatus {
    pub state: LoadState,
    pub label: &'static str,
    pub since: DateTime<Utc>,
}

/// The retained `dr/status` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct DrStatus {
    pub at: DateTime<Utc>,
    pub limit_kw: f64,
    pub limit_reason: LimitReason,
    /// The last valid reading (None: none yet, or the meter is lost).
    pub measured_kw: Option<f64>,
    pub meter_ok: bool,
    /// `ok`, `lost` or `unsupervised` (no heartbeat heard yet, or supervision off).
    pub heartbeat: &'static str,
    pub surplus: bool,
    /// Ids of the active (applied) city events.
    pub active_events: Vec<String>,
    /// In config order.
    pub loads: Vec<(String, LoadStatus)>,
    pub invalid_readings: u64,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl DrStatus {
    pub fn load(&self, name: &str) -> Option<&LoadStatus> {
        self.loads.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// PRODUCT.md's `{"at","limit_kw","limit_reason","measured_kw","loads":{"hp-12":{"state","since"}}}`,
    /// plus `meter_ok`, `heartbeat`, `surplus`, `active_events`, `invalid_readings` and per load the
    /// commanded value (`sg_ready` / `setpoint_kw` / `on`).
    pub fn to_value(&self) -> Value {
        let mut loads = Map::new();
        for (n, s) in &self.loads {
            let mut v = json!({"state": s.label, "since": rfc3339(s.since)});
            if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), s.state.to_value()) {
                o.extend(extra);
            }
            loads.insert(n.clone(), v);
        }
        json!({
            "at": rfc3339(self.at),
            "limit_kw": r3(self.limit_kw),
            "limit_reason": self.limit_reason.to_string(),
            "measured_kw": self.measured_kw.map(r3),
            "meter_ok": self.meter_ok,
            "heartbeat": self.heartbeat,
            "surplus": self.surplus,
            "active_events": self.active_events,
            "invalid_readings": self.invalid_readings,
            "loads": loads,
        })
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// An input to [`Demand::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passes.
    Tick,
    /// A reading of the feeder meter (`power_w`), taken at `at`.
    Meter { at: DateTime<Utc>, power_w: f64 },
    /// `dr.event` (also counts as the city's heartbeat, once heartbeats have been heard).
    Event(DrEvent),
    /// `dr.cancel` (also counts as the city's heartbeat, once heartbeats have been heard).
    Cancel { id: String, modification: Option<u32> },
    /// The city's heartbeat: the first one starts the supervision (`heartbeat_timeout_s`).
    Heartbeat { at: DateTime<Utc> },
    /// A load's own power reading, used as its reduction estimate for `meter_timeout_s`.
    LoadFeedback { load: String, at: DateTime<Utc>, power_kw: f64 },
}

/// Everything one call produces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub commands: Vec<LoadCommand>,
    /// The retained `dr/status`, when it changed or is due.
    pub status: Option<DrStatus>,
    pub log: Vec<ActionLog>,
    pub reports: Vec<Report>,
    /// The answer to an `Event` or `Cancel` input.
    pub ack: Option<Result<EventAck, EventError>>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: DateTime<Utc>,
    kw: f64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    at: DateTime<Utc>,
    delta_kw: f64,
}

#[derive(Debug, Clone)]
struct Load {
    p: LoadParams,
    min_kw: f64,
    max_blocked_ms: Option<i64>,
    min_off_ms: i64,
    min_on_ms: i64,
    recovery_ms: i64,
    state: LoadState,
    since: DateTime<Utc>,
    sent: Option<LoadState>,
    /// Monotonic ms when it was shed (None: not shed).
    blocked_at: Option<i64>,
    /// Monotonic deadline of the forced release.
    release_at: Option<i64>,
    /// Estimated reduction while shed (sg-ready/switch), kW.
    shed_kw: f64,
    /// Monotonic ms of the last restore.
    on_at: i64,
    recovery_until: i64,
    feedback: Option<(DateTime<Utc>, f64)>,
}

fn round_down_01(x: f64) -> f64 {
    (x * 10.0).floor() / 10.0
}

impl Load {
    fn normal(&self) -> LoadState {
        match self.p.kind {
            LoadKind::SgReady => LoadState::SgReady(2),
            LoadKind::Setpoint => LoadState::Setpoint { kw: self.p.rated_kw },
            LoadKind::Switch => LoadState::Switch(true),
        }
    }

    fn boosted_state(&self) -> LoadState {
        match self.p.kind {
            LoadKind::SgReady => LoadState::SgReady(if self.p.allow_forced { 4 } else { 3 }),
            _ => self.normal(),
        }
    }

    fn shed_state(&self) -> LoadState {
        match self.p.kind {
            LoadKind::SgReady => LoadState::SgReady(1),
            LoadKind::Setpoint => LoadState::Setpoint { kw: self.min_kw },
            LoadKind::Switch => LoadState::Switch(false),
        }
    }

    fn is_shed(&self) -> bool {
        match self.state {
            LoadState::SgReady(n) => n <= 1,
            LoadState::Switch(on) => !on,
            LoadState::Setpoint { kw } => kw < self.p.rated_kw - 1e-9,
        }
    }

    fn is_boosted(&self) -> bool {
        matches!(self.state, LoadState::SgReady(3 | 4))
    }

    /// The load's power when running: its fresh report, else `rated_kw`.
    fn running_kw(&self, now: DateTime<Utc>, fresh_s: i64) -> f64 {
        match self.feedback {
            Some((at, kw)) if (now - at).num_seconds() <= fresh_s && at <= now => kw.clamp(0.0, self.p.rated_kw),
            _ => self.p.rated_kw,
        }
    }

    /// Its estimated current reduction, kW.
    fn reduction_kw(&self) -> f64 {
        match self.state {
            LoadState::Setpoint { kw } => (self.p.rated_kw - kw).max(0.0),
            _ if self.is_shed() => self.shed_kw,
            _ => 0.0,
        }
    }
}

/// The demand-response loop of one feeder.
#[derive(Debug, Clone)]
pub struct Demand {
    p: DemandParams,
    loads: Vec<Load>,
    names: Vec<String>,
    /// Load indices in shed order (priority, then config order).
    order: Vec<usize>,
    events: EventBook,
    rng: Rng,
    started: Option<DateTime<Utc>>,
    last_now: Option<DateTime<Utc>>,
    mono: i64,
    reading: Option<Reading>,
    invalid_readings: u64,
    heartbeat: Option<DateTime<Utc>>,
    pending: Vec<Pending>,
    next_restore: i64,
    limit: (f64, LimitReason),
    surplus_since: Option<(DateTime<Utc>, u32)>,
    window: Option<Acc>,
    last_status: Option<DrStatus>,
    last_status_mono: i64,
}

impl Demand {
    /// Validates `params` and builds the loop (every load in its normal state).
    pub fn from_params(params: &DemandParams) -> Result<Demand, ParamsError> {
        let problems = params.validate();
        if !problems.is_empty() {
            return Err(ParamsError { problems });
        }
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let loads: Vec<Load> = params
            .load
            .iter()
            .map(|l| {
                let mut load = Load {
                    p: l.clone(),
                    min_kw: l.min_kw(),
                    max_blocked_ms: Some(i64::from(l.max_blocked_s()) * 1000).filter(|m| *m > 0),
                    min_off_ms: i64::from(l.min_off_s()) * 1000,
                    min_on_ms: i64::from(l.min_on_s()) * 1000,
                    recovery_ms: i64::from(l.recovery_s()) * 1000,
                    state: LoadState::Switch(true),
                    since: epoch,
                    sent: None,
                    blocked_at: None,
                    release_at: None,
                    shed_kw: 0.0,
                    on_at: i64::MIN / 4,
                    recovery_until: i64::MIN / 4,
                    feedback: None,
                };
                load.state = load.normal();
                load
            })
            .collect();
        let mut order: Vec<usize> = (0..loads.len()).collect();
        order.sort_by_key(|&i| (loads[i].p.priority, i));
        let seed = if params.seed == 0 { seed_from_str(&params.meter) } else { params.seed };
        Ok(Demand {
            names: loads.iter().map(|l| l.p.name.clone()).collect(),
            loads,
            order,
            events: EventBook::default(),
            rng: Rng::new(seed),
            started: None,
            last_now: None,
            mono: 0,
            reading: None,
            invalid_readings: 0,
            heartbeat: None,
            pending: Vec::new(),
            next_restore: i64::MIN / 4,
            limit: (params.limit_kw, LimitReason::Config),
            surplus_since: None,
            window: None,
            last_status: None,
            last_status_mono: i64::MIN / 4,
            p: params.clone(),
        })
    }

    pub fn params(&self) -> &DemandParams {
        &self.p
    }

    /// The limit in force after the last call, and why.
    pub fn limit(&self) -> (f64, &LimitReason) {
        (self.limit.0, &self.limit.1)
    }

    /// A load's current state.
    pub fn load_state(&self, name: &str) -> Option<LoadState> {
        self.loads.iter().find(|l| l.p.name == name).map(|l| l.state)
    }

    /// How a load is switched (for the shell).
    pub fn load_output(&self, name: &str) -> Option<&OutputSpec> {
        self.loads.iter().find(|l| l.p.name == name).and_then(|l| l.p.output.as_ref())
    }

    /// Ids of the booked city events (active or future).
    pub fn booked_events(&self) -> Vec<String> {
        self.events.booked.iter().map(|b| b.ev.id.clone()).collect()
    }

    /// Runs the loop for one input at `now`.
    /// Times outside 1900..3000 are clamped into that range.
    pub fn handle(&mut self, now: DateTime<Utc>, input: Input) -> Output {
        let now = clamp_time(now);
        let mut out = Output::default();
        self.advance(now, &mut out);
        match input {
            Input::Tick => {}
            Input::Meter { at, power_w } => self.meter(now, clamp_time(at), power_w),
            Input::Event(ev) => {
                self.refresh_city(now);
                let ack = self.events.upsert(ev, now, &mut self.rng, self.p.limit_kw, &self.p.level_factors);
                out.ack = Some(ack);
            }
            Input::Cancel { id, modification } => {
                self.refresh_city(now);
                match self.events.cancel(&id, modification) {
                    Ok((ack, removed)) => {
                        if let Some(b) = removed {
                            self.finish_event(b, now, true, &mut out);
                        }
                        out.ack = Some(Ok(ack));
                    }
                    Err(e) => out.ack = Some(Err(e)),
                }
            }
            Input::Heartbeat { at } => self.hear_city(now, clamp_time(at)),
            Input::LoadFeedback { load, at, power_kw } => {
                if power_kw.is_finite() && power_kw >= 0.0 {
                    if let Some(l) = self.loads.iter_mut().find(|l| l.p.name == load) {
                        l.feedback = Some((clamp_time(at).min(now), power_kw));
                    }
                }
            }
        }
        self.control(now, &mut out);
        self.status(now, &mut out);
        out
    }

    /// `handle(now, Tick)`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Output {
        self.handle(now, Input::Tick)
    }

    /// The latest time the shell must call again (at most `interval_s` ahead).
    pub fn next_wakeup(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = clamp_time(now);
        let horizon = add_ms(now, i64::from(self.p.interval_s) * 1000);
        let mut t = horizon;
        let mut consider = |c: DateTime<Utc>| {
            if c > now && c < t {
                t = c;
            }
        };
        // monotonic deadlines still ahead (a passed one has been acted on, or is waiting for a condition)
        let in_ms = |deadline: i64| {
            if deadline > self.mono {
                add_ms(now, deadline - self.mono)
            } else {
                horizon
            }
        };
        for b in &self.events.booked {
            consider(b.active_from);
            if let Some(e) = b.end {
                consider(e);
            }
        }
        for l in &self.loads {
            if let Some(r) = l.release_at {
                consider(in_ms(r));
            }
            if let Some(b) = l.blocked_at {
                consider(in_ms(b.saturating_add(l.min_off_ms)));
            }
        }
        if self.loads.iter().any(Load::is_shed) {
            consider(in_ms(self.next_restore));
        }
        if let Some(r) = self.reading {
            consider(add_ms(r.at, i64::from(self.p.meter_timeout_s) * 1000 + 1));
        }
        if let (Some(h), true) = (self.heartbeat, self.p.heartbeat_timeout_s > 0) {
            let lost = add_ms(h, i64::from(self.p.heartbeat_timeout_s) * 1000 + 1);
            consider(lost);
            consider(add_ms(lost, i64::from(self.p.failsafe_duration_s) * 1000));
        }
        if let Some(w) = &self.window {
            consider(add_ms(w.start, i64::from(self.p.report_window_s) * 1000));
        }
        t
    }

    // ----- inputs -----

    fn hear_city(&mut self, now: DateTime<Utc>, at: DateTime<Utc>) {
        let at = at.min(now);
        if self.heartbeat.is_none_or(|h| at > h) {
            self.heartbeat = Some(at);
        }
    }

    /// A `dr.*` command refreshes the heartbeat once the city sends heartbeats at all.
    fn refresh_city(&mut self, now: DateTime<Utc>) {
        if self.heartbeat.is_some() {
            self.hear_city(now, now);
        }
    }

    fn meter(&mut self, now: DateTime<Utc>, at: DateTime<Utc>, power_w: f64) {
        if !(power_w.is_finite() && (0.0..=MAX_POWER_W).contains(&power_w)) {
            self.invalid_readings += 1;
            if let Some(w) = &mut self.window {
                w.add_invalid();
            }
            for b in &mut self.events.booked {
                if let Some(acc) = &mut b.acc {
                    acc.add_invalid();
                }
            }
            return;
        }
        let at = at.min(now);
        if self.reading.is_some_and(|r| at < r.at) {
            return; // out of order
        }
        let kw = power_w / 1000.0;
        self.reading = Some(Reading { at, kw });
        let settle = i64::from(self.p.settle_s) * 1000;
        self.pending.retain(|p| add_ms(p.at, settle) > at);
        if let Some(w) = &mut self.window {
            w.add_reading(kw);
        }
        for b in &mut self.events.booked {
            if let Some(acc) = &mut b.acc {
                acc.add_reading(kw);
            }
        }
    }

    // ----- time and reports -----

    fn advance(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let Some(last) = self.last_now else {
            self.started = Some(now);
            self.last_now = Some(now);
            self.window = Some(Acc::new(self.window_start(now), self.loads.len(), true));
            return;
        };
        if now < last {
            // The clock jumped back. How much real time passed is unknown; the shell calls at least every
            // `interval_s`, so count that much (a maximum blocked time may end early, never late), and go on
            // from here (the monotonic clock does not stand still until the wall clock catches up).
            self.mono = self.mono.saturating_add(i64::from(self.p.interval_s) * 1000);
            self.last_now = Some(now);
            return;
        }
        let win = i64::from(self.p.report_window_s) * 1000;
        let mut t = last;
        let mut emitted = 0;
        while let Some(w) = &self.window {
            let end = add_ms(w.start, win);
            if end > now {
                break;
            }
            if emitted >= MAX_WINDOWS_PER_CALL {
                // A long jump: skip to the window containing `now`.
                self.window = Some(Acc::new(self.window_start(now), self.loads.len(), true));
                t = now;
                break;
            }
            self.integrate(t, end);
            if let Some(acc) = self.window.take() {
                out.reports.push(acc.finish(ReportScope::Window, end, &self.names));
            }
            self.window = Some(Acc::new(end, self.loads.len(), false));
            t = end;
            emitted += 1;
        }
        self.integrate(t, now);
        self.mono = self.mono.saturating_add((now - last).num_milliseconds());
        self.last_now = Some(now);
    }

    fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let win = i64::from(self.p.report_window_s) * 1000;
        let ms = now.timestamp_millis();
        let start = ms - ms.rem_euclid(win);
        DateTime::<Utc>::from_timestamp_millis(start).unwrap_or(now)
    }

    fn integrate(&mut self, t0: DateTime<Utc>, t1: DateTime<Utc>) {
        if t1 <= t0 {
            return;
        }
        let dt_s = (t1 - t0).num_milliseconds() as f64 / 1000.0;
        let meter_ok = self.reading.is_some_and(|r| (t0 - r.at).num_seconds() < i64::from(self.p.meter_timeout_s));
        let over = meter_ok && self.reading.is_some_and(|r| r.kw > self.limit.0);
        let blocked: Vec<bool> = self.loads.iter().map(Load::is_shed).collect();
        let boosted: Vec<bool> = self.loads.iter().map(Load::is_boosted).collect();
        let shed_kw: Vec<f64> = self.loads.iter().map(Load::reduction_kw).collect();
        let span = Span { dt_s, over, limit_kw: self.limit.0, blocked: &blocked, boosted: &boosted, shed_kw: &shed_kw };
        if let Some(w) = &mut self.window {
            w.add_span(&span);
        }
        for b in &mut self.events.booked {
            if let Some(acc) = &mut b.acc {
                acc.add_span(&span);
            }
        }
    }

    fn finish_event(&mut self, b: Booked, now: DateTime<Utc>, cancelled: bool, out: &mut Output) {
        if let Some(acc) = b.acc {
            let scope = ReportScope::Event { id: b.ev.id, modification: b.ev.modification, cancelled };
            out.reports.push(acc.finish(scope, now, &self.names));
        }
    }

    // ----- the loop -----

    fn meter_lost(&self, now: DateTime<Utc>) -> bool {
        let timeout = i64::from(self.p.meter_timeout_s) * 1000;
        match (self.reading, self.started) {
            (Some(r), _) => (now - r.at).num_milliseconds() > timeout,
            (None, Some(s)) => (now - s).num_milliseconds() > timeout,
            (None, None) => false,
        }
    }

    /// `None` = not supervised (no heartbeat yet or off); `Some(true)` = lost.
    fn heartbeat_lost(&self, now: DateTime<Utc>) -> Option<bool> {
        let h = self.heartbeat?;
        if self.p.heartbeat_timeout_s == 0 {
            return None;
        }
        Some((now - h).num_milliseconds() > i64::from(self.p.heartbeat_timeout_s) * 1000)
    }

    fn limit_in_force(&self, now: DateTime<Utc>) -> ((f64, LimitReason), bool, Vec<String>, u32) {
        let mut best = (self.p.limit_kw, LimitReason::Config);
        let mut surplus = false;
        let mut surplus_ramp = 0;
        let mut active = Vec::new();
        match self.heartbeat_lost(now) {
            Some(true) => {
                let since = self.heartbeat.map(|h| add_ms(h, i64::from(self.p.heartbeat_timeout_s) * 1000));
                let fs_end = since.map(|s| add_ms(s, i64::from(self.p.failsafe_duration_s) * 1000));
                if fs_end.is_some_and(|e| now < e) && self.p.failsafe_limit_kw() < best.0 {
                    best = (self.p.failsafe_limit_kw(), LimitReason::HeartbeatLost);
                }
            }
            _ => {
                for b in self.events.booked.iter().filter(|b| b.is_active(now)) {
                    active.push(b.ev.id.clone());
                    if let Some(l) = b.limit_at(now, self.p.limit_kw) {
                        if l < best.0 {
                            best = (l, LimitReason::Event(b.ev.id.clone()));
                        }
                    }
                    if b.surplus {
                        surplus = true;
                        surplus_ramp = surplus_ramp.max(b.ev.ramp_s);
                    }
                }
            }
        }
        if self.meter_lost(now) && self.p.meter_lost_limit_kw() < best.0 {
            best = (self.p.meter_lost_limit_kw(), LimitReason::MeterLost);
        }
        (best, surplus, active, surplus_ramp)
    }

    /// (for shedding, for restoring) estimates of the feeder power, kW.
    fn estimate(&self, now: DateTime<Utc>) -> Option<(f64, f64)> {
        let lost = self.meter_lost(now);
        let base = match self.reading {
            Some(r) => r.kw,
            None if lost => self.p.limit_kw,
            None => return None,
        };
        let all: f64 = self.pending.iter().map(|p| p.delta_kw).sum();
        let ups: f64 = self.pending.iter().map(|p| p.delta_kw.max(0.0)).sum();
        if lost {
            let e = (base + all).max(0.0);
            Some((e, e))
        } else {
            Some(((base + all).max(0.0), base + ups))
        }
    }

    fn set(&mut self, i: usize, to: LoadState, reason: Reason, now: DateTime<Utc>, est: Option<f64>, out: &mut Output) {
        let fresh = i64::from(self.p.meter_timeout_s);
        let mono = self.mono;
        let l = &mut self.loads[i];
        let from = l.state;
        if from == to {
            return;
        }
        let was_shed = l.is_shed();
        let before_kw = match from {
            LoadState::Setpoint { kw } => kw,
            _ if was_shed => 0.0,
            _ => l.running_kw(now, fresh),
        };
        l.state = to;
        l.since = now;
        let shed = l.is_shed();
        let after_kw = match to {
            LoadState::Setpoint { kw } => kw,
            _ if shed => 0.0,
            // a restore is assumed to draw rated power (conservative)
            _ if was_shed => l.p.rated_kw,
            _ => l.running_kw(now, fresh),
        };
        if shed && !was_shed {
            l.blocked_at = Some(mono);
            l.shed_kw = before_kw;
            if let Some(max) = l.max_blocked_ms {
                let spread_s = u64::from(self.p.restore_delay_max_s)
                    .min(u64::try_from((max - l.min_off_ms).max(0) / 1000).unwrap_or(0));
                let jitter = i64::try_from(self.rng.below(spread_s * 1000 + 1)).unwrap_or(0);
                l.release_at = Some(mono + max - jitter);
            }
        } else if !shed && was_shed {
            l.blocked_at = None;
            l.release_at = None;
            l.shed_kw = 0.0;
            l.on_at = mono;
            if reason == Reason::MaxBlocked {
                l.recovery_until = mono.saturating_add(l.recovery_ms);
            }
        }
        let delta = after_kw - before_kw;
        if delta != 0.0 && self.pending.len() < MAX_PENDING {
            self.pending.push(Pending { at: now, delta_kw: delta });
        }
        out.log.push(ActionLog {
            at: now,
            load: l.p.name.clone(),
            from,
            to,
            reason,
            limit_kw: self.limit.0,
            limit_reason: self.limit.1.clone(),
            estimated_kw: est,
        });
    }

    fn control(&mut self, now: DateTime<Utc>, out: &mut Output) {
        // Events: over ones report, newly active ones start accumulating.
        for b in self.events.expire(now) {
            self.finish_event(b, now, false, out);
        }
        let n = self.loads.len();
        for b in &mut self.events.booked {
            if b.acc.is_none() && b.is_active(now) {
                b.acc = Some(Acc::new(now, n, false));
            }
        }
        let (limit, surplus, _active, ramp) = self.limit_in_force(now);
        if limit.0 > self.limit.0 + 1e-9 {
            // The limit relaxed (an event ended or was cancelled, a fail-safe ended): the first restore
            // waits a random delay too, so that gateways told at the same moment do not restore together.
            let d = self.rng.range_ms(self.p.restore_delay_min_s, self.p.restore_delay_max_s);
            self.next_restore = self.next_restore.max(self.mono.saturating_add(d));
        }
        self.limit = limit;
        let limit_kw = self.limit.0;
        let est = self.estimate(now);
        let est_shed = est.map(|e| e.0);
        let mono = self.mono;

        // Forced releases: never blocked beyond the maximum.
        for i in 0..n {
            let l = &self.loads[i];
            if l.release_at.is_some_and(|r| mono >= r) {
                let to = if surplus { l.boosted_state() } else { l.normal() };
                self.set(i, to, Reason::MaxBlocked, now, est_shed, out);
            }
        }
        let est = self.estimate(now);
        if let Some((shed_est, restore_est)) = est {
            if shed_est > limit_kw {
                self.shed(now, shed_est - limit_kw, shed_est, out);
            } else if mono >= self.next_restore {
                self.restore_one(now, limit_kw - self.p.hysteresis_kw - restore_est, restore_est, surplus, out);
            }
        }

        // Surplus.
        let over = self.estimate(now).is_some_and(|e| e.0 > limit_kw);
        if surplus {
            let since = match self.surplus_since {
                Some((s, _)) => s,
                None => {
                    self.surplus_since = Some((now, ramp));
                    now
                }
            };
            if !over {
                let sg: Vec<usize> =
                    self.order.iter().rev().copied().filter(|&i| self.loads[i].p.kind == LoadKind::SgReady).collect();
                let count = sg.len().max(1) as i64;
                let ramp_ms = i64::from(self.surplus_since.map_or(0, |s| s.1)) * 1000;
                for (k, &i) in sg.iter().enumerate() {
                    let at = add_ms(since, ramp_ms * k as i64 / count);
                    if now >= at && self.loads[i].state == LoadState::SgReady(2) {
                        let to = self.loads[i].boosted_state();
                        let e = self.estimate(now).map(|e| e.0);
                        self.set(i, to, Reason::Surplus, now, e, out);
                    }
                }
            }
        } else if self.surplus_since.take().is_some() {
            for i in 0..n {
                if self.loads[i].is_boosted() {
                    let to = self.loads[i].normal();
                    let e = self.estimate(now).map(|e| e.0);
                    self.set(i, to, Reason::SurplusEnd, now, e, out);
                }
            }
        }

        // Commands only on change.
        for l in &mut self.loads {
            if l.sent != Some(l.state) {
                let reason = match l.sent {
                    None => Reason::Init,
                    Some(_) => out.log.iter().rev().find(|a| a.load == l.p.name).map_or(Reason::Restore, |a| a.reason),
                };
                l.sent = Some(l.state);
                out.commands.push(LoadCommand { load: l.p.name.clone(), state: l.state, reason });
            }
        }
    }

    fn shed(&mut self, now: DateTime<Utc>, excess: f64, est: f64, out: &mut Output) {
        let mono = self.mono;
        let fresh = i64::from(self.p.meter_timeout_s);
        let mut need = excess;
        let mut any = false;
        for k in 0..self.order.len() {
            if need <= 0.0 {
                break;
            }
            let i = self.order[k];
            let l = &self.loads[i];
            if mono < l.recovery_until {
                continue;
            }
            let (to, red) = match (l.p.kind, l.state) {
                (LoadKind::Setpoint, LoadState::Setpoint { kw }) => {
                    if kw <= l.min_kw + 1e-9 || (!l.is_shed() && mono < l.on_at.saturating_add(l.min_on_ms)) {
                        continue;
                    }
                    let target = round_down_01(kw - need).max(l.min_kw);
                    (LoadState::Setpoint { kw: target }, kw - target)
                }
                _ => {
                    if l.is_shed() || mono < l.on_at.saturating_add(l.min_on_ms) {
                        continue;
                    }
                    let red = l.running_kw(now, fresh);
                    if red <= 0.0 {
                        continue;
                    }
                    (l.shed_state(), red)
                }
            };
            if red <= 0.0 {
                continue;
            }
            self.set(i, to, Reason::OverLimit, now, Some(est), out);
            need -= red;
            any = true;
        }
        if any {
            let d = self.rng.range_ms(self.p.restore_delay_min_s, self.p.restore_delay_max_s);
            self.next_restore = self.next_restore.max(mono.saturating_add(d));
        }
    }

    fn restore_one(&mut self, now: DateTime<Utc>, headroom: f64, est: f64, surplus: bool, out: &mut Output) {
        let mono = self.mono;
        for k in (0..self.order.len()).rev() {
            let i = self.order[k];
            let l = &self.loads[i];
            if !l.is_shed() || l.blocked_at.is_some_and(|b| mono < b.saturating_add(l.min_off_ms)) {
                continue;
            }
            let to = match l.state {
                LoadState::Setpoint { kw } => {
                    let missing = l.p.rated_kw - kw;
                    let inc = missing.min(headroom);
                    // raise in steps of at least 1 kW (or what is missing) to avoid chatter
                    if inc <= 0.0 || inc < missing.min(1.0) {
                        continue;
                    }
                    if inc >= missing {
                        l.normal()
                    } else {
                        LoadState::Setpoint { kw: round_down_01(kw + inc).max(kw) }
                    }
                }
                _ => {
                    if l.p.rated_kw >= headroom {
                        continue;
                    }
                    if surplus {
                        l.boosted_state()
                    } else {
                        l.normal()
                    }
                }
            };
            if to == l.state {
                continue;
            }
            self.set(i, to, Reason::Restore, now, Some(est), out);
            let d = self.rng.range_ms(self.p.restore_delay_min_s, self.p.restore_delay_max_s);
            self.next_restore = mono.saturating_add(d);
            return;
        }
    }

    fn status(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let meter_ok = !self.meter_lost(now) && self.reading.is_some();
        let (_, surplus, active, _) = self.limit_in_force(now);
        let st = DrStatus {
            at: now,
            limit_kw: self.limit.0,
            limit_reason: self.limit.1.clone(),
            measured_kw: if meter_ok { self.reading.map(|r| r.kw) } else { None },
            meter_ok,
            heartbeat: match self.heartbeat_lost(now) {
                None => "unsupervised",
                Some(true) => "lost",
                Some(false) => "ok",
            },
            surplus,
            active_events: active,
            loads: self
                .loads
                .iter()
                .map(|l| {
                    (
                        l.p.name.clone(),
                        LoadStatus { state: l.state, label: l.state.label(l.p.rated_kw), since: l.since },
                    )
                })
                .collect(),
            invalid_readings: self.invalid_readings,
        };
        let changed = match &self.last_status {
            None => true,
            Some(o) => {
                // a ramping limit is re-published per 0.5 kW, not on every call
                (o.limit_kw - st.limit_kw).abs() >= 0.5
                    || o.limit_reason != st.limit_reason
                    || o.meter_ok != st.meter_ok
                    || o.heartbeat != st.heartbeat
                    || o.surplus != st.surplus
                    || o.active_events != st.active_events
                    || o.loads != st.loads
            }
        };
        let due = self.mono >= self.last_status_mono.saturating_add(i64::from(self.p.status_interval_s) * 1000);
        if changed || due {
            self.last_status = Some(st.clone());
            self.last_status_mono = self.mono;
            out.status = Some(st);
        }
    }
}

fn add_ms(t: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
    Duration::try_milliseconds(ms).and_then(|d| t.checked_add_signed(d)).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// The range of times the loop works in (1900..3000): times outside are clamped to it, so that no time
/// arithmetic can overflow.
pub(crate) fn time_range() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        DateTime::<Utc>::from_timestamp(-2_208_988_800, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        DateTime::<Utc>::from_timestamp(32_503_680_000, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
    )
}

fn clamp_time(t: DateTime<Utc>) -> DateTime<Utc> {
    let (lo, hi) = time_range();
    t.clamp(lo, hi)
}
