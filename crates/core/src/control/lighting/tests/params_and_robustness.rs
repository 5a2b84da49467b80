//! Params and payload shapes, and no panic on arbitrary or hostile inputs.

use super::*;

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
