//! The configuration of demand response (`[demand_response]`) and its validation.
//!
//! [`DemandParams`] is the serde form (field names are the TOML keys; `meter`, `limit_kw` and the load keys
//! `name`, `kind`, `rated_kw`, `priority` are pinned by PRODUCT.md, everything else is an addition with a
//! default). [`DemandParams::validate`] lists every problem with its full key path
//! (`demand_response.load[1].min_kw`), so `check-config` can report all of them.
//! `DemandParams::default()` is the example of PRODUCT.md (`feeder-meter`, 250 kW, `hp-12`).

use serde::{Deserialize, Serialize};

/// The §14a EnWG floor: a controllable consumer may be reduced, but never below 4.2 kW.
pub const SECTION_14A_MIN_KW: f64 = 4.2;

/// One problem in the parameters: the full key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in the demand-response parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid demand_response configuration: {}", join_problems(.problems))]
pub struct ParamsError {
    pub problems: Vec<Problem>,
}

fn join_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
}

/// `kind` of a flexible load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadKind {
    /// SG-Ready heat pump: two relays, states 1 (blocked) .. 4 (forced on).
    SgReady,
    /// A power set-point (wallbox, battery): reducible down to `min_kw` (never below 4.2 kW, §14a EnWG).
    Setpoint,
    /// Plain on/off.
    Switch,
}

impl LoadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadKind::SgReady => "sg-ready",
            LoadKind::Setpoint => "setpoint",
            LoadKind::Switch => "switch",
        }
    }
}

/// How a load is switched. Only parsed and validated here; the shell does the I/O.
/// `{ type = "gpio", pins = [17, 27] }` (SG-Ready: two relays, pin 0 = relay 1 "EVU block", pin 1 =
/// relay 2; switch: one relay), `{ type = "lorawan", device = "hp-12-relay", f_port = 20 }`,
/// `{ type = "mqtt", topic = "site/hp-12/set" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputSpec {
    Gpio {
        /// BCM pin numbers (0..=53).
        pins: Vec<u32>,
        /// Relays energised at low level.
        #[serde(default)]
        active_low: bool,
    },
    Lorawan {
        /// A configured `[[device]]` that takes the downlink.
        device: String,
        #[serde(default = "default_f_port")]
        f_port: u8,
    },
    Mqtt {
        /// A topic below `{topic_prefix}/{gateway.id}/`; the state is published as JSON.
        topic: String,
    },
}

fn default_f_port() -> u8 {
    20
}

/// `[[demand_response.load]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// `[A-Za-z0-9_.-]{1,64}`; appears in `dr/status`.
    pub name: String,
    pub kind: LoadKind,
    /// Power drawn in normal operation (setpoint: the set-point when not reduced), kW.
    pub rated_kw: f64,
    /// Lower sheds first (and is restored last).
    pub priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputSpec>,
    /// Longest time the load may be kept blocked/reduced in one go; it is released then even if the feeder
    /// is over its limit. Default 7200 (2 h); setpoint loads: 0 = no maximum (the §14a floor still holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocked_s: Option<u32>,
    /// Minimum time blocked before it may be restored (compressor protection). Default sg-ready 600,
    /// switch 60, setpoint 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_off_s: Option<u32>,
    /// Minimum time running after a restore before it may be blocked again. Defaults as `min_off_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_on_s: Option<u32>,
    /// After a release forced by `max_blocked_s`, the load is not blocked again for this long.
    /// Default 1800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_s: Option<u32>,
    /// Setpoint loads only: the lowest set-point, kW. Default and minimum 4.2 (§14a EnWG).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kw: Option<f64>,
    /// SG-Ready only: a surplus may force the heat pump on (state 4) instead of encouraging it (state 3).
    #[serde(default)]
    pub allow_forced: bool,
}

impl LoadParams {
    /// A load with the defaults for everything but the pinned keys.
    pub fn new(name: &str, kind: LoadKind, rated_kw: f64, priority: u32) -> LoadParams {
        LoadParams {
            name: name.to_string(),
            kind,
            rated_kw,
            priority,
            output: None,
            max_blocked_s: None,
            min_off_s: None,
            min_on_s: None,
            recovery_s: None,
            min_kw: None,
            allow_forced: false,
        }
    }

