//! Windowed aggregates per device: the payload of `agg/{device}` (PRODUCT.md "An aggregate").
//!
//! Pure core: no clock, no I/O, no async. The shell passes `now_ms` (UTC epoch milliseconds) into every
//! call, publishes the windows that come back, and persists [`Aggregator::snapshot`] so that open windows
//! survive a restart.
//!
//! # Rules
//! - **Windows** are `window_s` long and aligned to the UTC clock: `window_start = floor(t / window_s) *
//!   window_s` (epoch seconds), so with `window_s = 300` windows start at :00, :05, :10, ... on every gateway.
//! - **One open window per device.** All metrics of a device share it. A reading whose window is later than
//!   the open one closes the open window (returned by [`Aggregator::observe`]) and opens the new one;
//!   [`Aggregator::tick`] closes every window whose end has passed (the shell calls it from a timer, e.g.
//!   every few seconds, and once right after [`Aggregator::new`] / [`Aggregator::restore`]).
//! - **What is aggregated:** numbers, and booleans as 0/1 (so the `mean` of `motion` or `occupancy` is the
//!   fraction of readings that saw presence, and `max` says whether any did). Strings, `null`, arrays and
//!   objects are skipped. Numbers with a magnitude above [`MAX_ABS_VALUE`] are ignored and counted
//!   (`serde_json` cannot hold NaN or infinities; such decoder output is already `null` and skipped). This
//!   bound also keeps every sum finite, so state always serialises.
//! - **`count`** of a window is the number of readings that contributed at least one value; each metric
//!   also carries its own `count` (a field that is not in every reading). A reading without any aggregatable
//!   value (a `raw` device, an undecodable payload) opens no window: no empty aggregates are published.
//! - **Late readings** (their window was already closed, by a tick or by a later reading of that device, or
//!   they are dated before 1970) are not added and do not reopen anything; they are counted in
//!   [`AggregatorCounters::late_readings`]. Readings dated more than [`FUTURE_TOLERANCE_MS`] after `now` (a
//!   device clock far ahead) would hold a window open for hours and turn every correct reading late; they are
//!   ignored and counted in [`AggregatorCounters::future_readings`].
//! - **Clock steps back** (a Pi without RTC corrected by NTP) by more than one window: the next tick closes
//!   every open window and restarts from the new time (counted in [`AggregatorCounters::clock_steps_back`]).
//!   A step back of less than a window only makes readings late until the clock has caught up.
//! - **Restart:** [`AggregatorState`] holds the open windows (as running min/max/sum/last/count) and the
//!   closing horizon. Restoring it and calling `tick(now)` publishes the windows that ended during the
//!   downtime and continues the others, with exactly the values an uninterrupted run would have produced.
//!   A state saved with another `window_s` is not mixed in: its open windows are closed as they are (with
//!   their own length) and returned by `restore` for publishing.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Decoded metrics of one reading (the same type as `decode::Metrics`).
pub type Metrics = Map<String, Value>;

/// The longest window accepted by [`Aggregator::new`] (one day).
pub const MAX_WINDOW_S: u32 = 86_400;

/// How far after `now` a reading may be dated and still be aggregated.
pub const FUTURE_TOLERANCE_MS: i64 = 60_000;

/// Values with a larger magnitude are ignored (and counted): no sensor measures this, and with the bound the
/// sum of any number of values stays finite.
pub const MAX_ABS_VALUE: f64 = 1e100;

/// The last millisecond that is formatted and aggregated: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A configuration error of the aggregator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("window_s must be between 1 and {MAX_WINDOW_S} seconds, got {0}")]
    InvalidWindow(u64),
}

/// Statistics of one metric over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// The value of the reading with the latest time in the window (ties: the one observed last).
    pub last: f64,
    /// Readings in the window that carried this metric.
    pub count: u64,
}

/// One closed window of one device: what goes out on `agg/{device}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateWindow {
    pub device: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// Readings in the window (that carried at least one aggregatable value).
    pub count: u64,
    pub metrics: BTreeMap<String, Stats>,
}

