//! Demand-response tests, all in simulated time: a plant model (synthetic feeder profile plus the loads in
//! the states the loop commanded) is read by a simulated meter, and the loop is driven from one reading or
//! wake-up to the next.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::events::MAX_EVENT_DURATION_S;
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
    /// (time, plant power, uncontrolled power) at each reading.
    samples: Vec<(DateTime<Utc>, f64, f64)>,
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
            samples: vec![],
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

// ---------------------------------------------------------------------------------------------------------
// The simulated day
// ---------------------------------------------------------------------------------------------------------

#[test]
fn simulated_day_keeps_feeder_under_limit_and_matches_independent_calculation() {
    let p = district();
    let start = day0();
    let end = start + Duration::days(1);

    // Uncontrolled: the same loop without loads only measures.
    let mut mon = Sim::new(&DemandParams::new("feeder-meter", 250.0, vec![]), start, profile_kw);
    mon.run_until(end);
    let mon_over: f64 =
        mon.reports.iter().filter(|r| r.scope == ReportScope::Window).map(|r| r.minutes_over_limit).sum();
    let mon_peak = mon.samples.iter().map(|s| s.1).fold(0.0, f64::max);

    // Controlled, with a surplus event for the windy night announced ahead of time.
    let mut sim = Sim::new(&p, start, profile_kw);
    sim.plant.duty = hp_duty;
    let ev = DrEvent { ramp_s: 600, ..DrEvent::surplus("wind-night", 0, start + Duration::minutes(30), 4 * 3600) };
    sim.input(Input::Event(ev));
    assert_eq!(sim.acks.last(), Some(&Ok(EventAck::Accepted)));
    sim.run_until(end);

    // Independent calculation from the profile.
    let (exp_over_min, exp_over_kwh) = analytic_over(PROFILE, 250.0);
    let exp_peak_uncontrolled = PROFILE.iter().map(|k| k.1).fold(0.0, f64::max);
    let flex_kw: f64 =
        p.load.iter().map(|l| if l.kind == LoadKind::Setpoint { l.rated_kw - l.min_kw() } else { l.rated_kw }).sum();
    // Enough flexible load everywhere: the controlled peak is the limit.
    assert!(exp_peak_uncontrolled - flex_kw < 250.0);
    let max_slope_kw_per_s =
        PROFILE.windows(2).map(|w| ((w[1].1 - w[0].1) / ((w[1].0 - w[0].0) * 3600.0)).abs()).fold(0.0, f64::max);
    // The loop reacts on the next reading: the feeder may creep over by one reading's rise.
    let tolerance_kw = max_slope_kw_per_s * sim.reading_s * 2.0 + 1e-6;

    assert!((mon_peak - exp_peak_uncontrolled).abs() < 0.01, "uncontrolled peak {mon_peak}");
    assert!((mon_over - exp_over_min).abs() < 0.2, "monitor minutes over {mon_over} vs analytic {exp_over_min}");

    let peak = sim.samples.iter().map(|s| s.1).fold(0.0, f64::max);
    assert!(peak <= 250.0 + tolerance_kw, "controlled peak {peak} kW (tolerance {tolerance_kw})");
    let over_s = sim.samples.iter().filter(|s| s.1 > 250.0).count() as f64 * sim.reading_s;
    let windows: Vec<&Report> = sim.reports.iter().filter(|r| r.scope == ReportScope::Window).collect();
    let rep_over: f64 = windows.iter().map(|r| r.minutes_over_limit).sum();
    assert!((rep_over - over_s / 60.0).abs() < 0.1, "reported {rep_over} min over, samples say {}", over_s / 60.0);
    assert!(rep_over < 2.0, "controlled: {rep_over} min over the limit (uncontrolled {exp_over_min:.1})");

    // Energy shifted: the loop's estimate matches the plant's measured reduction during the day (the
    // surplus night only adds consumption), and covers at least the energy above the limit.
    let dt_h = sim.reading_s / 3600.0;
    let measured_reduction: f64 =
        sim.samples.iter().filter(|s| (s.0 - start).num_hours() >= 5).map(|s| (s.2 - s.1).max(0.0) * dt_h).sum();
    let shifted: f64 = windows.iter().map(|r| r.energy_shifted_kwh).sum();
    assert!(
        (shifted - measured_reduction).abs() <= 0.01 * measured_reduction + 1.0,
        "reported {shifted} kWh shifted, plant {measured_reduction}"
    );
    assert!(shifted >= exp_over_kwh * 0.99, "shifted {shifted} kWh < energy above the limit {exp_over_kwh}");
    // ... but not wastefully more: the feeder is kept within one heat pump plus the hysteresis of the limit.
    let band_kw = 6.0 + p.hysteresis_kw + 6.0;
    assert!(shifted <= exp_over_kwh + band_kw * exp_over_min / 60.0, "shifted {shifted} kWh");

    // 96 windows of 15 min, aggregates consistent.
    assert_eq!(windows.len(), 96);
    let blocked_total: f64 = windows.iter().map(|r| r.total_blocked_s()).sum();
    assert!(blocked_total > 0.0);
    assert!(windows.iter().all(|r| r.to_json().contains("\"energy_shifted_kwh\"")));

    // The surplus night: heat pumps encouraged, staggered over the ramp, and back to 2 at its end.
    let surplus_cmds: Vec<&(DateTime<Utc>, LoadCommand)> =
        sim.commands.iter().filter(|(_, c)| c.reason == Reason::Surplus).collect();
    assert_eq!(surplus_cmds.len(), 30);
    assert!(surplus_cmds.iter().all(|(_, c)| c.state == LoadState::SgReady(3)));
    let first = surplus_cmds.first().map(|c| c.0).expect("surplus commands");
    let last = surplus_cmds.last().map(|c| c.0).expect("surplus commands");
    assert!(first >= start + Duration::minutes(30));
    assert!(last - first >= Duration::seconds(500) && last - first <= Duration::seconds(600));
    let ends: Vec<_> = sim.commands.iter().filter(|(_, c)| c.reason == Reason::SurplusEnd).collect();
    assert_eq!(ends.len(), 30);
    assert!(ends.iter().all(|(t, c)| *t == start + Duration::minutes(270) && c.state == LoadState::SgReady(2)));
    let ev_report = sim
        .reports
        .iter()
        .find(|r| matches!(&r.scope, ReportScope::Event { id, .. } if id == "wind-night"))
        .expect("event report");
    let boosted: f64 = ev_report.loads.iter().map(|(_, l)| l.boosted_s).sum();
    assert!(boosted > 29.0 * 3.8 * 3600.0, "boosted {boosted}");

    // Device limits, staggering, commands only on change.
    check_device_limits(&sim.log, &p, end);
    check_staggered(&sim.log, &p);
    check_commands_only_on_change(&sim.commands);
    assert!(sim.log.iter().any(|a| a.reason == Reason::MaxBlocked), "the evening peak needs rotation");
    assert!(sim.log.iter().filter(|a| a.reason == Reason::MaxBlocked).all(|a| a.to == LoadState::SgReady(2)));

    let reduction = mon_peak - peak;
    eprintln!(
        "FIGURE simulated day, limit 250 kW, 30 x 6 kW sg-ready + 5 x 11 kW wallboxes: peak {mon_peak:.1} kW -> \
         {peak:.2} kW (reduction {reduction:.1} kW, {:.1} %); over the limit {exp_over_min:.1} min -> {rep_over:.2} \
         min; energy shifted {shifted:.1} kWh (energy above the limit {exp_over_kwh:.1} kWh); {} actions, {} \
         forced releases",
        100.0 * reduction / mon_peak,
        sim.log.len(),
        sim.log.iter().filter(|a| a.reason == Reason::MaxBlocked).count()
    );
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

// ---------------------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------------------

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

#[test]
fn overlapping_events_tightest_wins_and_modifications_replace() {
    let p = small();
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    sim.run_until(t0 + Duration::minutes(1));
    sim.input(Input::Event(DrEvent::limit("e1", 0, t0 + Duration::minutes(2), 3600, 220.0)));
    sim.input(Input::Event(DrEvent::limit("e2", 0, t0 + Duration::minutes(2), 1800, 230.0)));
    sim.run_until(t0 + Duration::minutes(5));
    assert_eq!(sim.d.limit(), (220.0, &LimitReason::Event("e1".into())));
    // 240 -> under 220: four heat pumps (24 kW) in priority order
    assert_eq!(sim.shed_count(), 4);
    for n in 1..=4 {
        assert_eq!(sim.state(&format!("hp-{n:02}")), Some(LoadState::SgReady(1)));
    }
    // A newer version of e1 relaxes it: e2 is now the tightest.
    sim.input(Input::Event(DrEvent::limit("e1", 3, t0 + Duration::minutes(2), 3600, 235.0)));
    assert_eq!(sim.acks.last(), Some(&Ok(EventAck::Replaced { previous: 0 })));
    assert_eq!(sim.d.limit(), (230.0, &LimitReason::Event("e2".into())));
    // Older or equal versions are ignored.
    sim.input(Input::Event(DrEvent::limit("e1", 3, t0, 3600, 100.0)));
    assert_eq!(sim.acks.last(), Some(&Ok(EventAck::Stale { current: 3 })));
    sim.input(Input::Event(DrEvent::limit("e1", 1, t0, 3600, 100.0)));
    assert_eq!(sim.acks.last(), Some(&Ok(EventAck::Stale { current: 3 })));
    assert_eq!(sim.d.limit(), (230.0, &LimitReason::Event("e2".into())));
    // e2 ends after 30 min: e1 (235) is the tightest; after e1's hour, config.
    sim.run_until(t0 + Duration::minutes(33));
    assert_eq!(sim.d.limit(), (235.0, &LimitReason::Event("e1".into())));
    assert!(sim
        .reports
        .iter()
        .any(|r| matches!(&r.scope, ReportScope::Event { id, cancelled: false, .. } if id == "e2")));
    sim.run_until(t0 + Duration::minutes(63));
    assert_eq!(sim.d.limit(), (250.0, &LimitReason::Config));
    let st = sim.statuses.last().expect("status");
    assert_eq!(st.limit_reason.to_string(), "config");
    sim.run_until(t0 + Duration::hours(2));
    assert_eq!(sim.shed_count(), 0, "all restored under the configured limit");
    check_device_limits(&sim.log, &p, sim.now);
    check_staggered(&sim.log, &p);
    check_commands_only_on_change(&sim.commands);
    // status JSON has PRODUCT.md's shape
    let v: serde_json::Value = serde_json::from_str(&sim.statuses[5].to_json()).expect("json");
    for k in ["at", "limit_kw", "limit_reason", "measured_kw", "loads"] {
        assert!(v.get(k).is_some(), "{k} missing");
    }
    assert!(v["loads"]["hp-01"]["state"].is_string() && v["loads"]["hp-01"]["since"].is_string());
}

#[test]
fn cancelled_event_restores_staggered() {
    let p = small();
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    sim.input(Input::Event(DrEvent::limit("peak-1", 2, t0, 7200, 200.0)));
    sim.run_until(t0 + Duration::minutes(20));
    assert_eq!(sim.shed_count(), 7, "240 -> under 200 needs 7 x 6 kW");
    sim.input(Input::Cancel { id: "peak-1".into(), modification: Some(1) });
    assert_eq!(sim.acks.last(), Some(&Ok(EventAck::Stale { current: 2 })));
    assert_eq!(sim.d.limit().0, 200.0);
    let cancel_at = sim.now;
    sim.input(Input::Cancel { id: "peak-1".into(), modification: None });
    assert_eq!(sim.acks.last(), Some(&Ok(EventAck::Cancelled)));
    assert_eq!(sim.d.limit(), (250.0, &LimitReason::Config));
    let rep = sim.reports.last().expect("event report");
    assert_eq!(rep.scope, ReportScope::Event { id: "peak-1".into(), modification: 2, cancelled: true });
    assert!((rep.total_blocked_s() - 7.0 * 1200.0).abs() < 10.0, "{}", rep.total_blocked_s());
    assert!((rep.energy_shifted_kwh - 42.0 / 3.0).abs() < 0.1, "{}", rep.energy_shifted_kwh);
    // Restores: one at a time, each only with room for it (198 + 6k + 6 < 245), never two within
    // restore_delay_min_s.
    sim.run_until(cancel_at + Duration::seconds(10));
    assert_eq!(sim.shed_count(), 7, "nothing restored at once");
    sim.run_until(cancel_at + Duration::hours(1));
    let restores: Vec<&ActionLog> = sim.log.iter().filter(|a| a.reason == Reason::Restore).collect();
    assert_eq!(restores.len(), 7);
    assert!(restores[0].at >= cancel_at + Duration::seconds(i64::from(p.restore_delay_min_s)));
    assert!(restores.iter().all(|r| r.to_string().contains("restore")));
    check_staggered(&sim.log, &p);
    // Restore order: highest priority number first (hp-07 was shed last).
    assert_eq!(restores[0].load, "hp-07");
    assert_eq!(restores[6].load, "hp-01");
    check_device_limits(&sim.log, &p, sim.now);
}

#[test]
fn future_event_starts_at_start_plus_random_delay() {
    let p = small();
    let t0 = day0();
    let start = t0 + Duration::hours(1);
    let mut seen = Vec::new();
    for seed in 1..=5u64 {
        let mut p = p.clone();
        p.seed = seed;
        let mut sim = Sim::new(&p, t0, flat);
        let ev = DrEvent { random_start_s: 600, ..DrEvent::limit("later", 0, start, 1800, 200.0) };
        sim.input(Input::Event(ev));
        sim.run_until(start - Duration::seconds(1));
        assert_eq!(sim.d.limit().1, &LimitReason::Config);
        assert_eq!(sim.shed_count(), 0);
        assert!(sim.d.booked_events().contains(&"later".to_string()));
        sim.run_until(start + Duration::minutes(11));
        let first = sim.log.iter().find(|a| a.reason == Reason::OverLimit).cloned().expect("shed");
        assert!(first.at >= start && first.at <= start + Duration::seconds(600), "{}", first.at);
        assert_eq!(first.limit_reason, LimitReason::Event("later".into()));
        seen.push(first.at);
        // the event lasts its full duration after its random start
        sim.run_until(first.at + Duration::seconds(1799));
        assert_eq!(sim.d.limit().1, &LimitReason::Event("later".into()));
        sim.run_until(first.at + Duration::seconds(1801));
        assert_eq!(sim.d.limit().1, &LimitReason::Config);
    }
    seen.sort();
    seen.dedup();
    assert!(seen.len() >= 3, "random start delays differ between gateways");
}

#[test]
fn event_ramp_sheds_progressively() {
    let p = small();
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    sim.input(Input::Event(DrEvent { ramp_s: 900, ..DrEvent::limit("ramped", 0, t0, 3600, 200.0) }));
    sim.run_until(t0 + Duration::minutes(20));
    let sheds: Vec<DateTime<Utc>> = sim.log.iter().filter(|a| a.reason == Reason::OverLimit).map(|a| a.at).collect();
    assert_eq!(sheds.len(), 7);
    assert!(*sheds.last().expect("sheds") - sheds[0] >= Duration::minutes(10), "shed over the ramp");
}

#[test]
fn broker_down_during_active_event_changes_nothing() {
    // The core never waits for the broker: with no city input at all for 12 minutes (less than the
    // heartbeat timeout) the event's limit holds and it ends on time.
    let mut p = small();
    p.heartbeat_timeout_s = 3600;
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    sim.input(Input::Heartbeat { at: t0 });
    sim.input(Input::Event(DrEvent::limit("e", 0, t0, 1800, 220.0)));
    sim.run_until(t0 + Duration::minutes(3));
    let shed = sim.shed_count();
    assert_eq!(shed, 4);
    // broker goes down at +3 min: only meter readings and ticks from here on
    sim.run_until(t0 + Duration::minutes(14));
    assert_eq!(sim.d.limit(), (220.0, &LimitReason::Event("e".into())));
    assert_eq!(sim.shed_count(), shed);
    assert_eq!(sim.statuses.last().map(|s| s.heartbeat), Some("ok"));
    sim.run_until(t0 + Duration::minutes(31));
    assert_eq!(sim.d.limit().1, &LimitReason::Config);
    assert!(sim.reports.iter().any(|r| matches!(&r.scope, ReportScope::Event { id, .. } if id == "e")));
}

#[test]
fn heartbeat_lost_applies_failsafe_then_returns_to_normal() {
    let mut p = small();
    p.heartbeat_timeout_s = 300;
    p.failsafe_limit_kw = Some(230.0);
    p.failsafe_duration_s = 3600;
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    sim.input(Input::Event(DrEvent::limit("e", 0, t0, 6 * 3600, 210.0)));
    // heartbeats every minute for 10 minutes
    for m in 1..=10 {
        sim.run_until(t0 + Duration::minutes(m));
        sim.input(Input::Heartbeat { at: sim.now });
    }
    assert_eq!(sim.d.limit(), (210.0, &LimitReason::Event("e".into())));
    assert_eq!(sim.shed_count(), 5);
    let last_hb = sim.now;
    sim.run_until(last_hb + Duration::seconds(299));
    assert_eq!(sim.d.limit().1, &LimitReason::Event("e".into()));
    sim.run_until(last_hb + Duration::seconds(302));
    assert_eq!(sim.d.limit(), (230.0, &LimitReason::HeartbeatLost));
    assert_eq!(sim.statuses.last().map(|s| s.heartbeat), Some("lost"));
    // failsafe limit 230: loads come back one by one until 240 - 6k + 6 < 225 stops it
    sim.run_until(last_hb + Duration::minutes(30));
    assert_eq!(sim.shed_count(), 3);
    // after the failsafe time: normal (config limit), the event stays suspended
    sim.run_until(last_hb + Duration::seconds(300 + 3600 + 1));
    assert_eq!(sim.d.limit(), (250.0, &LimitReason::Config));
    sim.run_until(last_hb + Duration::minutes(90));
    assert_eq!(sim.shed_count(), 0, "loads return to normal");
    check_staggered(&sim.log, &p);
    // the city comes back: its event applies again
    sim.input(Input::Heartbeat { at: sim.now });
    assert_eq!(sim.d.limit(), (210.0, &LimitReason::Event("e".into())));
    check_device_limits(&sim.log, &p, sim.now);
}

#[test]
fn meter_lost_applies_conservative_limit_on_the_estimate() {
    let mut p = small();
    p.meter_lost_limit_kw = Some(225.0);
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, flat);
    sim.run_until(t0 + Duration::minutes(5));
    assert_eq!(sim.shed_count(), 0);
    sim.meter_alive = false;
    sim.run_until(t0 + Duration::minutes(5) + Duration::seconds(55));
    assert_eq!(sim.d.limit().1, &LimitReason::Config);
    sim.run_until(t0 + Duration::minutes(7));
    assert_eq!(sim.d.limit(), (225.0, &LimitReason::MeterLost));
    // 240 held, minus own actions: three heat pumps
    assert_eq!(sim.shed_count(), 3);
    let st = sim.statuses.last().expect("status");
    assert!(!st.meter_ok && st.measured_kw.is_none());
    // for hours without a meter: rotation, never beyond the maximum
    sim.run_until(t0 + Duration::hours(6));
    assert!(sim.log.iter().any(|a| a.reason == Reason::MaxBlocked));
    assert_eq!(sim.shed_count(), 3);
    check_device_limits(&sim.log, &p, sim.now);
    // the meter comes back
    sim.meter_alive = true;
    sim.next_reading = sim.now;
    sim.run_until(t0 + Duration::hours(7));
    assert_eq!(sim.d.limit().1, &LimitReason::Config);
    assert_eq!(sim.shed_count(), 0);
}