    pub fn max_blocked_s(&self) -> u32 {
        self.max_blocked_s.unwrap_or(match self.kind {
            LoadKind::Setpoint => 0,
            _ => 7200,
        })
    }

    pub fn min_off_s(&self) -> u32 {
        self.min_off_s.unwrap_or(match self.kind {
            LoadKind::SgReady => 600,
            LoadKind::Switch => 60,
            LoadKind::Setpoint => 0,
        })
    }

    pub fn min_on_s(&self) -> u32 {
        self.min_on_s.unwrap_or(match self.kind {
            LoadKind::SgReady => 600,
            LoadKind::Switch => 60,
            LoadKind::Setpoint => 0,
        })
    }

    pub fn recovery_s(&self) -> u32 {
        self.recovery_s.unwrap_or(1800)
    }

    /// The set-point floor (setpoint loads), never below [`SECTION_14A_MIN_KW`].
    pub fn min_kw(&self) -> f64 {
        self.min_kw.unwrap_or(SECTION_14A_MIN_KW).max(SECTION_14A_MIN_KW)
    }
}

/// `[demand_response]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandParams {
    /// A device (or an SML source's `device`) whose readings carry `power_w`: the feeder meter.
    pub meter: String,
    /// The feeder limit, kW.
    pub limit_kw: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<LoadParams>,
    /// How often the shell should tick the loop (it also runs on every meter reading), s.
    #[serde(default = "default_interval_s")]
    pub interval_s: u32,
    /// A load is restored only when the estimated power plus its power stays this far below the limit, kW.
    #[serde(default = "default_hysteresis_kw")]
    pub hysteresis_kw: f64,
    /// Restores are one at a time, each after a random delay in `restore_delay_min_s..=restore_delay_max_s`
    /// (also the spread of forced releases), so the district does not rebound into a new peak.
    #[serde(default = "default_restore_delay_min_s")]
    pub restore_delay_min_s: u32,
    #[serde(default = "default_restore_delay_max_s")]
    pub restore_delay_max_s: u32,
    /// Time a switched load takes to show in the meter's readings; until then its expected effect is
    /// added to the readings.
    #[serde(default = "default_settle_s")]
    pub settle_s: u32,
    /// The meter is lost when no valid reading is newer than this.
    #[serde(default = "default_meter_timeout_s")]
    pub meter_timeout_s: u32,
    /// Limit while the meter is lost (applied to the last reading corrected by the loop's own actions).
    /// Default 80 % of `limit_kw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_lost_limit_kw: Option<f64>,
    /// The city's heartbeat is lost when neither a heartbeat nor a `dr.*` command was heard for this long,
    /// once a heartbeat has been heard at all (a city that sends none is not supervised). 0 = never
    /// supervised.
    #[serde(default = "default_heartbeat_timeout_s")]
    pub heartbeat_timeout_s: u32,
    /// Limit for `failsafe_duration_s` after the heartbeat is lost (EEBUS LPC); city events are suspended
    /// while it is lost. Default 80 % of `limit_kw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_limit_kw: Option<f64>,
    #[serde(default = "default_failsafe_duration_s")]
    pub failsafe_duration_s: u32,
    /// OpenADR SIMPLE levels: event `level` n (1..) limits to `limit_kw * level_factors[n]` (the last factor
    /// for higher levels); level 0 = no limit; a negative level = surplus.
    #[serde(default = "default_level_factors")]
    pub level_factors: Vec<f64>,
    /// Aggregate report window, s: a divisor of 86400, aligned to midnight UTC.
    #[serde(default = "default_report_window_s")]
    pub report_window_s: u32,
    /// `dr/status` is re-published at least this often (it is always published on a change), s.
    #[serde(default = "default_status_interval_s")]
    pub status_interval_s: u32,
    /// Seed of the random delays. 0 = derived from `meter` (the shell should pass a hash of the gateway id,
    /// see [`super::seed_from_str`], so that districts differ).
    #[serde(default)]
    pub seed: u64,
    /// The §14a EnWG control input (`[demand_response.control_box]`), if the grid operator's control box
    /// is wired to the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_box: Option<ControlBoxParams>,
}

