//! Events from readings: containers, silent sensors, trees, and presence for the lighting loop
//! (PRODUCT.md `event/{device}`).
//!
//! Pure core: no clock, no I/O, no async; `now_ms` (UTC epoch milliseconds) is passed in. Every tracker keeps
//! its configuration (set by the shell from the config, replaceable on reload) apart from its state (what it
//! has seen), and the state snapshots/restores with serde so that a restart neither repeats nor loses an
//! event. Every event has hysteresis: it fires once per episode, however noisy the readings around the
//! threshold.
//!
//! | kind | raised by | when | details |
//! |---|---|---|---|
//! | `container_full` | [`ContainerTracker`] | fill reaches `full_pct` while armed (once per filling) | `fill_pct`, `full_pct`, `distance_mm` |
//! | `container_emptied` | [`ContainerTracker`] | fill drops by ≥ `emptied_drop_pct` points between consecutive readings | `fill_pct`, `previous_fill_pct` |
//! | `sensor_silent` | [`SilenceWatch::tick`] | no reading for `max_silence` (once per silence) | `last_seen` (or `null`), `silent_for_s`, `max_silence_s` |
//! | `sensor_back` | [`SilenceWatch::on_reading`] | first reading after `sensor_silent` | `last_seen`, `silent_for_s` |
//! | `needs_water` | [`TreeTracker`] | `soil_moisture_pct` below `needs_water_below_pct` | `soil_moisture_pct`, `threshold_pct` |
//! | `watered` | [`TreeTracker`] | after `needs_water`, `soil_moisture_pct` above `watered_above_pct` | `soil_moisture_pct`, `threshold_pct` |
//!
//! Metric values that are not finite numbers (or, for `distance_mm`, not positive; for `soil_moisture_pct`
//! and a reported `fill_pct`, outside 0..=100) are ignored: they neither raise nor clear anything.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::aggregate::rfc3339_ms;

/// Decoded metrics of one reading (the same type as `decode::Metrics`).
pub type Metrics = Map<String, Value>;

pub const CONTAINER_FULL: &str = "container_full";
pub const CONTAINER_EMPTIED: &str = "container_emptied";
pub const SENSOR_SILENT: &str = "sensor_silent";
pub const SENSOR_BACK: &str = "sensor_back";
pub const NEEDS_WATER: &str = "needs_water";
pub const WATERED: &str = "watered";

/// Every event kind, for documentation and metrics labels.
pub const EVENT_KINDS: &[&str] = &[CONTAINER_FULL, CONTAINER_EMPTIED, SENSOR_SILENT, SENSOR_BACK, NEEDS_WATER, WATERED];

/// A configuration error of an event tracker. `field` is the name of the offending setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventConfigError {
    #[error("{field}: must be between {min} and {max}, got {value}")]
    OutOfRange { field: &'static str, value: f64, min: f64, max: f64 },
    #[error("{field}: must be greater than {other} ({other_value}), got {value}")]
    NotGreater { field: &'static str, value: f64, other: &'static str, other_value: f64 },
}

fn check_range(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), EventConfigError> {
    // `contains` is false for NaN.
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(EventConfigError::OutOfRange { field, value, min, max })
    }
}

fn check_greater(
    field: &'static str,
    value: f64,
    other: &'static str,
    other_value: f64,
) -> Result<(), EventConfigError> {
    if value > other_value {
        Ok(())
    } else {
        Err(EventConfigError::NotGreater { field, value, other, other_value })
    }
}

/// One event, as published on `event/{device}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub device: String,
    /// One of [`EVENT_KINDS`].
    pub kind: &'static str,
    pub at_ms: i64,
    /// Extra fields of the payload.
    pub details: Map<String, Value>,
}

