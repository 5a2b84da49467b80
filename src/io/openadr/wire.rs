//! openleadr-wire's types ↔ the core's plain ones: an event as read from the VTN into
//! [`crate::openadr::VtnEvent`] (ISO 8601 durations to seconds at their start), and an
//! [`IntervalReport`] into a `ReportRequest`.

use openleadr_wire::event::{Event, EventInterval};
use openleadr_wire::interval::{Interval as WireInterval, IntervalPeriod};
use openleadr_wire::report::{ReportPayloadDescriptor, ReportRequest, ReportResource, ReportType, ResourceName};
use openleadr_wire::values_map::{Value, ValueType, ValuesMap};
use openleadr_wire::Unit;

use crate::openadr::{Interval, IntervalReport, Payload, PayloadValue, Period, VtnEvent};

/// The client name the gateway's reports carry (the VEN's name).
pub const REPORT_NAME: &str = "district-gateway demand response";

/// An enum's wire name (`IMPORT_CAPACITY_LIMIT`, `KW`), through its serde form.
fn wire_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A duration in seconds, by the core's parser (the wire crate's own conversion panics beyond the
/// calendar); 0 if unreadable, which refuses the interval.
fn seconds(d: &openleadr_wire::Duration) -> u64 {
    crate::openadr::duration_seconds(&d.to_string()).unwrap_or(0)
}

fn period(p: &IntervalPeriod) -> Period {
    Period {
        start: Some(p.start),
        duration_s: p.duration.as_ref().map(seconds),
        randomize_s: p.randomize_start.as_ref().map(seconds),
    }
}

fn interval(iv: &EventInterval, units: &[(String, String)]) -> Interval {
    Interval {
        id: iv.id,
        period: iv.interval_period.as_ref().map(period),
        payloads: iv
            .payloads
            .iter()
            .map(|m| {
                let kind = wire_name(&m.value_type);
                Payload {
                    units: units.iter().find(|(k, _)| *k == kind).map(|(_, u)| u.clone()),
                    values: m
                        .values
                        .iter()
                        .map(|v| match v {
                            Value::Integer(i) => PayloadValue::Number(*i as f64),
                            Value::Number(n) => PayloadValue::Number(*n),
                            _ => PayloadValue::Other,
                        })
                        .collect(),
                    kind,
                }
            })
            .collect(),
    }
}

/// The mapped loop events and refusals of an event as JSON from the VTN (None: not an event), for the
/// fuzz target: the VEN's whole path from the VTN's bytes to the loop's events.
pub fn map_json(bytes: &[u8]) -> Option<(Vec<crate::control::demand::DrEvent>, Vec<crate::openadr::Refusal>)> {
    let e: Event = serde_json::from_slice(bytes).ok()?;
    Some(crate::openadr::to_dr_events(&vtn_event(&e)))
}

/// The core's view of an event read from the VTN.
pub fn vtn_event(e: &Event) -> VtnEvent {
    let c = &e.content;
    let units: Vec<(String, String)> = c
        .payload_descriptors
        .iter()
        .flatten()
        .filter_map(|d| Some((wire_name(&d.payload_type), wire_name(d.units.as_ref()?))))
        .collect();
    VtnEvent {
        id: e.id.as_str().to_string(),
        program_id: c.program_id.as_str().to_string(),
        modified: e.modification_date_time,
        period: c.interval_period.as_ref().map(period),
        intervals: c.intervals.iter().flatten().map(|iv| interval(iv, &units)).collect(),
    }
}

fn number(kind: &str, v: f64) -> ValuesMap {
    ValuesMap { value_type: ValueType(kind.to_string()), values: vec![Value::Number(v)] }
}

fn duration(s: u64) -> Option<openleadr_wire::Duration> {
    format!("PT{s}S").parse().ok()
}

/// The report of one interval: the feeder as a whole (`AGGREGATED_REPORT`: mean and peak of the
/// measured power in kW as `DEMAND`, the energy the loads did not draw as `DELTA_USAGE` in kWh, negative:
/// less than without the event) and each load (its time blocked or reduced, s, as the private
/// `BLOCKED_SECONDS`). Values only where there are some (no reading: no `DEMAND`).
pub fn report_request(
    r: &IntervalReport,
    event_id: openleadr_wire::event::EventId,
    client_name: &str,
) -> ReportRequest {
    let period = IntervalPeriod { start: r.start, duration: duration(r.duration_s), randomize_start: None };
    let mut feeder = Vec::new();
    if let Some(m) = r.mean_kw {
        feeder.push(number("DEMAND", m));
    }
    feeder.push(number("DELTA_USAGE", -r.shed_kwh));
    let mut resources = vec![ReportResource {
        resource_name: ResourceName::AggregatedReport,
        interval_period: Some(period.clone()),
        intervals: vec![WireInterval { id: r.interval_id, interval_period: None, payloads: feeder }],
    }];
    if let Some(p) = r.peak_kw {
        resources[0].intervals[0].payloads.push(number("DEMAND_PEAK", p));
    }
    for (load, blocked_s) in &r.loads_blocked_s {
        resources.push(ReportResource {
            resource_name: ResourceName::Private(load.clone()),
            interval_period: Some(period.clone()),
            intervals: vec![WireInterval {
                id: r.interval_id,
                interval_period: None,
                payloads: vec![number("BLOCKED_SECONDS", *blocked_s)],
            }],
        });
    }
    let descriptor =
        |t: ReportType, units: Option<Unit>| ReportPayloadDescriptor { units, ..ReportPayloadDescriptor::new(t) };
    ReportRequest {
        event_id,
        client_name: client_name.to_string(),
        report_name: Some(format!(
            "{REPORT_NAME}, interval {}{}",
            r.interval_id,
            if r.cancelled { " (withdrawn)" } else { "" }
        )),
        payload_descriptors: Some(vec![
            descriptor(ReportType::Demand, Some(Unit::KW)),
            descriptor(ReportType::DeltaUsage, Some(Unit::KWH)),
            descriptor(ReportType::Private("DEMAND_PEAK".into()), Some(Unit::KW)),
            descriptor(ReportType::Private("BLOCKED_SECONDS".into()), None),
        ]),
        resources,
    }
}
