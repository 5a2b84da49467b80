//! What radio sources hand to the network server: a received frame with its reception metadata and
//! where it came from (so that an answer can go back the same way).

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