impl Event {
    fn new(device: &str, kind: &'static str, at_ms: i64) -> Self {
        Event { device: device.to_string(), kind, at_ms, details: Map::new() }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.to_string(), value);
        self
    }

    /// The topic below `{prefix}/{gateway}/`.
    pub fn topic(&self) -> crate::topic::Topic {
        crate::topic::Topic::Event(self.device.clone())
    }

    /// The payload `{"seq", "device", "at", "event": kind, ...details}`. The pinned fields win over a
    /// detail of the same name.
    pub fn to_json(&self, seq: u64) -> Value {
        let mut o = Map::new();
        o.insert("seq".into(), Value::from(seq));
        o.insert("device".into(), Value::from(self.device.as_str()));
        o.insert("at".into(), Value::from(rfc3339_ms(self.at_ms)));
        o.insert("event".into(), Value::from(self.kind));
        for (k, v) in &self.details {
            if !o.contains_key(k) {
                o.insert(k.clone(), v.clone());
            }
        }
        Value::Object(o)
    }
}

/// A finite number metric.
fn metric_f64(metrics: &Metrics, name: &str) -> Option<f64> {
    metrics.get(name).and_then(Value::as_f64).filter(|v| v.is_finite())
}

/// A JSON number (`null` if not finite, which the trackers never produce).
fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------------------------------------
// Containers

fn default_full_pct() -> f64 {
    80.0
}
fn default_clear_pct() -> f64 {
    50.0
}
fn default_emptied_drop_pct() -> f64 {
    30.0
}

/// Geometry and thresholds of one container (an ultrasonic sensor in the lid looking down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerGeometry {
    /// Distance from the sensor to the bottom: the reading of an empty container.
    pub empty_distance_mm: f64,
    /// Distance from the sensor to the fill line: the reading of a full container.
    pub full_distance_mm: f64,
    /// `container_full` fires when the fill reaches this (default 80).
    #[serde(default = "default_full_pct")]
    pub full_pct: f64,
    /// The fill must drop below this before `container_full` can fire again (default 50: hysteresis).
    #[serde(default = "default_clear_pct")]
    pub clear_pct: f64,
    /// A drop of at least this many points between consecutive readings is `container_emptied` (default 30).
    #[serde(default = "default_emptied_drop_pct")]
    pub emptied_drop_pct: f64,
}

impl ContainerGeometry {
    /// A geometry with the default thresholds.
    pub fn new(empty_distance_mm: f64, full_distance_mm: f64) -> Self {
        ContainerGeometry {
            empty_distance_mm,
            full_distance_mm,
            full_pct: default_full_pct(),
            clear_pct: default_clear_pct(),
            emptied_drop_pct: default_emptied_drop_pct(),
        }
    }

    pub fn validate(&self) -> Result<(), EventConfigError> {
        check_range("full_distance_mm", self.full_distance_mm, 0.0, 100_000.0)?;
        check_range("empty_distance_mm", self.empty_distance_mm, 0.0, 100_000.0)?;
        check_greater("empty_distance_mm", self.empty_distance_mm, "full_distance_mm", self.full_distance_mm)?;
        check_range("full_pct", self.full_pct, 0.0, 100.0)?;
        check_range("clear_pct", self.clear_pct, 0.0, 100.0)?;
        check_greater("full_pct", self.full_pct, "clear_pct", self.clear_pct)?;
        check_range("emptied_drop_pct", self.emptied_drop_pct, 1.0, 100.0)
    }

    /// `clamp((empty - d) / (empty - full) * 100, 0, 100)`, rounded to 0.1. `None` for a distance that is
    /// not a positive finite number (sensors report 0 for "no echo") or an invalid geometry.
    pub fn fill_pct(&self, distance_mm: f64) -> Option<f64> {
        let span = self.empty_distance_mm - self.full_distance_mm;
        if !(distance_mm.is_finite() && distance_mm > 0.0 && span.is_finite() && span > 0.0) {
            return None;
        }
        let pct = (self.empty_distance_mm - distance_mm) / span * 100.0;
        Some(round1(pct.clamp(0.0, 100.0)))
    }
}