#[test]
fn no_meter_at_start_assumes_feeder_at_limit() {
    let mut p = small();
    p.meter_lost_limit_kw = Some(238.0);
    let t0 = day0();
    let mut d = Demand::from_params(&p).expect("valid");
    let out = d.tick(t0);
    assert_eq!(out.commands.len(), 10);
    assert!(out.commands.iter().all(|c| c.reason == Reason::Init && c.state == LoadState::SgReady(2)));
    let out = d.tick(t0 + Duration::seconds(30));
    assert!(out.commands.is_empty() && out.status.is_none());
    let out = d.tick(t0 + Duration::seconds(61));
    assert_eq!(d.limit(), (238.0, &LimitReason::MeterLost));
    // 250 assumed -> 12 kW to shed
    assert_eq!(out.commands.len(), 2);
}

#[test]
fn surplus_forced_where_allowed_and_limit_still_wins() {
    let mut p = small();
    p.load[0].allow_forced = true;
    p.load.push(LoadParams::new("wb-1", LoadKind::Setpoint, 11.0, 20));
    p.load.push(LoadParams::new("pump", LoadKind::Switch, 3.0, 21));
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, |_| 150.0);
    sim.input(Input::Event(DrEvent::surplus("neg-price", 0, t0 + Duration::minutes(1), 1800)));
    sim.run_until(t0 + Duration::minutes(2));
    assert_eq!(sim.state("hp-01"), Some(LoadState::SgReady(4)));
    assert_eq!(sim.state("hp-02"), Some(LoadState::SgReady(3)));
    assert_eq!(sim.state("wb-1"), Some(LoadState::Setpoint { kw: 11.0 }));
    assert_eq!(sim.state("pump"), Some(LoadState::Switch(true)));
    assert!(sim.statuses.last().is_some_and(|s| s.surplus && s.load("hp-01").map(|l| l.label) == Some("forced")));
    sim.run_until(t0 + Duration::minutes(32));
    assert_eq!(sim.state("hp-01"), Some(LoadState::SgReady(2)));
    assert_eq!(sim.state("hp-02"), Some(LoadState::SgReady(2)));
    check_commands_only_on_change(&sim.commands);

    // A surplus during a peak: the limit wins.
    let mut sim = Sim::new(&p, t0, |_| 255.0);
    sim.input(Input::Event(DrEvent::surplus("neg-price", 0, t0, 1800)));
    sim.run_until(t0 + Duration::minutes(5));
    assert!(sim.samples.last().is_some_and(|s| s.1 <= 250.0));
}

