//! The district's control loops and reading analytics, driven by readings and time: aggregates,
//! container / tree / silence events, street lighting and demand response. Pure glue: it maps
//! readings and commands to the loops' inputs and their outputs to messages and actuator commands;
//! the pipeline (the shell) journals the messages and hands the actuator commands to the network
//! server (LoRaWAN downlinks) or the gateway's own outputs.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::aggregate::{AggregateWindow, Aggregator, AggregatorState};
use crate::commands::{CommandName, RefusalCode};
use crate::control::demand::params::DemandParams;
use crate::control::demand::{self, Demand};
use crate::control::lighting::groups::{LampDownlink, LampGroup};
use crate::control::lighting::params::ZoneParams;
use crate::control::lighting::{self, Lighting, Site};
use crate::events::{
    presence_from, ContainerGeometry, ContainerTracker, Event, EventsState, SilenceWatch, TreeThresholds, TreeTracker,
};
use crate::reading::Reading;
use crate::topic::Topic;

/// The lighting loop distrusts a clock earlier than this (the release date): safe mode instead.
pub const RELEASE_DATE_UNIX: i64 = 1_795_651_200; // 2026-11-26T00:00:00Z

/// A message for the broker; the pipeline gives it a `seq` (where it carries one) and journals it.
#[derive(Debug, Clone)]
pub enum Publish {
    Aggregate(AggregateWindow),
    Event(Event),
    /// A JSON message without `seq` (lighting state, energy reports, `dr/status`, DR reports); its
    /// topic says whether it is retained.
    Json {
        topic: Topic,
        payload: Value,
    },
}

/// An actuator command: a downlink to a device, or an MQTT message for loads the city drives elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub enum Actuate {
    Downlink {
        device: String,
        f_port: u8,
        payload: Vec<u8>,
    },
    /// One frame for every member of a LoRaWAN multicast group (a zone-wide lamp level).
    Multicast {
        group: String,
        f_port: u8,
        payload: Vec<u8>,
    },
    /// GPIO relays of the gateway (`pins`, `on` per pin).
    Relays {
        load: String,
        pins: Vec<u32>,
        on: Vec<bool>,
        active_low: bool,
    },
}

#[derive(Debug, Default)]
pub struct LoopOutput {
    pub publish: Vec<Publish>,
    pub actuate: Vec<Actuate>,
    /// The loops' persistent state changed in a way that must survive a crash (an event fired).
    pub save_now: bool,
    /// Reports of the VTN's events, for the OpenADR VEN to send back (also published as DR reports).
    pub vtn_reports: Vec<crate::openadr::IntervalReport>,
}

impl LoopOutput {
    pub fn merge(&mut self, o: LoopOutput) {
        self.publish.extend(o.publish);
        self.actuate.extend(o.actuate);
        self.save_now |= o.save_now;
        self.vtn_reports.extend(o.vtn_reports);
    }
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopsState {
    pub aggregates: Option<AggregatorState>,
    pub events: Option<EventsState>,
}

impl LoopsState {
    /// Whether this state differs from `earlier` in more than the time it was taken (the silence
    /// watch's downtime anchor): a state that has only grown older is not worth a flash write. After
    /// a power cut the downtime is then counted from the last real change, so a silence alarm can come
    /// that much later (never earlier); a clean stop saves the exact time.
    pub fn changed_since(&self, earlier: &LoopsState) -> bool {
        let mut aligned = earlier.clone();
        if let (Some(a), Some(b)) = (&mut aligned.events, &self.events) {
            a.silence.snapshot_at_ms = b.silence.snapshot_at_ms;
        }
        aligned != *self
    }

    /// The state in parts, to be saved separately so that a save writes only the parts that changed:
    /// one per device in each per-device map (`aggregates/devices/{name}`,
    /// `events/silence/devices/{name}`, ...), and `root` for the rest. [`LoopsState::from_parts`]
    /// puts them back together.
    pub fn to_parts(&self) -> Result<BTreeMap<String, Vec<u8>>, serde_json::Error> {
        let mut root = serde_json::to_value(self)?;
        let mut parts = BTreeMap::new();
        for path in DEVICE_MAPS {
            let Some(Value::Object(map)) = pointer_mut(&mut root, path).map(std::mem::take) else { continue };
            for (device, v) in map {
                parts.insert(format!("{}/{device}", path.join("/")), serde_json::to_vec(&v)?);
            }
            if let Some(slot) = pointer_mut(&mut root, path) {
                *slot = Value::Object(serde_json::Map::new());
            }
        }
        parts.insert("root".into(), serde_json::to_vec(&root)?);
        Ok(parts)
    }