/// What the tracker remembers of one container.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Fill of the last valid reading.
    #[serde(with = "crate::aggregate::exact_f64")]
    pub fill_pct: f64,
    /// `container_full` may fire (false from its firing until the fill drops below `clear_pct` or the
    /// container is emptied).
    pub armed: bool,
}

/// Persistable state of a [`ContainerTracker`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub devices: BTreeMap<String, ContainerStatus>,
}

/// Derives `fill_pct` and raises `container_full` / `container_emptied`.
///
/// A container first seen already full raises `container_full` (the tracker starts armed): the collection
/// tour wants to know either way. Devices without a geometry are not containers and are left alone.
#[derive(Debug, Clone, Default)]
pub struct ContainerTracker {
    geometry: BTreeMap<String, ContainerGeometry>,
    state: ContainerState,
}

impl ContainerTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces, on a config reload) the geometry of a container. Its state is kept.
    pub fn set_geometry(&mut self, device: &str, geometry: ContainerGeometry) -> Result<(), EventConfigError> {
        geometry.validate()?;
        self.geometry.insert(device.to_string(), geometry);
        Ok(())
    }

    /// Forgets a container (geometry and state).
    pub fn remove(&mut self, device: &str) {
        self.geometry.remove(device);
        self.state.devices.remove(device);
    }

    pub fn geometry(&self, device: &str) -> Option<&ContainerGeometry> {
        self.geometry.get(device)
    }

    pub fn status(&self, device: &str) -> Option<ContainerStatus> {
        self.state.devices.get(device).copied()
    }

    /// Processes one reading. With a valid `distance_mm` the fill is derived from the geometry and inserted
    /// into `metrics` as `fill_pct` (replacing a decoder's); without one, a `fill_pct` the sensor reports
    /// itself (0..=100) is used as is. Returns the fill and the events it raises.
    pub fn on_reading(&mut self, now_ms: i64, device: &str, metrics: &mut Metrics) -> (Option<f64>, Vec<Event>) {
        let mut events = Vec::new();
        let Some(geometry) = self.geometry.get(device) else {
            return (None, events);
        };
        let distance = metric_f64(metrics, "distance_mm");
        let fill = match distance.and_then(|d| geometry.fill_pct(d)) {
            Some(fill) => {
                metrics.insert("fill_pct".into(), num(fill));
                fill
            }
            None => match metric_f64(metrics, "fill_pct").filter(|f| (0.0..=100.0).contains(f)) {
                Some(fill) => fill,
                None => return (None, events),
            },
        };
        let previous = self.state.devices.get(device).copied();
        // A container seen for the first time starts armed.
        let mut armed = match previous {
            Some(p) => p.armed,
            None => true,
        };
        if let Some(prev) = previous {
            if prev.fill_pct - fill >= geometry.emptied_drop_pct {
                events.push(
                    Event::new(device, CONTAINER_EMPTIED, now_ms)
                        .with("fill_pct", num(fill))
                        .with("previous_fill_pct", num(prev.fill_pct)),
                );
                armed = true;
            }
        }
        if fill < geometry.clear_pct {
            armed = true;
        }
        if armed && fill >= geometry.full_pct {
            let mut e = Event::new(device, CONTAINER_FULL, now_ms)
                .with("fill_pct", num(fill))
                .with("full_pct", num(geometry.full_pct));
            if let Some(d) = distance {
                e = e.with("distance_mm", num(d));
            }
            events.push(e);
            armed = false;
        }
        self.state.devices.insert(device.to_string(), ContainerStatus { fill_pct: fill, armed });
        (Some(fill), events)
    }

    /// The state of the containers that have a geometry.
    pub fn snapshot(&self) -> ContainerState {
        let mut state = self.state.clone();
        state.devices.retain(|d, _| self.geometry.contains_key(d));
        state
    }

    /// Replaces the state with a persisted one; entries with an impossible fill are dropped.
    pub fn restore(&mut self, mut state: ContainerState) {
        state.devices.retain(|_, s| (0.0..=100.0).contains(&s.fill_pct));
        self.state = state;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Silence

/// What the watch remembers of one device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SilenceStatus {
    /// Time of the last reading, if one was seen.
    pub last_seen_ms: Option<i64>,
    /// Silence is measured from here: the last reading, or when watching began, moved on by the gateway's
    /// own downtime on restore.
    pub since_ms: i64,
    /// `sensor_silent` has fired and `sensor_back` has not.
    pub silent: bool,
}

