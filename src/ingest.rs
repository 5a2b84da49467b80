//! From a received radio frame to a reading: de-duplication, LoRaWAN session check, decryption, and
//! the reading the city gets. Pure: the time comes in as a value, nothing is written anywhere; the
//! runtime journals what comes out.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Map;

use crate::lorawan::{Dedup, Sessions, Uplink, UplinkError};
use crate::reading::{rfc3339, LoraMeta, Reading};

/// A LoRa frame as a radio source hands it over, with its reception metadata.
#[derive(Debug, Clone)]
pub struct RadioFrame {
    pub phy: Vec<u8>,
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
    pub freq_hz: u64,
    pub sf: Option<u8>,
}

/// What became of one frame.
#[derive(Debug)]
pub enum Outcome {
    /// A reading to journal (its `seq` is still 0), and the frame counter that admitted it.
    Reading {
        reading: Box<Reading>,
        fcnt: u32,
    },
    /// A valid frame with MAC commands only (FPort 0 or no FRMPayload): state advances, no reading.
    MacOnly {
        device: String,
        fcnt: u32,
    },
    /// The same frame seen again within the de-duplication window.
    Duplicate,
    Rejected(UplinkError),
}

/// Device facts the ingest path needs besides its keys.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub profile: String,
}

pub struct Ingest {
    gateway_id: String,
    sessions: Sessions,
    dedup: Dedup,
    devices: HashMap<String, DeviceInfo>,
}

/// Same frame through several rxpk or sources: copies arrive within tens of milliseconds; a device
/// cannot legitimately send the very same bytes again (its counter advances), so a generous window is safe.
pub const DEDUP_WINDOW_MS: u64 = 2_000;
const DEDUP_MAX_ENTRIES: usize = 16_384;

impl Ingest {
    pub fn new(gateway_id: String, sessions: Sessions, devices: HashMap<String, DeviceInfo>) -> Self {
        Ingest { gateway_id, sessions, dedup: Dedup::new(DEDUP_WINDOW_MS, DEDUP_MAX_ENTRIES), devices }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn handle(&mut self, now: DateTime<Utc>, frame: &RadioFrame) -> Outcome {
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        if self.dedup.is_duplicate(now_ms, &frame.phy) {
            return Outcome::Duplicate;
        }
        let up = match self.sessions.accept_uplink(&frame.phy) {
            Ok(up) => up,
            Err(e) => return Outcome::Rejected(e),
        };
        if !up.is_application_data() {
            return Outcome::MacOnly { device: up.device, fcnt: up.f_cnt };
        }
        let fcnt = up.f_cnt;
        Outcome::Reading { reading: Box::new(self.reading(now, frame, up)), fcnt }
    }

    fn reading(&self, now: DateTime<Utc>, frame: &RadioFrame, up: Uplink) -> Reading {
        let profile = self.devices.get(&up.device).map_or_else(|| "raw".to_string(), |d| d.profile.clone());
        Reading {
            seq: 0,
            gateway: self.gateway_id.clone(),
            device: up.device,
            profile,
            at: rfc3339(now),
            metrics: Map::new(),
            lorawan: Some(LoraMeta {
                dev_addr: up.dev_addr.to_string(),
                f_cnt: up.f_cnt,
                f_port: up.f_port,
                payload_hex: hex::encode(&up.payload),
                rssi: frame.rssi,
                snr: frame.snr,
                freq_hz: frame.freq_hz,
                sf: frame.sf,
            }),
            error: None,
        }
    }
}
