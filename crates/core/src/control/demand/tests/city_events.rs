//! City events and supervision: overlapping events, cancels, start delays, ramps, lost heartbeat, lost meter,
//! surplus, setpoint floors and load feedback.

use super::*;

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
