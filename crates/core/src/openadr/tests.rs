use chrono::Duration;

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).single().expect("valid time")
}

fn num(kind: &str, v: f64) -> Payload {
    Payload { kind: kind.into(), units: None, values: vec![PayloadValue::Number(v)] }
}

fn interval(id: i32, period: Option<Period>, payloads: Vec<Payload>) -> Interval {
    Interval { id, period, payloads }
}

fn event(period: Option<Period>, intervals: Vec<Interval>) -> VtnEvent {
    VtnEvent { id: "e-42".into(), program_id: "p-1".into(), modified: t0(), period, intervals }
}

fn period(start: Option<DateTime<Utc>>, duration_s: Option<u64>, randomize_s: Option<u64>) -> Option<Period> {
    Some(Period { start, duration_s, randomize_s })
}

#[test]
fn a_limit_interval_becomes_one_loop_event() {
    let ev = event(
        period(Some(t0()), Some(600), Some(30)),
        vec![interval(0, None, vec![num("IMPORT_CAPACITY_LIMIT", 30.0)])],
    );
    let (events, refused) = to_dr_events(&ev);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        events,
        vec![DrEvent {
            id: "oadr:e-42:0".into(),
            modification: modification(t0()),
            start: t0(),
            duration_s: 600,
            limit_kw: Some(30.0),
            level: None,
            surplus: false,
            random_start_s: 30,
            ramp_s: 0,
        }]
    );
    assert_eq!(parse_dr_event_id("oadr:e-42:0"), Some(("e-42", 0)));
    assert_eq!(parse_dr_event_id("oadr:a:b:7"), Some(("a:b", 7)));
    assert_eq!(parse_dr_event_id("city-1"), None);
    assert_eq!(parse_dr_event_id("oadr:e-42:x"), None);
}

#[test]
fn intervals_without_a_period_follow_one_another_and_an_own_start_wins() {
    let ev = event(
        period(Some(t0()), Some(900), None),
        vec![
            interval(0, None, vec![num("IMPORT_CAPACITY_LIMIT", 40.0)]),
            interval(1, None, vec![num("IMPORT_CAPACITY_LIMIT", 30.0)]),
            interval(2, period(Some(t0() + Duration::hours(2)), Some(300), None), vec![num("SIMPLE", 2.0)]),
            interval(3, None, vec![num("SIMPLE", 1.0)]),
        ],
    );
    let (events, refused) = to_dr_events(&ev);
    assert!(refused.is_empty(), "{refused:?}");
    let starts: Vec<(DateTime<Utc>, u64)> = events.iter().map(|e| (e.start, e.duration_s)).collect();
    assert_eq!(
        starts,
        vec![
            (t0(), 900),
            (t0() + Duration::seconds(900), 900),
            (t0() + Duration::hours(2), 300),
            (t0() + Duration::hours(2) + Duration::seconds(300), 900),
        ]
    );
    assert_eq!(events[2].level, Some(2));
    assert_eq!(events[2].limit_kw, None);
}

#[test]
fn units_levels_and_until_withdrawn() {
    let mut w = num("IMPORT_CAPACITY_LIMIT", 25_000.0);
    w.units = Some("W".into());
    let ev = event(
        period(Some(t0()), Some(9999 * 365 * 86_400), None),
        vec![interval(0, None, vec![w, num("IMPORT_CAPACITY_LIMIT", 30.0), num("SIMPLE", 1.0), num("SIMPLE", 3.0)])],
    );
    let (events, refused) = to_dr_events(&ev);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!((events[0].limit_kw, events[0].level, events[0].duration_s), (Some(25.0), Some(3), 0));
}