#[test]
fn setpoint_reduced_only_as_needed_and_never_below_floor() {
    let mut p = DemandParams::new("feeder-meter", 250.0, vec![]);
    p.load.push(LoadParams::new("wb-1", LoadKind::Setpoint, 11.0, 1));
    p.load.push(LoadParams::new("wb-2", LoadKind::Setpoint, 22.0, 2));
    p.load[1].min_kw = Some(6.0);
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, |_| 253.0);
    sim.run_until(t0 + Duration::minutes(1));
    assert_eq!(sim.state("wb-1"), Some(LoadState::Setpoint { kw: 8.0 }));
    let mut sim = Sim::new(&p, t0, |_| 253.05);
    sim.run_until(t0 + Duration::minutes(1));
    assert_eq!(sim.state("wb-1"), Some(LoadState::Setpoint { kw: 7.9 }));
    assert_eq!(sim.state("wb-2"), Some(LoadState::Setpoint { kw: 22.0 }));
    let mut sim = Sim::new(&p, t0, |_| 300.0);
    sim.run_until(t0 + Duration::minutes(5));
    assert_eq!(sim.state("wb-1"), Some(LoadState::Setpoint { kw: 4.2 }));
    assert_eq!(sim.state("wb-2"), Some(LoadState::Setpoint { kw: 6.0 }));
    assert_eq!(sim.statuses.last().and_then(|s| s.load("wb-1")).map(|l| l.label), Some("reduced"));
    check_device_limits(&sim.log, &p, sim.now);
}

