//! The configuration tree: one serde type per TOML section, with the defaults of the example config.
//!
//! These types are the contract with the rest of the daemon. Deserializing them directly (serde,
//! `deny_unknown_fields`) works, but stops at the first problem and checks no cross-references: the
//! daemon loads configs through [`super::load`] / [`super::parse_str`], which report every problem
//! with its position and fill in the derived defaults (`mqtt.client_id`, source names).
//!
//! Key material is held as [`Key128`] (whose `Debug` is redacted), never as a string.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::values::{self, Ed25519PublicKey, MqttUrl};
use crate::keys::{DevAddr, Eui64, Key128};

/// The whole configuration file (plus the devices of `devices_file`, merged into `device`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Optional TOML file with more `[[device]]` tables, relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_file: Option<PathBuf>,
    pub gateway: GatewayConfig,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub publish: PublishConfig,
    #[serde(default)]
    pub aggregate: AggregateConfig,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub ops: OpsConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<SourceConfig>,
    /// Inline devices first, then those of `devices_file` (see [`DeviceConfig::from_devices_file`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device: Vec<DeviceConfig>,
    #[serde(default)]
    pub lorawan: LorawanConfig,
    #[serde(default)]
    pub lighting: LightingConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_response: Option<DemandResponseConfig>,
    /// `[power_fail]`: a GPIO line that says mains power is lost. Absent: no such input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_fail: Option<PowerFailConfig>,
    /// `[openadr]`: follow an OpenADR 3.1 VTN as a VEN. Absent: no VEN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openadr: Option<super::openadr::OpenAdrConfig>,
    /// The directory relative paths in the config are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Config {
    /// Resolves a path from the config (`devices_file`, `mqtt.ca_file`, `js:PATH`, ...) against the
    /// config file's directory; absolute paths are returned unchanged.
    pub fn resolve_path(&self, path: &std::path::Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The parts of this configuration the control loops are built from.
    pub fn loops_setup(&self) -> crate::loops::LoopsSetup {
        crate::loops::LoopsSetup {
            gateway_id: self.gateway.id.clone(),
            latitude: self.gateway.latitude,
            longitude: self.gateway.longitude,
            aggregate_window_s: self.publish.aggregates.then_some(self.aggregate.window_s),
            devices: self
                .device
                .iter()
                .map(|d| crate::loops::LoopDevice {
                    name: d.name.clone(),
                    profile: d.profile.clone(),
                    container: d.container,
                    tree: d.tree,
                    max_silence_s: d.max_silence_s,
                })
                .collect(),
            lighting_zones: self.lighting.zone.clone(),
            demand_response: self.demand_response.clone(),
            lamp_groups: self.lamp_groups(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `[a-z0-9-]{1,32}`; appears in every topic.
    pub id: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// A level (`trace`..`error`, `off`) or a tracing filter directive (`info,district_gateway::lorawan=debug`).
    #[serde(default = "default_log_level")]
    pub log_level: String,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/district-gateway")
}
fn default_log_level() -> String {
    "info".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub url: MqttUrl,
    /// Further brokers, tried in order after `url` when it is unreachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<MqttUrl>,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Empty in the file means `district-gateway-{gateway.id}`; filled in by [`super::load`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u16,
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

impl MqttConfig {
    /// `url` followed by `urls`: the brokers in the order they are tried.
    pub fn brokers(&self) -> impl Iterator<Item = &MqttUrl> {
        std::iter::once(&self.url).chain(self.urls.iter())
    }
}

fn default_topic_prefix() -> String {
    "city".to_string()
}
fn default_keep_alive_s() -> u16 {
    30
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    #[serde(default = "yes")]
    pub readings: bool,
    #[serde(default = "yes")]
    pub aggregates: bool,
}

fn yes() -> bool {
    true
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig { readings: true, aggregates: true }
    }
}

/// The gateway as join server and network server for its devices (LoRaWAN 1.0.x, EU868).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LorawanConfig {
    /// NetID, 6 hex digits. 000000 is for private/experimental networks.
    #[serde(default = "default_net_id")]
    pub net_id: String,
    /// First and last DevAddr handed out to OTAA devices (default: the NetID's type-0 range).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::dev_addr_opt")]
    pub dev_addr_first: Option<DevAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::dev_addr_opt")]
    pub dev_addr_last: Option<DevAddr>,
    #[serde(default)]
    pub rx1_dr_offset: u8,
    #[serde(default)]
    pub rx2_dr: u8,
    #[serde(default = "default_rx2_freq_hz")]
    pub rx2_freq_hz: u64,
    #[serde(default = "default_rx1_delay_s")]
    pub rx1_delay_s: u8,
    /// Transmissions of a confirmed downlink before it is reported failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u8,
    /// Downlinks waiting per device, at most.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// Class C: how long to wait for the ACK of a confirmed downlink before retrying.
    #[serde(default = "default_class_c_ack_timeout_s")]
    pub class_c_ack_timeout_s: u64,
    /// How often to ask a device for its battery and link margin (DevStatusReq); 0 = never.
    #[serde(default = "default_dev_status_interval_s")]
    pub dev_status_interval_s: u64,
    /// Minimum lead time before a class A receive window (network + forwarder latency).
    #[serde(default = "default_min_lead_ms")]
    pub min_lead_ms: u64,
    /// `[lorawan.adr]`: adaptive data rate.
    #[serde(default)]
    pub adr: super::mac::AdrSection,
    /// `[lorawan.mac]`: the MAC command engine.
    #[serde(default)]
    pub mac: super::mac::MacSection,
    /// Multicast groups of class C devices (`[[lorawan.multicast]]`), e.g. a lighting zone's lamps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multicast: Vec<MulticastConfig>,
}

/// A multicast group (`[[lorawan.multicast]]`): its members hold the same group address and keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MulticastConfig {
    pub name: String,
    /// The group address (McAddr), 8 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::dev_addr_opt")]
    pub dev_addr: Option<DevAddr>,
    /// McNwkSKey and McAppSKey, 32 hex digits each (secret).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::key128_opt")]
    pub nwk_s_key: Option<Key128>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::key128_opt")]
    pub app_s_key: Option<Key128>,
    /// EU868 data rate of its frames (default: `lorawan.rx2_dr`, where class C devices listen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_rate: Option<u8>,
    /// Frequency of its frames in Hz (default: `lorawan.rx2_freq_hz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freq_hz: Option<u64>,
    /// The lighting zone whose lamps are the members (or `devices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The members by name (or `zone`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

fn default_net_id() -> String {
    "000000".to_string()
}
fn default_rx2_freq_hz() -> u64 {
    869_525_000
}
fn default_rx1_delay_s() -> u8 {
    1
}
fn default_max_attempts() -> u8 {
    3
}
fn default_max_queued() -> usize {
    16
}
fn default_class_c_ack_timeout_s() -> u64 {
    60
}
fn default_dev_status_interval_s() -> u64 {
    86_400
}
fn default_min_lead_ms() -> u64 {
    100
}

impl Default for LorawanConfig {
    fn default() -> Self {
        LorawanConfig {
            net_id: default_net_id(),
            dev_addr_first: None,
            dev_addr_last: None,
            rx1_dr_offset: 0,
            rx2_dr: 0,
            rx2_freq_hz: default_rx2_freq_hz(),
            rx1_delay_s: default_rx1_delay_s(),
            max_attempts: default_max_attempts(),
            max_queued: default_max_queued(),
            class_c_ack_timeout_s: default_class_c_ack_timeout_s(),
            dev_status_interval_s: default_dev_status_interval_s(),
            min_lead_ms: default_min_lead_ms(),
            adr: Default::default(),
            mac: Default::default(),
            multicast: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Window length in seconds; 10..=86400 and a divisor of 86400, so windows align with midnight UTC.
    #[serde(default = "default_window_s")]
    pub window_s: u32,
}

fn default_window_s() -> u32 {
    300
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig { window_s: default_window_s() }
    }
}

/// What the journal does when `max_bytes` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BufferPolicy {
    /// Delete the oldest unsent readings to make room (counted and announced).
    #[default]
    DropOldest,
    /// Refuse new readings until there is room again (counted and announced).
    DropNewest,
}

/// When the journal is fsynced (`buffer.durability`; see `district_core::durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// Acknowledge once written; fsync at most `flush_interval_ms` later: a power cut loses at most
    /// that window.
    #[default]
    Interval,
    /// fsync every commit before acknowledging it: a power cut loses nothing acknowledged.
    Commit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default)]
    pub durability: DurabilityMode,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    #[serde(default)]
    pub policy: BufferPolicy,
    #[serde(default = "default_replay_rate")]
    pub replay_rate: u32,
}

