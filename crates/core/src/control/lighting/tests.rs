//! Lighting tests, all in simulated time (no sleeping): the zone is driven from one wake-up to the next.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};

use super::*;

const LAT: f64 = 53.7065;
const LON: f64 = 9.9936;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("valid test time")
}

fn site() -> Site {
    Site { latitude: Some(LAT), longitude: Some(LON), build_date: utc(2025, 6, 1, 0, 0, 0) }
}

fn zone(p: &ZoneParams) -> Zone {
    Zone::from_params(p, &site()).expect("valid params")
}

/// Drives a zone through simulated time, recording everything with its time.
struct Sim {
    zone: Zone,
    now: DateTime<Utc>,
    commands: Vec<(DateTime<Utc>, LampCommand)>,
    events: Vec<Event>,
    states: Vec<ZoneState>,
    energy: Vec<EnergyReport>,
    /// Lamps acknowledge every command at once.
    auto_ack: bool,
    ticks: usize,
}

impl Sim {
    fn new(zone: Zone, start: DateTime<Utc>) -> Sim {
        let mut s = Sim {
            zone,
            now: start,
            commands: vec![],
            events: vec![],
            states: vec![],
            energy: vec![],
            auto_ack: true,
            ticks: 0,
        };
        let out = s.zone.tick(start);
        s.record(out);
        s
    }

    fn record(&mut self, out: Output) {
        let acks: Vec<(String, u8)> = out.commands.iter().map(|c| (c.lamp.clone(), c.level_pct)).collect();
        self.commands.extend(out.commands.into_iter().map(|c| (self.now, c)));
        self.events.extend(out.events);
        self.states.extend(out.states);
        self.energy.extend(out.energy);
        if self.auto_ack {
            for (lamp, level) in acks {
                let out = self.zone.lamp_ack(self.now, &lamp, level).expect("known lamp");
                self.record(out);
            }
        }
    }

    /// Ticks at every wake-up up to and including `t`.
    fn run_to(&mut self, t: DateTime<Utc>) {
        while self.now < t {
            let next = self.zone.next_wakeup(self.now).min(t);
            assert!(next > self.now, "next_wakeup must advance");
            self.now = next;
            self.ticks += 1;
            let out = self.zone.tick(next);
            self.record(out);
        }
    }

    fn presence(&mut self, t: DateTime<Utc>, sensor: &str) {
        self.run_to(t);
        let out = self.zone.presence(t, sensor, t).expect("known sensor");
        self.record(out);
    }

    fn heard(&mut self, t: DateTime<Utc>, sensor: &str) {
        self.run_to(t);
        let out = self.zone.sensor_heard(t, sensor, t).expect("known sensor");
        self.record(out);
    }

    fn commands_for(&self, lamp: &str) -> Vec<(DateTime<Utc>, u8, Reason)> {
        self.commands.iter().filter(|(_, c)| c.lamp == lamp).map(|(t, c)| (*t, c.level_pct, c.reason)).collect()
    }

    fn last_state(&self) -> &ZoneState {
        self.states.last().expect("a state was published")
    }

    fn event_names(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.name()).collect()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Independent references: the NOAA sunrise/sunset formula and the EU daylight-saving rule for Berlin.

/// Sunrise (`rising`) or sunset in UTC for a UTC date, by the NOAA solar calculator's formulas (apparent
/// sunrise at -0.833°), iterated twice at the event time itself.
fn noaa_sun(date: NaiveDate, lat: f64, lon: f64, rising: bool) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let jd0 = midnight.timestamp() as f64 / 86400.0 + 2440587.5;
    let mut minutes = 720.0; // first guess: noon UTC
    for _ in 0..3 {
        let jc = (jd0 + minutes / 1440.0 - 2451545.0) / 36525.0;
        let l0 = (280.46646 + jc * (36000.76983 + jc * 0.0003032)).rem_euclid(360.0);
        let m = 357.52911 + jc * (35999.05029 - 0.0001537 * jc);
        let e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc);
        let mr = m.to_radians();
        let c = mr.sin() * (1.914602 - jc * (0.004817 + 0.000014 * jc))
            + (2.0 * mr).sin() * (0.019993 - 0.000101 * jc)
            + (3.0 * mr).sin() * 0.000289;
        let true_long = l0 + c;
        let omega = (125.04 - 1934.136 * jc).to_radians();
        let app_long = true_long - 0.00569 - 0.00478 * omega.sin();
        let eps0 = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0;
        let eps = (eps0 + 0.00256 * omega.cos()).to_radians();
        let decl = (eps.sin() * app_long.to_radians().sin()).asin();
        let y = (eps / 2.0).tan().powi(2);
        let l0r = l0.to_radians();
        let eot = 4.0
            * (y * (2.0 * l0r).sin() - 2.0 * e * mr.sin() + 4.0 * e * y * mr.sin() * (2.0 * l0r).cos()
                - 0.5 * y * y * (4.0 * l0r).sin()
                - 1.25 * e * e * (2.0 * mr).sin())
            .to_degrees();
        let latr = lat.to_radians();
        let ha =
            ((90.833f64.to_radians().cos() / (latr.cos() * decl.cos())) - latr.tan() * decl.tan()).acos().to_degrees();
        let noon = 720.0 - 4.0 * lon - eot;
        minutes = if rising { noon - 4.0 * ha } else { noon + 4.0 * ha };
    }
    midnight + Duration::milliseconds((minutes * 60_000.0) as i64)
}

/// Last Sunday of a month, 01:00 UTC (the EU switch instant).
fn eu_switch(year: i32, month: u32) -> DateTime<Utc> {
    let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap().pred_opt().unwrap();
    while d.weekday() != Weekday::Sun {
        d = d.pred_opt().unwrap();
    }
    d.and_hms_opt(1, 0, 0).unwrap().and_utc()
}

/// Berlin's UTC offset in hours at `t`: CEST (+2) between the EU switches, CET (+1) otherwise.
fn berlin_offset_h(t: DateTime<Utc>) -> i64 {
    if t >= eu_switch(t.year(), 3) && t < eu_switch(t.year(), 10) {
        2
    } else {
        1
    }
}

fn berlin_local(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    t.naive_utc() + Duration::hours(berlin_offset_h(t))
}

