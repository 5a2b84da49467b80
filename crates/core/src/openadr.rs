//! OpenADR 3.1 events → the demand-response loop's events, and the loop's event reports → OpenADR
//! report values. Pure: the shell (`src/io/openadr/`) talks to the VTN with `openleadr-client` and
//! converts its wire types into the plain ones here (durations already in seconds).
//!
//! # Mapping
//! - Every interval of an event becomes one loop event, id `oadr:<event id>:<interval id>`
//!   ([`dr_event_id`]), so a report can say which interval it covers.
//! - An interval's period is its own `intervalPeriod`, else the event's: the event's period is the
//!   first interval's, and intervals without their own follow one another (OpenADR 3.1, "intervals").
//!   `randomizeStart` becomes the loop's random start (drawn once per booked version, the whole
//!   interval shifted). A duration of a year or more (OpenADR's `P9999Y`, "until further notice")
//!   runs until the VTN withdraws the event.
//! - `IMPORT_CAPACITY_LIMIT` → a feeder limit in kW (units `KW` or none, or `W`); `SIMPLE` → the
//!   loop's level (0 normal … 3 special; the level factors of the config); both → the tighter.
//!   Any other payload type makes the interval refused (reported, never half-applied).
//! - The version: `modificationDateTime` in seconds since 2020 ([`modification`]), for the reports. The
//!   loop replaces a booked VTN interval whenever the VTN's version differs from it in anything else
//!   (the VTN is the one source of its events; its times have whole seconds), and an unchanged one is
//!   acknowledged as stale and changes nothing ([`crate::control::demand::Input::VtnEvents`]).
//! - Priority is not used: every active event limits, and the tightest limit wins (as for the city's
//!   events).

use chrono::{DateTime, TimeZone, Utc};

use crate::control::demand::events::{MAX_EVENT_DURATION_S, MAX_RANDOM_START_S, VTN_PREFIX};
use crate::control::demand::{DrEvent, Report};

/// The highest SIMPLE level OpenADR defines (0 normal, 1 moderate, 2 high, 3 special).
pub const MAX_SIMPLE_LEVEL: i64 = 3;
/// A duration at least this long means "until the VTN withdraws the event".
pub const UNTIL_WITHDRAWN_S: u64 = 365 * 86_400;

/// A period as the VTN sent it (`intervalPeriod`), durations in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Period {
    pub start: Option<DateTime<Utc>>,
    pub duration_s: Option<u64>,
    pub randomize_s: Option<u64>,
}

/// One value of a payload: numbers are what the loop understands.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadValue {
    Number(f64),
    /// A boolean, string or point: no mapping takes one.
    Other,
}

/// One payload of an interval (`type`, `values`), with the units its event's descriptor gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The payload type as on the wire, e.g. `IMPORT_CAPACITY_LIMIT`.
    pub kind: String,
    pub units: Option<String>,
    pub values: Vec<PayloadValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub id: i32,
    pub period: Option<Period>,
    pub payloads: Vec<Payload>,
}

/// An event as the VEN reads it from the VTN.
#[derive(Debug, Clone, PartialEq)]
pub struct VtnEvent {
    pub id: String,
    pub program_id: String,
    pub modified: DateTime<Utc>,
    /// The event's default period (the first interval's).
    pub period: Option<Period>,
    pub intervals: Vec<Interval>,
}

/// An interval the gateway does not follow, and why (logged, counted and published once per version).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub event_id: String,
    pub interval_id: Option<i32>,
    pub reason: String,
}

/// An ISO 8601 duration (`PT15M`, `P1DT2H`, `P9999Y`, `P0Y0M0DT0H0M900S`) in whole seconds, saturating;
/// None if it is not one. Years count as 365 days and months as 30 (demand-response intervals are
/// minutes or hours; a year or more only says "until withdrawn"). Parsed here rather than with the
/// wire crate's calendar conversion, which panics on durations beyond the calendar (a hostile or
/// broken VTN must not stop the VEN).
pub fn duration_seconds(iso: &str) -> Option<u64> {
    let rest = iso.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    fn fields(part: &str, units: &[(char, f64)]) -> Option<f64> {
        let mut total = 0.0;
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let i = units.iter().skip(next_unit).position(|(u, _)| *u == c)? + next_unit;
            let n: f64 = number.parse().ok()?;
            total += n * units[i].1;
            number.clear();
            next_unit = i + 1;
        }
        number.is_empty().then_some(total)
    }
    const DAY: f64 = 86_400.0;
    let mut total = fields(date, &[('Y', 365.0 * DAY), ('M', 30.0 * DAY), ('W', 7.0 * DAY), ('D', DAY)])?;
    if let Some(t) = time {
        total += fields(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if rest.is_empty() || !total.is_finite() {
        return None;
    }
    // `as` saturates: anything beyond u64 is "forever" anyway.
    Some(total.max(0.0) as u64)
}

/// The loop's id for interval `interval` of VTN event `event`.
pub fn dr_event_id(event: &str, interval: i32) -> String {
    format!("{VTN_PREFIX}{event}:{interval}")
}

/// The VTN event id and interval id of a loop event id made by [`dr_event_id`].
pub fn parse_dr_event_id(id: &str) -> Option<(&str, i32)> {
    let rest = id.strip_prefix(VTN_PREFIX)?;
    let (event, interval) = rest.rsplit_once(':')?;
    Some((event, interval.parse().ok()?))
}

/// The version number of a VTN event: its modification time, seconds since 2020-01-01 (clamped).
pub fn modification(modified: DateTime<Utc>) -> u32 {
    let base = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).single().map_or(0, |t| t.timestamp());
    u32::try_from((modified.timestamp() - base).max(0)).unwrap_or(u32::MAX)
}