#[test]
fn load_feedback_is_the_reduction_estimate() {
    let p = small();
    let t0 = day0();
    let mut d = Demand::from_params(&p).expect("valid");
    d.tick(t0);
    d.handle(t0, Input::LoadFeedback { load: "hp-01".into(), at: t0, power_kw: 0.0 });
    d.handle(t0, Input::LoadFeedback { load: "hp-02".into(), at: t0, power_kw: 2.0 });
    d.handle(t0, Input::LoadFeedback { load: "nope".into(), at: t0, power_kw: 2.0 });
    d.handle(t0, Input::LoadFeedback { load: "hp-03".into(), at: t0, power_kw: f64::NAN });
    let out = d.handle(t0 + Duration::seconds(1), Input::Meter { at: t0, power_w: 257_000.0 });
    // hp-01 draws nothing (blocking it would not help), hp-02 gives 2 kW, hp-03 6 kW
    let shed: Vec<&str> = out.commands.iter().map(|c| c.load.as_str()).collect();
    assert_eq!(shed, ["hp-02", "hp-03"]);
}

// ---------------------------------------------------------------------------------------------------------
// Properties over random inputs
// ---------------------------------------------------------------------------------------------------------

fn random_params(rng: &mut Rng) -> DemandParams {
    let mut loads = Vec::new();
    let n = 1 + rng.below(12) as usize;
    for i in 0..n {
        let kind = [LoadKind::SgReady, LoadKind::Setpoint, LoadKind::Switch][rng.below(3) as usize];
        let rated = match kind {
            LoadKind::Setpoint => 4.2 + rng.below(200) as f64 / 10.0,
            _ => 0.5 + rng.below(150) as f64 / 10.0,
        };
        let mut l = LoadParams::new(&format!("l{i}"), kind, rated, rng.below(4) as u32);
        if kind != LoadKind::Setpoint || rng.below(2) == 0 {
            l.max_blocked_s = Some(60 + rng.below(7200) as u32);
        }
        let max = l.max_blocked_s();
        l.min_off_s = Some(if max > 0 { rng.below(u64::from(max) + 1) as u32 } else { rng.below(900) as u32 });
        l.min_on_s = Some(rng.below(900) as u32);
        l.recovery_s = Some(rng.below(3600) as u32);
        if kind == LoadKind::Setpoint && rng.below(2) == 0 {
            l.min_kw = Some((4.2 + rng.below(30) as f64 / 10.0).min(rated));
        }
        l.allow_forced = kind == LoadKind::SgReady && rng.below(2) == 0;
        loads.push(l);
    }
    let mut p = DemandParams::new("m", 20.0 + rng.below(100) as f64, loads);
    p.seed = rng.next_u64() | 1;
    p.hysteresis_kw = rng.below(10) as f64 / 2.0;
    p.restore_delay_min_s = rng.below(60) as u32;
    p.restore_delay_max_s = p.restore_delay_min_s + rng.below(300) as u32;
    p.heartbeat_timeout_s = [0, 60, 600][rng.below(3) as usize];
    p.meter_timeout_s = 30 + rng.below(120) as u32;
    p.settle_s = rng.below(30) as u32;
    p.interval_s = 5 + rng.below(56) as u32;
    assert!(p.validate().is_empty(), "{:?}", p.validate());
    p
}

