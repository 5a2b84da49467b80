//! `[lorawan.adr]` and `[lorawan.mac]`: adaptive data rate and the MAC command engine (the pure
//! logic is the core's `lorawan::adr` and `lorawan::mac_engine`), their defaults and checks.

use serde::{Deserialize, Serialize};

use super::problem::Sink;
use super::spans::{Doc, KeyPath};

/// `[lorawan.adr]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdrSection {
    /// ADR for devices that set the ADR bit (a device's `adr = false` opts it out).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Installation margin in dB kept above the SNR the spreading factor needs.
    #[serde(default = "default_margin_db")]
    pub margin_db: f64,
    /// Lowest and highest data rate ADR moves devices to (EU868 DR0 = SF12 .. DR5 = SF7).
    #[serde(default)]
    pub min_dr: u8,
    #[serde(default = "default_max_dr")]
    pub max_dr: u8,
}

impl Default for AdrSection {
    fn default() -> Self {
        AdrSection { enabled: true, margin_db: default_margin_db(), min_dr: 0, max_dr: default_max_dr() }
    }
}

/// `[lorawan.mac]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacSection {
    /// Transmissions of a MAC request the device does not answer before it is dropped.
    #[serde(default = "default_max_tries")]
    pub max_tries: u8,
    /// Extra channels (Hz) given to ABP devices with NewChannelReq as channels 3.. (OTAA devices get
    /// the same in the join accept's CFList). Empty: none.
    #[serde(default)]
    pub abp_channels_hz: Vec<u32>,
}

impl Default for MacSection {
    fn default() -> Self {
        MacSection { max_tries: default_max_tries(), abp_channels_hz: Vec::new() }
    }
}

fn yes() -> bool {
    true
}
fn default_margin_db() -> f64 {
    10.0
}
fn default_max_dr() -> u8 {
    5
}
fn default_max_tries() -> u8 {
    3
}

impl AdrSection {
    pub fn to_core(&self) -> crate::lorawan::AdrConfig {
        crate::lorawan::AdrConfig {
            enabled: self.enabled,
            margin_db: self.margin_db,
            min_dr: self.min_dr,
            max_dr: self.max_dr,
        }
    }
}

pub(super) fn check(doc: &Doc<'_>, adr: &AdrSection, mac: &MacSection, sink: &mut Sink) {
    let p = KeyPath::root().key("lorawan").key("adr");
    if !(0.0..=30.0).contains(&adr.margin_db) {
        doc.problem(sink, p.key("margin_db"), "must be 0..=30 dB");
    }
    if adr.max_dr > 5 {
        doc.problem(sink, p.key("max_dr"), "must be 0..=5 (EU868 LoRa at 125 kHz: DR5 = SF7)");
    }
    if adr.min_dr > adr.max_dr {
        doc.problem(sink, p.key("min_dr"), format!("must not be above max_dr ({})", adr.max_dr));
    }
    let p = KeyPath::root().key("lorawan").key("mac");
    if !(1..=10).contains(&mac.max_tries) {
        doc.problem(sink, p.key("max_tries"), "must be 1..=10");
    }
    if mac.abp_channels_hz.len() > 5 {
        doc.problem(sink, p.key("abp_channels_hz"), "at most 5 channels (3..=7), as a CFList");
    }
    for (i, f) in mac.abp_channels_hz.iter().enumerate() {
        if !(863_000_000..=870_000_000).contains(f) || f % 100 != 0 {
            doc.problem(
                sink,
                p.key("abp_channels_hz").index(i),
                format!("{f} Hz: must be within 863-870 MHz, in steps of 100 Hz"),
            );
        }
    }
}