/// Persistable state of a [`SilenceWatch`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SilenceState {
    /// When the snapshot was taken: on restore, the time since then is the gateway's downtime.
    pub snapshot_at_ms: i64,
    pub devices: BTreeMap<String, SilenceStatus>,
}

/// Raises `sensor_silent` once when a watched device has not reported for its maximum silence, and
/// `sensor_back` with its next reading.
///
/// A device never heard since watching began is measured from that moment. The gateway's own downtime does
/// not count as silence (it did not listen): on restore, silence clocks move on by the downtime, so a
/// device that died during an outage is reported `max_silence` after the restart instead of every device
/// being reported at once.
#[derive(Debug, Clone, Default)]
pub struct SilenceWatch {
    max_silence_ms: BTreeMap<String, i64>,
    state: BTreeMap<String, SilenceStatus>,
}

impl SilenceWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches `device` (or changes its limit, keeping its state). `max_silence_ms`: 1 s .. 366 days.
    pub fn watch(&mut self, device: &str, max_silence_ms: i64, now_ms: i64) -> Result<(), EventConfigError> {
        const MAX: i64 = 366 * 86_400_000;
        if !(1000..=MAX).contains(&max_silence_ms) {
            return Err(EventConfigError::OutOfRange {
                field: "max_silence_s",
                value: max_silence_ms as f64 / 1000.0,
                min: 1.0,
                max: MAX as f64 / 1000.0,
            });
        }
        self.max_silence_ms.insert(device.to_string(), max_silence_ms);
        self.state.entry(device.to_string()).or_insert(SilenceStatus {
            last_seen_ms: None,
            since_ms: now_ms,
            silent: false,
        });
        Ok(())
    }

    /// Stops watching `device` and forgets it.
    pub fn unwatch(&mut self, device: &str) {
        self.max_silence_ms.remove(device);
        self.state.remove(device);
    }

    pub fn status(&self, device: &str) -> Option<SilenceStatus> {
        self.state.get(device).copied()
    }

    /// Devices currently silent.
    pub fn silent_devices(&self) -> impl Iterator<Item = &str> {
        self.state.iter().filter(|(d, s)| s.silent && self.max_silence_ms.contains_key(*d)).map(|(d, _)| d.as_str())
    }

    /// A reading of `device` arrived (any reading, decodable or not). Returns `sensor_back` if the device
    /// was silent. Unwatched devices are ignored.
    pub fn on_reading(&mut self, now_ms: i64, device: &str) -> Option<Event> {
        if !self.max_silence_ms.contains_key(device) {
            return None;
        }
        let st = self.state.entry(device.to_string()).or_insert(SilenceStatus {
            last_seen_ms: None,
            since_ms: now_ms,
            silent: false,
        });
        let was = *st;
        st.last_seen_ms = Some(now_ms);
        st.since_ms = now_ms;
        st.silent = false;
        if !was.silent {
            return None;
        }
        let from = was.last_seen_ms.unwrap_or(was.since_ms);
        let mut e = Event::new(device, SENSOR_BACK, now_ms)
            .with("silent_for_s", Value::from(now_ms.saturating_sub(from).max(0) / 1000));
        e = e.with("last_seen", was.last_seen_ms.map_or(Value::Null, |t| Value::from(rfc3339_ms(t))));
        Some(e)
    }

    /// Raises `sensor_silent` for every watched device that has just become silent.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Event> {
        let mut events = Vec::new();
        for (device, &max) in &self.max_silence_ms {
            let Some(st) = self.state.get_mut(device) else {
                continue;
            };
            if st.silent || now_ms.saturating_sub(st.since_ms) < max {
                continue;
            }
            st.silent = true;
            let from = st.last_seen_ms.unwrap_or(st.since_ms);
            events.push(
                Event::new(device, SENSOR_SILENT, now_ms)
                    .with("last_seen", st.last_seen_ms.map_or(Value::Null, |t| Value::from(rfc3339_ms(t))))
                    .with("silent_for_s", Value::from(now_ms.saturating_sub(from).max(0) / 1000))
                    .with("max_silence_s", Value::from(max / 1000)),
            );
        }
        events
    }

    /// The state of the watched devices, taken at `now_ms`.
    pub fn snapshot(&self, now_ms: i64) -> SilenceState {
        let mut devices = self.state.clone();
        devices.retain(|d, _| self.max_silence_ms.contains_key(d));
        SilenceState { snapshot_at_ms: now_ms, devices }
    }

    /// Replaces the state with a persisted one taken at `state.snapshot_at_ms`; the time from then to
    /// `now_ms` is downtime and does not count as silence. Devices watched now but absent from the state
    /// keep the state `watch` gave them.
    pub fn restore(&mut self, state: SilenceState, now_ms: i64) {
        let downtime = now_ms.saturating_sub(state.snapshot_at_ms).max(0);
        for (device, mut st) in state.devices {
            st.since_ms = st.since_ms.saturating_add(downtime).min(now_ms.max(st.since_ms));
            self.state.insert(device, st);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Trees

fn default_needs_water_below_pct() -> f64 {
    20.0
}
fn default_watered_above_pct() -> f64 {
    30.0
}

/// Soil-moisture thresholds of a tree (volumetric water content, %).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeThresholds {
    /// `needs_water` fires when `soil_moisture_pct` falls below this (default 20).
    #[serde(default = "default_needs_water_below_pct")]
    pub needs_water_below_pct: f64,
    /// After `needs_water`, `watered` fires when `soil_moisture_pct` rises above this (default 30).
    #[serde(default = "default_watered_above_pct")]
    pub watered_above_pct: f64,
}

impl Default for TreeThresholds {
    fn default() -> Self {
        TreeThresholds {
            needs_water_below_pct: default_needs_water_below_pct(),
            watered_above_pct: default_watered_above_pct(),
        }
    }
}

impl TreeThresholds {
    pub fn validate(&self) -> Result<(), EventConfigError> {
        check_range("needs_water_below_pct", self.needs_water_below_pct, 0.0, 100.0)?;
        check_range("watered_above_pct", self.watered_above_pct, 0.0, 100.0)?;
        check_greater("watered_above_pct", self.watered_above_pct, "needs_water_below_pct", self.needs_water_below_pct)
    }
}

/// What the tracker remembers of one tree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TreeStatus {
    #[serde(with = "crate::aggregate::exact_f64")]
    pub soil_moisture_pct: f64,
    pub needs_water: bool,
}