/// Random days: random meter readings (with garbage, gaps and out-of-order ones), random events, cancels,
/// heartbeats and clock jumps; the loop is called at least at every wake-up. The maximum blocked time and
/// the floor hold in real (simulated) time however the wall clock jumps; min off/on and staggering on days
/// without jumps.
#[test]
fn property_device_limits_hold_on_random_days() {
    let mut rng = Rng::new(2026);
    let (mut sheds, mut forced) = (0, 0);
    for case in 0..30 {
        let p = random_params(&mut rng);
        let mut d = Demand::from_params(&p).expect("valid");
        let t0 = day0() + Duration::seconds(rng.below(86_400) as i64);
        let mut real = t0;
        let mut offset = Duration::zero();
        let end = t0 + Duration::hours(24);
        let mut log: Vec<ActionLog> = Vec::new();
        let mut commands: Vec<(DateTime<Utc>, LoadCommand)> = Vec::new();
        let mut level = p.limit_kw * 0.8;
        let mut meter_on = true;
        while real < end {
            // the next call: a random step, but never past the wake-up (in the loop's wall clock)
            let wake = d.next_wakeup(real + offset) - offset;
            let step = Duration::milliseconds(1 + rng.below(20_000) as i64);
            real = (real + step).min(wake.max(real + Duration::milliseconds(1)));
            let now = real + offset;
            let input = match rng.below(100) {
                0..=59 if meter_on => {
                    level = (level + (rng.below(2001) as f64 - 1000.0) / 100.0).clamp(0.0, p.limit_kw * 2.0);
                    let w = match rng.below(50) {
                        0 => f64::NAN,
                        1 => -5.0,
                        2 => f64::INFINITY,
                        _ => level * 1000.0,
                    };
                    let at = now - Duration::milliseconds(rng.below(3000) as i64);
                    Input::Meter { at, power_w: w }
                }
                60..=61 => {
                    meter_on = !meter_on;
                    Input::Tick
                }
                62..=64 => {
                    let id = format!("e{}", rng.below(4));
                    let ev = DrEvent {
                        id,
                        modification: rng.below(5) as u32,
                        start: now + Duration::seconds(rng.below(7200) as i64 - 3600),
                        duration_s: rng.below(4 * 3600),
                        limit_kw: (rng.below(3) > 0).then(|| rng.below(200) as f64),
                        level: (rng.below(3) == 0).then(|| rng.below(6) as i32 - 1),
                        surplus: rng.below(5) == 0,
                        random_start_s: rng.below(600) as u32,
                        ramp_s: rng.below(600) as u32,
                    };
                    Input::Event(ev)
                }
                65 => Input::Cancel { id: format!("e{}", rng.below(4)), modification: None },
                66..=70 => Input::Heartbeat { at: now },
                71 => {
                    // the wall clock jumps: never (case % 3 == 0), backwards (1) or forwards (2)
                    let jump = Duration::seconds(rng.below(3600) as i64);
                    match case % 3 {
                        1 => offset -= jump,
                        2 => offset += jump,
                        _ => {}
                    }
                    Input::Tick
                }
                _ => Input::Tick,
            };
            let out = d.handle(real + offset, input);
            // record in real time
            for mut a in out.log {
                a.at = real;
                log.push(a);
            }
            commands.extend(out.commands.into_iter().map(|c| (real, c)));
            for r in &out.reports {
                assert!(r.energy_shifted_kwh.is_finite() && r.minutes_over_limit.is_finite());
                assert!(serde_json::from_str::<serde_json::Value>(&r.to_json()).is_ok());
            }
            if let Some(s) = out.status {
                assert!(serde_json::from_str::<serde_json::Value>(&s.to_json()).is_ok(), "case {case}");
            }
        }
        sheds += log.iter().filter(|a| a.reason == Reason::OverLimit).count();
        forced += log.iter().filter(|a| a.reason == Reason::MaxBlocked).count();
        check_limits(&log, &p, end, case % 3 == 0);
        if case % 3 == 0 {
            check_staggered(&log, &p);
        }
        check_commands_only_on_change(&commands);
    }
    assert!(sheds > 500 && forced > 20, "the random days exercise the loop: {sheds} sheds, {forced} forced releases");
}

