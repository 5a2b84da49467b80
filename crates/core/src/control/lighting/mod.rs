//! Smart street lighting: a pure state machine per zone (`now` + input in, lamp commands, retained state,
//! events and energy reports out). No clock reads, no I/O, no tokio: the shell calls [`Lighting::handle`]
//! (or the convenience methods) with the current time, and [`Lighting::tick`] no later than
//! [`Lighting::next_wakeup`].
//!
//! # How a lamp's level is decided (TALQ-style combination)
//! 1. An override from the city (`lighting.override`) wins, for every lamp of the zone, until it expires or
//!    is cleared (reason `override`).
//! 2. Otherwise, if the clock is untrusted (safe mode, below), every lamp is at `clock_safe_level_pct`
//!    (reason `failsafe`); presence still raises it.
//! 3. Otherwise the schedule sets the level ([`Schedule`]): outside the lit period, or in a period with
//!    level 0, the lamp is off (level 0, reason `off`, presence does not light it). Inside, the level is the
//!    period's (or `base_level_pct`), raised to `floor_level_pct` (reason `schedule`).
//! 4. A silent presence sensor (nothing heard for `heartbeat_s`) raises the lamps it covers to
//!    `failsafe_level_pct` (reason `failsafe`).
//! 5. Presence raises the lamps from `lamps_behind` before to `lamps_ahead` after the sensor's lamp to
//!    `boost_level_pct` for `hold_s` after the last accepted detection (reason `presence`). The maximum wins.
//!
//! # Debounce
//! A sensor's detection counts when it is the `debounce_count`-th trigger within `debounce_window_s`
//! (sliding window; `1` = every trigger counts). Any uplink of a sensor, detection or not, counts as heard.
//!
//! # Downlinks (EU868 duty cycle)
//! A lamp gets a [`LampCommand`] only when its level differs from the level last sent to it; all changes
//! in one call are coalesced into one command per lamp; and a lamp gets at most one command per
//! `min_command_gap_s` (changes in between are coalesced, the latest level is sent when the gap is over).
//! Ramps are not stepped by the gateway: the command carries the target and the fade time (`ramp_s`), and
//! the lamp controller fades (one downlink per change instead of one per step; a controller that cannot
//! fade simply jumps). For energy accounting the lamp is modelled as fading linearly over `ramp_s`.
//! Retained state changes (reason changes at the same level included) go out as [`ZoneState`] over MQTT,
//! which costs no airtime.
//!
//! # Acknowledgements
//! A lamp reports its level (`lamp-generic`: one byte on FPort 10) → [`Lighting::lamp_ack`]. A command not
//! acknowledged (reported level within ±1) within `ack_timeout_s` is re-sent up to `ack_retries` times,
//! then `lamp_fault` is raised once; a later matching report raises `lamp_recovered`. A report that
//! disagrees with an acknowledged level (the lamp lost it, e.g. after a power cut) re-sends the level once,
//! under the same retry budget.
//!
//! # Safe mode (untrusted clock)
//! When `now` is before the build date passed in [`Site::build_date`], or outside the years 1970..=2200,
//! the clock is clearly wrong: the zone emits `clock_untrusted`, ignores the schedule and the astronomical
//! clock, and keeps every lamp at `clock_safe_level_pct` day and night (presence still boosts, overrides
//! still win; hold and override durations are measured on the wrong but still advancing clock). Energy is
//! not accounted in safe mode. As soon as the clock is plausible again: `clock_trusted`, normal operation.
//!
//! # Time going backwards
//! If `now` is earlier than in the previous call, deadlines that now lie further ahead than their
//! configured durations are cut back to them (a backwards jump cannot keep lamps boosted for hours), and
//! the open energy window is reported as partial.

mod energy;
pub mod params;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sunrise::Coordinates;

pub use energy::{EnergyPeriod, EnergyReport, MAX_GAP_S};
pub use params::{LampSpec, LampTable, ParamsError, PeriodSpec, Problem, ScheduleParams, SensorSpec, ZoneParams};
pub use schedule::{Schedule, ScheduleLevel};

use energy::{secs, EnergyBook, Ramp};

/// Longest accepted `lighting.override` duration (31 days).
pub const MAX_OVERRIDE_S: u64 = 31 * 86_400;

/// `now` up to this much earlier than in the previous call is treated as the previous `now`; further back
/// is a clock jump (deadlines are cut back, the open energy window is reported as partial).
pub const BACKWARD_TOLERANCE_S: i64 = 60;

/// [`Lighting::next_wakeup`] is never further ahead than this.
pub const MAX_WAKEUP_S: i64 = 3600;

/// What the zones need to know about the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Site {
    /// `gateway.latitude` / `gateway.longitude`: needed by zones with an astronomical schedule.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// A time the real clock cannot be before (the build date of the binary): earlier means safe mode.
    pub build_date: DateTime<Utc>,
}