/// Persistable state of a [`TreeTracker`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeState {
    pub devices: BTreeMap<String, TreeStatus>,
}

/// Raises `needs_water` once when a tree's soil dries below its threshold and `watered` once it is above
/// the upper threshold again. Only devices with thresholds (their own or their group's, resolved by the
/// shell) are trees.
#[derive(Debug, Clone, Default)]
pub struct TreeTracker {
    thresholds: BTreeMap<String, TreeThresholds>,
    state: TreeState,
}

impl TreeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the thresholds of a tree's sensor. Its state is kept.
    pub fn set_thresholds(&mut self, device: &str, thresholds: TreeThresholds) -> Result<(), EventConfigError> {
        thresholds.validate()?;
        self.thresholds.insert(device.to_string(), thresholds);
        Ok(())
    }

    pub fn remove(&mut self, device: &str) {
        self.thresholds.remove(device);
        self.state.devices.remove(device);
    }

    pub fn status(&self, device: &str) -> Option<TreeStatus> {
        self.state.devices.get(device).copied()
    }

    /// Processes one reading's `soil_moisture_pct` (ignored outside 0..=100).
    pub fn on_reading(&mut self, now_ms: i64, device: &str, metrics: &Metrics) -> Option<Event> {
        let t = self.thresholds.get(device)?;
        let m = metric_f64(metrics, "soil_moisture_pct").filter(|m| (0.0..=100.0).contains(m))?;
        let needs = self.state.devices.get(device).is_some_and(|s| s.needs_water);
        let (needs, event) = if !needs && m < t.needs_water_below_pct {
            (true, Some((NEEDS_WATER, t.needs_water_below_pct)))
        } else if needs && m > t.watered_above_pct {
            (false, Some((WATERED, t.watered_above_pct)))
        } else {
            (needs, None)
        };
        self.state.devices.insert(device.to_string(), TreeStatus { soil_moisture_pct: m, needs_water: needs });
        event.map(|(kind, threshold)| {
            Event::new(device, kind, now_ms).with("soil_moisture_pct", num(m)).with("threshold_pct", num(threshold))
        })
    }

    /// The state of the devices that have thresholds.
    pub fn snapshot(&self) -> TreeState {
        let mut state = self.state.clone();
        state.devices.retain(|d, _| self.thresholds.contains_key(d));
        state
    }

    pub fn restore(&mut self, mut state: TreeState) {
        state.devices.retain(|_, s| (0.0..=100.0).contains(&s.soil_moisture_pct));
        self.state = state;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Persisting everything at once

/// The state of all event trackers, for the shell to persist as one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsState {
    #[serde(default)]
    pub containers: ContainerState,
    #[serde(default)]
    pub silence: SilenceState,
    #[serde(default)]
    pub trees: TreeState,
}

