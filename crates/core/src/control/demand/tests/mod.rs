//! Demand-response tests, all in simulated time: a plant model (synthetic feeder profile plus the loads in
//! the states the loop commanded) is read by a simulated meter, and the loop is driven from one reading or
//! wake-up to the next.

mod city_events;
mod control_box;
mod params_validation;
mod properties;
mod simulated_day;
mod vtn_events;

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("valid test time")
}

fn day0() -> DateTime<Utc> {
    utc(2026, 1, 14, 0, 0, 0)
}

fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0) as i64)
}

/// PRODUCT.md's example (limit 250 kW, hp-12 sg-ready 6 kW priority 1) grown into a district:
/// 30 SG-Ready heat pumps of 6 kW (hp-01..hp-30, hp-12 among them; priorities 1..=3) and 5 wallboxes of
/// 11 kW (wb-1..wb-5, priority 5, floor 4.2 kW).
fn district() -> DemandParams {
    let mut loads = Vec::new();
    for n in 1..=30u32 {
        loads.push(LoadParams::new(&format!("hp-{n:02}"), LoadKind::SgReady, 6.0, 1 + (n - 1) % 3));
    }
    for n in 1..=5 {
        loads.push(LoadParams::new(&format!("wb-{n}"), LoadKind::Setpoint, 11.0, 5));
    }
    let mut p = DemandParams::new("feeder-meter", 250.0, loads);
    p.seed = 42;
    p
}

/// The uncontrolled feeder profile of a winter day (kW, piecewise linear in hours): a windy night with low
/// demand, a morning peak and a longer evening peak.
const PROFILE: &[(f64, f64)] = &[
    (0.0, 170.0),
    (4.5, 170.0),
    (5.5, 200.0),
    (6.5, 280.0),
    (7.5, 290.0),
    (8.5, 270.0),
    (9.5, 240.0),
    (12.0, 230.0),
    (15.0, 235.0),
    (17.0, 270.0),
    (18.5, 300.0),
    (20.0, 290.0),
    (21.5, 250.0),
    (23.0, 200.0),
    (24.0, 170.0),
];

fn profile_kw(h: f64) -> f64 {
    let h = h.rem_euclid(24.0);
    for w in PROFILE.windows(2) {
        let ((h0, p0), (h1, p1)) = (w[0], w[1]);
        if h >= h0 && h <= h1 {
            return p0 + (p1 - p0) * (h - h0) / (h1 - h0);
        }
    }
    PROFILE[0].1
}

/// Heat pumps run continuously in the cold day, at 60 % duty in the mild night (0:00..5:00) in state 2;
/// encouraged/forced they run continuously.
fn hp_duty(h: f64) -> f64 {
    if h.rem_euclid(24.0) < 5.0 {
        0.6
    } else {
        1.0
    }
}

/// The plant: feeder power = non-flexible base + the loads in their applied states.
struct Plant {
    kinds: HashMap<String, (LoadKind, f64)>,
    states: HashMap<String, LoadState>,
    /// Uncontrolled profile, by hours since start.
    profile: fn(f64) -> f64,
    /// Heat pumps' duty in state 2, by hours since start.
    duty: fn(f64) -> f64,
}

impl Plant {
    fn new(p: &DemandParams, profile: fn(f64) -> f64) -> Plant {
        Plant {
            kinds: p.load.iter().map(|l| (l.name.clone(), (l.kind, l.rated_kw))).collect(),
            states: HashMap::new(),
            profile,
            duty: |_| 1.0,
        }
    }

    fn load_kw(&self, kind: LoadKind, rated: f64, state: Option<LoadState>, h: f64) -> f64 {
        match (kind, state) {
            (LoadKind::SgReady, Some(LoadState::SgReady(1))) => 0.0,
            (LoadKind::SgReady, Some(LoadState::SgReady(3 | 4))) => rated,
            (LoadKind::SgReady, _) => rated * (self.duty)(h),
            (LoadKind::Setpoint, Some(LoadState::Setpoint { kw })) => kw.min(rated),
            (LoadKind::Setpoint, _) => rated,
            (LoadKind::Switch, Some(LoadState::Switch(false))) => 0.0,
            (LoadKind::Switch, _) => rated,
        }
    }

    fn uncontrolled(&self, h: f64) -> f64 {
        (self.profile)(h)
    }

    fn power_kw(&self, h: f64) -> f64 {
        let mut p = self.uncontrolled(h);
        for (name, (kind, rated)) in &self.kinds {
            p -= self.load_kw(*kind, *rated, None, h);
            p += self.load_kw(*kind, *rated, self.states.get(name).copied(), h);
        }
        p
    }
}