impl AggregateWindow {
    /// The topic below `{prefix}/{gateway}/`.
    pub fn topic(&self) -> crate::topic::Topic {
        crate::topic::Topic::Aggregate(self.device.clone())
    }

    /// The payload: `{"seq", "gateway", "device", "window_start", "window_end", "count", "metrics":
    /// {"distance_mm": {"min", "max", "mean", "last", "count"}, ...}}`. Integral values within ±2^53 are
    /// written as JSON integers (a `distance_mm` stays `2116`, not `2116.0`); `mean` is always a float.
    pub fn to_json(&self, seq: u64, gateway: &str) -> Value {
        let mut metrics = Map::new();
        for (name, s) in &self.metrics {
            let mut m = Map::new();
            m.insert("min".into(), number(s.min));
            m.insert("max".into(), number(s.max));
            m.insert("mean".into(), float(s.mean));
            m.insert("last".into(), number(s.last));
            m.insert("count".into(), Value::from(s.count));
            metrics.insert(name.clone(), Value::Object(m));
        }
        let mut o = Map::new();
        o.insert("seq".into(), Value::from(seq));
        o.insert("gateway".into(), Value::from(gateway));
        o.insert("device".into(), Value::from(self.device.as_str()));
        o.insert("window_start".into(), Value::from(rfc3339_ms(self.window_start_ms)));
        o.insert("window_end".into(), Value::from(rfc3339_ms(self.window_end_ms)));
        o.insert("count".into(), Value::from(self.count));
        o.insert("metrics".into(), Value::Object(metrics));
        Value::Object(o)
    }
}

/// Counters for `/metrics`. Not persisted (Prometheus counters restart at zero with the process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AggregatorCounters {
    /// Readings for a window that was already closed (or dated before 1970).
    pub late_readings: u64,
    /// Readings dated more than [`FUTURE_TOLERANCE_MS`] after `now`.
    pub future_readings: u64,
    /// Numeric values ignored because of their magnitude.
    pub ignored_values: u64,
    /// Times the clock was seen to step back by more than one window.
    pub clock_steps_back: u64,
}

/// Running statistics of one metric in an open window. Serialised as `[min, max, sum, last, last_at_ms,
/// count]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "AccRepr", into = "AccRepr")]
struct Acc {
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
    /// Time of the reading `last` came from: decides `last` when readings arrive out of order.
    last_at_ms: i64,
    count: u64,
}

type AccRepr = (ExactF64, ExactF64, ExactF64, ExactF64, i64, u64);

impl From<AccRepr> for Acc {
    fn from((min, max, sum, last, last_at_ms, count): AccRepr) -> Self {
        Acc { min: min.0, max: max.0, sum: sum.0, last: last.0, last_at_ms, count }
    }
}

impl From<Acc> for AccRepr {
    fn from(a: Acc) -> Self {
        (ExactF64(a.min), ExactF64(a.max), ExactF64(a.sum), ExactF64(a.last), a.last_at_ms, a.count)
    }
}

impl Acc {
    fn new(v: f64, at_ms: i64) -> Self {
        Acc { min: v, max: v, sum: v, last: v, last_at_ms: at_ms, count: 1 }
    }

    fn add(&mut self, v: f64, at_ms: i64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        if at_ms >= self.last_at_ms {
            self.last = v;
            self.last_at_ms = at_ms;
        }
        self.count = self.count.saturating_add(1);
    }

    fn is_sane(&self) -> bool {
        let finite = [self.min, self.max, self.sum, self.last].iter().all(|v| v.is_finite());
        finite && self.count > 0 && self.min <= self.max && self.last >= self.min && self.last <= self.max
    }

    fn stats(&self) -> Stats {
        let n = self.count.max(1) as f64;
        let mut mean = self.sum / n;
        if !mean.is_finite() {
            mean = self.min / 2.0 + self.max / 2.0;
        }
        // Rounding can push the mean of near-equal values a hair outside [min, max].
        let mean = mean.clamp(self.min, self.max);
        Stats { min: self.min, max: self.max, mean, last: self.last, count: self.count }
    }
}