    /// The state from its parts ([`LoopsState::to_parts`]). Parts that do not fit (a device map that
    /// a newer version added, say) are left out.
    pub fn from_parts(parts: &BTreeMap<String, Vec<u8>>) -> Result<LoopsState, serde_json::Error> {
        let mut root: Value = match parts.get("root") {
            Some(b) => serde_json::from_slice(b)?,
            None => Value::Object(serde_json::Map::new()),
        };
        for (name, bytes) in parts {
            let Some((path, device)) = name.rsplit_once('/') else { continue };
            let Some(map_path) = DEVICE_MAPS.iter().find(|p| p.join("/") == path) else { continue };
            if let Some(Value::Object(map)) = pointer_mut(&mut root, map_path) {
                map.insert(device.to_string(), serde_json::from_slice(bytes)?);
            }
        }
        serde_json::from_value(root)
    }
}

/// The per-device maps of [`LoopsState`]'s JSON: saved one part per device.
const DEVICE_MAPS: [&[&str]; 4] = [
    &["aggregates", "devices"],
    &["events", "containers", "devices"],
    &["events", "silence", "devices"],
    &["events", "trees", "devices"],
];

fn pointer_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

/// What the loops are built from: the parts of the gateway's configuration they use (the shell's
/// `Config::loops_setup` fills it in; the core does not know the TOML file).
#[derive(Debug, Clone, Default)]
pub struct LoopsSetup {
    pub gateway_id: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// `Some(window_s)` when aggregates are published.
    pub aggregate_window_s: Option<u32>,
    pub devices: Vec<LoopDevice>,
    pub lighting_zones: Vec<ZoneParams>,
    pub demand_response: Option<DemandParams>,
    /// Multicast groups of lamps (`lorawan.multicast`): zone-wide level changes go to them as one frame.
    pub lamp_groups: Vec<LampGroup>,
}

/// A device as the loops see it.
#[derive(Debug, Clone, Default)]
pub struct LoopDevice {
    pub name: String,
    pub profile: String,
    pub container: Option<ContainerGeometry>,
    pub tree: Option<TreeThresholds>,
    pub max_silence_s: Option<u64>,
}

pub struct Loops {
    gateway_id: String,
    aggregate: Option<Aggregator>,
    containers: ContainerTracker,
    trees: TreeTracker,
    silence: SilenceWatch,
    lighting: Option<Lighting>,
    demand: Option<Demand>,
    meter: Option<String>,
    /// Lamp device → its profile (to encode the level command).
    lamp_profiles: HashMap<String, String>,
    lamp_groups: Vec<LampGroup>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl Loops {
    pub fn new(setup: &LoopsSetup, now: DateTime<Utc>) -> Result<Loops, String> {
        let aggregate = match setup.aggregate_window_s {
            Some(window_s) => Some(Aggregator::new(window_s).map_err(|e| format!("aggregate: {e}"))?),
            None => None,
        };
        let mut containers = ContainerTracker::default();
        let mut trees = TreeTracker::default();
        let mut silence = SilenceWatch::default();
        for d in &setup.devices {
            if let Some(g) = d.container {
                containers.set_geometry(&d.name, g).map_err(|e| format!("device {}: container: {e}", d.name))?;
            }
            if let Some(t) = d.tree {
                trees.set_thresholds(&d.name, t).map_err(|e| format!("device {}: tree: {e}", d.name))?;
            }
            if let Some(s) = d.max_silence_s {
                silence
                    .watch(&d.name, (s as i64).saturating_mul(1000), ms(now))
                    .map_err(|e| format!("device {}: {e}", d.name))?;
            }
        }
        let site = Site {
            latitude: setup.latitude,
            longitude: setup.longitude,
            build_date: Utc.timestamp_opt(RELEASE_DATE_UNIX, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC),
        };
        let lighting = if setup.lighting_zones.is_empty() {
            None
        } else {
            Some(Lighting::from_params(&setup.lighting_zones, &site).map_err(|e| format!("lighting: {e}"))?)
        };
        let demand = match &setup.demand_response {
            Some(p) => {
                let mut p = p.clone();
                if p.seed == 0 {
                    p.seed = demand::seed_from_str(&setup.gateway_id);
                }
                Some(Demand::from_params(&p).map_err(|e| format!("demand_response: {e}"))?)
            }
            None => None,
        };
        let lamp_profiles = setup.devices.iter().map(|d| (d.name.clone(), d.profile.clone())).collect();
        Ok(Loops {
            gateway_id: setup.gateway_id.clone(),
            aggregate,
            containers,
            trees,
            silence,
            lighting,
            demand,
            meter: setup.demand_response.as_ref().map(|d| d.meter.clone()),
            lamp_profiles,
            lamp_groups: setup.lamp_groups.clone(),
        })
    }

    pub fn snapshot(&self, now: DateTime<Utc>) -> LoopsState {
        LoopsState {
            aggregates: self.aggregate.as_ref().map(Aggregator::snapshot),
            events: Some(EventsState {
                containers: self.containers.snapshot(),
                silence: self.silence.snapshot(ms(now)),
                trees: self.trees.snapshot(),
            }),
        }
    }

    /// Restores the state saved before a restart; windows that closed meanwhile come out for publishing.
    pub fn restore(&mut self, state: LoopsState, now: DateTime<Utc>) -> LoopOutput {
        let mut out = LoopOutput::default();
        if let (Some(a), Some(s)) = (self.aggregate.as_mut(), state.aggregates) {
            out.publish.extend(a.restore(s).into_iter().map(Publish::Aggregate));
        }
        if let Some(e) = state.events {
            self.containers.restore(e.containers);
            self.silence.restore(e.silence, ms(now));
            self.trees.restore(e.trees);
        }
        out
    }

    /// A reading about to be journaled: may add derived metrics (`fill_pct`) and produce events,
    /// aggregates and loop inputs.
    pub fn on_reading(&mut self, now: DateTime<Utc>, r: &mut Reading) -> LoopOutput {
        let mut out = LoopOutput::default();
        let now_ms = ms(now);
        let at = r.at;
        if let Some(e) = self.silence.on_reading(now_ms, &r.device) {
            out.publish.push(Publish::Event(e));
            out.save_now = true;
        }
        let (_, events) = self.containers.on_reading(now_ms, &r.device, &mut r.metrics);
        if !events.is_empty() {
            out.save_now = true;
        }
        out.publish.extend(events.into_iter().map(Publish::Event));
        if let Some(e) = self.trees.on_reading(now_ms, &r.device, &r.metrics) {
            out.publish.push(Publish::Event(e));
            out.save_now = true;
        }
        if let Some(a) = self.aggregate.as_mut() {
            out.publish.extend(a.observe(now_ms, &r.device, ms(at), &r.metrics).into_iter().map(Publish::Aggregate));
        }
        if let Some(l) = self.lighting.as_mut() {
            let mut lo = lighting::Output::default();
            if l.zones().iter().any(|z| z.has_sensor(&r.device)) {
                let occupied = presence_from(&r.metrics).is_some_and(|p| p.occupied);
                let res = if occupied { l.presence(now, &r.device, at) } else { l.sensor_heard(now, &r.device, at) };
                if let Ok(o) = res {
                    lo.merge(o);
                }
            }
            if let Some(level) = r.metrics.get("lamp_level_pct").and_then(Value::as_f64) {
                if l.zones().iter().any(|z| z.has_lamp(&r.device)) {
                    if let Ok(o) = l.lamp_ack(now, &r.device, level.clamp(0.0, 100.0).round() as u8) {
                        lo.merge(o);
                    }
                }
            }
            out.merge(self.lighting_output(lo));
        }
        if self.meter.as_deref() == Some(r.device.as_str()) {
            if let (Some(d), Some(p)) = (self.demand.as_mut(), r.metrics.get("power_w").and_then(Value::as_f64)) {
                let o = d.handle(now, demand::Input::Meter { at, power_w: p });
                out.merge(self.demand_output(o));
            }
        }
        out
    }

    /// Time passes: closed windows, silent sensors, schedules, demand-response timers.
    pub fn tick(&mut self, now: DateTime<Utc>) -> LoopOutput {
        let mut out = LoopOutput::default();
        if let Some(a) = self.aggregate.as_mut() {
            out.publish.extend(a.tick(ms(now)).into_iter().map(Publish::Aggregate));
        }
        let silent = self.silence.tick(ms(now));
        if !silent.is_empty() {
            out.save_now = true;
        }
        out.publish.extend(silent.into_iter().map(Publish::Event));
        if let Some(l) = self.lighting.as_mut() {
            let o = l.tick(now);
            out.merge(self.lighting_output(o));
        }
        if let Some(d) = self.demand.as_mut() {
            let o = d.tick(now);
            out.merge(self.demand_output(o));
        }
        out
    }

    /// A settled contact of the §14a control box (`contact` indexes `demand_response.control_box.pins`).
    pub fn control_box(&mut self, now: DateTime<Utc>, contact: usize, closed: bool) -> LoopOutput {
        match self.demand.as_mut() {
            Some(d) => {
                let o = d.handle(now, demand::Input::ControlBox { contact, closed });
                self.demand_output(o)
            }
            None => LoopOutput::default(),
        }
    }

    /// The OpenADR VTN's complete set of events (see [`demand::Input::VtnEvents`]); the answer per event
    /// id. Without a demand-response loop every event is refused.
    pub fn vtn_events(&mut self, now: DateTime<Utc>, events: Vec<demand::DrEvent>) -> (demand::VtnAcks, LoopOutput) {
        let Some(d) = self.demand.as_mut() else {
            let refused = events.into_iter().map(|e| (e.id, Err(demand::EventError::NoSignal))).collect();
            return (refused, LoopOutput::default());
        };
        let mut o = d.handle(now, demand::Input::VtnEvents(events));
        let acks = std::mem::take(&mut o.acks);
        (acks, self.demand_output(o))
    }

    /// `lighting.override` / `lighting.clear` / `dr.event` / `dr.cancel`.
    pub fn command(
        &mut self,
        now: DateTime<Utc>,
        cmd: CommandName,
        args: &Value,
    ) -> (Result<Value, (RefusalCode, String)>, LoopOutput) {
        let bad = |m: String| (Err((RefusalCode::InvalidArgs, m)), LoopOutput::default());
        match cmd {
            CommandName::LightingOverride | CommandName::LightingClear => {
                let Some(l) = self.lighting.as_mut() else {
                    return (
                        Err((RefusalCode::UnknownCommand, "no lighting zone is configured".into())),
                        LoopOutput::default(),
                    );
                };
                let Some(zone) = args.get("zone").and_then(Value::as_str).map(str::to_string) else {
                    return bad("args.zone: expected a zone name".into());
                };
                let res = if cmd == CommandName::LightingOverride {
                    let level = args.get("level_pct").and_then(Value::as_u64);
                    let duration = args.get("duration_s").and_then(Value::as_u64);
                    let (Some(level), Some(duration)) = (level, duration) else {
                        return bad("args: expected level_pct (0..=100) and duration_s".into());
                    };
                    l.set_override(now, &zone, u8::try_from(level).unwrap_or(u8::MAX), duration)
                } else {
                    l.clear_override(now, &zone)
                };
                match res {
                    Ok(o) => {
                        let status = l.zone(&zone).map(|z| z.state(now).to_value()).unwrap_or(Value::Null);
                        (Ok(status), self.lighting_output(o))
                    }
                    Err(e) => bad(e.to_string()),
                }
            }
            CommandName::DrEvent | CommandName::DrCancel => {
                let Some(d) = self.demand.as_mut() else {
                    return (
                        Err((RefusalCode::UnknownCommand, "no demand_response is configured".into())),
                        LoopOutput::default(),
                    );
                };
                let input = if cmd == CommandName::DrEvent {
                    match serde_json::from_value::<demand::DrEvent>(args.clone()) {
                        Ok(ev) => demand::Input::Event(ev),
                        Err(e) => return bad(format!("dr.event args: {e}")),
                    }
                } else {
                    let Some(id) = args.get("id").and_then(Value::as_str) else {
                        return bad("args.id: expected the event id".into());
                    };
                    let modification =
                        args.get("modification").and_then(Value::as_u64).and_then(|m| u32::try_from(m).ok());
                    demand::Input::Cancel { id: id.to_string(), modification }
                };
                let mut o = d.handle(now, input);
                let ack = o.ack.take();
                let out = self.demand_output(o);
                match ack {
                    Some(Ok(a)) => (Ok(json!({"ack": format!("{a:?}")})), out),
                    Some(Err(e)) => (Err((RefusalCode::InvalidArgs, e.to_string())), out),
                    None => (Ok(json!({"ack": "accepted"})), out),
                }
            }
            _ => (
                Err((RefusalCode::UnknownCommand, format!("{} is not a control-loop command", cmd.as_str()))),
                LoopOutput::default(),
            ),
        }
    }

    /// The control loops' state for `status`.
    pub fn status(&self, now: DateTime<Utc>) -> Value {
        json!({
            "lighting": self.lighting.as_ref().map(|l| l.status(now)),
            "demand_response": self.demand.as_ref().map(|d| {
                let (limit, why) = d.limit();
                json!({"limit_kw": limit, "limit_reason": why.to_string(), "events": d.booked_events(),
                    "control_box": d.control_box().map(|b| b.to_value())})
            }),
        })
    }

    fn lighting_output(&self, o: lighting::Output) -> LoopOutput {
        let mut out = LoopOutput::default();
        let mut commands = Vec::new();
        for c in o.commands {
            let profile = self.lamp_profiles.get(&c.lamp).map(String::as_str).unwrap_or("lamp-generic");
            match crate::decode::encode_lamp_level(profile, c.level_pct) {
                Some((f_port, payload)) => commands.push(LampDownlink { lamp: c.lamp, f_port, payload }),
                None => tracing::warn!(lamp = %c.lamp, profile, "no lamp command encoding for this profile"),
            }
        }
        let (multicast, unicast) = lighting::groups::split(commands, &self.lamp_groups);
        for m in multicast {
            tracing::debug!(group = %m.group, lamps = m.lamps.len(), "zone-wide lamp level as one multicast frame");
            out.actuate.push(Actuate::Multicast { group: m.group, f_port: m.f_port, payload: m.payload });
        }
        for c in unicast {
            out.actuate.push(Actuate::Downlink { device: c.lamp, f_port: c.f_port, payload: c.payload });
        }
        for e in o.events {
            let device = e.device().unwrap_or(&e.zone).to_string();
            out.publish.push(Publish::Json { topic: Topic::Event(device), payload: e.to_value() });
        }
        for s in o.states {
            out.publish.push(Publish::Json { topic: Topic::Lighting(s.zone.clone()), payload: s.to_value() });
        }
        for r in o.energy {
            out.publish
                .push(Publish::Json { topic: Topic::Aggregate(format!("lighting-{}", r.zone)), payload: r.to_value() });
        }
        out
    }

    fn demand_output(&self, o: demand::Output) -> LoopOutput {
        let mut out = LoopOutput::default();
        let Some(d) = self.demand.as_ref() else { return out };
        for c in o.commands {
            match d.load_output(&c.load) {
                Some(demand::params::OutputSpec::Lorawan { device, f_port }) => out.actuate.push(Actuate::Downlink {
                    device: device.clone(),
                    f_port: *f_port,
                    payload: encode_load_state(c.state),
                }),
                Some(demand::params::OutputSpec::Gpio { pins, active_low }) => {
                    let on = match c.state.sg_ready_relays() {
                        Some(r) => r.to_vec(),
                        None => vec![!matches!(c.state, demand::LoadState::Switch(false))],
                    };
                    out.actuate.push(Actuate::Relays {
                        load: c.load.clone(),
                        pins: pins.clone(),
                        on,
                        active_low: *active_low,
                    });
                }
                Some(demand::params::OutputSpec::Mqtt { topic }) => out.publish.push(Publish::Json {
                    topic: Topic::Load(topic.clone()),
                    payload: json!({"load": c.load, "state": c.state.to_value(), "reason": c.reason.as_str()}),
                }),
                None => {}
            }
        }
        for l in &o.log {
            tracing::info!(action = %l, "demand response");
        }
        if let Some(s) = o.status {
            out.publish.push(Publish::Json { topic: Topic::DrStatus, payload: s.to_value() });
        }
        for r in o.reports {
            out.vtn_reports.extend(crate::openadr::interval_report(&r));
            out.publish.push(Publish::Json { topic: Topic::Aggregate("dr".into()), payload: r.to_value() });
        }
        // Each §14a episode's start and end (with its duration): the record the operator documents.
        for e in o.control_box {
            tracing::warn!(episode = %e.to_value(), "§14a control box");
            out.publish.push(Publish::Json { topic: Topic::Event("control_box".into()), payload: e.to_value() });
        }
        out
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }
}

/// The documented load command byte format for LoRaWAN load controllers (FPort from the config):
/// SG-Ready: `[0x01, state 1..=4]`; set-point: `[0x02, watts/100 as u16 BE]`; switch: `[0x03, 0|1]`.
pub fn encode_load_state(s: demand::LoadState) -> Vec<u8> {
    match s {
        demand::LoadState::SgReady(n) => vec![0x01, n],
        demand::LoadState::Setpoint { kw } => {
            let hw = (kw * 10.0).round().clamp(0.0, f64::from(u16::MAX)) as u16;
            let [a, b] = hw.to_be_bytes();
            vec![0x02, a, b]
        }
        demand::LoadState::Switch(on) => vec![0x03, u8::from(on)],
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use crate::events::{SilenceState, SilenceStatus};

    fn state(snapshot_at_ms: i64, last_seen_ms: Option<i64>) -> LoopsState {
        let mut silence = SilenceState { snapshot_at_ms, ..SilenceState::default() };
        silence.devices.insert("pir-1".into(), SilenceStatus { last_seen_ms, since_ms: 0, silent: false });
        LoopsState { aggregates: None, events: Some(EventsState { silence, ..EventsState::default() }) }
    }

    #[test]
    fn a_state_that_only_grew_older_has_not_changed() {
        assert!(!state(60_000, Some(1)).changed_since(&state(30_000, Some(1))));
        assert!(state(60_000, Some(2)).changed_since(&state(30_000, Some(1))), "a device was heard");
        assert!(state(0, None).changed_since(&LoopsState::default()));
    }
}

#[cfg(test)]
mod parts_tests {
    use super::*;
    use crate::events::{SilenceState, SilenceStatus};

    #[test]
    fn parts_put_back_together_give_the_same_state() {
        let mut silence = SilenceState { snapshot_at_ms: 5, ..SilenceState::default() };
        for d in ["pir-1", "pir-2"] {
            silence.devices.insert(d.into(), SilenceStatus { last_seen_ms: Some(3), since_ms: 1, silent: false });
        }
        let state = LoopsState { aggregates: None, events: Some(EventsState { silence, ..EventsState::default() }) };
        let parts = state.to_parts().expect("serialises");
        let names: Vec<&str> = parts.keys().map(String::as_str).collect();
        assert_eq!(names, ["events/silence/devices/pir-1", "events/silence/devices/pir-2", "root"]);
        assert_eq!(LoopsState::from_parts(&parts).expect("parses"), state);
        assert_eq!(LoopsState::from_parts(&BTreeMap::new()).expect("empty"), LoopsState::default());
    }

    #[test]
    fn a_change_to_one_device_changes_only_its_part() {
        let mut silence = SilenceState::default();
        silence.devices.insert("a".into(), SilenceStatus { last_seen_ms: Some(1), since_ms: 0, silent: false });
        silence.devices.insert("b".into(), SilenceStatus { last_seen_ms: Some(1), since_ms: 0, silent: false });
        let mut state =
            LoopsState { aggregates: None, events: Some(EventsState { silence, ..EventsState::default() }) };
        let before = state.to_parts().expect("parts");
        if let Some(e) = state.events.as_mut() {
            e.silence.devices.insert("b".into(), SilenceStatus { last_seen_ms: Some(9), since_ms: 0, silent: false });
        }
        let after = state.to_parts().expect("parts");
        let changed: Vec<&String> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
        assert_eq!(changed, ["events/silence/devices/b"]);
    }
}