/// Drives the loop: a meter reading every `reading_s`, wake-ups in between, scripted inputs at their
/// times; records everything with its time.
struct Sim {
    d: Demand,
    plant: Plant,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    reading_s: f64,
    next_reading: DateTime<Utc>,
    meter_alive: bool,
    commands: Vec<(DateTime<Utc>, LoadCommand)>,
    log: Vec<ActionLog>,
    reports: Vec<Report>,
    statuses: Vec<DrStatus>,
    acks: Vec<Result<EventAck, EventError>>,
    /// The answers to `VtnEvents` inputs.
    vtn_acks: Vec<(String, Result<EventAck, EventError>)>,
    /// (time, plant power, uncontrolled power) at each reading.
    samples: Vec<(DateTime<Utc>, f64, f64)>,
    /// Control-box episodes as they started and ended.
    episodes: Vec<ControlBoxEpisode>,
}

impl Sim {
    fn new(p: &DemandParams, start: DateTime<Utc>, profile: fn(f64) -> f64) -> Sim {
        let d = Demand::from_params(p).expect("valid params");
        let mut s = Sim {
            d,
            plant: Plant::new(p, profile),
            start,
            now: start,
            reading_s: 2.0,
            next_reading: start,
            meter_alive: true,
            commands: vec![],
            log: vec![],
            reports: vec![],
            statuses: vec![],
            acks: vec![],
            vtn_acks: vec![],
            samples: vec![],
            episodes: vec![],
        };
        let out = s.d.tick(start);
        s.record(out);
        s
    }

    fn hours(&self, t: DateTime<Utc>) -> f64 {
        (t - self.start).num_milliseconds() as f64 / 3_600_000.0
    }

    fn record(&mut self, out: Output) {
        for c in out.commands {
            self.plant.states.insert(c.load.clone(), c.state);
            self.commands.push((self.now, c));
        }
        self.log.extend(out.log);
        self.reports.extend(out.reports);
        self.statuses.extend(out.status);
        self.acks.extend(out.ack);
        self.vtn_acks.extend(out.acks);
        self.episodes.extend(out.control_box);
    }

    fn input(&mut self, input: Input) {
        let out = self.d.handle(self.now, input);
        self.record(out);
    }

    /// Runs until `until`, feeding readings and ticking at every wake-up.
    fn run_until(&mut self, until: DateTime<Utc>) {
        while self.now < until {
            let wake = self.d.next_wakeup(self.now);
            assert!(wake > self.now, "next_wakeup must be ahead");
            let mut next = wake.min(until);
            if self.meter_alive {
                next = next.min(self.next_reading);
            }
            self.now = next.max(self.now);
            if self.meter_alive && self.now >= self.next_reading {
                let h = self.hours(self.now);
                let kw = self.plant.power_kw(h);
                self.samples.push((self.now, kw, self.plant.uncontrolled(h)));
                self.next_reading = self.now + secs(self.reading_s);
                self.input(Input::Meter { at: self.now, power_w: kw * 1000.0 });
            } else {
                self.input(Input::Tick);
            }
        }
    }

    fn state(&self, load: &str) -> Option<LoadState> {
        self.d.load_state(load)
    }

    fn shed_count(&self) -> usize {
        self.d.loads.iter().filter(|l| l.is_shed()).count()
    }
}

/// Every load's blocked intervals from the log: (load, from, to or None if still blocked).
fn blocked_intervals(log: &[ActionLog], p: &DemandParams) -> Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> {
    let rated: HashMap<&str, f64> = p.load.iter().map(|l| (l.name.as_str(), l.rated_kw)).collect();
    let is_shed = |s: LoadState, name: &str| s.label(rated[name]) == "blocked" || s.label(rated[name]) == "reduced";
    let mut open: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut out = vec![];
    for a in log {
        let (was, is) = (is_shed(a.from, &a.load), is_shed(a.to, &a.load));
        if is && !was {
            open.insert(a.load.clone(), a.at);
        } else if was && !is {
            if let Some(from) = open.remove(&a.load) {
                out.push((a.load.clone(), from, Some(a.at)));
            }
        }
    }
    out.extend(open.into_iter().map(|(l, f)| (l, f, None)));
    out
}

/// Checks the device limits on a log: max blocked, min off, min on, §14a floor.
fn check_device_limits(log: &[ActionLog], p: &DemandParams, end: DateTime<Utc>) {
    check_limits(log, p, end, true);
}