// ---------------------------------------------------------------------------------------------------------

fn ten_lamp_zone() -> ZoneParams {
    let mut p = ZoneParams {
        name: "promenade".into(),
        lamps: (1..=10).map(|i| LampSpec::Name(format!("lamp-{i:02}"))).collect(),
        sensors: (1..=10)
            .map(|i| SensorSpec {
                device: format!("pir-{i:02}"),
                lamp: format!("lamp-{i:02}"),
                debounce_count: Some(2),
                debounce_window_s: Some(10),
                heartbeat_s: None,
            })
            .collect(),
        ..ZoneParams::default()
    };
    p.ramp_up_s = 2;
    p.ramp_down_s = 10;
    p
}

/// A person walks along ten lamps 30 m apart at 1.4 m/s at night. Each sensor sees 10 m around its lamp
/// and reports a trigger on entering its range and every 5 s while the person is in it; every sensor
/// needs two triggers within 10 s.
#[test]
fn walk_along_ten_lamps_at_night() {
    let params = ten_lamp_zone();
    // 00:30 local on a January night: dark, no period, so base 10 %.
    let start = utc(2026, 1, 14, 23, 30, 0);
    let mut sim = Sim::new(zone(&params), start);
    assert_eq!(sim.commands.len(), 10, "one initial command per lamp");
    assert!(sim.commands.iter().all(|(_, c)| c.level_pct == 10 && c.reason == Reason::Schedule));
    let initial = sim.commands.len();

    let t0 = start + Duration::seconds(60);
    let speed = 1.4;
    let at = |x: f64| t0 + Duration::milliseconds((x / speed * 1000.0).round() as i64);
    // Trigger times per sensor k: entering the range at x = 30k - 10 (or at the start), then every 5 s.
    let mut triggers: Vec<(DateTime<Utc>, usize)> = vec![];
    let mut accepted_last = [t0; 10];
    for (k, last) in accepted_last.iter_mut().enumerate() {
        let pos = 30.0 * k as f64;
        let enter = at((pos - 10.0).max(0.0));
        let leave = at(pos + 10.0);
        let mut t = enter;
        let mut n = 0;
        while t < leave {
            triggers.push((t, k));
            n += 1;
            if n >= 2 {
                *last = t;
            }
            t += Duration::seconds(5);
        }
    }
    // Stops at each lamp's arrival to look at the lamps.
    let arrivals: Vec<DateTime<Utc>> = (0..10).map(|k| at(30.0 * k as f64)).collect();
    let mut timeline: Vec<(DateTime<Utc>, Option<usize>)> = triggers.iter().map(|&(t, k)| (t, Some(k))).collect();
    timeline.extend(arrivals.iter().map(|&t| (t, None)));
    timeline.sort_by_key(|&(t, k)| (t, k.is_none()));
    for (t, what) in timeline {
        match what {
            Some(k) => sim.presence(t, &format!("pir-{:02}", k + 1)),
            None => {
                sim.run_to(t);
                let k = arrivals.iter().position(|&a| a == t).unwrap();
                if k >= 1 {
                    let lamp = format!("lamp-{:02}", k + 1);
                    let level = sim.zone.effective_level_pct(&lamp, t).unwrap();
                    assert!(level >= 100.0 - 1e-9, "{lamp} is at {level} % when the person arrives");
                }
                // Light ahead: the next lamp is already at full boost, the one after is commanded to it.
                if k >= 1 && k + 1 < 10 {
                    let lamp = format!("lamp-{:02}", k + 2);
                    let level = sim.zone.effective_level_pct(&lamp, t).unwrap();
                    assert!(level >= 100.0 - 1e-9, "{lamp} (one ahead) at {level} %");
                }
                if k >= 1 && k + 2 < 10 {
                    let st = sim.zone.state(t);
                    let l = st.lamp(&format!("lamp-{:02}", k + 3)).unwrap();
                    assert_eq!((l.level_pct, l.reason), (100, Reason::Presence), "two ahead");
                }
            }
        }
    }
    sim.run_to(arrivals[9] + Duration::seconds(300));

    for k in 0..10usize {
        let lamp = format!("lamp-{:02}", k + 1);
        let cmds: Vec<_> = sim.commands_for(&lamp).into_iter().skip(1).collect();
        assert_eq!(cmds.len(), 2, "{lamp}: exactly boost and back, got {cmds:?}");
        assert_eq!((cmds[0].1, cmds[0].2), (100, Reason::Presence));
        assert_eq!((cmds[1].1, cmds[1].2), (10, Reason::Schedule));
        // Back to base exactly one hold after the last accepted detection of a sensor covering it.
        let last = (k.saturating_sub(2)..=(k + 2).min(9)).map(|j| accepted_last[j]).max().unwrap();
        let expected_back = last + Duration::seconds(90);
        assert_eq!(cmds[1].0, expected_back, "{lamp} returns to base after the hold");
        let after = expected_back + Duration::seconds(10);
        assert!((sim.zone.effective_level_pct(&lamp, after).unwrap() - 10.0).abs() < 1e-9);
    }
    assert_eq!(sim.commands.len() - initial, 20, "two commands per lamp for the whole walk");
    assert!(sim.events.is_empty(), "no faults or fail-safe: {:?}", sim.event_names());
}

