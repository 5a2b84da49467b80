//! Overrides, silent sensors, an untrusted clock (safe mode) and presence debounce.

use super::*;

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