#[test]
fn unsupported_or_malformed_intervals_are_refused_and_the_rest_followed() {
    let mut kwh = num("IMPORT_CAPACITY_LIMIT", 3.0);
    kwh.units = Some("KWH".into());
    let ev = event(
        period(Some(t0()), Some(600), None),
        vec![
            interval(0, None, vec![num("PRICE", 0.3)]),
            interval(1, None, vec![num("IMPORT_CAPACITY_LIMIT", 30.0)]),
            interval(2, None, vec![Payload { kind: "SIMPLE".into(), units: None, values: vec![PayloadValue::Other] }]),
            interval(3, None, vec![num("SIMPLE", 4.0)]),
            interval(4, None, vec![num("SIMPLE", 1.5)]),
            interval(5, None, vec![kwh]),
            interval(6, None, vec![num("IMPORT_CAPACITY_LIMIT", -1.0)]),
            interval(7, None, vec![]),
            interval(8, period(None, Some(40 * 86_400), None), vec![num("SIMPLE", 1.0)]),
            interval(9, period(Some(t0()), Some(60), Some(7200)), vec![num("SIMPLE", 1.0)]),
            interval(10, period(Some(t0()), Some(0), None), vec![num("SIMPLE", 1.0)]),
            interval(11, None, vec![Payload { kind: "SIMPLE".into(), units: None, values: vec![] }]),
        ],
    );
    let (events, refused) = to_dr_events(&ev);
    assert_eq!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["oadr:e-42:1"]);
    let ids: Vec<Option<i32>> = refused.iter().map(|r| r.interval_id).collect();
    assert_eq!(ids, (0..12).filter(|i| *i != 1).map(Some).collect::<Vec<_>>());
    assert!(refused[0].reason.contains("PRICE"), "{}", refused[0].reason);
    // No start anywhere: refused, saying so.
    let (events, refused) = to_dr_events(&event(None, vec![interval(0, None, vec![num("SIMPLE", 1.0)])]));
    assert!(events.is_empty());
    assert!(refused[0].reason.contains("no start"));
    let (_, refused) = to_dr_events(&event(None, vec![]));
    assert_eq!(refused[0].interval_id, None);
}

#[test]
fn modification_follows_the_modification_time() {
    assert!(modification(t0() + Duration::seconds(1)) > modification(t0()));
    assert_eq!(modification(Utc.with_ymd_and_hms(2019, 1, 1, 0, 0, 0).single().expect("time")), 0);
}

#[test]
fn only_reports_of_vtn_events_go_back_to_the_vtn() {
    use crate::control::demand::{LoadReport, ReportScope};
    let mut r = Report {
        scope: ReportScope::Event { id: "oadr:e-42:3".into(), modification: 1, cancelled: false },
        start: t0(),
        end: t0() + Duration::seconds(600),
        partial: false,
        energy_shifted_kwh: 1.5,
        minutes_over_limit: 0.0,
        peak_kw: Some(33.0),
        mean_kw: Some(29.5),
        min_limit_kw: Some(30.0),
        loads: vec![("hp-1".into(), LoadReport { blocked_s: 600.0, boosted_s: 0.0 })],
        invalid_readings: 0,
    };
    let ir = interval_report(&r).expect("a VTN event's report");
    assert_eq!((ir.event_id.as_str(), ir.interval_id, ir.duration_s), ("e-42", 3, 600));
    assert_eq!((ir.mean_kw, ir.peak_kw, ir.shed_kwh), (Some(29.5), Some(33.0), 1.5));
    assert_eq!(ir.loads_blocked_s, vec![("hp-1".to_string(), 600.0)]);
    r.scope = ReportScope::Event { id: "city-1".into(), modification: 1, cancelled: false };
    assert_eq!(interval_report(&r), None);
    r.scope = ReportScope::Window;
    assert_eq!(interval_report(&r), None);
}

#[test]
fn iso8601_durations_in_seconds_never_panic() {
    assert_eq!(duration_seconds("PT15M"), Some(900));
    assert_eq!(duration_seconds("PT1H30M"), Some(5400));
    assert_eq!(duration_seconds("P1DT2H"), Some(93_600));
    assert_eq!(duration_seconds("P0Y0M0DT0H0M900S"), Some(900)); // openleadr-wire's own form
    assert_eq!(duration_seconds("PT0.5S"), Some(0));
    assert_eq!(duration_seconds("PT1,5M"), Some(90));
    assert_eq!(duration_seconds("P2W"), Some(14 * 86_400));
    assert!(duration_seconds("P9999Y").is_some_and(|s| s >= UNTIL_WITHDRAWN_S));
    assert_eq!(duration_seconds("P99999999999999999999999999999Y"), Some(u64::MAX));
    for bad in ["", "P", "PT", "15M", "PT15", "P1H", "PT1M1H", "P1Y1Y", "PTxM", "P1..2D", "P-1D", "PT1S2"] {
        assert_eq!(duration_seconds(bad), None, "{bad}");
    }
}