impl BufferConfig {
    /// The durability policy these settings ask for.
    pub fn durability(&self) -> crate::durability::Durability {
        match self.durability {
            DurabilityMode::Commit => crate::durability::Durability::Commit,
            DurabilityMode::Interval => {
                crate::durability::Durability::Interval { window_ms: u64::from(self.flush_interval_ms) }
            }
        }
    }
}

fn default_max_bytes() -> u64 {
    268_435_456
}
fn default_flush_interval_ms() -> u32 {
    5_000
}
fn default_replay_rate() -> u32 {
    2000
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: default_max_bytes(),
            durability: DurabilityMode::default(),
            flush_interval_ms: default_flush_interval_ms(),
            max_age_s: None,
            policy: BufferPolicy::default(),
            replay_rate: default_replay_rate(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    #[serde(default = "default_http_bind", with = "values::socket_addr")]
    pub http_bind: SocketAddr,
    #[serde(default = "default_rollback_after_s")]
    pub rollback_after_s: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<OpsKey>,
}

fn default_http_bind() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9107)
}
fn default_rollback_after_s() -> u32 {
    60
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig { http_bind: default_http_bind(), rollback_after_s: default_rollback_after_s(), key: Vec::new() }
    }
}

/// A public key allowed to sign remote commands (`cmd/req` envelopes name it by `key_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsKey {
    pub id: String,
    pub ed25519_public: Ed25519PublicKey,
}