/// A night with no one: the lamps stay at base from sunset to sunrise, and the saved energy equals an
/// independent calculation from the on/off times and the fade model.
#[test]
fn night_with_no_one_energy_matches() {
    let p = ZoneParams::default(); // PRODUCT.md's example, 3 × 40 W
    let start = utc(2026, 1, 15, 12, 0, 0);
    let end = utc(2026, 1, 16, 12, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    let mut t = start;
    while t < end {
        t += Duration::minutes(30);
        sim.heard(t.min(end), "pir-01");
    }
    sim.run_to(end);
    assert!(sim.events.is_empty(), "{:?}", sim.event_names());
    for lamp in ["lamp-01", "lamp-02", "lamp-03"] {
        let c = sim.commands_for(lamp);
        let levels: Vec<u8> = c.iter().map(|x| x.1).collect();
        assert_eq!(levels, vec![0, 10, 0], "{lamp}: off (day), base at dusk, off at dawn");
    }
    let c = sim.commands_for("lamp-01");
    let (t_on, t_off) = (c[1].0, c[2].0);
    let sunset = noaa_sun(NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(), LAT, LON, false);
    let sunrise = noaa_sun(NaiveDate::from_ymd_opt(2026, 1, 16).unwrap(), LAT, LON, true);
    assert!((t_on - sunset).num_seconds().abs() <= 120, "on {t_on} vs NOAA sunset {sunset}");
    assert!((t_off - sunrise).num_seconds().abs() <= 120, "off {t_off} vs NOAA sunrise {sunrise}");

    // Independent: 3 lamps × 40 W; 0→10 % over 2 s, 10 % until off, 10→0 % over 10 s.
    let lit = (t_off - t_on).num_seconds() as f64;
    let area = 10.0 * 2.0 / 2.0 + 10.0 * (lit - 2.0) + 10.0 * 10.0 / 2.0; // %·s
    let energy = 3.0 * 40.0 * area / 100.0 / 3600.0;
    let full = 3.0 * 40.0 * (lit + 10.0) / 3600.0;
    let windows: Vec<&EnergyReport> = sim.energy.iter().filter(|r| r.period == EnergyPeriod::Window).collect();
    assert_eq!(windows.len(), 24);
    assert!(windows.iter().all(|w| !w.partial));
    let e: f64 = windows.iter().map(|w| w.energy_wh).sum();
    let f: f64 = windows.iter().map(|w| w.full_power_wh).sum();
    let saved: f64 = windows.iter().map(|w| w.saved_wh()).sum();
    assert!((e - energy).abs() < 1e-6, "energy {e} vs {energy}");
    assert!((f - full).abs() < 1e-6, "full {f} vs {full}");
    assert!((saved - (full - energy)).abs() < 1e-6);
    let co2: f64 = windows.iter().map(|w| w.co2_saved_g()).sum();
    assert!((co2 - (full - energy) / 1000.0 * 380.0).abs() < 1e-6);
    // The local day that closed at midnight covers 12:00 UTC (13:00 local) to 23:00 UTC.
    let day = sim.energy.iter().find(|r| r.period == EnergyPeriod::Day).expect("a day report");
    assert_eq!((day.window_start, day.window_end), (utc(2026, 1, 14, 23, 0, 0), utc(2026, 1, 15, 23, 0, 0)));
    assert!(day.partial);
    let json: serde_json::Value = serde_json::from_str(&windows[10].to_json()).unwrap();
    for key in
        ["zone", "window_start", "window_end", "energy_wh", "full_power_wh", "saved_wh", "saved_kwh", "co2_saved_g"]
    {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
}

/// Energy with a presence boost and fades, against a hand calculation.
#[test]
fn energy_with_boost_matches_hand_calculation() {
    let p = ZoneParams {
        lamps: vec![LampSpec::Table(LampTable { device: "solo".into(), watts: Some(60.0) })],
        sensors: vec![SensorSpec {
            device: "pir".into(),
            lamp: "solo".into(),
            debounce_count: None,
            debounce_window_s: None,
            heartbeat_s: Some(0),
        }],
        ramp_up_s: 4,
        ramp_down_s: 8,
        schedule: ScheduleParams {
            astronomical: false,
            period: vec![PeriodSpec {
                from: Some("00:00".into()),
                to: Some("24:00".into()),
                level_pct: 20,
                dates: vec![],
                weekdays: vec![],
            }],
            ..ScheduleParams::default()
        },
        ..ZoneParams::default()
    };
    let t0 = utc(2026, 5, 5, 10, 0, 0);
    let mut sim = Sim::new(zone(&p), t0);
    let tp = t0 + Duration::seconds(1000);
    sim.presence(tp, "pir");
    let end = t0 + Duration::hours(2);
    sim.run_to(end);
    let levels: Vec<(i64, u8)> = sim.commands_for("solo").iter().map(|c| ((c.0 - t0).num_seconds(), c.1)).collect();
    assert_eq!(levels, vec![(0, 20), (1000, 100), (1090, 20)]);
    let area = 20.0 * 4.0 / 2.0 + 20.0 * (1000.0 - 4.0) // fade in, then 20 %
        + (20.0 + 100.0) / 2.0 * 4.0 + 100.0 * 86.0 // boost fade, hold
        + (100.0 + 20.0) / 2.0 * 8.0 + 20.0 * (7200.0 - 1098.0); // fade down, rest
    let expected_wh = 60.0 * area / 100.0 / 3600.0;
    let windows: Vec<&EnergyReport> = sim.energy.iter().filter(|r| r.period == EnergyPeriod::Window).collect();
    assert_eq!(windows.len(), 2);
    let e: f64 = windows.iter().map(|w| w.energy_wh).sum();
    let f: f64 = windows.iter().map(|w| w.full_power_wh).sum();
    assert!((e - expected_wh).abs() < 1e-6, "{e} vs {expected_wh}");
    assert!((f - 60.0 * 2.0).abs() < 1e-6, "lit the whole two hours: {f}");
}

/// A whole year with both DST changes: the lamps switch on at sunset + 10 min and off at sunrise - 15 min
/// (NOAA, ±2 min), and the 23:00–05:00 local night level holds on every day.
#[test]
fn schedule_over_a_year_matches_noaa_and_local_times() {
    let mut p = ZoneParams { sensors: vec![], lamps: vec![LampSpec::Name("lamp-01".into())], ..ZoneParams::default() };
    p.base_level_pct = 30;
    p.ack_timeout_s = 0;
    p.schedule = ScheduleParams {
        astronomical: true,
        sunset_offset_min: 10,
        sunrise_offset_min: -15,
        period: vec![PeriodSpec {
            from: Some("23:00".into()),
            to: Some("05:00".into()),
            level_pct: 10,
            dates: vec![],
            weekdays: vec![],
        }],
    };
    let start = utc(2025, 12, 31, 23, 0, 0); // 2026-01-01 00:00 local
    let end = utc(2026, 12, 31, 23, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    sim.auto_ack = false;
    sim.run_to(end);
    assert!(sim.ticks < 20_000, "driven by wake-ups, not polling: {} ticks", sim.ticks);

    // The independent expectation, NOAA times precomputed per local date.
    let first = NaiveDate::from_ymd_opt(2025, 12, 29).unwrap();
    let noaa: Vec<(DateTime<Utc>, DateTime<Utc>)> = (0..372)
        .map(|i| {
            let d = first + Duration::days(i);
            let on = noaa_sun(d, LAT, LON, false) + Duration::minutes(10);
            (on, noaa_sun(d + Duration::days(1), LAT, LON, true) - Duration::minutes(15))
        })
        .collect();
    let on_off = |d: NaiveDate| noaa[(d - first).num_days() as usize];
    let expected = |t: DateTime<Utc>| -> u8 {
        let local = berlin_local(t);
        let d = local.date();
        let dark = [d.pred_opt().unwrap(), d].iter().any(|&d| {
            let (on, off) = on_off(d);
            on <= t && t < off
        });
        let night = local.hour() >= 23 || local.hour() < 5;
        match (dark, night) {
            (false, _) => 0,
            (true, true) => 10,
            (true, false) => 30,
        }
    };
    // Instants where the expectation changes: NOAA on/off and 23:00 / 05:00 local.
    let mut edges: Vec<DateTime<Utc>> = vec![];
    let mut d = first + Duration::days(1);
    while d <= NaiveDate::from_ymd_opt(2027, 1, 1).unwrap() {
        let (on, off) = on_off(d);
        edges.extend([on, off]);
        for h in [5, 23] {
            let guess = d.and_hms_opt(h, 0, 0).unwrap().and_utc();
            edges.push(guess - Duration::hours(berlin_offset_h(guess - Duration::hours(2))));
        }
        d = d.succ_opt().unwrap();
    }
    edges.sort();
    let cmds = sim.commands_for("lamp-01");
    let mut checked = 0;
    let mut cursor = 0; // commands up to `cursor` are at or before t
    let mut edge = 0;
    let mut t = start + Duration::minutes(1);
    while t < end {
        while cursor + 1 < cmds.len() && cmds[cursor + 1].0 <= t {
            cursor += 1;
        }
        while edge + 1 < edges.len() && edges[edge + 1] <= t {
            edge += 1;
        }
        let near = edges[edge..(edge + 2).min(edges.len())].iter().any(|&e| (e - t).num_seconds().abs() <= 150);
        if !near {
            assert_eq!(cmds[cursor].1, expected(t), "at {t} (local {})", berlin_local(t));
            checked += 1;
        }
        t += Duration::minutes(5);
    }
    assert!(checked > 100_000, "{checked} samples");

    // Every night exactly one switch-on and one switch-off, each within 2 min of NOAA ± offsets.
    let ons: Vec<DateTime<Utc>> = cmds.windows(2).filter(|w| w[0].1 == 0 && w[1].1 > 0).map(|w| w[1].0).collect();
    let offs: Vec<DateTime<Utc>> = cmds.windows(2).filter(|w| w[0].1 > 0 && w[1].1 == 0).map(|w| w[1].0).collect();
    assert_eq!(ons.len(), 365);
    assert_eq!(offs.len(), 365);
    let mut worst = 0;
    for on in &ons {
        let d = berlin_local(*on).date();
        let diff = (*on - on_off(d).0).num_seconds().abs();
        assert!(diff <= 120, "switch-on {on} is {diff} s from NOAA");
        worst = worst.max(diff);
    }
    for off in &offs {
        let d = berlin_local(*off).date().pred_opt().unwrap();
        let diff = (*off - on_off(d).1).num_seconds().abs();
        assert!(diff <= 120, "switch-off {off} is {diff} s from NOAA");
        worst = worst.max(diff);
    }
    println!("year 2026: {} switch-ons, {} switch-offs, worst deviation from NOAA {worst} s", ons.len(), offs.len());
    // No redundant commands: every command changes the level.
    assert!(cmds.windows(2).all(|w| w[0].1 != w[1].1));
}

/// The nights of both DST changes in Europe/Berlin: 23:00–05:00 local stays 23:00–05:00 local.
#[test]
fn dst_nights_keep_local_night_period() {
    let mut p = ZoneParams { sensors: vec![], ..ZoneParams::default() };
    p.base_level_pct = 30;
    p.schedule.period = vec![PeriodSpec {
        from: Some("23:00".into()),
        to: Some("05:00".into()),
        level_pct: 10,
        dates: vec![],
        weekdays: vec![],
    }];
    let cases = [
        // (night's start date, 23:00 local in UTC, 05:00 local next morning in UTC)
        ((2026, 3, 27), utc(2026, 3, 27, 22, 0, 0), utc(2026, 3, 28, 4, 0, 0)), // CET both
        ((2026, 3, 28), utc(2026, 3, 28, 22, 0, 0), utc(2026, 3, 29, 3, 0, 0)), // CET -> CEST
        ((2026, 3, 29), utc(2026, 3, 29, 21, 0, 0), utc(2026, 3, 30, 3, 0, 0)), // CEST both
        ((2026, 10, 24), utc(2026, 10, 24, 21, 0, 0), utc(2026, 10, 25, 4, 0, 0)), // CEST -> CET
        ((2026, 10, 25), utc(2026, 10, 25, 22, 0, 0), utc(2026, 10, 26, 4, 0, 0)), // CET both
    ];
    for ((y, m, d), night_from, night_to) in cases {
        let start = utc(y, m, d, 12, 0, 0);
        let mut sim = Sim::new(zone(&p), start);
        sim.run_to(start + Duration::hours(24));
        let c = sim.commands_for("lamp-01");
        let to_10 = c.iter().find(|x| x.1 == 10).map(|x| x.0);
        let back_30 = c.iter().skip_while(|x| x.1 != 10).find(|x| x.1 == 30).map(|x| x.0);
        assert_eq!(to_10, Some(night_from), "night level starts at 23:00 local on {y}-{m}-{d}");
        assert_eq!(back_30, Some(night_to), "night level ends at 05:00 local after {y}-{m}-{d}");
        let levels: Vec<u8> = c.iter().map(|x| x.1).collect();
        assert_eq!(levels, vec![0, 30, 10, 30, 0], "{y}-{m}-{d}");
    }
    // A local time inside the spring-forward gap means the end of the gap.
    let mut p2 = p.clone();
    p2.schedule.period[0].from = Some("02:30".into());
    p2.schedule.period[0].to = Some("04:00".into());
    let z = zone(&p2);
    assert_eq!(z.schedule().level_at(utc(2026, 3, 29, 0, 59, 0)), ScheduleLevel::On(30));
    assert_eq!(z.schedule().level_at(utc(2026, 3, 29, 1, 0, 0)), ScheduleLevel::On(10)); // 03:00 CEST
    assert_eq!(z.schedule().level_at(utc(2026, 3, 29, 2, 0, 0)), ScheduleLevel::On(30));
    // 04:00 CEST
}

#[test]
fn date_rules_and_weekdays() {
    let mut p = ZoneParams { sensors: vec![], ..ZoneParams::default() };
    p.schedule.period = vec![
        PeriodSpec {
            from: Some("23:00".into()),
            to: Some("05:00".into()),
            level_pct: 10,
            dates: vec![],
            weekdays: vec![],
        },
        PeriodSpec { from: None, to: None, level_pct: 60, dates: vec!["12-31".into()], weekdays: vec![] },
        PeriodSpec {
            from: None,
            to: None,
            level_pct: 0,
            dates: vec!["2026-07-01..2026-07-03".into()],
            weekdays: vec![],
        },
        PeriodSpec {
            from: Some("23:00".into()),
            to: Some("05:00".into()),
            level_pct: 20,
            dates: vec![],
            weekdays: vec!["sat".into()],
        },
    ];
    let z = zone(&p);
    let s = z.schedule();
    // New Year's Eve night (starting 2026-12-31): 60 % all night, midnight included.
    assert_eq!(s.level_at(utc(2026, 12, 31, 23, 30, 0)), ScheduleLevel::On(60));
    assert_eq!(s.level_at(utc(2027, 1, 1, 3, 0, 0)), ScheduleLevel::On(60));
    assert_eq!(s.level_at(utc(2026, 12, 30, 23, 30, 0)), ScheduleLevel::On(10));
    // Off nights.
    assert_eq!(s.level_at(utc(2026, 7, 2, 0, 0, 0)), ScheduleLevel::Off);
    // Saturday night (2026-01-17 is a Saturday) beats the plain period; 01:00 Sunday still belongs to it.
    assert_eq!(s.level_at(utc(2026, 1, 17, 23, 30, 0)), ScheduleLevel::On(20));
    assert_eq!(s.level_at(utc(2026, 1, 18, 0, 30, 0)), ScheduleLevel::On(20));
    assert_eq!(s.level_at(utc(2026, 1, 18, 23, 30, 0)), ScheduleLevel::On(10));
    // Daytime is off whatever the rules.
    assert_eq!(s.level_at(utc(2026, 12, 31, 12, 0, 0)), ScheduleLevel::Off);
}

#[test]
fn override_expires_on_time_and_clear_returns_to_schedule() {
    let p = ZoneParams { ack_timeout_s: 0, ..ZoneParams::default() };
    let mut l = Lighting::from_params(&[p], &site()).unwrap();
    let night = utc(2026, 1, 15, 0, 0, 0);
    let out = l.tick(night);
    assert_eq!(out.commands.len(), 3);
    let out = l.set_override(night + Duration::seconds(10), "reiherhagen", 80, 600).unwrap();
    assert!(out.commands.iter().all(|c| c.level_pct == 80 && c.reason == Reason::Override));
    assert_eq!(out.commands.len(), 3);
    assert_eq!(out.states[0].lamp("lamp-02").unwrap(), LampLevel { level_pct: 80, reason: Reason::Override });
    let until = night + Duration::seconds(610);
    assert!(l.next_wakeup(night + Duration::seconds(10)) <= until);
    assert!(l.tick(until - Duration::seconds(1)).commands.is_empty());
    let out = l.tick(until);
    assert_eq!(out.commands.len(), 3);
    assert!(out.commands.iter().all(|c| c.level_pct == 10 && c.reason == Reason::Schedule));
    assert_eq!(out.events[0].kind, EventKind::OverrideEnded { cleared: false });

    // Override wins over presence, and a cleared override returns to the schedule (with presence).
    let t = until + Duration::seconds(100);
    l.set_override(t, "reiherhagen", 30, 3600).unwrap();
    let out = l.presence(t + Duration::seconds(10), "pir-01", t + Duration::seconds(10)).unwrap();
    assert!(out.commands.is_empty(), "override wins over presence");
    let out = l.clear_override(t + Duration::seconds(20), "reiherhagen").unwrap();
    assert_eq!(out.events[0].kind, EventKind::OverrideEnded { cleared: true });
    assert!(out.commands.iter().all(|c| c.level_pct == 100 && c.reason == Reason::Presence));
    assert_eq!(out.commands.len(), 3);
    // Clearing again is a no-op; bad arguments change nothing.
    assert!(l.clear_override(t + Duration::seconds(21), "reiherhagen").unwrap().is_empty());
    assert_eq!(l.set_override(t, "reiherhagen", 101, 10), Err(LightingError::InvalidLevel(101)));
    assert_eq!(l.set_override(t, "reiherhagen", 50, 0), Err(LightingError::InvalidDuration(0)));
    assert_eq!(l.set_override(t, "nowhere", 50, 10), Err(LightingError::UnknownZone("nowhere".into())));
}

#[test]
fn silent_sensor_triggers_failsafe() {
    let mut p = ZoneParams::default();
    p.sensors[0].heartbeat_s = Some(600);
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    sim.run_to(start + Duration::seconds(599));
    assert!(sim.events.is_empty());
    sim.run_to(start + Duration::seconds(600));
    assert_eq!(sim.event_names(), vec!["sensor_silent"]);
    let st = sim.last_state();
    for lamp in ["lamp-01", "lamp-02", "lamp-03"] {
        assert_eq!(st.lamp(lamp).unwrap(), LampLevel { level_pct: 50, reason: Reason::Failsafe });
    }
    let ev: serde_json::Value = serde_json::from_str(&sim.events[0].to_json()).unwrap();
    assert_eq!(ev["event"], "sensor_silent");
    assert_eq!(ev["sensor"], "pir-01");
    // Heard again: fail-safe left, back to base.
    sim.heard(start + Duration::seconds(900), "pir-01");
    assert_eq!(sim.event_names(), vec!["sensor_silent", "sensor_recovered"]);
    assert!(sim.last_state().lamps.iter().all(|(_, l)| l.level_pct == 10 && l.reason == Reason::Schedule));
    // By day a silent sensor does not light the street.
    let day = utc(2026, 1, 15, 12, 0, 0);
    let mut sim = Sim::new(zone(&p), day);
    sim.run_to(day + Duration::seconds(3600));
    assert_eq!(sim.event_names(), vec!["sensor_silent"]);
    assert!(sim.last_state().lamps.iter().all(|(_, l)| l.level_pct == 0 && l.reason == Reason::Off));
}

#[test]
fn wrong_clock_puts_zone_in_safe_mode() {
    let p = ZoneParams::default();
    let mut z = zone(&p);
    // A Pi without RTC booting at the epoch, at "noon".
    let wrong = utc(1970, 1, 1, 12, 0, 0);
    let out = z.tick(wrong);
    assert_eq!(out.events.iter().map(|e| e.name()).collect::<Vec<_>>(), vec!["clock_untrusted"]);
    assert!(out.commands.iter().all(|c| c.level_pct == 50 && c.reason == Reason::Failsafe));
    assert_eq!(out.commands.len(), 3);
    assert!(z.safe_mode());
    let st: serde_json::Value = serde_json::from_str(&out.states[0].to_json()).unwrap();
    assert_eq!(st["mode"], "safe");
    assert_eq!(st["lamps"]["lamp-01"]["reason"], "failsafe");
    // Presence still raises, holds are measured on the (wrong) clock.
    let out = z.presence(wrong + Duration::seconds(5), "pir-01", wrong + Duration::seconds(5)).unwrap();
    assert!(out.commands.iter().all(|c| c.level_pct == 100 && c.reason == Reason::Presence));
    let out = z.tick(wrong + Duration::seconds(95));
    assert!(out.commands.iter().all(|c| c.level_pct == 50));
    assert!(out.energy.is_empty());
    // NTP fixes the clock at noon: normal operation (daylight: off), no energy for the bogus period.
    let out = z.tick(utc(2026, 1, 15, 12, 0, 0));
    assert_eq!(out.events.iter().map(|e| e.name()).collect::<Vec<_>>(), vec!["clock_trusted"]);
    assert!(out.commands.iter().all(|c| c.level_pct == 0 && c.reason == Reason::Off));
    assert!(out.energy.is_empty());
    assert!(!z.safe_mode());
    // Before the build date by a day is also untrusted.
    let mut z = zone(&p);
    let out = z.tick(site().build_date - Duration::days(1));
    assert_eq!(out.events[0].name(), "clock_untrusted");
}

#[test]
fn debounce_needs_two_triggers_within_window() {
    let mut p = ZoneParams::default();
    p.sensors[0].debounce_count = Some(2);
    p.sensors[0].debounce_window_s = Some(10);
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    let n0 = sim.commands.len();
    sim.presence(start + Duration::seconds(100), "pir-01");
    assert_eq!(sim.commands.len(), n0, "a single trigger is suppressed");
    sim.presence(start + Duration::seconds(115), "pir-01");
    assert_eq!(sim.commands.len(), n0, "15 s apart is outside the 10 s window");
    sim.presence(start + Duration::seconds(122), "pir-01");
    assert_eq!(sim.commands.len(), n0 + 3, "two within 10 s boost");
    assert!(sim.commands[n0..].iter().all(|(t, c)| c.level_pct == 100 && *t == start + Duration::seconds(122)));
    // The hold counts from the accepted detection.
    sim.run_to(start + Duration::seconds(122 + 90));
    assert_eq!(sim.commands.len(), n0 + 6);
    assert!(sim.commands[n0 + 3..].iter().all(|(t, c)| c.level_pct == 10 && *t == start + Duration::seconds(212)));
}

#[test]
fn commands_only_on_level_changes() {
    let p = ZoneParams::default();
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut z = zone(&p);
    let mut commands = vec![];
    let mut states = 0;
    for s in 0..=900 {
        let now = start + Duration::seconds(s);
        let mut out = z.tick(now);
        if s <= 300 && s % 20 == 0 && s > 0 {
            out.merge(z.presence(now, "pir-01", now).unwrap());
        }
        if s % 60 == 0 {
            out.merge(z.sensor_heard(now, "pir-01", now).unwrap());
        }
        for c in &out.commands {
            let ack = z.lamp_ack(now, &c.lamp, c.level_pct).unwrap();
            assert!(ack.commands.is_empty());
        }
        states += out.states.len();
        commands.extend(out.commands.into_iter().map(|c| (s, c.lamp, c.level_pct)));
    }
    // Initial 10 %, boost at 20 s, back at 300 + 90 s; nothing else for 900 one-second ticks and 15 detections.
    assert_eq!(commands.len(), 9, "{commands:?}");
    for lamp in ["lamp-01", "lamp-02", "lamp-03"] {
        let mine: Vec<(i64, u8)> = commands.iter().filter(|c| c.1 == lamp).map(|c| (c.0, c.2)).collect();
        assert_eq!(mine, vec![(0, 10), (20, 100), (390, 10)]);
    }
    assert_eq!(states, 3);
}

#[test]
fn min_command_gap_coalesces() {
    let p = ZoneParams { min_command_gap_s: 30, hold_s: 10, ..ZoneParams::default() };
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    // Boost 5 s after the initial command: deferred to 30 s; the hold ends at 15 s before it is sent, so
    // nothing is sent at all (the coalesced level equals the last sent one).
    sim.presence(start + Duration::seconds(5), "pir-01");
    sim.run_to(start + Duration::seconds(60));
    assert_eq!(sim.commands.len(), 3);
    // A boost at 100 s is sent at once, its end (110 s) too: 100 + 30 > 110, so the end waits until 130 s.
    sim.presence(start + Duration::seconds(100), "pir-01");
    sim.run_to(start + Duration::seconds(200));
    let c = sim.commands_for("lamp-01");
    let times: Vec<(i64, u8)> = c.iter().map(|x| ((x.0 - start).num_seconds(), x.1)).collect();
    assert_eq!(times, vec![(0, 10), (100, 100), (130, 10)]);
}

#[test]
fn unacknowledged_lamp_is_reported() {
    let p = ZoneParams::default();
    let start = utc(2026, 1, 15, 0, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    sim.auto_ack = false;
    // Initial commands were acked by the sim; now lamp-03 stops answering.
    sim.presence(start + Duration::seconds(10), "pir-01");
    let t = start + Duration::seconds(10);
    for lamp in ["lamp-01", "lamp-02"] {
        let out = sim.zone.lamp_ack(t, lamp, 100).unwrap();
        assert!(out.is_empty());
    }
    sim.run_to(t + Duration::seconds(80));
    let retries: Vec<_> = sim.commands.iter().filter(|(_, c)| c.retry).collect();
    assert!(retries.is_empty());
    sim.run_to(t + Duration::seconds(89));
    // Not yet: the ack timeout is 120 s; the hold ends at 100 s and sends 10 % (a new command).
    sim.run_to(t + Duration::seconds(400));
    let names = sim.event_names();
    assert_eq!(names.iter().filter(|n| **n == "lamp_fault").count(), 3, "{names:?}");
    let ev = sim.events.iter().find(|e| e.device() == Some("lamp-03")).unwrap();
    assert!(matches!(ev.kind, EventKind::LampFault { level_pct: 10, attempts: 2, .. }));
    let lamp3 = sim.commands_for("lamp-03");
    assert_eq!(lamp3.len(), 4, "initial, boost, base, one retry: {lamp3:?}");
    // The lamp answers again.
    let out = sim.zone.lamp_ack(t + Duration::seconds(500), "lamp-03", 10).unwrap();
    assert_eq!(out.events[0].name(), "lamp_recovered");
    // A lamp that lost its level (reports 0 while 10 % was acknowledged) gets it once more.
    let out = sim.zone.lamp_ack(t + Duration::seconds(510), "lamp-03", 10).unwrap();
    assert!(out.is_empty());
    let out = sim.zone.lamp_ack(t + Duration::seconds(520), "lamp-03", 0).unwrap();
    assert_eq!(out.commands.len(), 1);
    assert!(out.commands[0].retry);
}

#[test]
fn example_params_deserialize_and_validate() {
    let json = r#"{"name": "reiherhagen", "time_zone": "Europe/Berlin",
        "lamps": ["lamp-01", "lamp-02", "lamp-03"],
        "sensors": [{"device": "pir-01", "lamp": "lamp-02"}],
        "base_level_pct": 10, "boost_level_pct": 100, "hold_s": 90, "lamps_ahead": 2}"#;
    let p: ZoneParams = serde_json::from_str(json).unwrap();
    assert_eq!(p, ZoneParams::default());
    assert!(p.validate().is_empty());
    let full = r#"{"name": "z", "time_zone": "Europe/Berlin", "lamps": ["a", {"device": "b", "watts": 60.0}],
        "sensors": [{"device": "s", "lamp": "b", "debounce_count": 2, "debounce_window_s": 20, "heartbeat_s": 0}],
        "lamps_behind": 1, "ramp_up_s": 3, "ramp_down_s": 20, "floor_level_pct": 5, "lamp_watts": 35.0,
        "debounce_count": 1, "debounce_window_s": 10, "heartbeat_s": 1800, "failsafe_level_pct": 60,
        "clock_safe_level_pct": 70, "co2_g_per_kwh": 400.0, "energy_window_s": 900, "ack_timeout_s": 60,
        "ack_retries": 2, "min_command_gap_s": 10,
        "schedule": {"astronomical": true, "sunset_offset_min": 10, "sunrise_offset_min": -10,
                     "period": [{"from": "23:00", "to": "05:00", "level_pct": 10},
                                {"dates": ["12-24..12-26", "2026-12-31"], "level_pct": 50},
                                {"from": "22:00", "to": "24:00", "level_pct": 20, "weekdays": ["fri", "sat"]}]}}"#;
    let p: ZoneParams = serde_json::from_str(full).unwrap();
    assert_eq!(p.validate(), vec![]);
    assert!(
        serde_json::from_str::<ZoneParams>(r#"{"name": "z", "time_zone": "UTC", "lamps": ["a"], "bogus": 1}"#).is_err()
    );

    let bad = ZoneParams {
        name: "bad/name".into(),
        time_zone: "Mars/Olympus".into(),
        lamps: vec![LampSpec::Name("a".into()), LampSpec::Name("a".into())],
        sensors: vec![SensorSpec {
            device: "s".into(),
            lamp: "x".into(),
            debounce_count: Some(0),
            debounce_window_s: None,
            heartbeat_s: None,
        }],
        base_level_pct: 120,
        energy_window_s: 7,
        schedule: ScheduleParams {
            period: vec![PeriodSpec {
                from: Some("25:00".into()),
                to: Some("5".into()),
                level_pct: 10,
                dates: vec!["13-01".into()],
                weekdays: vec!["moon".into()],
            }],
            ..ScheduleParams::default()
        },
        ..ZoneParams::default()
    };
    let err = Lighting::from_params(&[bad], &site()).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "lighting.zone[0].name",
        "lighting.zone[0].time_zone",
        "lighting.zone[0].lamps[1]",
        "lighting.zone[0].sensors[0].lamp",
        "lighting.zone[0].sensors[0].debounce_count",
        "lighting.zone[0].base_level_pct",
        "lighting.zone[0].boost_level_pct",
        "lighting.zone[0].energy_window_s",
        "lighting.zone[0].schedule.period[0].from",
        "lighting.zone[0].schedule.period[0].to",
        "lighting.zone[0].schedule.period[0].dates[0]",
        "lighting.zone[0].schedule.period[0].weekdays[0]",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    // Astronomical schedules need the gateway's position; lamps cannot be in two zones.
    let no_pos = Site { latitude: None, longitude: None, build_date: site().build_date };
    let err = Zone::from_params(&ZoneParams::default(), &no_pos).unwrap_err();
    assert_eq!(err.problems[0].key, "schedule.astronomical");
    let other = ZoneParams { name: "other".into(), ..ZoneParams::default() };
    let err = Lighting::from_params(&[ZoneParams::default(), other], &site()).unwrap_err();
    assert_eq!(err.problems[0].key, "lighting.zone[1].lamps[0]");
}

#[test]
fn state_json_matches_product_shape() {
    let mut z = zone(&ZoneParams::default());
    let now = utc(2026, 1, 15, 0, 0, 0);
    z.tick(now);
    let out = z.presence(now, "pir-01", now).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out.states[0].to_json()).unwrap();
    assert_eq!(v["zone"], "reiherhagen");
    assert_eq!(v["at"], "2026-01-15T00:00:00.000Z");
    assert_eq!(v["lamps"]["lamp-01"], serde_json::json!({"level_pct": 100, "reason": "presence"}));
    let status = Lighting::from_params(&[ZoneParams::default()], &site()).unwrap().status(now);
    assert!(status["reiherhagen"]["lamps"].is_object());
}

/// Arbitrary and hostile inputs: extreme times, time going backwards, unknown names, huge durations.
#[test]
fn no_panic_on_any_input() {
    let mut small = ZoneParams {
        lamps: ["x-01", "x-02", "x-03"].iter().map(|n| LampSpec::Name(n.to_string())).collect(),
        ..ZoneParams::default()
    };
    small.sensors[0].lamp = "x-02".into();
    let mut l = Lighting::from_params(&[small, ten_lamp_zone()], &site()).unwrap();
    let times = [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        utc(1970, 1, 1, 0, 0, 0),
        utc(2026, 3, 29, 1, 30, 0),
        utc(2026, 10, 25, 0, 30, 0),
        utc(2300, 1, 1, 0, 0, 0),
        utc(2026, 6, 21, 22, 0, 0),
        utc(2199, 12, 31, 23, 59, 59),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let base = times[(next() % times.len() as u64) as usize];
        let now = base.checked_add_signed(Duration::seconds((next() % 100_000) as i64 - 50_000)).unwrap_or(base);
        let now = if next() % 2 == 0 { now } else { times[(next() % times.len() as u64) as usize] };
        let at = times[(next() % times.len() as u64) as usize];
        let input = match next() % 7 {
            0 => Input::Tick,
            1 => Input::Presence { sensor: "pir-01".into(), at },
            2 => Input::SensorHeard { sensor: format!("pir-{:02}", next() % 12), at },
            3 => Input::Override { zone: "reiherhagen".into(), level_pct: (next() % 256) as u8, duration_s: next() },
            4 => Input::Override { zone: "promenade".into(), level_pct: 50, duration_s: next() % MAX_OVERRIDE_S + 1 },
            5 => Input::Clear { zone: ["reiherhagen", "x"][(next() % 2) as usize].into() },
            _ => Input::LampAck {
                lamp: format!("{}-{:02}", ["lamp", "x"][(next() % 2) as usize], next() % 12),
                level_pct: (next() % 256) as u8,
            },
        };
        let _ = l.handle(now, input);
        let w = l.next_wakeup(now);
        assert!(w >= now);
        let _ = l.status(now).to_string();
        let s = l.zones()[0].schedule();
        let _ = (s.level_at(at), s.next_change_after(at), s.dark_interval(at.date_naive()));
        let _ = s.sun_event(at.date_naive(), next() % 2 == 0);
    }
}

/// The figure for PRODUCT.md's example zone: energy saved over a simulated week (see the report).
#[test]
fn week_energy_figure_for_example_zone() {
    let p = ZoneParams::default();
    // Monday 2026-11-23 00:00 to Monday 2026-11-30 00:00, Europe/Berlin (CET, UTC+1).
    let start = utc(2026, 11, 22, 23, 0, 0);
    let end = utc(2026, 11, 29, 23, 0, 0);
    let mut sim = Sim::new(zone(&p), start);
    // Passers-by at pir-01 (each seen twice, 5 s apart) by local hour: 06–09 every 10 min, 16–22 every
    // 10 min, 22–24 every 20 min, 00–06 once an hour; 09–16 every 30 min (daylight: no effect).
    // The sensor also sends a status uplink every 15 min.
    let mut t = start;
    let mut passers = 0;
    while t < end {
        let local_h = berlin_local(t).hour();
        let every = match local_h {
            0..=5 => 60,
            6..=8 | 16..=21 => 10,
            22..=23 => 20,
            _ => 30,
        };
        let m = berlin_local(t).minute();
        if m % 15 == 0 {
            sim.heard(t + Duration::seconds(1), "pir-01");
        }
        if m % every == 0 {
            sim.presence(t + Duration::seconds(7), "pir-01");
            sim.presence(t + Duration::seconds(12), "pir-01");
            passers += 1;
        }
        t += Duration::minutes(1);
    }
    sim.run_to(end);
    assert!(sim.events.is_empty(), "{:?}", sim.event_names());
    let days: Vec<&EnergyReport> = sim.energy.iter().filter(|r| r.period == EnergyPeriod::Day).collect();
    assert_eq!(days.len(), 7);
    assert!(days.iter().all(|d| !d.partial));
    let windows: Vec<&EnergyReport> = sim.energy.iter().filter(|r| r.period == EnergyPeriod::Window).collect();
    assert_eq!(windows.len(), 7 * 24);
    let e: f64 = days.iter().map(|d| d.energy_wh).sum();
    let f: f64 = days.iter().map(|d| d.full_power_wh).sum();
    let ew: f64 = windows.iter().map(|d| d.energy_wh).sum();
    assert!((e - ew).abs() < 1e-6, "windows and days agree");
    let saved_kwh = (f - e) / 1000.0;
    let co2_kg = saved_kwh * 380.0 / 1000.0;
    let lit_h = f / 120.0;
    println!(
        "WEEK FIGURE reiherhagen 2026-11-23..29 (3 x 40 W, base 10 %, boost 100 %, hold 90 s): {passers} passers-by, \
         lit {lit_h:.1} h, used {:.3} kWh vs {:.3} kWh at full power: saved {saved_kwh:.3} kWh ({:.1} %), \
         {co2_kg:.2} kg CO2 at 380 g/kWh; {} lamp commands",
        e / 1000.0,
        f / 1000.0,
        100.0 * (f - e) / f,
        sim.commands.len()
    );
    assert!(saved_kwh > 0.0 && e > 0.0);
}
