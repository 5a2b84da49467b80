//! The §14a control box in simulated time: the BK6-22-300 minimum for 1, 2 and 3 devices behind one
//! connection, stages, precedence over a signed city event and the configured limit, the loads'
//! protection times, episodes with their durations and the staggered restore.

use super::*;
use crate::control::demand::control_box::{aggregate_minimum_kw, caps, simultaneity_factor};

fn setpoint(name: &str, prio: u32) -> LoadParams {
    LoadParams::new(name, LoadKind::Setpoint, 11.0, prio)
}

fn connection(name: &str, loads: &[&str]) -> ConnectionParams {
    ConnectionParams { name: name.into(), loads: loads.iter().map(|s| s.to_string()).collect() }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn the_aggregate_minimum_follows_bk6_22_300() {
    assert!(close(aggregate_minimum_kw(1), 4.2));
    assert!(close(aggregate_minimum_kw(2), 4.2 + 0.8 * 4.2), "{}", aggregate_minimum_kw(2));
    assert!(close(aggregate_minimum_kw(3), 4.2 + 2.0 * 0.75 * 4.2));
    assert!(close(aggregate_minimum_kw(9), 4.2 + 8.0 * 0.45 * 4.2));
    assert!(close(aggregate_minimum_kw(20), 4.2 + 19.0 * 0.45 * 4.2), "0.45 from 9 devices on");
    let f: Vec<f64> = (1..=12).map(simultaneity_factor).collect();
    assert!(f.windows(2).all(|w| w[1] <= w[0]), "the factor falls with the count: {f:?}");
}

#[test]
fn one_device_goes_to_its_minimum() {
    let loads = vec![
        setpoint("wb-1", 1),
        LoadParams::new("hp-1", LoadKind::SgReady, 6.0, 1),
        LoadParams::new("heater-small", LoadKind::Switch, 3.0, 1),
        LoadParams::new("heater-big", LoadKind::Switch, 9.0, 1),
    ];
    assert_eq!(
        caps(&loads, &[], 0.0),
        vec![
            LoadState::Setpoint { kw: 4.2 },
            LoadState::SgReady(1),
            LoadState::Switch(true), // 3 kW fits in 4.2 kW: §14a does not touch it
            LoadState::Switch(false),
        ]
    );
    // a stage with a share: 4.2 + 0.5 × (11 - 4.2) = 7.6 kW
    assert_eq!(caps(&loads[..1], &[], 0.5), vec![LoadState::Setpoint { kw: 7.6 }]);
    // a higher configured floor holds
    let mut high = setpoint("wb-2", 1);
    high.min_kw = Some(5.0);
    assert_eq!(caps(&[high], &[], 0.0), vec![LoadState::Setpoint { kw: 5.0 }]);
}

#[test]
fn two_and_three_devices_behind_one_connection_share_the_aggregate_minimum() {
    // Two wallboxes: 7.56 kW together, the higher priority first.
    let two = vec![setpoint("wb-a", 2), setpoint("wb-b", 1)];
    let c = caps(&two, &[connection("house-7", &["wb-a", "wb-b"])], 0.0);
    assert_eq!(c, vec![LoadState::Setpoint { kw: 7.5 }, LoadState::Setpoint { kw: 0.0 }]);
    let total: f64 = c.iter().map(|s| if let LoadState::Setpoint { kw } = s { *kw } else { 0.0 }).sum();
    assert!(total <= aggregate_minimum_kw(2) + 1e-9 && total > aggregate_minimum_kw(2) - 0.1);
    // Three devices: 10.5 kW; the heat pump (6 kW, highest priority) keeps running, the wallbox gets
    // the rest, the switched heater does not fit.
    let three = vec![
        LoadParams::new("hp", LoadKind::SgReady, 6.0, 3),
        setpoint("wb", 2),
        LoadParams::new("heater", LoadKind::Switch, 3.0, 1),
        setpoint("wb-elsewhere", 1),
    ];
    let c = caps(&three, &[connection("house-9", &["hp", "wb", "heater"])], 0.0);
    assert_eq!(
        c,
        vec![
            LoadState::SgReady(2),
            LoadState::Setpoint { kw: 4.5 },
            LoadState::Switch(false),
            LoadState::Setpoint { kw: 4.2 }, // not behind the connection: a minimum of its own
        ]
    );
    // Share 1 (a normal stage) caps nothing.
    let c = caps(&three, &[connection("house-9", &["hp", "wb", "heater"])], 1.0);
    assert_eq!(c[1], LoadState::Setpoint { kw: 11.0 });
    assert_eq!(c[2], LoadState::Switch(true));
}

/// A heat pump, a wallbox on its own and two wallboxes behind one connection; the box has two contacts:
/// stage 1 = half of the power above the minimum, stages 2 and 3 = the minimum.
fn boxed() -> DemandParams {
    let mut hp = LoadParams::new("hp-1", LoadKind::SgReady, 6.0, 1);
    hp.max_blocked_s = Some(7200);
    let loads = vec![hp, setpoint("wb-1", 2), setpoint("wb-2", 3), setpoint("wb-3", 4)];
    let mut p = DemandParams::new("feeder-meter", 250.0, loads);
    p.seed = 11;
    let mut cb = ControlBoxParams::new(vec![22, 23]);
    cb.stages = Some(vec![1.0, 0.5, 0.0, 0.0]);
    cb.connection = vec![connection("house-7", &["wb-2", "wb-3"])];
    p.control_box = Some(cb);
    p
}

fn under_limit(_h: f64) -> f64 {
    100.0
}

#[test]
fn the_box_wins_over_a_city_event_and_the_config_limit_and_its_time_is_reported() {
    let p = boxed();
    assert_eq!(p.validate(), vec![]);
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, under_limit);
    sim.run_until(t0 + Duration::minutes(1));
    // a signed city event that does not bind (the feeder is at 100 kW)
    sim.input(Input::Event(DrEvent::limit("city-1", 0, t0, 7200, 200.0)));
    sim.run_until(t0 + Duration::minutes(2));
    assert_eq!(sim.d.limit(), (200.0, &LimitReason::Event("city-1".into())));
    assert_eq!(sim.shed_count(), 0);
    let st = sim.d.control_box().expect("configured");
    assert_eq!((st.state, st.stage, st.reduced_s), ("normal", 0, 0.0));

    // Contact 1 closes: stage 1 (share 0.5).
    let start = sim.now;
    sim.input(Input::ControlBox { contact: 0, closed: true });
    assert_eq!(sim.d.limit().1, &LimitReason::ControlBox);
    assert_eq!(sim.state("hp-1"), Some(LoadState::SgReady(1)), "6 kW does not fit in 4.2 + 0.5 × 1.8");
    assert_eq!(sim.state("wb-1"), Some(LoadState::Setpoint { kw: 7.6 }));
    // house-7: 7.56 + 0.5 × (22 - 7.56) = 14.78 kW; wb-3 (higher priority) at rated, wb-2 the rest
    assert_eq!(sim.state("wb-3"), Some(LoadState::Setpoint { kw: 11.0 }));
    assert_eq!(sim.state("wb-2"), Some(LoadState::Setpoint { kw: 3.7 }));
    assert!(sim.log.iter().filter(|a| a.reason == Reason::ControlBox).count() == 3);
    assert_eq!(sim.episodes.len(), 1);
    assert_eq!((sim.episodes[0].start, sim.episodes[0].end, sim.episodes[0].stage), (start, None, 1));
    let status = sim.statuses.last().expect("a status on the change").to_value();
    assert_eq!(status["limit_reason"], "control_box");
    assert_eq!(status["control_box"]["state"], "reduce");
    assert_eq!(status["control_box"]["stage"], 1);

    // Contact 2 closes too: stage 3, the minimum.
    sim.run_until(t0 + Duration::minutes(5));
    sim.input(Input::ControlBox { contact: 1, closed: true });
    assert_eq!(sim.state("wb-1"), Some(LoadState::Setpoint { kw: 4.2 }));
    assert_eq!(sim.state("wb-3"), Some(LoadState::Setpoint { kw: 7.5 }));
    assert_eq!(sim.state("wb-2"), Some(LoadState::Setpoint { kw: 0.0 }));
    assert_eq!(sim.episodes.len(), 1, "one episode across stages");

    // Held for half an hour: no restore above a cap, whatever the limits allow.
    sim.run_until(t0 + Duration::minutes(32));
    for (name, cap) in [("hp-1", LoadState::SgReady(1)), ("wb-1", LoadState::Setpoint { kw: 4.2 })] {
        assert_eq!(sim.state(name), Some(cap), "{name} stays capped");
    }
    assert!(sim.log.iter().all(|a| a.reason != Reason::Restore), "nothing restored while the box reduces");
    let reduced = sim.d.control_box().expect("configured").reduced_s;
    assert!(close(reduced, (sim.now - start).num_milliseconds() as f64 / 1000.0), "open episode counted: {reduced}");

    // Both contacts open: the episode ends, the event's limit is back, the loads come back staggered.
    sim.input(Input::ControlBox { contact: 0, closed: false });
    assert_eq!(sim.episodes.len(), 1, "stage 2 still reduces");
    let end = sim.now;
    sim.input(Input::ControlBox { contact: 1, closed: false });
    assert_eq!(sim.episodes.len(), 2);
    let ep = sim.episodes[1].clone();
    assert_eq!((ep.start, ep.end, ep.stage), (start, Some(end), 3));
    assert_eq!(ep.duration_s, Some((end - start).num_milliseconds() as f64 / 1000.0));
    assert_eq!(ep.to_value()["state"], "normal");
    assert_eq!(sim.d.limit(), (200.0, &LimitReason::Event("city-1".into())));
    assert_eq!(sim.statuses.last().expect("status").to_value()["control_box"]["state"], "normal");
    sim.run_until(end + Duration::hours(1));
    assert_eq!(sim.shed_count(), 0, "all restored");
    check_staggered(&sim.log, &p);
    let first_restore = sim.log.iter().find(|a| a.reason == Reason::Restore).expect("restores").at;
    assert!(first_restore - end >= Duration::seconds(i64::from(p.restore_delay_min_s)), "the first waits too");
    // the reduced time stays as it was
    let st = sim.d.control_box().expect("configured");
    assert_eq!((st.state, st.reduced_s), ("normal", ep.duration_s.unwrap_or(0.0)));

    // A second episode adds to the total.
    let start2 = sim.now;
    sim.input(Input::ControlBox { contact: 0, closed: true });
    sim.run_until(start2 + Duration::minutes(10));
    sim.input(Input::ControlBox { contact: 0, closed: false });
    assert!(close(sim.d.control_box().expect("configured").reduced_s, ep.duration_s.unwrap_or(0.0) + 600.0));
    check_commands_only_on_change(&sim.commands);
}