/// A GPIO input's pull resistor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputPull {
    #[default]
    None,
    Up,
    Down,
}

/// `[power_fail]`: the "power fail" (or "power good") output of a UPS HAT or supercap board on a
/// GPIO pin. While it says mains power is lost, the daemon has fsynced its journal and refuses new
/// readings (they are not acknowledged); the control loops keep running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerFailConfig {
    /// BCM GPIO number (0..=53).
    pub pin: u8,
    /// Mains power is lost while the line is low (a "power good" output, or an open-collector
    /// "power fail" output with a pull-up). Default: false, mains power is lost while it is high.
    #[serde(default)]
    pub active_low: bool,
    #[serde(default)]
    pub pull: InputPull,
    /// A level must hold this long to count (0..=5000 ms). Default: 20.
    #[serde(default = "default_power_fail_debounce_ms")]
    pub debounce_ms: u64,
}

fn default_power_fail_debounce_ms() -> u64 {
    20
}

/// A `[[source]]`, selected by its `type` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    Gwmp(GwmpSource),
    Sml(SmlSource),
    /// An SX1276/77/78/79 on the gateway's SPI bus.
    Sx127x(super::radio::Sx127xConfig),
    /// A serial LoRa module (RAK3172 or RN2483) in P2P receive mode.
    #[serde(rename = "serial_lora")]
    SerialLora(super::radio::SerialLoraConfig),
    /// A wireless M-Bus stick (iM871A or AMB8465) for water, heat and gas meters.
    Wmbus(super::radio::WmbusSourceConfig),
}

impl SourceConfig {
    /// The `type` values, for error messages and docs.
    pub const TYPES: &'static [&'static str] = &["gwmp", "sml", "sx127x", "serial_lora", "wmbus"];

    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Gwmp(s) => &s.name,
            SourceConfig::Sml(s) => &s.name,
            SourceConfig::Sx127x(s) => &s.name,
            SourceConfig::SerialLora(s) => &s.name,
            SourceConfig::Wmbus(s) => &s.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Gwmp(_) => "gwmp",
            SourceConfig::Sml(_) => "sml",
            SourceConfig::Sx127x(_) => "sx127x",
            SourceConfig::SerialLora(_) => "serial_lora",
            SourceConfig::Wmbus(_) => "wmbus",
        }
    }
}

/// Semtech UDP packet forwarder protocol (PUSH_DATA/PULL_DATA) from a concentrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GwmpSource {
    /// Defaults to `gwmp-N`, N the 0-based position among the `[[source]]` tables.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default = "default_gwmp_bind", with = "values::socket_addr")]
    pub bind: SocketAddr,
}

fn default_gwmp_bind() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1700)
}

/// A smart meter's SML output on a serial port (optical head), 8N1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmlSource {
    /// Defaults to `sml-N`, N the 0-based position among the `[[source]]` tables.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Serial device path; not checked for existence (USB adapters come and go).
    pub port: PathBuf,
    /// The device name its readings are published under.
    pub device: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    9600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeviceClass {
    #[default]
    A,
    C,
}