// ---------------------------------------------------------------------------------------------------------
// Presence

/// Presence as the lighting loop needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// Someone (or something) is there: any of `motion`, `occupancy`, `people_count > 0` says so.
    pub occupied: bool,
    /// `people_count`, when the sensor counts.
    pub people: Option<u64>,
}

/// Presence from a reading's `motion`, `occupancy` and `people_count`, or `None` if it carries none of
/// them (a battery or heartbeat uplink says nothing about presence).
///
/// `motion` / `occupancy` are booleans, numbers (non-zero = present) or the strings codecs use
/// (`"occupied"`, `"vacant"`, `"detected"`, `"true"`, ...). `people_count` is a non-negative integer (a float
/// is rounded; negative or absurd values are ignored). When the signals disagree, presence wins: for street
/// lighting a false "present" costs a little energy, a false "absent" leaves someone in the dark.
pub fn presence_from(metrics: &Metrics) -> Option<Presence> {
    let motion = metrics.get("motion").and_then(flag);
    let occupancy = metrics.get("occupancy").and_then(flag);
    let people = metrics.get("people_count").and_then(count);
    if motion.is_none() && occupancy.is_none() && people.is_none() {
        return None;
    }
    let occupied = motion == Some(true) || occupancy == Some(true) || people.is_some_and(|n| n > 0);
    Some(Presence { occupied, people })
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "occupied" | "occupy" | "detected" | "motion" | "present" | "trigger"
            | "triggered" => Some(true),
            "false" | "0" | "no" | "off" | "vacant" | "free" | "unoccupied" | "empty" | "none" | "clear"
            | "not_detected" | "undetected" | "absent" | "idle" | "normal" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn count(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // Non-negative, finite and below 2^32: nobody counts more people at one lamp.
    if f.is_finite() && (0.0..4_294_967_296.0).contains(&f) {
        Some(f.round() as u64)
    } else {
        None
    }
}