fn default_interval_s() -> u32 {
    5
}
fn default_hysteresis_kw() -> f64 {
    5.0
}
fn default_restore_delay_min_s() -> u32 {
    30
}
fn default_restore_delay_max_s() -> u32 {
    120
}
fn default_settle_s() -> u32 {
    15
}
fn default_meter_timeout_s() -> u32 {
    60
}
fn default_heartbeat_timeout_s() -> u32 {
    900
}
fn default_failsafe_duration_s() -> u32 {
    7200
}
fn default_level_factors() -> Vec<f64> {
    vec![1.0, 0.9, 0.8, 0.7]
}
fn default_report_window_s() -> u32 {
    900
}
fn default_status_interval_s() -> u32 {
    60
}

impl Default for DemandParams {
    /// The example of PRODUCT.md.
    fn default() -> Self {
        DemandParams::new("feeder-meter", 250.0, vec![LoadParams::new("hp-12", LoadKind::SgReady, 6.0, 1)])
    }
}

/// A valid device/load name: `[A-Za-z0-9_.-]{1,64}`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// An MQTT topic (below the gateway's prefix) the shell may publish a load's state on.
fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 256 && !t.contains(['#', '+', '\0']) && !t.starts_with('/') && !t.ends_with('/')
}

fn in_range(v: f64, lo: f64, hi: f64) -> bool {
    v.is_finite() && v >= lo && v <= hi
}

impl DemandParams {
    /// The pinned keys, everything else at its default.
    pub fn new(meter: &str, limit_kw: f64, load: Vec<LoadParams>) -> DemandParams {
        DemandParams {
            meter: meter.to_string(),
            limit_kw,
            load,
            interval_s: default_interval_s(),
            hysteresis_kw: default_hysteresis_kw(),
            restore_delay_min_s: default_restore_delay_min_s(),
            restore_delay_max_s: default_restore_delay_max_s(),
            settle_s: default_settle_s(),
            meter_timeout_s: default_meter_timeout_s(),
            meter_lost_limit_kw: None,
            heartbeat_timeout_s: default_heartbeat_timeout_s(),
            failsafe_limit_kw: None,
            failsafe_duration_s: default_failsafe_duration_s(),
            level_factors: default_level_factors(),
            report_window_s: default_report_window_s(),
            status_interval_s: default_status_interval_s(),
            seed: 0,
            control_box: None,
        }
    }

    pub fn meter_lost_limit_kw(&self) -> f64 {
        self.meter_lost_limit_kw.unwrap_or(self.limit_kw * 0.8)
    }

    pub fn failsafe_limit_kw(&self) -> f64 {
        self.failsafe_limit_kw.unwrap_or(self.limit_kw * 0.8)
    }

