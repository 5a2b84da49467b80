//! The radio sources' settings as they are written in `[[source]]` (`type = "sx127x"`,
//! `type = "serial_lora"`): plain data here, so that the configuration does not depend on the I/O
//! code; what the drivers do with them (validation against the chip, wiring, command sequences) is
//! in `io/sx127x` and `io/serial_lora`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::wmbus_stick::{LinkMode as WmbusMode, StickKind as WmbusStick};

/// RegSyncWord for the LoRaWAN public network.
pub const SYNC_WORD_LORAWAN_PUBLIC: u8 = 0x34;

/// `[[source]] type = "sx127x"`. Every pin is configurable; defaults fit the Dragino/Uputronics-style
/// HATs (SPI0 CE0, NRESET on BCM 17, DIO0 on BCM 4) and EU868 channel 0 at SF7BW125.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sx127xConfig {
    /// Source name in status and metrics.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub spi_bus: u8,
    pub spi_cs: u8,
    pub spi_clock_hz: u32,
    /// BCM number of the NRESET line; absent = not wired (software re-init only).
    pub reset_pin: Option<u8>,
    /// NRESET is active low on the bare chip; some boards invert it.
    pub reset_active_low: bool,
    /// BCM number of DIO0 (RxDone/TxDone).
    pub dio0_pin: u8,
    pub freq_hz: u64,
    pub sf: u8,
    pub bw_khz: u32,
    /// Coding rate 4/`cr` (5..=8).
    pub cr: u8,
    /// 0x34 = LoRaWAN public network, 0x12 = private.
    pub sync_word: u8,
    pub preamble_len: u16,
    /// Default transmit power for downlinks.
    pub tx_power_dbm: i8,
    /// Output on PA_BOOST (RFM95/96 modules) rather than RFO.
    pub pa_boost: bool,
    /// Downlinks with inverted IQ (LoRaWAN); false only for peer-to-peer use.
    pub tx_invert_iq: bool,
    /// Drop packets whose header announces no payload CRC (LoRaWAN uplinks always carry one).
    pub require_crc: bool,
    /// How often the chip is checked (version, mode, missed interrupts).
    pub health_interval_ms: u64,
    /// Packets found by polling rather than by interrupt, in a row, before the chip is re-initialised.
    pub missed_irq_limit: u32,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for Sx127xConfig {
    fn default() -> Self {
        Sx127xConfig {
            name: String::new(),
            spi_bus: 0,
            spi_cs: 0,
            spi_clock_hz: 1_000_000,
            reset_pin: Some(17),
            reset_active_low: true,
            dio0_pin: 4,
            freq_hz: 868_100_000,
            sf: 7,
            bw_khz: 125,
            cr: 5,
            sync_word: SYNC_WORD_LORAWAN_PUBLIC,
            preamble_len: 8,
            tx_power_dbm: 14,
            pa_boost: true,
            tx_invert_iq: true,
            require_crc: true,
            health_interval_ms: 5_000,
            missed_irq_limit: 3,
            backoff_min_ms: 1_000,
            backoff_max_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleKind {
    Rak3172,
    Rn2483,
}

/// `[[source]] type = "serial_lora"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialLoraConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Serial device; prefer a stable /dev/serial/by-id/... link. Not checked for existence.
    pub port: PathBuf,
    pub module: ModuleKind,
    /// Default: 115200 for the RAK3172, 57600 for the RN2483.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baud: Option<u32>,
    #[serde(default = "default_freq")]
    pub freq_hz: u64,
    #[serde(default = "default_sf")]
    pub sf: u8,
    #[serde(default = "default_bw")]
    pub bw_khz: u32,
    /// Coding rate 4/`cr` (5..=8).
    #[serde(default = "default_cr")]
    pub cr: u8,
    #[serde(default = "default_sync")]
    pub sync_word: u8,
    #[serde(default = "default_preamble")]
    pub preamble_len: u16,
    #[serde(default = "default_power")]
    pub tx_power_dbm: i8,
    /// How long a reply may take.
    #[serde(default = "default_reply_timeout")]
    pub reply_timeout_ms: u64,
    /// After this long without a line from the module, it is probed; no answer = re-init.
    #[serde(default = "default_idle_probe")]
    pub idle_probe_ms: u64,
    /// While the device node is missing, how often to look for it.
    #[serde(default = "default_device_poll")]
    pub device_poll_ms: u64,
    #[serde(default = "default_backoff_min")]
    pub backoff_min_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
}

fn default_freq() -> u64 {
    868_100_000
}
fn default_sf() -> u8 {
    7
}
fn default_bw() -> u32 {
    125
}
fn default_cr() -> u8 {
    5
}
fn default_sync() -> u8 {
    0x34
}
fn default_preamble() -> u16 {
    8
}
fn default_power() -> i8 {
    14
}
fn default_reply_timeout() -> u64 {
    2_000
}
fn default_idle_probe() -> u64 {
    60_000
}
fn default_device_poll() -> u64 {
    1_000
}
fn default_backoff_min() -> u64 {
    1_000
}
fn default_backoff_max() -> u64 {
    60_000
}

impl SerialLoraConfig {
    /// A config with every default for `port` and `module`.
    pub fn new(port: impl Into<PathBuf>, module: ModuleKind) -> Self {
        SerialLoraConfig {
            name: String::new(),
            port: port.into(),
            module,
            baud: None,
            freq_hz: default_freq(),
            sf: default_sf(),
            bw_khz: default_bw(),
            cr: default_cr(),
            sync_word: default_sync(),
            preamble_len: default_preamble(),
            tx_power_dbm: default_power(),
            reply_timeout_ms: default_reply_timeout(),
            idle_probe_ms: default_idle_probe(),
            device_poll_ms: default_device_poll(),
            backoff_min_ms: default_backoff_min(),
            backoff_max_ms: default_backoff_max(),
        }
    }
}

/// `[[source]] type = "wmbus"`: a wireless M-Bus USB stick (IMST iM871A or Amber AMB8465) receiving
/// meters' telegrams. Only meters configured as `[[device]]` with a `wmbus_id` are decoded and
/// published; the others are only counted (see `district_core::wmbus_meters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WmbusSourceConfig {
    /// Defaults to `wmbus-N`, N the 0-based position among the `[[source]]` tables.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Serial device path; not checked for existence (USB sticks come and go).
    pub port: PathBuf,
    pub stick: WmbusStick,
    #[serde(default)]
    pub mode: WmbusMode,
    /// Default: the stick's factory speed (iM871A 57600, AMB8465 9600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baud: Option<u32>,
    #[serde(default = "default_wmbus_reply_timeout_ms")]
    pub reply_timeout_ms: u64,
    /// A stick quiet this long is asked whether it is still there (meters send every few minutes).
    #[serde(default = "default_wmbus_idle_probe_ms")]
    pub idle_probe_ms: u64,
    #[serde(default = "default_wmbus_device_poll_ms")]
    pub device_poll_ms: u64,
    #[serde(default = "default_wmbus_backoff_min_ms")]
    pub backoff_min_ms: u64,
    #[serde(default = "default_wmbus_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

fn default_wmbus_reply_timeout_ms() -> u64 {
    2_000
}
fn default_wmbus_idle_probe_ms() -> u64 {
    300_000
}
fn default_wmbus_device_poll_ms() -> u64 {
    1_000
}
fn default_wmbus_backoff_min_ms() -> u64 {
    1_000
}
fn default_wmbus_backoff_max_ms() -> u64 {
    60_000
}

impl WmbusSourceConfig {
    pub fn baud(&self) -> u32 {
        self.baud.unwrap_or_else(|| self.stick.default_baud())
    }

    /// Problems, as (key, message) pairs (empty when valid).
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.port.as_os_str().is_empty() {
            errs.push(("port", "must name a serial device, e.g. /dev/ttyUSB0".to_string()));
        }
        if let Some(b) = self.baud {
            if !(1_200..=921_600).contains(&b) {
                errs.push(("baud", "must be 1200..=921600 baud".to_string()));
            }
        }
        for (key, v) in [
            ("reply_timeout_ms", self.reply_timeout_ms),
            ("idle_probe_ms", self.idle_probe_ms),
            ("device_poll_ms", self.device_poll_ms),
            ("backoff_min_ms", self.backoff_min_ms),
        ] {
            if v == 0 {
                errs.push((key, "must be > 0".to_string()));
            }
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            errs.push(("backoff_max_ms", "must be >= backoff_min_ms".to_string()));
        }
        errs
    }
}
