//! The retained `dr/status`: its payload and JSON shape, and when the loop publishes it.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{rfc3339, ControlBoxStatus, Demand, LimitReason, LoadState, Output};

/// A load's entry in [`DrStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadStatus {
    pub state: LoadState,
    pub label: &'static str,
    pub since: DateTime<Utc>,
}

/// The retained `dr/status` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct DrStatus {
    pub at: DateTime<Utc>,
    pub limit_kw: f64,
    pub limit_reason: LimitReason,
    /// The last valid reading (None: none yet, or the meter is lost).
    pub measured_kw: Option<f64>,
    pub meter_ok: bool,
    /// `ok`, `lost` or `unsupervised` (no heartbeat heard yet, or supervision off).
    pub heartbeat: &'static str,
    pub surplus: bool,
    /// Ids of the active (applied) city events.
    pub active_events: Vec<String>,
    /// In config order.
    pub loads: Vec<(String, LoadStatus)>,
    pub invalid_readings: u64,
    /// The §14a control box, if one is configured.
    pub control_box: Option<ControlBoxStatus>,
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl DrStatus {
    pub fn load(&self, name: &str) -> Option<&LoadStatus> {
        self.loads.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// PRODUCT.md's `{"at","limit_kw","limit_reason","measured_kw","loads":{"hp-12":{"state","since"}}}`,
    /// plus `meter_ok`, `heartbeat`, `surplus`, `active_events`, `invalid_readings` and per load the
    /// commanded value (`sg_ready` / `setpoint_kw` / `on`); with a control box, `control_box`
    /// (`state`, `stage`, `since`, `reduced_s`).
    pub fn to_value(&self) -> Value {
        let mut loads = Map::new();
        for (n, s) in &self.loads {
            let mut v = json!({"state": s.label, "since": rfc3339(s.since)});
            if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), s.state.to_value()) {
                o.extend(extra);
            }
            loads.insert(n.clone(), v);
        }
        let mut v = json!({
            "at": rfc3339(self.at),
            "limit_kw": r3(self.limit_kw),
            "limit_reason": self.limit_reason.to_string(),
            "measured_kw": self.measured_kw.map(r3),
            "meter_ok": self.meter_ok,
            "heartbeat": self.heartbeat,
            "surplus": self.surplus,
            "active_events": self.active_events,
            "invalid_readings": self.invalid_readings,
            "loads": loads,
        });
        if let (Some(b), Some(o)) = (&self.control_box, v.as_object_mut()) {
            o.insert("control_box".into(), b.to_value());
        }
        v
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

impl Demand {
    pub(super) fn status(&mut self, now: DateTime<Utc>, out: &mut Output) {
        let meter_ok = !self.meter_lost(now) && self.reading.is_some();
        let (_, surplus, active, _) = self.limit_in_force(now);
        let st = DrStatus {
            at: now,
            limit_kw: self.limit.0,
            limit_reason: self.limit.1.clone(),
            measured_kw: if meter_ok { self.reading.map(|r| r.kw) } else { None },
            meter_ok,
            heartbeat: match self.heartbeat_lost(now) {
                None => "unsupervised",
                Some(true) => "lost",
                Some(false) => "ok",
            },
            surplus,
            active_events: active,
            loads: self
                .loads
                .iter()
                .map(|l| {
                    (
                        l.p.name.clone(),
                        LoadStatus { state: l.state, label: l.state.label(l.p.rated_kw), since: l.since },
                    )
                })
                .collect(),
            invalid_readings: self.invalid_readings,
            control_box: self.control_box(),
        };
        let changed = match &self.last_status {
            None => true,
            Some(o) => {
                // a ramping limit is re-published per 0.5 kW, not on every call
                (o.limit_kw - st.limit_kw).abs() >= 0.5
                    || o.limit_reason != st.limit_reason
                    || o.meter_ok != st.meter_ok
                    || o.heartbeat != st.heartbeat
                    || o.surplus != st.surplus
                    || o.active_events != st.active_events
                    || o.loads != st.loads
                    || o.control_box.as_ref().map(|b| (b.state, b.stage))
                        != st.control_box.as_ref().map(|b| (b.state, b.stage))
            }
        };
        let due = self.mono >= self.last_status_mono.saturating_add(i64::from(self.p.status_interval_s) * 1000);
        if changed || due {
            self.last_status = Some(st.clone());
            self.last_status_mono = self.mono;
            out.status = Some(st);
        }
    }
}
