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
pub mod groups;
mod output;
pub mod params;
mod schedule;
#[cfg(test)]
mod tests;
mod zone;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

pub use energy::{EnergyPeriod, EnergyReport, MAX_GAP_S};
pub use output::{Event, EventKind, LampCommand, LampLevel, Output, ZoneState};
pub use params::{LampSpec, LampTable, ParamsError, PeriodSpec, Problem, ScheduleParams, SensorSpec, ZoneParams};
pub use schedule::{Schedule, ScheduleLevel};
pub use zone::Zone;

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

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
