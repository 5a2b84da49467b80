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
/// ([`crate::reading::Reading::from_sample`]).
#[derive(Debug, Clone)]
pub struct MeterSample {
    pub device: String,
    pub at: chrono::DateTime<chrono::Utc>,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Set for a wireless M-Bus meter: its link-layer identity and reception.
    pub wmbus: Option<crate::reading::WmbusMeta>,
}