/// Why a lamp is at its level (the `reason` of `lighting/{zone}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Schedule,
    Presence,
    Override,
    Failsafe,
    Off,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Schedule => "schedule",
            Reason::Presence => "presence",
            Reason::Override => "override",
            Reason::Failsafe => "failsafe",
            Reason::Off => "off",
        }
    }
}

/// One downlink to a lamp controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LampCommand {
    pub zone: String,
    pub lamp: String,
    pub level_pct: u8,
    pub reason: Reason,
    /// Fade time for controllers that can fade (0 = jump).
    pub ramp_s: u32,
    /// A re-send of an unacknowledged command.
    pub retry: bool,
}

/// A lamp's entry in [`ZoneState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LampLevel {
    pub level_pct: u8,
    pub reason: Reason,
}

/// The retained `lighting/{zone}` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneState {
    pub zone: String,
    pub at: DateTime<Utc>,
    /// In the zone's lamp order.
    pub lamps: Vec<(String, LampLevel)>,
    pub safe_mode: bool,
    pub override_until: Option<DateTime<Utc>>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl ZoneState {
    pub fn lamp(&self, name: &str) -> Option<LampLevel> {
        self.lamps.iter().find(|(n, _)| n == name).map(|(_, l)| *l)
    }

    pub fn to_value(&self) -> Value {
        let mut lamps = Map::new();
        for (name, l) in &self.lamps {
            lamps.insert(name.clone(), json!({"level_pct": l.level_pct, "reason": l.reason.as_str()}));
        }
        json!({
            "zone": self.zone,
            "at": rfc3339(self.at),
            "lamps": lamps,
            "mode": if self.safe_mode { "safe" } else { "normal" },
            "override_until": self.override_until.map(rfc3339),
        })
    }

    /// `{"zone","at","lamps":{"lamp-01":{"level_pct":100,"reason":"presence"}},"mode","override_until"}`.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// What happened, for `event/{device}` (or a zone-level event topic).
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A lamp did not acknowledge `level_pct` after `attempts` sends.
    LampFault {
        lamp: String,
        level_pct: u8,
        attempts: u32,
    },
    LampRecovered {
        lamp: String,
    },
    /// Fail-safe entered for `lamps`.
    SensorSilent {
        sensor: String,
        last_heard: DateTime<Utc>,
        lamps: Vec<String>,
    },
    /// Fail-safe left.
    SensorRecovered {
        sensor: String,
    },
    /// Safe mode entered.
    ClockUntrusted {
        build_date: DateTime<Utc>,
    },
    /// Safe mode left.
    ClockTrusted,
    OverrideStarted {
        level_pct: u8,
        until: DateTime<Utc>,
    },
    OverrideEnded {
        cleared: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub zone: String,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
}

impl Event {
    /// The `event` field.
    pub fn name(&self) -> &'static str {
        match self.kind {
            EventKind::LampFault { .. } => "lamp_fault",
            EventKind::LampRecovered { .. } => "lamp_recovered",
            EventKind::SensorSilent { .. } => "sensor_silent",
            EventKind::SensorRecovered { .. } => "sensor_recovered",
            EventKind::ClockUntrusted { .. } => "clock_untrusted",
            EventKind::ClockTrusted => "clock_trusted",
            EventKind::OverrideStarted { .. } => "override_started",
            EventKind::OverrideEnded { .. } => "override_ended",
        }
    }

    /// The device the event is about (for `event/{device}`), if any.
    pub fn device(&self) -> Option<&str> {
        match &self.kind {
            EventKind::LampFault { lamp, .. } | EventKind::LampRecovered { lamp } => Some(lamp),
            EventKind::SensorSilent { sensor, .. } | EventKind::SensorRecovered { sensor } => Some(sensor),
            _ => None,
        }
    }

    /// `{"zone","at","event", ...details}`; the publisher adds `seq` and `device`.
    pub fn to_value(&self) -> Value {
        let mut v = json!({"zone": self.zone, "at": rfc3339(self.at), "event": self.name()});
        let details = match &self.kind {
            EventKind::LampFault { lamp, level_pct, attempts } => {
                json!({"lamp": lamp, "level_pct": level_pct, "attempts": attempts})
            }
            EventKind::LampRecovered { lamp } => json!({"lamp": lamp}),
            EventKind::SensorSilent { sensor, last_heard, lamps } => {
                json!({"sensor": sensor, "last_heard": rfc3339(*last_heard), "lamps": lamps, "failsafe": true})
            }
            EventKind::SensorRecovered { sensor } => json!({"sensor": sensor, "failsafe": false}),
            EventKind::ClockUntrusted { build_date } => json!({"build_date": rfc3339(*build_date), "safe_mode": true}),
            EventKind::ClockTrusted => json!({"safe_mode": false}),
            EventKind::OverrideStarted { level_pct, until } => {
                json!({"level_pct": level_pct, "until": rfc3339(*until)})
            }
            EventKind::OverrideEnded { cleared } => json!({"cleared": cleared}),
        };
        if let (Some(o), Value::Object(d)) = (v.as_object_mut(), details) {
            o.extend(d);
        }
        v
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// Everything one call produces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub commands: Vec<LampCommand>,
    pub events: Vec<Event>,
    /// Changed retained states (at most one per zone and call).
    pub states: Vec<ZoneState>,
    pub energy: Vec<EnergyReport>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.events.is_empty() && self.states.is_empty() && self.energy.is_empty()
    }

    pub fn merge(&mut self, other: Output) {
        self.commands.extend(other.commands);
        self.events.extend(other.events);
        self.states.extend(other.states);
        self.energy.extend(other.energy);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightingError {
    #[error("unknown lighting zone {0:?}")]
    UnknownZone(String),
    #[error("unknown lamp {0:?}")]
    UnknownLamp(String),
    #[error("{0:?} is not a presence sensor of any lighting zone")]
    UnknownSensor(String),
    #[error("level_pct must be 0..=100, got {0}")]
    InvalidLevel(u8),
    #[error("duration_s must be 1..={max}, got {0}", max = MAX_OVERRIDE_S)]
    InvalidDuration(u64),
}

/// An input to [`Lighting::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passes (call at least at [`Lighting::next_wakeup`]).
    Tick,
    /// A presence sensor or PIR input triggered at `at`.
    Presence { sensor: String, at: DateTime<Utc> },
    /// Any other uplink of a presence sensor (heartbeat, "no occupancy").
    SensorHeard { sensor: String, at: DateTime<Utc> },
    /// `lighting.override`.
    Override { zone: String, level_pct: u8, duration_s: u64 },
    /// `lighting.clear`.
    Clear { zone: String },
    /// A lamp reported its level.
    LampAck { lamp: String, level_pct: u8 },
}

fn add_s(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(if d < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    level: u8,
    sent_at: DateTime<Utc>,
    attempts: u32,
}

#[derive(Debug, Clone)]
struct LampRt {
    name: String,
    watts: f64,
    /// The level and reason the zone wants (what the retained state shows).
    target: u8,
    reason: Reason,
    published: bool,
    /// The level last sent, and when.
    sent: Option<u8>,
    sent_at: Option<DateTime<Utc>>,
    ramp: Ramp,
    boost_until: Option<DateTime<Utc>>,
    pending: Option<Pending>,
    resync: bool,
    faulted: bool,
}

#[derive(Debug, Clone)]
struct SensorRt {
    name: String,
    lamp: usize,
    debounce_count: usize,
    debounce_window: Duration,
    heartbeat: Option<Duration>,
    triggers: VecDeque<DateTime<Utc>>,
    last_heard: Option<DateTime<Utc>>,
    silent: bool,
}

#[derive(Debug, Clone, Copy)]
struct OverrideRt {
    level: u8,
    until: DateTime<Utc>,
    duration: Duration,
}

/// One lighting zone.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    lamps: Vec<LampRt>,
    sensors: Vec<SensorRt>,
    schedule: Schedule,
    boost: u8,
    hold: Duration,
    ahead: usize,
    behind: usize,
    ramp_up_s: u32,
    ramp_down_s: u32,
    floor: u8,
    failsafe_level: u8,
    clock_safe_level: u8,
    ack_timeout: Option<Duration>,
    ack_retries: u32,
    min_gap: Duration,
    build_date: DateTime<Utc>,
    book: EnergyBook,
    overr: Option<OverrideRt>,
    last_now: Option<DateTime<Utc>>,
    clock_trusted: Option<bool>,
}

impl Zone {
    /// Builds a zone; every problem of `params` (and a missing or invalid gateway position for an
    /// astronomical schedule) is reported, with keys relative to the zone table.
    pub fn from_params(params: &ZoneParams, site: &Site) -> Result<Zone, ParamsError> {
        let mut problems = params.validate();
        let coords = match (site.latitude, site.longitude) {
            (Some(lat), Some(lon)) => {
                let c = Coordinates::new(lat, lon);
                if c.is_none() {
                    problems.push(Problem {
                        key: "schedule.astronomical".into(),
                        message: format!("gateway position ({lat}, {lon}) is not a valid latitude/longitude"),
                    });
                }
                c
            }
            _ => None,
        };
        if params.schedule.astronomical && coords.is_none() && problems.is_empty() {
            problems.push(Problem {
                key: "schedule.astronomical".into(),
                message: "the astronomical clock needs gateway.latitude and gateway.longitude".into(),
            });
        }
        let tz = Tz::from_str(&params.time_zone).ok();
        let (true, Some(tz)) = (problems.is_empty(), tz) else {
            return Err(ParamsError { problems });
        };
        let lamps: Vec<LampRt> = params
            .lamps
            .iter()
            .map(|l| LampRt {
                name: l.device().to_string(),
                watts: l.watts(params.lamp_watts),
                target: 0,
                reason: Reason::Off,
                published: false,
                sent: None,
                sent_at: None,
                ramp: Ramp::steady(0.0, DateTime::<Utc>::MIN_UTC),
                boost_until: None,
                pending: None,
                resync: false,
                faulted: false,
            })
            .collect();
        let sensors = params
            .sensors
            .iter()
            .filter_map(|s| {
                let lamp = lamps.iter().position(|l| l.name == s.lamp)?;
                let hb = s.heartbeat_s.unwrap_or(params.heartbeat_s);
                Some(SensorRt {
                    name: s.device.clone(),
                    lamp,
                    debounce_count: s.debounce_count.unwrap_or(params.debounce_count).max(1) as usize,
                    debounce_window: Duration::seconds(i64::from(
                        s.debounce_window_s.unwrap_or(params.debounce_window_s),
                    )),
                    heartbeat: (hb > 0).then(|| Duration::seconds(i64::from(hb))),
                    triggers: VecDeque::new(),
                    last_heard: None,
                    silent: false,
                })
            })
            .collect();
        Ok(Zone {
            name: params.name.clone(),
            lamps,
            sensors,
            schedule: Schedule::new(&params.schedule, tz, coords, params.base_level_pct),
            boost: params.boost_level_pct,
            hold: Duration::seconds(i64::from(params.hold_s)),
            ahead: params.lamps_ahead as usize,
            behind: params.lamps_behind() as usize,
            ramp_up_s: params.ramp_up_s,
            ramp_down_s: params.ramp_down_s,
            floor: params.floor_level_pct,
            failsafe_level: params.failsafe_level_pct,
            clock_safe_level: params.clock_safe_level_pct,
            ack_timeout: (params.ack_timeout_s > 0).then(|| Duration::seconds(i64::from(params.ack_timeout_s))),
            ack_retries: params.ack_retries,
            min_gap: Duration::seconds(i64::from(params.min_command_gap_s)),
            build_date: site.build_date,
            book: EnergyBook::new(&params.name, params.energy_window_s, params.co2_g_per_kwh),
            overr: None,
            last_now: None,
            clock_trusted: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn lamp_names(&self) -> impl Iterator<Item = &str> {
        self.lamps.iter().map(|l| l.name.as_str())
    }

    pub fn has_lamp(&self, lamp: &str) -> bool {
        self.lamps.iter().any(|l| l.name == lamp)
    }

    pub fn has_sensor(&self, sensor: &str) -> bool {
        self.sensors.iter().any(|s| s.name == sensor)
    }

    /// True while the clock is untrusted (as of the last call).
    pub fn safe_mode(&self) -> bool {
        self.clock_trusted == Some(false)
    }

    /// The modelled (fading) level of a lamp at `t`, as used for energy accounting.
    pub fn effective_level_pct(&self, lamp: &str, t: DateTime<Utc>) -> Option<f64> {
        self.lamps.iter().find(|l| l.name == lamp).map(|l| l.ramp.level_at(t))
    }

    fn step(&mut self, now: DateTime<Utc>, f: impl FnOnce(&mut Zone, DateTime<Utc>, &mut Output)) -> Output {
        let mut out = Output::default();
        // A small step back (NTP slewing, inputs queued out of order) is taken as no time passing.
        let now = match self.last_now {
            Some(prev) if now < prev && prev - now <= Duration::seconds(BACKWARD_TOLERANCE_S) => prev,
            _ => now,
        };
        self.advance(now, &mut out);
        f(self, now, &mut out);
        self.reconcile(now, &mut out);
        out
    }

    pub fn tick(&mut self, now: DateTime<Utc>) -> Output {
        self.step(now, |_, _, _| {})
    }

    /// A detection of `sensor` at `at` (clamped to `now`).
    pub fn presence(&mut self, now: DateTime<Utc>, sensor: &str, at: DateTime<Utc>) -> Result<Output, LightingError> {
        let i = self.sensor_index(sensor)?;
        Ok(self.step(now, |z, now, out| z.on_presence(i, now, at, true, out)))
    }

    /// An uplink of `sensor` that is not a detection (keeps it from going silent).
    pub fn sensor_heard(
        &mut self,
        now: DateTime<Utc>,
        sensor: &str,
        at: DateTime<Utc>,
    ) -> Result<Output, LightingError> {
        let i = self.sensor_index(sensor)?;
        Ok(self.step(now, |z, now, out| z.on_presence(i, now, at, false, out)))
    }

    /// `lighting.override`: every lamp at `level_pct` for `duration_s` (replaces a running override).
    pub fn set_override(
        &mut self,
        now: DateTime<Utc>,
        level_pct: u8,
        duration_s: u64,
    ) -> Result<Output, LightingError> {
        if level_pct > 100 {
            return Err(LightingError::InvalidLevel(level_pct));
        }
        if !(1..=MAX_OVERRIDE_S).contains(&duration_s) {
            return Err(LightingError::InvalidDuration(duration_s));
        }
        Ok(self.step(now, |z, now, out| {
            let duration = Duration::seconds(duration_s as i64);
            let until = add_s(now, duration);
            z.overr = Some(OverrideRt { level: level_pct, until, duration });
            z.event(out, now, EventKind::OverrideStarted { level_pct, until });
        }))
    }

    /// `lighting.clear`: back to the schedule (a no-op without an override).
    pub fn clear_override(&mut self, now: DateTime<Utc>) -> Output {
        self.step(now, |z, now, out| {
            if z.overr.take().is_some() {
                z.event(out, now, EventKind::OverrideEnded { cleared: true });
            }
        })
    }

    /// A lamp reported its level.
    pub fn lamp_ack(&mut self, now: DateTime<Utc>, lamp: &str, level_pct: u8) -> Result<Output, LightingError> {
        let i =
            self.lamps.iter().position(|l| l.name == lamp).ok_or_else(|| LightingError::UnknownLamp(lamp.into()))?;
        Ok(self.step(now, |z, now, out| {
            let tracking = z.ack_timeout.is_some();
            let l = &mut z.lamps[i];
            let Some(sent) = l.sent else { return };
            if level_pct.abs_diff(sent) <= 1 {
                l.pending = None;
                l.resync = false;
                if l.faulted {
                    l.faulted = false;
                    let lamp = l.name.clone();
                    z.event(out, now, EventKind::LampRecovered { lamp });
                }
            } else if tracking && l.pending.is_none() && !l.faulted {
                // The lamp lost an acknowledged level: send it again (bounded by the retry budget).
                l.resync = true;
            }
        }))
    }

    fn sensor_index(&self, sensor: &str) -> Result<usize, LightingError> {
        self.sensors.iter().position(|s| s.name == sensor).ok_or_else(|| LightingError::UnknownSensor(sensor.into()))
    }

    fn event(&self, out: &mut Output, at: DateTime<Utc>, kind: EventKind) {
        out.events.push(Event { zone: self.name.clone(), at, kind });
    }

    /// The lamps a sensor at lamp index `j` brightens (and covers in fail-safe).
    fn covered(&self, j: usize) -> std::ops::RangeInclusive<usize> {
        let last = self.lamps.len().saturating_sub(1);
        j.saturating_sub(self.behind)..=j.saturating_add(self.ahead).min(last)
    }

    fn on_presence(&mut self, i: usize, now: DateTime<Utc>, at: DateTime<Utc>, detection: bool, out: &mut Output) {
        let at = at.min(now);
        let s = &mut self.sensors[i];
        s.last_heard = Some(s.last_heard.map_or(at, |h| h.max(at)));
        if s.silent {
            s.silent = false;
            let sensor = s.name.clone();
            self.event(out, now, EventKind::SensorRecovered { sensor });
        }
        if !detection {
            return;
        }
        let s = &mut self.sensors[i];
        s.triggers.push_back(at);
        s.triggers.make_contiguous().sort_unstable();
        let latest = s.triggers.back().copied().unwrap_or(at);
        let horizon = add_s(latest, -s.debounce_window);
        s.triggers.retain(|&t| t >= horizon);
        while s.triggers.len() > 2 * s.debounce_count {
            s.triggers.pop_front();
        }
        let from = add_s(at, -s.debounce_window);
        let count = s.triggers.iter().filter(|&&t| t >= from && t <= at).count();
        if count < s.debounce_count {
            return;
        }
        let until = add_s(at, self.hold);
        if until <= now {
            return;
        }
        let lamp = s.lamp;
        for j in self.covered(lamp) {
            if let Some(l) = self.lamps.get_mut(j) {
                l.boost_until = Some(l.boost_until.map_or(until, |u| u.max(until)));
            }
        }
    }

    fn clock_plausible(&self, now: DateTime<Utc>) -> bool {
        now >= self.build_date && (1970..=2200).contains(&now.year())
    }

    /// Time passes: clock checks, energy, expiries, silence.
    fn advance(&mut self, now: DateTime<Utc>, out: &mut Output) {
        if self.last_now.is_some_and(|prev| now < prev) {
            self.rebase(now);
            self.book.interrupt(&mut out.energy);
        }
        let trusted = self.clock_plausible(now);
        if self.clock_trusted != Some(trusted) {
            if !trusted {
                self.book.interrupt(&mut out.energy);
                let build_date = self.build_date;
                self.event(out, now, EventKind::ClockUntrusted { build_date });
            } else if self.clock_trusted.is_some() {
                self.event(out, now, EventKind::ClockTrusted);
                self.jumped_forward(now);
            }
            self.clock_trusted = Some(trusted);
        }
        if self.last_now.is_some_and(|prev| (now - prev).num_seconds() > MAX_GAP_S) {
            self.jumped_forward(now);
        }
        if trusted {
            if let Some(prev) = self.last_now.filter(|&p| p < now && self.book.running()) {
                if (now - prev).num_seconds() > MAX_GAP_S {
                    self.book.interrupt(&mut out.energy);
                } else {
                    let lamps = &self.lamps;
                    let integrate = |a, b| {
                        lamps.iter().fold((0.0, 0.0), |(e, f), l| {
                            let (area, on_s) = l.ramp.integrate(a, b);
                            (e + l.watts * area / 100.0 / 3600.0, f + l.watts * on_s / 3600.0)
                        })
                    };
                    self.book.advance(&self.schedule, prev, now, integrate, &mut out.energy);
                }
            }
            self.book.start(&self.schedule, now);
        }
        if self.overr.is_some_and(|o| now >= o.until) {
            self.overr = None;
            self.event(out, now, EventKind::OverrideEnded { cleared: false });
        }
        for i in 0..self.sensors.len() {
            let s = &mut self.sensors[i];
            let heard = *s.last_heard.get_or_insert(now);
            let Some(hb) = s.heartbeat else { continue };
            if !s.silent && now >= add_s(heard, hb) {
                s.silent = true;
                let (sensor, at_lamp) = (s.name.clone(), s.lamp);
                let lamps = self.covered(at_lamp).filter_map(|j| self.lamps.get(j).map(|l| l.name.clone())).collect();
                self.event(out, now, EventKind::SensorSilent { sensor, last_heard: heard, lamps });
            }
        }
        self.last_now = Some(now);
    }

    /// The clock jumped forward (became plausible, or more than [`MAX_GAP_S`] passed between two calls):
    /// that time was not observed, so sensors get a fresh heartbeat period and pending acknowledgements a
    /// fresh timeout instead of being declared silent or faulty at once.
    fn jumped_forward(&mut self, now: DateTime<Utc>) {
        for s in &mut self.sensors {
            s.last_heard = Some(now);
        }
        for l in &mut self.lamps {
            if let Some(p) = &mut l.pending {
                p.sent_at = now;
            }
        }
    }

    /// `now` went backwards: cut deadlines back to their durations and re-anchor the models.
    fn rebase(&mut self, now: DateTime<Utc>) {
        let max_boost = add_s(now, self.hold);
        for l in &mut self.lamps {
            l.boost_until = l.boost_until.map(|u| u.min(max_boost));
            if l.ramp.start > now {
                l.ramp = Ramp::steady(l.ramp.to, now);
            }
            l.sent_at = l.sent_at.map(|t| t.min(now));
            if let Some(p) = &mut l.pending {
                p.sent_at = p.sent_at.min(now);
            }
        }
        if let Some(o) = &mut self.overr {
            o.until = o.until.min(add_s(now, o.duration));
        }
        for s in &mut self.sensors {
            s.last_heard = s.last_heard.map(|t| t.min(now));
            s.triggers.clear();
        }
    }

    /// The level and reason lamp `i` should have at `now`.
    fn desired(&self, i: usize, now: DateTime<Utc>) -> (u8, Reason) {
        if let Some(o) = self.overr {
            return (o.level, Reason::Override);
        }
        let trusted = self.clock_trusted == Some(true);
        let (mut level, mut reason) = if trusted {
            match self.schedule.level_at(now) {
                ScheduleLevel::Off => return (0, Reason::Off),
                ScheduleLevel::On(l) => (l.max(self.floor), Reason::Schedule),
            }
        } else {
            (self.clock_safe_level, Reason::Failsafe)
        };
        if trusted
            && self.failsafe_level > level
            && self.sensors.iter().any(|s| s.silent && self.covered(s.lamp).contains(&i))
        {
            (level, reason) = (self.failsafe_level, Reason::Failsafe);
        }
        if self.boost > level && self.lamps[i].boost_until.is_some_and(|u| u > now) {
            (level, reason) = (self.boost, Reason::Presence);
        }
        (level, reason)
    }

    /// Decides every lamp's level and sends what has to be sent.
    fn reconcile(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let mut changed = false;
        for i in 0..self.lamps.len() {
            let (level, reason) = self.desired(i, now);
            let (ack_timeout, retries, gap) = (self.ack_timeout, self.ack_retries, self.min_gap);
            let (up, down) = (self.ramp_up_s, self.ramp_down_s);
            let zone = self.name.clone();
            let l = &mut self.lamps[i];
            if !l.published || l.target != level || l.reason != reason {
                changed = true;
                (l.target, l.reason, l.published) = (level, reason, true);
            }
            let mut resend = std::mem::take(&mut l.resync);
            if let (Some(p), Some(timeout)) = (l.pending, ack_timeout) {
                if now >= add_s(p.sent_at, timeout) {
                    if p.attempts <= retries {
                        resend = true;
                    } else {
                        l.pending = None;
                        if !l.faulted {
                            l.faulted = true;
                            let kind =
                                EventKind::LampFault { lamp: l.name.clone(), level_pct: p.level, attempts: p.attempts };
                            out.events.push(Event { zone: zone.clone(), at: now, kind });
                        }
                    }
                }
            }
            let differs = l.sent != Some(level);
            if !(differs || resend) {
                continue;
            }
            if l.sent_at.is_some_and(|t| now < add_s(t, gap)) {
                l.resync |= resend && !differs;
                continue;
            }
            let current = l.ramp.level_at(now);
            let ramp_s = if f64::from(level) > current { up } else { down };
            l.ramp = Ramp { from: current, to: f64::from(level), start: now, dur_s: f64::from(ramp_s) };
            let attempts = match l.pending {
                Some(p) if !differs => p.attempts + 1,
                _ => 1,
            };
            l.pending = ack_timeout.map(|_| Pending { level, sent_at: now, attempts });
            l.sent = Some(level);
            l.sent_at = Some(now);
            out.commands.push(LampCommand {
                zone,
                lamp: l.name.clone(),
                level_pct: level,
                reason,
                ramp_s,
                retry: !differs,
            });
        }
        if changed {
            out.states.push(self.state(now));
        }
    }

    /// The retained state as of the last call (`at` = `now`).
    pub fn state(&self, now: DateTime<Utc>) -> ZoneState {
        ZoneState {
            zone: self.name.clone(),
            at: now,
            lamps: self
                .lamps
                .iter()
                .map(|l| (l.name.clone(), LampLevel { level_pct: l.target, reason: l.reason }))
                .collect(),
            safe_mode: self.safe_mode(),
            override_until: self.overr.map(|o| o.until),
        }
    }

    /// The latest time the zone must be ticked again (at most [`MAX_WAKEUP_S`] ahead).
    pub fn next_wakeup(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut best = add_s(now, Duration::seconds(MAX_WAKEUP_S));
        let mut consider = |t: Option<DateTime<Utc>>| {
            if let Some(t) = t.filter(|&t| t > now && t < best) {
                best = t;
            }
        };
        consider(self.overr.map(|o| o.until));
        for l in &self.lamps {
            consider(l.boost_until);
            if let (Some(p), Some(t)) = (l.pending, self.ack_timeout) {
                consider(Some(add_s(p.sent_at, t)));
            }
            if l.sent != Some(l.target) || l.resync {
                consider(l.sent_at.map(|t| add_s(t, self.min_gap)));
            }
        }
        for s in &self.sensors {
            if let (false, Some(h), Some(hb)) = (s.silent, s.last_heard, s.heartbeat) {
                consider(Some(add_s(h, hb)));
            }
        }
        consider(self.book.next_boundary());
        if self.clock_plausible(now) {
            consider(self.schedule.next_change_after(now));
        } else if now < self.build_date {
            consider(Some(self.build_date));
        }
        best
    }

    /// For the `status` command: the state plus mode, override, faults, silent sensors and today's energy.
    pub fn status(&self, now: DateTime<Utc>) -> Value {
        let mut v = self.state(now).to_value();
        let faulted: Vec<&str> = self.lamps.iter().filter(|l| l.faulted).map(|l| l.name.as_str()).collect();
        let silent: Vec<&str> = self.sensors.iter().filter(|s| s.silent).map(|s| s.name.as_str()).collect();
        v["faulted_lamps"] = json!(faulted);
        v["silent_sensors"] = json!(silent);
        v["override_level_pct"] = json!(self.overr.map(|o| o.level));
        v["today"] = match self.book.today() {
            Some((start, e, f)) => json!({
                "since": rfc3339(start),
                "energy_wh": (e * 1000.0).round() / 1000.0,
                "full_power_wh": (f * 1000.0).round() / 1000.0,
                "saved_wh": ((f - e).max(0.0) * 1000.0).round() / 1000.0,
            }),
            None => Value::Null,
        };
        v
    }

    /// Seconds until the lamp's fade ends (0 when steady); for diagnostics.
    pub fn fade_remaining_s(&self, lamp: &str, now: DateTime<Utc>) -> Option<f64> {
        self.lamps.iter().find(|l| l.name == lamp).map(|l| (l.ramp.dur_s - secs(l.ramp.start, now)).max(0.0))
    }
}

/// All zones of the gateway.
#[derive(Debug, Clone, Default)]
pub struct Lighting {
    zones: Vec<Zone>,
}

impl Lighting {
    /// Builds every zone; problems are keyed `lighting.zone[i].<key>`. A lamp may belong to one zone only
    /// (two zones would fight over it); a sensor may serve several.
    pub fn from_params(params: &[ZoneParams], site: &Site) -> Result<Lighting, ParamsError> {
        let mut problems = Vec::new();
        let mut zones = Vec::new();
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|o| o.name == p.name) {
                problems.push(Problem {
                    key: format!("lighting.zone[{i}].name"),
                    message: format!("zone {:?} is defined twice", p.name),
                });
            }
            for (k, lamp) in p.lamps.iter().enumerate() {
                if params[..i].iter().any(|o| o.lamps.iter().any(|l| l.device() == lamp.device())) {
                    problems.push(Problem {
                        key: format!("lighting.zone[{i}].lamps[{k}]"),
                        message: format!("lamp {:?} already belongs to another zone", lamp.device()),
                    });
                }
            }
            match Zone::from_params(p, site) {
                Ok(z) => zones.push(z),
                Err(e) => problems.extend(
                    e.problems
                        .into_iter()
                        .map(|q| Problem { key: format!("lighting.zone[{i}].{}", q.key), message: q.message }),
                ),
            }
        }
        if problems.is_empty() {
            Ok(Lighting { zones })
        } else {
            Err(ParamsError { problems })
        }
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    pub fn handle(&mut self, now: DateTime<Utc>, input: Input) -> Result<Output, LightingError> {
        match input {
            Input::Tick => Ok(self.tick(now)),
            Input::Presence { sensor, at } => self.presence(now, &sensor, at),
            Input::SensorHeard { sensor, at } => self.sensor_heard(now, &sensor, at),
            Input::Override { zone, level_pct, duration_s } => self.set_override(now, &zone, level_pct, duration_s),
            Input::Clear { zone } => self.clear_override(now, &zone),
            Input::LampAck { lamp, level_pct } => self.lamp_ack(now, &lamp, level_pct),
        }
    }

    pub fn tick(&mut self, now: DateTime<Utc>) -> Output {
        let mut out = Output::default();
        for z in &mut self.zones {
            out.merge(z.tick(now));
        }
        out
    }

    fn for_sensor(
        &mut self,
        sensor: &str,
        f: impl Fn(&mut Zone) -> Result<Output, LightingError>,
    ) -> Result<Output, LightingError> {
        let mut out = Output::default();
        let mut found = false;
        for z in self.zones.iter_mut().filter(|z| z.has_sensor(sensor)) {
            found = true;
            out.merge(f(z)?);
        }
        if found {
            Ok(out)
        } else {
            Err(LightingError::UnknownSensor(sensor.into()))
        }
    }

    pub fn presence(&mut self, now: DateTime<Utc>, sensor: &str, at: DateTime<Utc>) -> Result<Output, LightingError> {
        self.for_sensor(sensor, |z| z.presence(now, sensor, at))
    }

    pub fn sensor_heard(
        &mut self,
        now: DateTime<Utc>,
        sensor: &str,
        at: DateTime<Utc>,
    ) -> Result<Output, LightingError> {
        self.for_sensor(sensor, |z| z.sensor_heard(now, sensor, at))
    }

    fn zone_mut(&mut self, zone: &str) -> Result<&mut Zone, LightingError> {
        self.zones.iter_mut().find(|z| z.name == zone).ok_or_else(|| LightingError::UnknownZone(zone.into()))
    }

    pub fn set_override(
        &mut self,
        now: DateTime<Utc>,
        zone: &str,
        level_pct: u8,
        duration_s: u64,
    ) -> Result<Output, LightingError> {
        self.zone_mut(zone)?.set_override(now, level_pct, duration_s)
    }

    pub fn clear_override(&mut self, now: DateTime<Utc>, zone: &str) -> Result<Output, LightingError> {
        Ok(self.zone_mut(zone)?.clear_override(now))
    }

    pub fn lamp_ack(&mut self, now: DateTime<Utc>, lamp: &str, level_pct: u8) -> Result<Output, LightingError> {
        let z =
            self.zones.iter_mut().find(|z| z.has_lamp(lamp)).ok_or_else(|| LightingError::UnknownLamp(lamp.into()))?;
        z.lamp_ack(now, lamp, level_pct)
    }

    /// The earliest [`Zone::next_wakeup`] (at most [`MAX_WAKEUP_S`] ahead).
    pub fn next_wakeup(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.zones
            .iter()
            .map(|z| z.next_wakeup(now))
            .min()
            .unwrap_or_else(|| add_s(now, Duration::seconds(MAX_WAKEUP_S)))
    }

    /// Every zone's retained state (e.g. to republish after a reconnect).
    pub fn states(&self, now: DateTime<Utc>) -> Vec<ZoneState> {
        self.zones.iter().map(|z| z.state(now)).collect()
    }

    /// `{"zone-name": {...}, ...}` for the `status` command's control-loop states.
    pub fn status(&self, now: DateTime<Utc>) -> Value {
        Value::Object(self.zones.iter().map(|z| (z.name.clone(), z.status(now))).collect())
    }
}