/// `min_times`: also min off/on (a wall clock jump makes the real time passed unknown; the loop then errs
/// on the side of the maximum blocked time, so min off/on may be cut short; the maximum and the floor hold
/// regardless).
fn check_limits(log: &[ActionLog], p: &DemandParams, end: DateTime<Utc>, min_times: bool) {
    let params: HashMap<&str, &LoadParams> = p.load.iter().map(|l| (l.name.as_str(), l)).collect();
    for (load, from, to) in blocked_intervals(log, p) {
        let lp = params[load.as_str()];
        let len = (to.unwrap_or(end) - from).num_milliseconds();
        if lp.max_blocked_s() > 0 {
            assert!(
                len <= i64::from(lp.max_blocked_s()) * 1000,
                "{load} blocked {len} ms from {from} (max {} s)",
                lp.max_blocked_s()
            );
        }
        if to.is_some() && min_times {
            assert!(len >= i64::from(lp.min_off_s()) * 1000, "{load} restored after {len} ms (min off)");
        }
    }
    // min on: a shed no earlier than min_on_s after the previous restore
    let mut last_on: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for a in log {
        let lp = params[a.load.as_str()];
        let was = a.from.label(lp.rated_kw);
        let is = a.to.label(lp.rated_kw);
        let shed = |l: &str| l == "blocked" || l == "reduced";
        if shed(is) && !shed(was) {
            if let (Some(on), true) = (last_on.get(a.load.as_str()), min_times) {
                assert!(
                    (a.at - *on).num_milliseconds() >= i64::from(lp.min_on_s()) * 1000,
                    "{} shed {} after its restore (min on {} s)",
                    a.load,
                    a.at - *on,
                    lp.min_on_s()
                );
            }
        }
        if shed(was) && !shed(is) {
            last_on.insert(&a.load, a.at);
        }
        if let LoadState::Setpoint { kw } = a.to {
            assert!(kw >= lp.min_kw() - 1e-9 && kw >= SECTION_14A_MIN_KW - 1e-9, "{}: {kw} below floor", a.load);
            assert!(kw <= lp.rated_kw + 1e-9);
        }
    }
}

/// Analytic time and energy above `limit` of a piecewise-linear profile (hours, kW) → (minutes, kWh).
fn analytic_over(profile: &[(f64, f64)], limit: f64) -> (f64, f64) {
    let (mut h_over, mut e_over) = (0.0, 0.0);
    for w in profile.windows(2) {
        let ((h0, p0), (h1, p1)) = (w[0], w[1]);
        let (a, b) = (p0 - limit, p1 - limit);
        if a <= 0.0 && b <= 0.0 {
            continue;
        }
        let len = h1 - h0;
        if a >= 0.0 && b >= 0.0 {
            h_over += len;
            e_over += (a + b) / 2.0 * len;
        } else {
            // one crossing: the part above is a triangle
            let top = a.max(b);
            let frac = top / (a - b).abs();
            h_over += len * frac;
            e_over += top / 2.0 * len * frac;
        }
    }
    (h_over * 60.0, e_over)
}

fn check_staggered(log: &[ActionLog], p: &DemandParams) {
    let restores: Vec<DateTime<Utc>> = log.iter().filter(|a| a.reason == Reason::Restore).map(|a| a.at).collect();
    for w in restores.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::seconds(i64::from(p.restore_delay_min_s)),
            "restores at {} and {} are not staggered",
            w[0],
            w[1]
        );
    }
}

fn check_commands_only_on_change(commands: &[(DateTime<Utc>, LoadCommand)]) {
    let mut last: HashMap<&str, LoadState> = HashMap::new();
    for (t, c) in commands {
        if let Some(prev) = last.get(c.load.as_str()) {
            assert_ne!(*prev, c.state, "{t}: repeated command to {}", c.load);
        } else {
            assert_eq!(c.reason, Reason::Init);
        }
        last.insert(&c.load, c.state);
    }
}

/// A flat feeder at `FLAT_KW` (with every load at normal).
const FLAT_KW: f64 = 240.0;
fn flat(_h: f64) -> f64 {
    FLAT_KW
}

fn small() -> DemandParams {
    let mut loads = Vec::new();
    for n in 1..=10u32 {
        loads.push(LoadParams::new(&format!("hp-{n:02}"), LoadKind::SgReady, 6.0, n));
    }
    let mut p = DemandParams::new("feeder-meter", 250.0, loads);
    p.seed = 7;
    p
}