/// §14a: whatever the inputs, a setpoint load never gets less than its floor (and never less than 4.2 kW).
#[test]
fn property_section_14a_floor_never_violated() {
    let mut rng = Rng::new(14);
    for _ in 0..200 {
        let mut p = DemandParams::new("m", 10.0 + rng.below(50) as f64, vec![]);
        for i in 0..1 + rng.below(5) {
            let mut l = LoadParams::new(&format!("wb{i}"), LoadKind::Setpoint, 4.2 + rng.below(400) as f64 / 10.0, 1);
            if rng.below(2) == 0 {
                l.min_kw = Some(4.2 + rng.below(20) as f64 / 10.0);
                if l.min_kw > Some(l.rated_kw) {
                    l.min_kw = Some(l.rated_kw.max(4.2));
                }
            }
            p.load.push(l);
        }
        if !p.validate().is_empty() {
            continue;
        }
        let mut d = Demand::from_params(&p).expect("valid");
        let mut t = day0();
        for _ in 0..300 {
            t += Duration::seconds(1 + rng.below(30) as i64);
            let w = (rng.below(2_000_000) as f64) * (p.limit_kw / 1000.0);
            let out = d.handle(t, Input::Meter { at: t, power_w: w });
            for c in &out.commands {
                if let LoadState::Setpoint { kw } = c.state {
                    let floor = p.load.iter().find(|l| l.name == c.load).map(|l| l.min_kw()).unwrap_or(4.2);
                    assert!(kw >= floor - 1e-9 && kw >= SECTION_14A_MIN_KW - 1e-9, "{kw} < {floor}");
                }
            }
        }
    }
}

