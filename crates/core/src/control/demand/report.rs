//! Aggregate reports: per report window (aligned to midnight UTC) and per city event (from the time it
//! became active to its end or cancel): the energy shifted (the loads' estimated reduction integrated over
//! time), the minutes the feeder's measured power was above the limit in force, the peak, and each load's
//! time blocked/reduced and encouraged. Only aggregates: no reading-level data.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// What a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportScope {
    Window,
    Event { id: String, modification: u32, cancelled: bool },
}

/// One load's share of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadReport {
    /// Time blocked (SG-Ready 1, switch off) or reduced (setpoint below rated), s.
    pub blocked_s: f64,
    /// Time encouraged or forced on by a surplus (SG-Ready 3/4), s.
    pub boosted_s: f64,
}

/// One aggregate report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub scope: ReportScope,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Not a whole window (the loop started inside it, or the clock jumped).
    pub partial: bool,
    /// The loads' estimated reduction integrated over the time they were shed, kWh.
    pub energy_shifted_kwh: f64,
    /// Time the measured feeder power was above the limit in force, min.
    pub minutes_over_limit: f64,
    /// Highest valid meter reading in the period, kW.
    pub peak_kw: Option<f64>,
    /// Mean of the valid meter readings in the period, kW.
    pub mean_kw: Option<f64>,
    /// Tightest limit in force during the period, kW.
    pub min_limit_kw: Option<f64>,
    /// In config order.
    pub loads: Vec<(String, LoadReport)>,
    /// Meter readings ignored as invalid (NaN, negative, absurd).
    pub invalid_readings: u64,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    pub fn load(&self, name: &str) -> Option<LoadReport> {
        self.loads.iter().find(|(n, _)| n == name).map(|(_, r)| *r)
    }

    /// Sum of the loads' blocked time, s.
    pub fn total_blocked_s(&self) -> f64 {
        self.loads.iter().map(|(_, r)| r.blocked_s).sum()
    }

    /// `{"scope":"window"|"event","event_id","modification","cancelled","start","end","partial",
    /// "energy_shifted_kwh","minutes_over_limit","peak_kw","mean_kw","min_limit_kw","invalid_readings",
    /// "loads":{"hp-12":{"blocked_s","boosted_s"}}}`.
    pub fn to_value(&self) -> Value {
        let mut loads = Map::new();
        for (n, r) in &self.loads {
            loads.insert(n.clone(), json!({"blocked_s": r3(r.blocked_s), "boosted_s": r3(r.boosted_s)}));
        }
        let mut v = json!({
            "scope": match self.scope { ReportScope::Window => "window", ReportScope::Event { .. } => "event" },
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "partial": self.partial,
            "energy_shifted_kwh": r3(self.energy_shifted_kwh),
            "minutes_over_limit": r3(self.minutes_over_limit),
            "peak_kw": self.peak_kw.map(r3),
            "mean_kw": self.mean_kw.map(r3),
            "min_limit_kw": self.min_limit_kw.map(r3),
            "invalid_readings": self.invalid_readings,
            "loads": loads,
        });
        if let (ReportScope::Event { id, modification, cancelled }, Some(o)) = (&self.scope, v.as_object_mut()) {
            o.insert("event_id".into(), json!(id));
            o.insert("modification".into(), json!(modification));
            o.insert("cancelled".into(), json!(cancelled));
        }
        v
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// The state of the loop over a span of time (piecewise constant between two calls).
pub(crate) struct Span<'a> {
    pub dt_s: f64,
    pub over: bool,
    pub limit_kw: f64,
    pub blocked: &'a [bool],
    pub boosted: &'a [bool],
    /// Estimated reduction of each load, kW (0 when not shed).
    pub shed_kw: &'a [f64],
}

/// A report being accumulated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Acc {
    pub start: DateTime<Utc>,
    pub partial: bool,
    energy_kwh: f64,
    over_s: f64,
    peak_kw: Option<f64>,
    /// Sum and number of the valid readings, for the mean.
    sum_kw: f64,
    readings: u64,
    min_limit_kw: Option<f64>,
    blocked_s: Vec<f64>,
    boosted_s: Vec<f64>,
    invalid: u64,
}

impl Acc {
    pub fn new(start: DateTime<Utc>, loads: usize, partial: bool) -> Acc {
        Acc {
            start,
            partial,
            energy_kwh: 0.0,
            over_s: 0.0,
            peak_kw: None,
            sum_kw: 0.0,
            readings: 0,
            min_limit_kw: None,
            blocked_s: vec![0.0; loads],
            boosted_s: vec![0.0; loads],
            invalid: 0,
        }
    }

    pub fn add_span(&mut self, s: &Span<'_>) {
        if !(s.dt_s.is_finite() && s.dt_s > 0.0) {
            return;
        }
        if s.over {
            self.over_s += s.dt_s;
        }
        self.min_limit_kw = Some(self.min_limit_kw.map_or(s.limit_kw, |m| m.min(s.limit_kw)));
        for i in 0..self.blocked_s.len() {
            if s.blocked.get(i).copied().unwrap_or(false) {
                self.blocked_s[i] += s.dt_s;
                self.energy_kwh += s.shed_kw.get(i).copied().unwrap_or(0.0).max(0.0) * s.dt_s / 3600.0;
            }
            if s.boosted.get(i).copied().unwrap_or(false) {
                self.boosted_s[i] += s.dt_s;
            }
        }
    }

    pub fn add_reading(&mut self, kw: f64) {
        self.peak_kw = Some(self.peak_kw.map_or(kw, |p| p.max(kw)));
        self.sum_kw += kw;
        self.readings += 1;
    }

    pub fn add_invalid(&mut self) {
        self.invalid += 1;
    }

    pub fn finish(self, scope: ReportScope, end: DateTime<Utc>, names: &[String]) -> Report {
        Report {
            scope,
            start: self.start,
            end,
            partial: self.partial,
            energy_shifted_kwh: self.energy_kwh,
            minutes_over_limit: self.over_s / 60.0,
            peak_kw: self.peak_kw,
            mean_kw: (self.readings > 0).then(|| self.sum_kw / self.readings as f64),
            min_limit_kw: self.min_limit_kw,
            loads: names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let r = LoadReport {
                        blocked_s: self.blocked_s.get(i).copied().unwrap_or(0.0),
                        boosted_s: self.boosted_s.get(i).copied().unwrap_or(0.0),
                    };
                    (n.clone(), r)
                })
                .collect(),
            invalid_readings: self.invalid,
        }
    }
}
