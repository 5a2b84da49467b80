//! Properties over random inputs: device limits, the §14a floor, garbage readings, level events.

use super::super::events::MAX_EVENT_DURATION_S;
use super::*;

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
