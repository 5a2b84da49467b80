//! One lighting zone: its lamps and sensors at runtime, building it from its params, and its inputs
//! (presence, overrides, acknowledgements), retained state, wake-ups and status.

mod clock;
mod levels;

use std::collections::VecDeque;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};
use sunrise::Coordinates;

use super::energy::{secs, EnergyBook, Ramp};
use super::{
    add_s, rfc3339, Event, EventKind, LampLevel, LightingError, Output, ParamsError, Problem, Reason, Schedule, Site,
    ZoneParams, ZoneState, BACKWARD_TOLERANCE_S, MAX_OVERRIDE_S, MAX_WAKEUP_S,
};

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
    pub(super) name: String,
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