/// A LoRaWAN device. Exactly one of the ABP set (`dev_addr`, `nwk_s_key`, `app_s_key`) or the OTAA
/// set (`dev_eui`, `join_eui`, `app_key`) is present after validation; see [`DeviceConfig::activation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    #[serde(default = "default_profile")]
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::dev_addr_opt")]
    pub dev_addr: Option<DevAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::key128_opt")]
    pub nwk_s_key: Option<Key128>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::key128_opt")]
    pub app_s_key: Option<Key128>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::eui64_opt")]
    pub dev_eui: Option<Eui64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::eui64_opt")]
    pub join_eui: Option<Eui64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::key128_opt")]
    pub app_key: Option<Key128>,
    #[serde(default)]
    pub class: DeviceClass,
    #[serde(default)]
    pub relax_fcnt: bool,
    /// ADR for this device when it asks for it (the ADR bit) and `[lorawan.adr]` is enabled.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub adr: bool,
    /// A waste container: its geometry gives `fill_pct` and the `container_full` / `container_emptied` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::events::ContainerGeometry>,
    /// A tree: soil-moisture thresholds for `needs_water` / `watered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<crate::events::TreeThresholds>,
    /// Raise `sensor_silent` when the device has not reported for this long (seconds). Default: not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_silence_s: Option<u64>,
    /// A wireless M-Bus meter (`profile = "wmbus"`): its 8-digit id as printed on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wmbus_id: Option<String>,
    /// A wireless M-Bus meter's three-letter manufacturer code (e.g. "KAM"); optional, checked when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// A wireless M-Bus meter's AES-128 key (32 hex digits), for encrypted telegrams. A secret.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::key128_opt")]
    pub aes_key: Option<Key128>,
    /// True when the device came from `devices_file` rather than the main config.
    #[serde(skip)]
    pub from_devices_file: bool,
}

fn default_profile() -> String {
    "raw".to_string()
}

/// How a device's session keys come about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    Abp { dev_addr: DevAddr, nwk_s_key: Key128, app_s_key: Key128 },
    Otaa { dev_eui: Eui64, join_eui: Eui64, app_key: Key128 },
}

/// A [`DeviceConfig`] that has not been validated (built by hand, or from an unchecked source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    #[error("device `{0}` has neither a complete ABP key set (dev_addr, nwk_s_key, app_s_key) nor a complete OTAA key set (dev_eui, join_eui, app_key)")]
    Incomplete(String),
    #[error("device `{0}` has both ABP and OTAA keys")]
    Both(String),
}

impl DeviceConfig {
    /// The device's activation. Always `Ok` for devices of a [`Config`] returned by `load`/`parse_str`.
    pub fn activation(&self) -> Result<Activation, ActivationError> {
        let abp = (self.dev_addr, self.nwk_s_key, self.app_s_key);
        let otaa = (self.dev_eui, self.join_eui, self.app_key);
        let abp_any = abp.0.is_some() || abp.1.is_some() || abp.2.is_some();
        let otaa_any = otaa.0.is_some() || otaa.1.is_some() || otaa.2.is_some();
        match (abp, otaa) {
            _ if abp_any && otaa_any => Err(ActivationError::Both(self.name.clone())),
            ((Some(dev_addr), Some(nwk_s_key), Some(app_s_key)), _) => {
                Ok(Activation::Abp { dev_addr, nwk_s_key, app_s_key })
            }
            (_, (Some(dev_eui), Some(join_eui), Some(app_key))) => Ok(Activation::Otaa { dev_eui, join_eui, app_key }),
            _ => Err(ActivationError::Incomplete(self.name.clone())),
        }
    }

    /// A wireless M-Bus meter rather than a LoRaWAN device (it has a `wmbus_id`).
    pub fn is_wmbus(&self) -> bool {
        self.wmbus_id.is_some()
    }

    /// The meter as the wM-Bus privacy filter wants it, if this is one.
    pub fn wmbus_meter(&self) -> Option<crate::wmbus_meters::WmbusMeter> {
        Some(crate::wmbus_meters::WmbusMeter {
            device: self.name.clone(),
            id: self.wmbus_id.clone()?,
            manufacturer: self.manufacturer.clone(),
            key: self.aes_key,
        })
    }

    /// The `js:PATH` of a JavaScript codec profile, if this is one (relative to the config directory).
    pub fn js_codec_path(&self) -> Option<&str> {
        self.profile.strip_prefix("js:")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightingConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone: Vec<ZoneConfig>,
}

/// `[[lighting.zone]]`: the lighting loop's own parameter type (pinned keys plus the loop's tuning).
pub type ZoneConfig = crate::control::lighting::params::ZoneParams;
/// `lighting.zone.sensors`: a presence device and the lamp it stands at.
pub type ZoneSensor = crate::control::lighting::params::SensorSpec;

/// `[demand_response]`: the demand-response loop's own parameter type (pinned keys plus tuning).
pub type DemandResponseConfig = crate::control::demand::params::DemandParams;
/// `[[demand_response.load]]`.
pub type LoadConfig = crate::control::demand::params::LoadParams;
pub use crate::control::demand::params::LoadKind;

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}
