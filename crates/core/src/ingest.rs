//! What the sources hand to the core: a received radio frame with its reception metadata and where it
//! came from (so that an answer can go back the same way), or a smart-meter sample.

use crate::keys::Eui64;

/// The source (index among the configured sources) and gateway that heard a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    pub source: usize,
    pub gateway: Eui64,
}

/// A LoRa frame as a radio source hands it over.
#[derive(Debug, Clone, Default)]
pub struct RadioFrame {
    pub phy: Vec<u8>,
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
    pub freq_hz: u64,
    pub sf: Option<u8>,
    /// Bandwidth in kHz (125 unless the radio says otherwise).
    pub bw_khz: u32,
    /// Concentrator timestamp (µs) at the end of the frame, when the radio gives one: needed to answer
    /// in the class A receive windows.
    pub tmst: Option<u32>,
    pub origin: Origin,
}

/// One meter sample (an SML frame's OBIS values, or a configured wireless M-Bus meter's decoded
/// telegram), as the meter source hands it over: the core turns it into a reading
/// (`Reading::from_sample`).
#[derive(Debug, Clone)]
pub struct MeterSample {
    pub device: String,
    pub at: chrono::DateTime<chrono::Utc>,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Set for a wireless M-Bus meter: its link-layer identity and reception.
    pub wmbus: Option<WmbusMeta>,
}

/// Radio metadata of a wireless M-Bus reading (a meter heard by a wM-Bus stick). Absent for others.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct WmbusMeta {
    /// The meter's 8-digit id as printed on it.
    pub id: String,
    /// Three-letter manufacturer code, e.g. "KAM".
    pub manufacturer: String,
    pub version: u8,
    /// The device type (EN 13757-3 medium) by name, e.g. "water".
    #[serde(rename = "type")]
    pub device_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_number: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
}