/// The loop events of `ev` and the intervals refused.
pub fn to_dr_events(ev: &VtnEvent) -> (Vec<DrEvent>, Vec<Refusal>) {
    let mut events = Vec::new();
    let mut refused = Vec::new();
    let refuse =
        |interval: Option<i32>, reason: String| Refusal { event_id: ev.id.clone(), interval_id: interval, reason };
    let default = ev.period.clone().unwrap_or_default();
    // The end of the previous interval: where one without its own start begins.
    let mut next_start = default.start;
    for iv in &ev.intervals {
        let own = iv.period.clone().unwrap_or_default();
        let start = own.start.or(next_start);
        let duration_s = own.duration_s.or(default.duration_s);
        let randomize_s = own.randomize_s.or(default.randomize_s).unwrap_or(0);
        next_start = match (start, duration_s) {
            (Some(s), Some(d)) if d < UNTIL_WITHDRAWN_S => {
                i64::try_from(d).ok().map(|d| s + chrono::Duration::seconds(d))
            }
            _ => None,
        };
        let Some(start) = start else {
            refused.push(refuse(Some(iv.id), "the interval has no start (no intervalPeriod)".into()));
            continue;
        };
        let duration_s = match duration_s {
            None => 0,
            Some(d) if d >= UNTIL_WITHDRAWN_S => 0,
            Some(0) => {
                refused.push(refuse(Some(iv.id), "the interval's duration is zero or unreadable".into()));
                continue;
            }
            Some(d) if d > MAX_EVENT_DURATION_S => {
                refused.push(refuse(Some(iv.id), format!("the interval lasts {d} s, longer than 31 days")));
                continue;
            }
            Some(d) => d,
        };
        let random_start_s = match u32::try_from(randomize_s) {
            Ok(r) if r <= MAX_RANDOM_START_S => r,
            _ => {
                refused.push(refuse(
                    Some(iv.id),
                    format!("randomizeStart {randomize_s} s is over {MAX_RANDOM_START_S} s"),
                ));
                continue;
            }
        };
        match signal(&iv.payloads) {
            Ok((limit_kw, level)) => events.push(DrEvent {
                id: dr_event_id(&ev.id, iv.id),
                modification: modification(ev.modified),
                start,
                duration_s,
                limit_kw,
                level,
                surplus: false,
                random_start_s,
                ramp_s: 0,
            }),
            Err(reason) => refused.push(refuse(Some(iv.id), reason)),
        }
    }
    if ev.intervals.is_empty() {
        refused.push(refuse(None, "the event has no intervals".into()));
    }
    (events, refused)
}

/// The limit (kW) and SIMPLE level of an interval's payloads.
fn signal(payloads: &[Payload]) -> Result<(Option<f64>, Option<i32>), String> {
    let mut limit_kw: Option<f64> = None;
    let mut level: Option<i32> = None;
    for p in payloads {
        let v = match p.values.as_slice() {
            [PayloadValue::Number(v)] if v.is_finite() => *v,
            _ => return Err(format!("{}: expected one number", p.kind)),
        };
        match p.kind.as_str() {
            "IMPORT_CAPACITY_LIMIT" => {
                let kw = match p.units.as_deref() {
                    None | Some("KW") => v,
                    Some("W") => v / 1000.0,
                    Some(u) => return Err(format!("IMPORT_CAPACITY_LIMIT in {u}: expected KW or W")),
                };
                if !(0.0..=1_000_000.0).contains(&kw) {
                    return Err(format!("IMPORT_CAPACITY_LIMIT {kw} kW is out of range"));
                }
                limit_kw = Some(limit_kw.map_or(kw, |l| l.min(kw)));
            }
            "SIMPLE" => {
                if v.fract() != 0.0 || !(0.0..=MAX_SIMPLE_LEVEL as f64).contains(&v) {
                    return Err(format!("SIMPLE level {v}: expected 0..={MAX_SIMPLE_LEVEL}"));
                }
                let l = v as i32;
                level = Some(level.map_or(l, |x| x.max(l)));
            }
            other => return Err(format!("payload type {other} is not supported (IMPORT_CAPACITY_LIMIT, SIMPLE)")),
        }
    }
    if limit_kw.is_none() && level.is_none() {
        return Err("the interval has no payload".into());
    }
    Ok((limit_kw, level))
}

/// What the VEN reports to the VTN for one interval it followed.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalReport {
    pub event_id: String,
    pub interval_id: i32,
    pub start: DateTime<Utc>,
    pub duration_s: u64,
    /// Mean and peak of the measured feeder power, kW (None: no valid reading).
    pub mean_kw: Option<f64>,
    pub peak_kw: Option<f64>,
    /// The load shed: energy the loads did not draw (their estimated reduction integrated), kWh.
    pub shed_kwh: f64,
    /// Each load's time blocked or reduced, s.
    pub loads_blocked_s: Vec<(String, f64)>,
    pub cancelled: bool,
}

/// The report of a loop event that came from the VTN (None for the city's events and windows).
pub fn interval_report(r: &Report) -> Option<IntervalReport> {
    let crate::control::demand::ReportScope::Event { id, cancelled, .. } = &r.scope else { return None };
    let (event, interval) = parse_dr_event_id(id)?;
    Some(IntervalReport {
        event_id: event.to_string(),
        interval_id: interval,
        start: r.start,
        duration_s: u64::try_from((r.end - r.start).num_seconds()).unwrap_or(0),
        mean_kw: r.mean_kw,
        peak_kw: r.peak_kw,
        shed_kwh: r.energy_shifted_kwh,
        loads_blocked_s: r.loads.iter().map(|(n, l)| (n.clone(), l.blocked_s)).collect(),
        cancelled: *cancelled,
    })
}

#[cfg(test)]
mod tests;
