//! What a call produces: lamp commands, retained zone states and events, with their JSON shapes.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::energy::EnergyReport;
use super::{rfc3339, Reason};

/// One downlink to a lamp controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LampCommand {
    pub zone: String,
    pub lamp: String,
    pub level_pct: u8,
    pub reason: Reason,
    /// Fade time for controllers that can fade (0 = jump).
    pub ramp_s: u32,
    /// A re-send of an unacknowledged command.
    pub retry: bool,
}

/// A lamp's entry in [`ZoneState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LampLevel {
    pub level_pct: u8,
    pub reason: Reason,
}

/// The retained `lighting/{zone}` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneState {
    pub zone: String,
    pub at: DateTime<Utc>,
    /// In the zone's lamp order.
    pub lamps: Vec<(String, LampLevel)>,
    pub safe_mode: bool,
    pub override_until: Option<DateTime<Utc>>,
}

impl ZoneState {
    pub fn lamp(&self, name: &str) -> Option<LampLevel> {
        self.lamps.iter().find(|(n, _)| n == name).map(|(_, l)| *l)
    }

    pub fn to_value(&self) -> Value {
        let mut lamps = Map::new();
        for (name, l) in &self.lamps {
            lamps.insert(name.clone(), json!({"level_pct": l.level_pct, "reason": l.reason.as_str()}));
        }
        json!({
            "zone": self.zone,
            "at": rfc3339(self.at),
            "lamps": lamps,
            "mode": if self.safe_mode { "safe" } else { "normal" },
            "override_until": self.override_until.map(rfc3339),
        })
    }

    /// `{"zone","at","lamps":{"lamp-01":{"level_pct":100,"reason":"presence"}},"mode","override_until"}`.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// What happened, for `event/{device}` (or a zone-level event topic).
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A lamp did not acknowledge `level_pct` after `attempts` sends.
    LampFault {
        lamp: String,
        level_pct: u8,
        attempts: u32,
    },
    LampRecovered {
        lamp: String,
    },
    /// Fail-safe entered for `lamps`.
    SensorSilent {
        sensor: String,
        last_heard: DateTime<Utc>,
        lamps: Vec<String>,
    },
    /// Fail-safe left.
    SensorRecovered {
        sensor: String,
    },
    /// Safe mode entered.
    ClockUntrusted {
        build_date: DateTime<Utc>,
    },
    /// Safe mode left.
    ClockTrusted,
    OverrideStarted {
        level_pct: u8,
        until: DateTime<Utc>,
    },
    OverrideEnded {
        cleared: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub zone: String,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
}

impl Event {
    /// The `event` field.
    pub fn name(&self) -> &'static str {
        match self.kind {
            EventKind::LampFault { .. } => "lamp_fault",
            EventKind::LampRecovered { .. } => "lamp_recovered",
            EventKind::SensorSilent { .. } => "sensor_silent",
            EventKind::SensorRecovered { .. } => "sensor_recovered",
            EventKind::ClockUntrusted { .. } => "clock_untrusted",
            EventKind::ClockTrusted => "clock_trusted",
            EventKind::OverrideStarted { .. } => "override_started",
            EventKind::OverrideEnded { .. } => "override_ended",
        }
    }

    /// The device the event is about (for `event/{device}`), if any.
    pub fn device(&self) -> Option<&str> {
        match &self.kind {
            EventKind::LampFault { lamp, .. } | EventKind::LampRecovered { lamp } => Some(lamp),
            EventKind::SensorSilent { sensor, .. } | EventKind::SensorRecovered { sensor } => Some(sensor),
            _ => None,
        }
    }

    /// `{"zone","at","event", ...details}`; the publisher adds `seq` and `device`.
    pub fn to_value(&self) -> Value {
        let mut v = json!({"zone": self.zone, "at": rfc3339(self.at), "event": self.name()});
        let details = match &self.kind {
            EventKind::LampFault { lamp, level_pct, attempts } => {
                json!({"lamp": lamp, "level_pct": level_pct, "attempts": attempts})
            }
            EventKind::LampRecovered { lamp } => json!({"lamp": lamp}),
            EventKind::SensorSilent { sensor, last_heard, lamps } => {
                json!({"sensor": sensor, "last_heard": rfc3339(*last_heard), "lamps": lamps, "failsafe": true})
            }
            EventKind::SensorRecovered { sensor } => json!({"sensor": sensor, "failsafe": false}),
            EventKind::ClockUntrusted { build_date } => json!({"build_date": rfc3339(*build_date), "safe_mode": true}),
            EventKind::ClockTrusted => json!({"safe_mode": false}),
            EventKind::OverrideStarted { level_pct, until } => {
                json!({"level_pct": level_pct, "until": rfc3339(*until)})
            }
            EventKind::OverrideEnded { cleared } => json!({"cleared": cleared}),
        };
        if let (Some(o), Value::Object(d)) = (v.as_object_mut(), details) {
            o.extend(d);
        }
        v
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// Everything one call produces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub commands: Vec<LampCommand>,
    pub events: Vec<Event>,
    /// Changed retained states (at most one per zone and call).
    pub states: Vec<ZoneState>,
    pub energy: Vec<EnergyReport>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.events.is_empty() && self.states.is_empty() && self.energy.is_empty()
    }

    pub fn merge(&mut self, other: Output) {
        self.commands.extend(other.commands);
        self.events.extend(other.events);
        self.states.extend(other.states);
        self.energy.extend(other.energy);
    }
}