/// The open window of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenWindow {
    start_ms: i64,
    count: u64,
    metrics: BTreeMap<String, Acc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DeviceState {
    /// Windows of this device starting before this are closed (set when a later reading closed one).
    #[serde(default, skip_serializing_if = "is_zero")]
    closed_until_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open: Option<OpenWindow>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What survives a restart: open windows and the closing horizon. Opaque; persist it with a self-describing
/// serde format (JSON: about 60 bytes per device with an open window plus 60 per metric). Floats are stored
/// so that they come back bit for bit, so a restored run continues exactly like an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatorState {
    window_ms: i64,
    /// Every window ending at or before this is closed, for every device.
    closed_until_ms: i64,
    devices: BTreeMap<String, DeviceState>,
}

/// Windowed aggregation of readings, per device and metric.
#[derive(Debug, Clone)]
pub struct Aggregator {
    window_ms: i64,
    closed_until_ms: i64,
    devices: BTreeMap<String, DeviceState>,
    counters: AggregatorCounters,
}

impl Aggregator {
    /// An aggregator with windows of `window_s` seconds (1..=[`MAX_WINDOW_S`]).
    pub fn new(window_s: u32) -> Result<Self, AggregateError> {
        if window_s == 0 || window_s > MAX_WINDOW_S {
            return Err(AggregateError::InvalidWindow(u64::from(window_s)));
        }
        Ok(Aggregator {
            window_ms: i64::from(window_s) * 1000,
            closed_until_ms: 0,
            devices: BTreeMap::new(),
            counters: AggregatorCounters::default(),
        })
    }

    pub fn window_s(&self) -> u32 {
        u32::try_from(self.window_ms / 1000).unwrap_or(MAX_WINDOW_S)
    }

    /// Start of the window containing `t_ms` (which must be in `0..=MAX_TIME_MS`).
    fn window_start(&self, t_ms: i64) -> i64 {
        t_ms - t_ms.rem_euclid(self.window_ms)
    }

    pub fn counters(&self) -> AggregatorCounters {
        self.counters
    }

    /// Devices with an open window.
    pub fn open_windows(&self) -> usize {
        self.devices.values().filter(|d| d.open.is_some()).count()
    }

    /// Adds one reading of `device`, dated `at_ms`, to its window. Returns the window this closes (when the
    /// reading belongs to a later window than the device's open one), else nothing.
    pub fn observe(&mut self, now_ms: i64, device: &str, at_ms: i64, metrics: &Metrics) -> Vec<AggregateWindow> {
        let values = self.values(metrics);
        if values.is_empty() {
            return Vec::new();
        }
        if at_ms > now_ms.saturating_add(FUTURE_TOLERANCE_MS) || at_ms > MAX_TIME_MS {
            self.counters.future_readings += 1;
            return Vec::new();
        }
        if at_ms < 0 {
            self.counters.late_readings += 1;
            return Vec::new();
        }
        let start = self.window_start(at_ms);
        if start < self.closed_until_ms {
            self.counters.late_readings += 1;
            return Vec::new();
        }
        let window_ms = self.window_ms;
        let dev = self.devices.entry(device.to_string()).or_default();
        if start < dev.closed_until_ms {
            self.counters.late_readings += 1;
            return Vec::new();
        }
        let mut closed = Vec::new();
        match &mut dev.open {
            Some(open) if open.start_ms == start => {
                open.count = open.count.saturating_add(1);
                for (name, v) in values {
                    match open.metrics.get_mut(name) {
                        Some(acc) => acc.add(v, at_ms),
                        None => {
                            open.metrics.insert(name.to_string(), Acc::new(v, at_ms));
                        }
                    }
                }
                return closed;
            }
            Some(open) if open.start_ms > start => {
                self.counters.late_readings += 1;
                return closed;
            }
            Some(_) => {
                if let Some(old) = dev.open.take() {
                    dev.closed_until_ms = old.start_ms + window_ms;
                    closed.push(close(device, old, window_ms));
                }
            }
            None => {}
        }
        let metrics = values.into_iter().map(|(n, v)| (n.to_string(), Acc::new(v, at_ms))).collect();
        dev.open = Some(OpenWindow { start_ms: start, count: 1, metrics });
        closed
    }

