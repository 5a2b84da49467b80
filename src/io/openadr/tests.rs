//! The wire conversions, on JSON as the VTN sends it (openleadr-vtn's field names, OpenADR 3.1).

use chrono::{TimeZone, Utc};

use super::wire;
use crate::openadr::{to_dr_events, IntervalReport, PayloadValue};

const EVENT: &str = r#"{
  "id": "c5a9f7e6-0000-4000-8000-000000000001",
  "createdDateTime": "2026-12-04T11:59:00Z",
  "modificationDateTime": "2026-12-04T12:00:00Z",
  "objectType": "EVENT",
  "programID": "p-1",
  "eventName": "evening peak",
  "priority": 1,
  "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KW"}],
  "intervalPeriod": {"start": "2026-12-04T17:00:00Z", "duration": "PT15M", "randomizeStart": "PT2M"},
  "intervals": [
    {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [30]}]},
    {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [27.5]}]},
    {"id": 2, "payloads": [{"type": "PRICE", "values": [0.31]}]}
  ]
}"#;

#[test]
fn an_event_from_the_vtn_maps_to_loop_events() {
    let e: openleadr_wire::Event = serde_json::from_str(EVENT).expect("an OpenADR 3.1 event");
    let v = wire::vtn_event(&e);
    assert_eq!(v.intervals.len(), 3);
    assert_eq!(v.intervals[0].payloads[0].units.as_deref(), Some("KW"));
    assert_eq!(v.intervals[0].payloads[0].values, vec![PayloadValue::Number(30.0)]);
    let period = v.period.clone().expect("period");
    assert_eq!((period.duration_s, period.randomize_s), (Some(900), Some(120)));
    let (events, refused) = to_dr_events(&v);
    let start = Utc.with_ymd_and_hms(2026, 12, 4, 17, 0, 0).single().expect("time");
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].start, events[0].limit_kw, events[0].random_start_s), (start, Some(30.0), 120));
    assert_eq!((events[1].start, events[1].limit_kw), (start + chrono::Duration::minutes(15), Some(27.5)));
    assert_eq!(events[1].id, "oadr:c5a9f7e6-0000-4000-8000-000000000001:1");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].reason.contains("PRICE"));
}

#[test]
fn a_report_has_the_feeder_and_each_load() {
    let r = IntervalReport {
        event_id: "ev-1".into(),
        interval_id: 1,
        start: Utc.with_ymd_and_hms(2026, 12, 4, 17, 0, 0).single().expect("time"),
        duration_s: 900,
        mean_kw: Some(29.25),
        peak_kw: Some(31.0),
        shed_kwh: 1.5,
        loads_blocked_s: vec![("hp-1".into(), 900.0), ("wb-1".into(), 0.0)],
        cancelled: false,
    };
    let req = wire::report_request(&r, "ev-1".parse().expect("id"), "gw-7");
    let v = serde_json::to_value(&req).expect("json");
    assert_eq!(v["eventID"], "ev-1");
    assert_eq!(v["clientName"], "gw-7");
    let res = v["resources"].as_array().expect("resources");
    assert_eq!(res.len(), 3);
    assert_eq!(res[0]["resourceName"], "AGGREGATED_REPORT");
    assert_eq!(res[0]["intervalPeriod"]["duration"], "P0Y0M0DT0H0M900S"); // the crate's ISO 8601 form
    let payloads = &res[0]["intervals"][0]["payloads"];
    assert_eq!(payloads[0], serde_json::json!({"type": "DEMAND", "values": [29.25]}));
    assert_eq!(payloads[1], serde_json::json!({"type": "DELTA_USAGE", "values": [-1.5]}));
    assert_eq!(res[1]["resourceName"], "hp-1");
    assert_eq!(
        res[1]["intervals"][0]["payloads"][0],
        serde_json::json!({"type": "BLOCKED_SECONDS", "values": [900.0]})
    );
    // And the VTN's own type reads it back.
    let back: openleadr_wire::report::ReportRequest = serde_json::from_value(v).expect("a ReportRequest");
    assert_eq!(back.resources.len(), 3);
}