    /// Every problem in these parameters (empty = valid), with full key paths (`demand_response.…`).
    pub fn validate(&self) -> Vec<Problem> {
        const P: &str = "demand_response";
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(Problem { key: format!("{P}.{key}"), message });
        if !valid_name(&self.meter) {
            bad("meter".into(), format!("expected a device name [A-Za-z0-9_.-]{{1,64}}, got {:?}", self.meter));
        }
        let limit_ok = in_range(self.limit_kw, 0.1, 1_000_000.0);
        if !limit_ok {
            bad("limit_kw".into(), format!("expected 0.1..=1000000 kW, got {}", self.limit_kw));
        }
        if !(1..=300).contains(&self.interval_s) {
            bad("interval_s".into(), format!("expected 1..=300, got {}", self.interval_s));
        }
        if !in_range(self.hysteresis_kw, 0.0, 1_000_000.0) || (limit_ok && self.hysteresis_kw >= self.limit_kw) {
            bad("hysteresis_kw".into(), format!("expected 0 <= hysteresis_kw < limit_kw, got {}", self.hysteresis_kw));
        }
        if self.restore_delay_max_s > 3600 {
            bad("restore_delay_max_s".into(), format!("expected 0..=3600, got {}", self.restore_delay_max_s));
        }
        if self.restore_delay_min_s > self.restore_delay_max_s {
            bad(
                "restore_delay_min_s".into(),
                format!(
                    "must not exceed restore_delay_max_s ({} > {})",
                    self.restore_delay_min_s, self.restore_delay_max_s
                ),
            );
        }
        if self.settle_s > 600 {
            bad("settle_s".into(), format!("expected 0..=600, got {}", self.settle_s));
        }
        if !(5..=86_400).contains(&self.meter_timeout_s) {
            bad("meter_timeout_s".into(), format!("expected 5..=86400, got {}", self.meter_timeout_s));
        }
        for (key, v) in
            [("meter_lost_limit_kw", self.meter_lost_limit_kw), ("failsafe_limit_kw", self.failsafe_limit_kw)]
        {
            if let Some(v) = v {
                if !in_range(v, 0.0, 1_000_000.0) {
                    bad(key.into(), format!("expected 0..=1000000 kW, got {v}"));
                }
            }
        }
        if self.heartbeat_timeout_s != 0 && !(10..=86_400).contains(&self.heartbeat_timeout_s) {
            bad(
                "heartbeat_timeout_s".into(),
                format!("expected 0 (off) or 10..=86400, got {}", self.heartbeat_timeout_s),
            );
        }
        if self.failsafe_duration_s > 86_400 {
            bad("failsafe_duration_s".into(), format!("expected 0..=86400, got {}", self.failsafe_duration_s));
        }
        if self.level_factors.is_empty() || self.level_factors.len() > 16 {
            bad("level_factors".into(), "expected 1..=16 factors".into());
        }
        for (i, f) in self.level_factors.iter().enumerate() {
            if !in_range(*f, 0.0, 1.0) {
                bad(format!("level_factors[{i}]"), format!("expected 0..=1, got {f}"));
            }
        }
        if !(60..=86_400).contains(&self.report_window_s) || 86_400 % self.report_window_s != 0 {
            bad("report_window_s".into(), format!("expected a divisor of 86400 >= 60, got {}", self.report_window_s));
        }
        if !(1..=3600).contains(&self.status_interval_s) {
            bad("status_interval_s".into(), format!("expected 1..=3600, got {}", self.status_interval_s));
        }
        if let Some(cb) = &self.control_box {
            cb.validate(&self.load, &mut bad);
        }
        if self.load.len() > 10_000 {
            bad("load".into(), format!("at most 10000 loads, got {}", self.load.len()));
        }
        for (i, l) in self.load.iter().enumerate() {
            let k = format!("load[{i}]");
            if !valid_name(&l.name) {
                bad(format!("{k}.name"), format!("expected [A-Za-z0-9_.-]{{1,64}}, got {:?}", l.name));
            }
            if self.load[..i].iter().any(|o| o.name == l.name) {
                bad(format!("{k}.name"), format!("load {:?} is listed twice", l.name));
            }
            if !in_range(l.rated_kw, 0.01, 100_000.0) {
                bad(format!("{k}.rated_kw"), format!("expected 0.01..=100000 kW, got {}", l.rated_kw));
            }
            match l.kind {
                LoadKind::Setpoint => {
                    if let Some(m) = l.min_kw {
                        if !m.is_finite() || m < SECTION_14A_MIN_KW {
                            bad(
                                format!("{k}.min_kw"),
                                format!("must be at least {SECTION_14A_MIN_KW} kW (§14a EnWG), got {m}"),
                            );
                        }
                    }
                    if l.rated_kw.is_finite() && l.rated_kw < l.min_kw() {
                        bad(
                            format!("{k}.rated_kw"),
                            format!(
                                "a setpoint load below its floor of {} kW cannot be reduced (§14a EnWG); got {}",
                                l.min_kw(),
                                l.rated_kw
                            ),
                        );
                    }
                    if l.allow_forced {
                        bad(format!("{k}.allow_forced"), "only for sg-ready loads".into());
                    }
                }
                LoadKind::SgReady | LoadKind::Switch => {
                    if l.min_kw.is_some() {
                        bad(format!("{k}.min_kw"), "only for setpoint loads".into());
                    }
                    if l.allow_forced && l.kind == LoadKind::Switch {
                        bad(format!("{k}.allow_forced"), "only for sg-ready loads".into());
                    }
                    if !(60..=86_400).contains(&l.max_blocked_s()) {
                        bad(format!("{k}.max_blocked_s"), format!("expected 60..=86400, got {}", l.max_blocked_s()));
                    }
                }
            }
            if l.kind == LoadKind::Setpoint && l.max_blocked_s() != 0 && !(60..=86_400).contains(&l.max_blocked_s()) {
                bad(
                    format!("{k}.max_blocked_s"),
                    format!("expected 0 (none) or 60..=86400, got {}", l.max_blocked_s()),
                );
            }
            for (key, v) in [("min_off_s", l.min_off_s()), ("min_on_s", l.min_on_s()), ("recovery_s", l.recovery_s())] {
                if v > 86_400 {
                    bad(format!("{k}.{key}"), format!("expected 0..=86400, got {v}"));
                }
            }
            if l.max_blocked_s() > 0 && l.min_off_s() > l.max_blocked_s() {
                bad(
                    format!("{k}.min_off_s"),
                    format!("must not exceed max_blocked_s ({} > {})", l.min_off_s(), l.max_blocked_s()),
                );
            }
            match &l.output {
                None => {}
                Some(OutputSpec::Gpio { pins, .. }) => {
                    let want = match l.kind {
                        LoadKind::SgReady => Some(2),
                        LoadKind::Switch => Some(1),
                        LoadKind::Setpoint => None,
                    };
                    match want {
                        None => bad(format!("{k}.output"), "a setpoint load cannot be driven by gpio relays".into()),
                        Some(n) if pins.len() != n => bad(
                            format!("{k}.output.pins"),
                            format!("a {} load needs {n} pin(s), got {}", l.kind.as_str(), pins.len()),
                        ),
                        Some(_) => {}
                    }
                    for (j, pin) in pins.iter().enumerate() {
                        if *pin > 53 {
                            bad(format!("{k}.output.pins[{j}]"), format!("expected a BCM pin 0..=53, got {pin}"));
                        }
                        if pins[..j].contains(pin) {
                            bad(format!("{k}.output.pins[{j}]"), format!("pin {pin} is listed twice"));
                        }
                    }
                    for (o, other) in self.load[..i].iter().enumerate() {
                        if let Some(OutputSpec::Gpio { pins: op, .. }) = &other.output {
                            if let Some(pin) = pins.iter().find(|p| op.contains(p)) {
                                bad(format!("{k}.output.pins"), format!("pin {pin} is already used by load[{o}]"));
                            }
                        }
                    }
                }
                Some(OutputSpec::Lorawan { device, f_port }) => {
                    if !valid_name(device) {
                        bad(format!("{k}.output.device"), format!("expected a device name, got {device:?}"));
                    }
                    if !(1..=223).contains(f_port) {
                        bad(format!("{k}.output.f_port"), format!("expected 1..=223, got {f_port}"));
                    }
                }
                Some(OutputSpec::Mqtt { topic }) if !valid_topic(topic) => {
                    bad(
                        format!("{k}.output.topic"),
                        format!("expected a topic without wildcards or leading/trailing '/', got {topic:?}"),
                    );
                }
                Some(OutputSpec::Mqtt { .. }) => {}
            }
        }
        p
    }
}

