//! Presence along a street, and the energy accounting (against independent and hand calculations).

use super::*;

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
