//! What the local status page shows: a plain snapshot the pipeline keeps up to date (devices with
//! last seen and last values, the control loops' state) plus what the page assembles from the
//! counters, sources and store when it is requested. Read-only for the page.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// One device as the page lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceView {
    pub name: String,
    pub profile: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_metrics: Map<String, Value>,
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
    pub error: Option<String>,
}

/// One source as the page lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceView {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub since: Option<DateTime<Utc>>,
    pub frames: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The power-fail input, when one is configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PowerView {
    /// Its BCM pin.
    pub pin: u8,
    /// When mains power was lost, while it is.
    pub lost_since: Option<DateTime<Utc>>,
    /// Frames and samples refused while it was lost, since the start.
    pub refused: u64,
}

/// Everything the status page renders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusView {
    pub gateway_id: String,
    pub version: String,
    pub now: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub mqtt_connected: bool,
    pub mqtt_reconnects: u64,
    pub backlog_depth: u64,
    pub backlog_oldest_age_s: Option<f64>,
    pub readings_journaled: u64,
    pub readings_published: u64,
    pub readings_dropped: u64,
    pub healthy: bool,
    pub health_reason: String,
    /// `None`: no power-fail input is configured.
    pub power: Option<PowerView>,
    /// Bytes the daemon has caused to be written to storage since it started (`/proc/self/io`
    /// `write_bytes`; None where it cannot be read), and its journal fsyncs.
    pub disk_write_bytes: Option<u64>,
    pub journal_fsyncs: u64,
    pub sources: Vec<SourceView>,
    pub devices: Vec<DeviceView>,
    /// `Loops::status`: `{"lighting": {...zones...}, "demand_response": {...}}`.
    pub control: Value,
    /// Counters by name, for the small "traffic" table.
    pub counters: Vec<(String, u64)>,
    /// Telegrams of wM-Bus meters that are not configured: (manufacturer, type, count); never ids.
    pub wmbus_foreign: Vec<(String, String, u64)>,
}

/// The part of the page the pipeline maintains.
#[derive(Debug, Default)]
pub struct Board {
    pub devices: BTreeMap<String, DeviceView>,
    pub control: Value,
}

pub type SharedBoard = Arc<Mutex<Board>>;

impl Board {
    /// Lists every configured device, seen or not.
    pub fn new_shared(devices: impl IntoIterator<Item = (String, String)>) -> SharedBoard {
        let mut b = Board::default();
        for (name, profile) in devices {
            b.devices.insert(name.clone(), DeviceView { name, profile, ..DeviceView::default() });
        }
        Arc::new(Mutex::new(b))
    }

    pub fn seen(&mut self, r: &crate::reading::Reading, at: DateTime<Utc>) {
        let d = self
            .devices
            .entry(r.device.clone())
            .or_insert_with(|| DeviceView { name: r.device.clone(), ..DeviceView::default() });
        d.profile = r.profile.clone();
        d.last_seen = Some(at);
        d.last_metrics = r.metrics.clone();
        d.rssi = r.lorawan.as_ref().and_then(|l| l.rssi);
        d.snr = r.lorawan.as_ref().and_then(|l| l.snr);
        d.error = r.error.clone();
    }
}