/// `[demand_response.control_box]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlBoxParams {
    /// One or two BCM input pins: the box's contacts (bit 0, bit 1 of the stage).
    pub pins: Vec<u32>,
    /// A closed contact pulls the pin low (pull-up); otherwise it pulls it high (pull-down).
    #[serde(default = "default_active_low")]
    pub active_low: bool,
    /// A contact change counts once it has held this long, ms.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// The share of each stage (index = contact value): 1 = normal, 0 = the §14a minimum. Default:
    /// every closed contact means the minimum (`[1, 0]`, `[1, 0, 0, 0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<f64>>,
    /// Grid connections with more than one controllable load: they share the aggregate minimum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection: Vec<ConnectionParams>,
}

/// `[[demand_response.control_box.connection]]`: the loads behind one grid connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionParams {
    pub name: String,
    pub loads: Vec<String>,
}

fn default_active_low() -> bool {
    true
}
fn default_debounce_ms() -> u64 {
    200
}

/// Longest debounce: the signal must act within seconds.
pub const MAX_DEBOUNCE_MS: u64 = 10_000;

impl ControlBoxParams {
    pub fn new(pins: Vec<u32>) -> ControlBoxParams {
        ControlBoxParams {
            pins,
            active_low: default_active_low(),
            debounce_ms: default_debounce_ms(),
            stages: None,
            connection: Vec::new(),
        }
    }