#[test]
fn garbage_readings_are_ignored_and_counted_and_nothing_panics() {
    let p = district();
    let mut d = Demand::from_params(&p).expect("valid");
    let t0 = day0();
    d.tick(t0);
    let mut last = None;
    for (i, w) in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, 1e300, -0.0].iter().enumerate() {
        let out = d.handle(t0 + Duration::seconds(i as i64), Input::Meter { at: t0, power_w: *w });
        last = out.status.or(last);
    }
    let st = last.expect("status");
    assert_eq!(st.invalid_readings, 5);
    assert_eq!(st.measured_kw, Some(0.0), "-0.0 is a valid zero");
    // extreme times and events
    let extremes = [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::UNIX_EPOCH, t0];
    for &a in &extremes {
        for &b in &extremes {
            d.handle(a, Input::Meter { at: b, power_w: 1e6 });
            d.handle(a, Input::Heartbeat { at: b });
            let r = d.handle(a, Input::Event(DrEvent { duration_s: u64::MAX, ..DrEvent::limit("x", 1, b, 0, 1.0) }));
            assert!(matches!(r.ack, Some(Err(EventError::InvalidDuration(_)))));
            let r = d.handle(a, Input::Event(DrEvent::limit("x", u32::MAX, b, MAX_EVENT_DURATION_S, 1.0)));
            assert!(r.ack.is_some());
            d.handle(a, Input::Cancel { id: "x".into(), modification: Some(u32::MAX) });
            let _ = d.next_wakeup(a);
        }
    }
    let bad = [
        DrEvent::limit("", 0, t0, 10, 1.0),
        DrEvent::limit("a b", 0, t0, 10, 1.0),
        DrEvent::limit("x", 0, t0, 10, f64::NAN),
        DrEvent::limit("x", 0, t0, 10, -1.0),
        DrEvent { limit_kw: None, ..DrEvent::limit("x", 0, t0, 10, 1.0) },
        DrEvent { ramp_s: 99_999, ..DrEvent::limit("x", 0, t0, 10, 1.0) },
        DrEvent { random_start_s: 99_999, ..DrEvent::limit("x", 0, t0, 10, 1.0) },
    ];
    for ev in bad {
        let r = d.handle(t0, Input::Event(ev));
        assert!(matches!(r.ack, Some(Err(_))), "{:?}", r.ack);
    }
    // too many events
    let mut d = Demand::from_params(&p).expect("valid");
    for i in 0..MAX_EVENTS {
        let r = d.handle(t0, Input::Event(DrEvent::limit(&format!("e{i}"), 0, t0, 60, 200.0)));
        assert_eq!(r.ack, Some(Ok(EventAck::Accepted)));
    }
    let r = d.handle(t0, Input::Event(DrEvent::limit("one-more", 0, t0, 60, 200.0)));
    assert_eq!(r.ack, Some(Err(EventError::TooManyEvents)));
    let r = d.handle(t0, Input::Event(DrEvent::limit("past", 0, t0 - Duration::hours(2), 60, 200.0)));
    assert_eq!(r.ack, Some(Err(EventError::TooManyEvents)));
    let mut d = Demand::from_params(&p).expect("valid");
    let r = d.handle(t0, Input::Event(DrEvent::limit("past", 0, t0 - Duration::hours(2), 60, 200.0)));
    assert_eq!(r.ack, Some(Ok(EventAck::Expired)));
    let r = d.handle(t0, Input::Cancel { id: "nope".into(), modification: None });
    assert_eq!(r.ack, Some(Ok(EventAck::NotFound)));
}

