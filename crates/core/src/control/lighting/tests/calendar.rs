//! The schedule over the calendar: a year of sunsets and sunrises, DST nights, date rules and weekdays.

use super::*;

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