    /// The aggregatable values of a reading; counts ignored ones.
    fn values<'m>(&mut self, metrics: &'m Metrics) -> Vec<(&'m str, f64)> {
        let mut out = Vec::with_capacity(metrics.len());
        for (name, value) in metrics {
            let v = match value {
                Value::Number(n) => match n.as_f64() {
                    Some(v) => v,
                    None => continue,
                },
                Value::Bool(b) => f64::from(u8::from(*b)),
                _ => continue,
            };
            if !v.is_finite() || v.abs() > MAX_ABS_VALUE {
                self.counters.ignored_values += 1;
                continue;
            }
            out.push((name.as_str(), v));
        }
        out
    }

    /// Closes every window whose end is at or before `now_ms`; returns them ordered by start, then device.
    pub fn tick(&mut self, now_ms: i64) -> Vec<AggregateWindow> {
        let now = now_ms.clamp(0, MAX_TIME_MS);
        let horizon = self.window_start(now);
        let window_ms = self.window_ms;
        let mut closed = Vec::new();
        if horizon < self.closed_until_ms - window_ms {
            // The clock stepped back by more than a window: close everything, start again from now.
            self.counters.clock_steps_back += 1;
            for (device, dev) in std::mem::take(&mut self.devices) {
                if let Some(open) = dev.open {
                    closed.push(close(&device, open, window_ms));
                }
            }
            self.closed_until_ms = horizon;
        } else {
            self.closed_until_ms = self.closed_until_ms.max(horizon);
            let until = self.closed_until_ms;
            for (device, dev) in &mut self.devices {
                if dev.open.as_ref().is_some_and(|o| o.start_ms + window_ms <= until) {
                    if let Some(open) = dev.open.take() {
                        closed.push(close(device, open, window_ms));
                    }
                }
            }
            // Devices without an open window whose own horizon the global one has overtaken carry no
            // information any more: drop them to keep the state compact.
            self.devices.retain(|_, d| d.open.is_some() || d.closed_until_ms > until);
        }
        closed.sort_by(|a, b| (a.window_start_ms, &a.device).cmp(&(b.window_start_ms, &b.device)));
        closed
    }

    /// Closes every open window now regardless of its end (for a graceful shutdown that does not persist
    /// state, or a change of `window_s`). Windows are returned as they are, ordered like [`Self::tick`].
    pub fn flush(&mut self) -> Vec<AggregateWindow> {
        let window_ms = self.window_ms;
        let mut closed = Vec::new();
        for (device, dev) in &mut self.devices {
            if let Some(open) = dev.open.take() {
                dev.closed_until_ms = open.start_ms + window_ms;
                closed.push(close(device, open, window_ms));
            }
        }
        closed.sort_by(|a, b| (a.window_start_ms, &a.device).cmp(&(b.window_start_ms, &b.device)));
        closed
    }

    /// The state to persist. Cheap to take; the shell saves it periodically and at shutdown.
    pub fn snapshot(&self) -> AggregatorState {
        AggregatorState {
            window_ms: self.window_ms,
            closed_until_ms: self.closed_until_ms,
            devices: self.devices.clone(),
        }
    }

    /// Replaces the state with a persisted one. Entries that are inconsistent (a corrupt or hand-edited
    /// file) are dropped rather than trusted. If the state was saved with another window length its open
    /// windows are returned closed, for publishing, and aggregation restarts empty.
    pub fn restore(&mut self, state: AggregatorState) -> Vec<AggregateWindow> {
        self.devices.clear();
        self.closed_until_ms = 0;
        let old_window_ms = state.window_ms;
        let valid_window = old_window_ms > 0 && old_window_ms <= i64::from(MAX_WINDOW_S) * 1000;
        let mut devices = BTreeMap::new();
        for (device, mut dev) in state.devices {
            if let Some(open) = dev.open.take() {
                if valid_window && sane_open(&open, old_window_ms) {
                    dev.open = Some(open);
                }
            }
            dev.closed_until_ms = dev.closed_until_ms.clamp(0, MAX_TIME_MS);
            devices.insert(device, dev);
        }
        if old_window_ms != self.window_ms {
            let mut closed = Vec::new();
            if valid_window {
                for (device, dev) in devices {
                    if let Some(open) = dev.open {
                        closed.push(close(&device, open, old_window_ms));
                    }
                }
            }
            closed.sort_by(|a, b| (a.window_start_ms, &a.device).cmp(&(b.window_start_ms, &b.device)));
            // Nothing of the new length may overlap what was published with the old one.
            let end = closed.iter().map(|w| w.window_end_ms).max().unwrap_or(0).max(state.closed_until_ms);
            let end = end.clamp(0, MAX_TIME_MS);
            self.closed_until_ms = end - end.rem_euclid(self.window_ms);
            if self.closed_until_ms < end {
                self.closed_until_ms += self.window_ms;
            }
            return closed;
        }
        self.closed_until_ms = state.closed_until_ms.clamp(0, MAX_TIME_MS);
        self.closed_until_ms -= self.closed_until_ms.rem_euclid(self.window_ms);
        self.devices = devices;
        Vec::new()
    }
}

