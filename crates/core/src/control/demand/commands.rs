//! What the loop tells the shell: the states it commands loads into, why, and the action log.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::rfc3339;

/// A load's commanded state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadState {
    /// SG-Ready operating state 1..=4.
    SgReady(u8),
    /// Power set-point, kW.
    Setpoint { kw: f64 },
    /// On/off.
    Switch(bool),
}

impl LoadState {
    /// The two SG-Ready relays (relay 1 "EVU block", relay 2) for state 1..=4: 1 = (on, off),
    /// 2 = (off, off), 3 = (off, on), 4 = (on, on).
    pub fn sg_ready_relays(self) -> Option<[bool; 2]> {
        match self {
            LoadState::SgReady(1) => Some([true, false]),
            LoadState::SgReady(2) => Some([false, false]),
            LoadState::SgReady(3) => Some([false, true]),
            LoadState::SgReady(4) => Some([true, true]),
            _ => None,
        }
    }

    /// The `state` of `dr/status`: `normal`, `blocked` (SG-Ready 1, switch off), `reduced` (setpoint below
    /// `rated_kw`), `encouraged` (SG-Ready 3), `forced` (SG-Ready 4).
    pub fn label(self, rated_kw: f64) -> &'static str {
        match self {
            LoadState::SgReady(1) | LoadState::Switch(false) => "blocked",
            LoadState::SgReady(3) => "encouraged",
            LoadState::SgReady(4) => "forced",
            LoadState::Setpoint { kw } if kw < rated_kw - 1e-9 => "reduced",
            _ => "normal",
        }
    }

    /// `{"sg_ready": 1}`, `{"setpoint_kw": 4.2}` or `{"on": false}`.
    pub fn to_value(self) -> Value {
        match self {
            LoadState::SgReady(n) => json!({"sg_ready": n}),
            LoadState::Setpoint { kw } => json!({"setpoint_kw": kw}),
            LoadState::Switch(on) => json!({"on": on}),
        }
    }
}

impl std::fmt::Display for LoadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadState::SgReady(n) => write!(f, "sg-ready {n}"),
            LoadState::Setpoint { kw } => write!(f, "setpoint {kw:.1} kW"),
            LoadState::Switch(on) => write!(f, "{}", if *on { "on" } else { "off" }),
        }
    }
}

/// Why a load got a new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The first command after start: the normal state.
    Init,
    /// Shed because the estimated feeder power was over the limit in force.
    OverLimit,
    /// Restored under the limit.
    Restore,
    /// Released because it had been blocked for its `max_blocked_s` (even if over the limit).
    MaxBlocked,
    /// Encouraged by a surplus event.
    Surplus,
    /// The surplus ended.
    SurplusEnd,
    /// Reduced to what the §14a control box allows.
    ControlBox,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Init => "init",
            Reason::OverLimit => "over_limit",
            Reason::Restore => "restore",
            Reason::MaxBlocked => "max_blocked",
            Reason::Surplus => "surplus",
            Reason::SurplusEnd => "surplus_end",
            Reason::ControlBox => "control_box",
        }
    }
}

/// Why the limit in force is what it is (`limit_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitReason {
    Config,
    Event(String),
    MeterLost,
    HeartbeatLost,
    /// The §14a control box reduces: its caps win over every limit.
    ControlBox,
}

impl std::fmt::Display for LimitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitReason::Config => f.write_str("config"),
            LimitReason::Event(id) => write!(f, "event:{id}"),
            LimitReason::MeterLost => f.write_str("meter_lost"),
            LimitReason::HeartbeatLost => f.write_str("heartbeat_lost"),
            LimitReason::ControlBox => f.write_str("control_box"),
        }
    }
}

/// A state for the shell to put a load in (GPIO relays, LoRaWAN downlink or MQTT, see
/// [`Demand::load_output`](super::Demand::load_output)).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadCommand {
    pub load: String,
    pub state: LoadState,
    pub reason: Reason,
}

/// One action of the loop, with its reason and the situation that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionLog {
    pub at: DateTime<Utc>,
    pub load: String,
    pub from: LoadState,
    pub to: LoadState,
    pub reason: Reason,
    pub limit_kw: f64,
    pub limit_reason: LimitReason,
    /// The estimated feeder power the decision was based on.
    pub estimated_kw: Option<f64>,
}

impl std::fmt::Display for ActionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {} -> {} ({}; limit {:.1} kW, {}",
            rfc3339(self.at),
            self.load,
            self.from,
            self.to,
            self.reason.as_str(),
            self.limit_kw,
            self.limit_reason
        )?;
        match self.estimated_kw {
            Some(e) => write!(f, "; estimated {e:.1} kW)"),
            None => write!(f, "; no meter reading)"),
        }
    }
}