#[test]
fn a_tighter_limit_still_sheds_below_the_caps() {
    let p = boxed();
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, under_limit);
    sim.run_until(t0 + Duration::minutes(1));
    sim.input(Input::ControlBox { contact: 0, closed: true });
    // 100 - 6 (hp) - 3.4 (wb-1) - 7.3 (wb-2) = 83.3 kW; a city limit of 80 kW sheds more
    sim.input(Input::Event(DrEvent::limit("city-2", 0, t0, 3600, 80.0)));
    sim.run_until(t0 + Duration::minutes(3));
    let caps_kw = [("wb-1", 7.6), ("wb-2", 3.7), ("wb-3", 11.0)];
    for (name, cap) in caps_kw {
        match sim.state(name) {
            Some(LoadState::Setpoint { kw }) => assert!(kw <= cap + 1e-9, "{name} at {kw} above its cap {cap}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(sim.log.iter().any(|a| a.reason == Reason::OverLimit), "the event shed further");
    assert_eq!(sim.d.limit(), (80.0, &LimitReason::ControlBox));
}

#[test]
fn protection_times_come_first() {
    // The heat pump may stay blocked 15 min at most; after a forced release it runs for its recovery
    // time even though the box still reduces, then the box blocks it again.
    let mut p = boxed();
    p.load[0].max_blocked_s = Some(900);
    p.load[0].min_off_s = Some(300);
    p.load[0].min_on_s = Some(300);
    p.load[0].recovery_s = Some(600);
    p.restore_delay_max_s = 60;
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, under_limit);
    sim.run_until(t0 + Duration::minutes(1));
    sim.input(Input::ControlBox { contact: 0, closed: true });
    sim.run_until(t0 + Duration::minutes(40));
    let hp: Vec<&ActionLog> = sim.log.iter().filter(|a| a.load == "hp-1").collect();
    let reasons: Vec<Reason> = hp.iter().map(|a| a.reason).collect();
    assert_eq!(&reasons[..3], &[Reason::ControlBox, Reason::MaxBlocked, Reason::ControlBox], "{hp:?}");
    assert!(hp[1].at - hp[0].at <= Duration::seconds(900), "released within its maximum");
    assert!(hp[2].at - hp[1].at >= Duration::seconds(600), "not blocked again within its recovery time");
    check_device_limits(&sim.log.iter().filter(|a| a.load == "hp-1").cloned().collect::<Vec<_>>(), &p, sim.now);
}

#[test]
fn contacts_and_stages_map_as_configured() {
    let mut p = boxed();
    if let Some(cb) = p.control_box.as_mut() {
        cb.stages = Some(vec![1.0, 1.0, 0.0, 1.0]); // only contact 2 alone reduces
    }
    let t0 = day0();
    let mut sim = Sim::new(&p, t0, under_limit);
    sim.input(Input::ControlBox { contact: 0, closed: true });
    assert_eq!(sim.d.control_box().map(|s| (s.state, s.stage)), Some(("normal", 1)));
    assert_eq!(sim.shed_count(), 0);
    sim.input(Input::ControlBox { contact: 1, closed: true });
    assert_eq!(sim.d.control_box().map(|s| (s.state, s.stage)), Some(("normal", 3)));
    sim.input(Input::ControlBox { contact: 0, closed: false });
    assert_eq!(sim.d.control_box().map(|s| (s.state, s.stage)), Some(("reduce", 2)));
    assert_eq!(sim.state("wb-1"), Some(LoadState::Setpoint { kw: 4.2 }));
    // a contact the box does not have is ignored
    sim.input(Input::ControlBox { contact: 7, closed: true });
    assert_eq!(sim.d.control_box().map(|s| s.stage), Some(2));
    // without a configured box the input does nothing
    let mut plain = Demand::from_params(&small()).expect("valid");
    let out = plain.handle(t0, Input::ControlBox { contact: 0, closed: true });
    assert!(out.control_box.is_empty() && plain.control_box().is_none());
}

#[test]
fn control_box_params_are_checked() {
    let mut p = boxed();
    if let Some(cb) = p.control_box.as_mut() {
        cb.pins = vec![22, 22, 60];
        cb.stages = Some(vec![1.0, 1.5]);
        cb.debounce_ms = 60_000;
        cb.connection = vec![connection("bad name", &["wb-2"]), connection("h", &["wb-2", "nope"])];
    }
    p.load[0].output = Some(OutputSpec::Gpio { pins: vec![22, 5], active_low: false });
    let keys: Vec<String> = p.validate().into_iter().map(|pr| pr.key).collect();
    for k in [
        "demand_response.control_box.pins",
        "demand_response.control_box.pins[0]",
        "demand_response.control_box.pins[1]",
        "demand_response.control_box.pins[2]",
        "demand_response.control_box.debounce_ms",
        "demand_response.control_box.stages",
        "demand_response.control_box.stages[1]",
        "demand_response.control_box.connection[0].name",
        "demand_response.control_box.connection[0].loads",
        "demand_response.control_box.connection[1].loads[0]",
        "demand_response.control_box.connection[1].loads[1]",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not reported in {keys:?}");
    }
    // the TOML form, unknown keys refused
    let toml_ok: Result<ControlBoxParams, _> =
        serde_json::from_value(serde_json::json!({"pins": [22], "debounce_ms": 50}));
    let cb = toml_ok.expect("parses");
    assert_eq!((cb.active_low, cb.shares()), (true, vec![1.0, 0.0]));
    let unknown: Result<ControlBoxParams, _> = serde_json::from_value(serde_json::json!({"pins": [22], "pin": 3}));
    assert!(unknown.is_err());
}