fn sane_open(open: &OpenWindow, window_ms: i64) -> bool {
    (0..=MAX_TIME_MS).contains(&open.start_ms)
        && open.start_ms.rem_euclid(window_ms) == 0
        && open.count > 0
        && !open.metrics.is_empty()
        && open.metrics.values().all(|a| a.is_sane() && a.count <= open.count)
}

fn close(device: &str, open: OpenWindow, window_ms: i64) -> AggregateWindow {
    AggregateWindow {
        device: device.to_string(),
        window_start_ms: open.start_ms,
        window_end_ms: open.start_ms + window_ms,
        count: open.count,
        metrics: open.metrics.iter().map(|(n, a)| (n.clone(), a.stats())).collect(),
    }
}

/// An `f64` in persisted state that survives a round trip through any serde format bit for bit.
///
/// `serde_json` without its `float_roundtrip` feature may parse a 17-digit float one ulp off, which would make
/// a restored window differ from an uninterrupted one. Integral values (most metrics) are written as
/// integers, which every format keeps exactly; others as their shortest round-trip decimal string. Reading
/// accepts strings and plain numbers (a hand-edited state).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ExactF64(pub(crate) f64);

impl Serialize for ExactF64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        let v = self.0;
        if v.fract() == 0.0 && v.abs() <= EXACT && !(v == 0.0 && v.is_sign_negative()) {
            s.serialize_i64(v as i64)
        } else {
            // `Display` of f64 is the shortest decimal that parses back to the same value.
            s.collect_str(&v)
        }
    }
}

impl<'de> Deserialize<'de> for ExactF64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ExactF64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a decimal string")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ExactF64, E> {
                Ok(ExactF64(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ExactF64, E> {
                Ok(ExactF64(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ExactF64, E> {
                Ok(ExactF64(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ExactF64, E> {
                v.trim().parse::<f64>().map(ExactF64).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `#[serde(with = "exact_f64")]` for `f64` fields of persisted state (see [`ExactF64`]).
pub(crate) mod exact_f64 {
    use super::ExactF64;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        ExactF64(*v).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ExactF64::deserialize(d).map(|v| v.0)
    }
}

/// A JSON number: an integer when the value is integral and exactly representable, else a float
/// (`null` if not finite, which the aggregator never produces).
fn number(v: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() <= EXACT {
        Value::from(v as i64)
    } else {
        float(v)
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

/// RFC 3339 UTC with milliseconds and `Z`, the time format of every payload. Times outside
/// 1970..=9999 are clamped into that range.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms.clamp(0, MAX_TIME_MS))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}
