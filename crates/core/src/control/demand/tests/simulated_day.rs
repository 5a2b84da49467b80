//! The simulated winter day of a district: the feeder stays under its limit, matching an independent calculation.

use super::*;

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