    /// The share of every stage (the configured ones, or the default).
    pub fn shares(&self) -> Vec<f64> {
        match &self.stages {
            Some(s) => s.clone(),
            None => {
                let n = 1usize << self.pins.len().min(2);
                (0..n).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect()
            }
        }
    }

    pub(super) fn validate(&self, loads: &[LoadParams], bad: &mut dyn FnMut(String, String)) {
        const K: &str = "control_box";
        if !(1..=2).contains(&self.pins.len()) {
            bad(format!("{K}.pins"), format!("expected 1 or 2 pins, got {}", self.pins.len()));
        }
        for (j, pin) in self.pins.iter().enumerate() {
            if *pin > 53 {
                bad(format!("{K}.pins[{j}]"), format!("expected a BCM pin 0..=53, got {pin}"));
            } else if self.pins[..j].contains(pin) {
                bad(format!("{K}.pins[{j}]"), format!("pin {pin} is listed twice"));
            }
            for (i, l) in loads.iter().enumerate() {
                if let Some(OutputSpec::Gpio { pins, .. }) = &l.output {
                    if pins.contains(pin) {
                        bad(format!("{K}.pins[{j}]"), format!("pin {pin} is already used by load[{i}] ({:?})", l.name));
                    }
                }
            }
        }
        if self.debounce_ms > MAX_DEBOUNCE_MS {
            bad(format!("{K}.debounce_ms"), format!("expected 0..={MAX_DEBOUNCE_MS}, got {}", self.debounce_ms));
        }
        if let Some(stages) = &self.stages {
            let want = 1usize << self.pins.len().min(2);
            if stages.len() != want {
                bad(
                    format!("{K}.stages"),
                    format!(
                        "{} pin(s) give {want} stages (one share per contact value), got {}",
                        self.pins.len(),
                        stages.len()
                    ),
                );
            }
            for (i, s) in stages.iter().enumerate() {
                if !(s.is_finite() && (0.0..=1.0).contains(s)) {
                    bad(
                        format!("{K}.stages[{i}]"),
                        format!("expected a share 0..=1 (1 = normal, 0 = the §14a minimum), got {s}"),
                    );
                }
            }
        }
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (c, conn) in self.connection.iter().enumerate() {
            let k = format!("{K}.connection[{c}]");
            if !valid_name(&conn.name) {
                bad(format!("{k}.name"), format!("expected a name [A-Za-z0-9_.-]{{1,64}}, got {:?}", conn.name));
            }
            if conn.loads.len() < 2 {
                bad(
                    format!("{k}.loads"),
                    "a connection lists 2 or more loads (a single load has the 4.2 kW minimum of its own)".into(),
                );
            }
            for (j, name) in conn.loads.iter().enumerate() {
                if !loads.iter().any(|l| &l.name == name) {
                    bad(format!("{k}.loads[{j}]"), format!("no demand_response.load is named {name:?}"));
                } else if let Some((_, other)) = seen.iter().find(|(n, _)| n == name) {
                    bad(format!("{k}.loads[{j}]"), format!("load {name:?} is already behind connection[{other}]"));
                } else {
                    seen.push((name, c));
                }
            }
        }
    }
}
