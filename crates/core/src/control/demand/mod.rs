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
//! Over all of them: while the §14a control box reduces, each load is capped at what the box allows
//! (`control_box`, see [`control_box`]); only the loads' protection times come first.
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

mod commands;
pub mod control_box;
mod control_loop;
pub mod events;
mod inputs;
mod load;
pub mod params;
pub mod report;
mod status;
#[cfg(test)]
mod tests;
mod windows;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

pub use commands::{ActionLog, LimitReason, LoadCommand, LoadState, Reason};
pub use control_box::{ControlBoxEpisode, ControlBoxStatus};
pub use events::{DrEvent, EventAck, EventError, MAX_EVENTS, VTN_PREFIX};
pub use params::{
    ConnectionParams, ControlBoxParams, DemandParams, LoadKind, LoadParams, OutputSpec, ParamsError, Problem,
    SECTION_14A_MIN_KW,
};
pub use report::{LoadReport, Report, ReportScope};
pub use status::{DrStatus, LoadStatus};

use control_box::BoxState;
use events::EventBook;
use load::{Load, Pending, Reading};
use report::Acc;

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

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
    /// A settled (debounced) contact of the §14a control box: `contact` indexes `control_box.pins`.
    ControlBox { contact: usize, closed: bool },
    /// The complete set of events an outside source (the OpenADR VTN) has now: each is booked like a
    /// `dr.event` (an unchanged one is `Stale` and changes nothing); a booked event of that source
    /// (id starting with [`VTN_PREFIX`]) that is no longer in the set was withdrawn and is cancelled.
    /// Not the city's heartbeat. Answered in [`Output::acks`].
    VtnEvents(Vec<DrEvent>),
}

/// The answer to each event of an `Input::VtnEvents`, by loop event id.
pub type VtnAcks = Vec<(String, Result<EventAck, EventError>)>;

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
    /// Control-box episodes that started or ended.
    pub control_box: Vec<ControlBoxEpisode>,
    /// The answers to a `VtnEvents` input, per event id (withdrawn ones as `Cancelled`).
    pub acks: VtnAcks,
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
    cbox: Option<BoxState>,
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
            cbox: params.control_box.as_ref().map(|c| BoxState::new(c, &params.load)),
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

    /// The control box's state, if one is configured.
    pub fn control_box(&self) -> Option<ControlBoxStatus> {
        self.cbox.as_ref().map(|b| b.status(self.mono))
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
            Input::Event(ev) if ev.id.starts_with(VTN_PREFIX) => out.ack = Some(Err(EventError::ReservedId)),
            Input::Cancel { id, .. } if id.starts_with(VTN_PREFIX) => out.ack = Some(Err(EventError::ReservedId)),
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
            Input::ControlBox { contact, closed } => self.control_box_contact(now, contact, closed, &mut out),
            Input::VtnEvents(events) => self.vtn_events(now, events, &mut out),
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