#[test]
fn level_events_map_to_limits_and_surplus() {
    let p = small();
    let t0 = day0();
    let mut d = Demand::from_params(&p).expect("valid");
    d.tick(t0);
    let ev = DrEvent { limit_kw: None, level: Some(2), ..DrEvent::limit("lvl", 0, t0, 600, 0.0) };
    d.handle(t0, Input::Event(ev));
    assert_eq!(d.limit(), (200.0, &LimitReason::Event("lvl".into())));
    let ev = DrEvent { limit_kw: None, level: Some(9), ..DrEvent::limit("lvl", 1, t0, 600, 0.0) };
    d.handle(t0, Input::Event(ev));
    assert!((d.limit().0 - 175.0).abs() < 1e-9);
    let ev = DrEvent { limit_kw: None, level: Some(-1), ..DrEvent::limit("lvl", 2, t0, 600, 0.0) };
    let out = d.handle(t0, Input::Event(ev));
    assert_eq!(d.limit(), (250.0, &LimitReason::Config));
    assert!(out.status.is_some_and(|s| s.surplus));
}

// ---------------------------------------------------------------------------------------------------------
// Params
// ---------------------------------------------------------------------------------------------------------

#[test]
fn params_default_is_the_product_example_and_parses_from_json() {
    let p = DemandParams::default();
    assert_eq!(p.meter, "feeder-meter");
    assert_eq!(p.limit_kw, 250.0);
    assert_eq!(p.load[0].name, "hp-12");
    assert!(p.validate().is_empty());
    let json = r#"{"meter":"feeder-meter","limit_kw":250.0,"load":[
        {"name":"hp-12","kind":"sg-ready","rated_kw":6.0,"priority":1,
         "output":{"type":"gpio","pins":[17,27]},"allow_forced":true},
        {"name":"wb-1","kind":"setpoint","rated_kw":11.0,"priority":2,"min_kw":4.2,
         "output":{"type":"lorawan","device":"wb-1-ctl"}},
        {"name":"pump","kind":"switch","rated_kw":2.0,"priority":3,"output":{"type":"mqtt","topic":"pump/set"}}]}"#;
    let p: DemandParams = serde_json::from_str(json).expect("parses");
    assert!(p.validate().is_empty(), "{:?}", p.validate());
    let d = Demand::from_params(&p).expect("valid");
    assert_eq!(d.load_output("hp-12"), Some(&OutputSpec::Gpio { pins: vec![17, 27], active_low: false }));
    assert_eq!(d.load_output("wb-1"), Some(&OutputSpec::Lorawan { device: "wb-1-ctl".into(), f_port: 20 }));
    assert!(serde_json::from_str::<DemandParams>(r#"{"meter":"m","limit_kw":1,"bogus":1}"#).is_err());
    assert!(serde_json::from_str::<DemandParams>(
        r#"{"meter":"m","limit_kw":1,"load":[{"name":"a","kind":"x","rated_kw":1,"priority":1}]}"#
    )
    .is_err());
    assert_eq!(LoadState::SgReady(1).sg_ready_relays(), Some([true, false]));
    assert_eq!(LoadState::SgReady(4).sg_ready_relays(), Some([true, true]));
}

#[test]
fn params_validation_lists_every_problem_with_key_paths() {
    let mut p = DemandParams::new("bad meter", f64::NAN, vec![]);
    p.restore_delay_min_s = 200;
    p.report_window_s = 7;
    let mut wb = LoadParams::new("wb-1", LoadKind::Setpoint, 11.0, 1);
    wb.min_kw = Some(3.7);
    let mut hp = LoadParams::new("wb-1", LoadKind::SgReady, 6.0, 1);
    hp.min_kw = Some(5.0);
    hp.output = Some(OutputSpec::Gpio { pins: vec![17], active_low: false });
    hp.min_off_s = Some(9000);
    let tiny = LoadParams::new("tiny", LoadKind::Setpoint, 3.0, 1);
    let mut sw = LoadParams::new("sw", LoadKind::Switch, 1.0, 1);
    sw.output = Some(OutputSpec::Mqtt { topic: "a/#".into() });
    p.load = vec![wb, hp, tiny, sw];
    let keys: Vec<String> = p.validate().into_iter().map(|pr| pr.key).collect();
    for k in [
        "demand_response.meter",
        "demand_response.limit_kw",
        "demand_response.restore_delay_min_s",
        "demand_response.report_window_s",
        "demand_response.load[0].min_kw",
        "demand_response.load[1].name",
        "demand_response.load[1].min_kw",
        "demand_response.load[1].output.pins",
        "demand_response.load[1].min_off_s",
        "demand_response.load[2].rated_kw",
        "demand_response.load[3].output.topic",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
    }
    let err = Demand::from_params(&p).expect_err("invalid");
    assert!(err.to_string().contains("demand_response.load[0].min_kw: must be at least 4.2 kW"), "{err}");
}
