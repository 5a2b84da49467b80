//! Building the daemon's parts from the configuration and the store: the network server with every
//! device and its stored state (remote device changes on top, unloadable ones quarantined), the control
//! loops and the relays they switch, the uplink's settings.

use std::collections::HashSet;
use std::time::Duration;

use crate::bus::Quarantined;
use crate::config::{Activation, Config, SourceConfig};
use crate::io::mqtt;
use crate::keys::Eui64;
use crate::lorawan::downlink::{DeviceClass, QueueConfig};
use crate::lorawan::join::{JoinConfig, NetId};
use crate::lorawan::region::RxSettings;
use crate::netserver::{DeviceInfo, NetworkServer, NsConfig, Provisioning};
use crate::reading::rfc3339;
use crate::store::{Batch, Record, Store};

use super::Hardware;

/// The config's devices with the remote changes (`device.upsert` / `device.remove`) from the store
/// applied on top: remote changes survive restarts and win over the file until the file changes them.
/// A remote device that cannot be read is quarantined (kept in the store, not used, reported): a
/// start never fails because of one.
/// Also returns the names of the devices that came from the store.
pub(super) fn with_remote_devices(
    config: &Config,
    store: &Store,
) -> anyhow::Result<(Config, HashSet<String>, Vec<Quarantined>)> {
    let mut c = config.clone();
    let mut remote = HashSet::new();
    let mut quarantined = Vec::new();
    for (name, json) in store.remote_devices()? {
        c.device.retain(|d| d.name != name);
        if json.is_empty() {
            continue; // removed remotely
        }
        remote.insert(name.clone());
        // Only the position of a JSON error: serde's messages can quote values, and this JSON holds keys.
        let parsed = serde_json::from_slice::<crate::config::DeviceConfig>(&json)
            .map_err(|e| format!("stored device unreadable (line {}, column {})", e.line(), e.column()))
            .and_then(|d| crate::config::check_device(&d).map(|()| d));
        match parsed {
            Ok(d) => c.device.push(d),
            Err(reason) => quarantined.push(Quarantined { device: name, reason }),
        }
    }
    Ok((c, remote, quarantined))
}

/// The network server with every device and its stored state. Whatever the restore decided (new
/// sessions for re-keyed devices, session records for devices seen the first time) is committed and
/// flushed here, before any task can send. Returns the devices quarantined.
pub(super) fn build_network_server(
    config: &Config,
    store: &Store,
    remote: &HashSet<String>,
    mut quarantined: Vec<Quarantined>,
) -> anyhow::Result<(NetworkServer, Vec<Quarantined>)> {
    let l = &config.lorawan;
    let net_id = NetId::from_hex(&l.net_id).map_err(|e| anyhow::anyhow!("lorawan.net_id: {e}"))?;
    let rx = RxSettings {
        rx1_dr_offset: l.rx1_dr_offset,
        rx2_dr: l.rx2_dr,
        rx2_freq_hz: l.rx2_freq_hz,
        rx1_delay_s: l.rx1_delay_s,
    };
    let range = match (l.dev_addr_first, l.dev_addr_last) {
        (Some(a), Some(b)) => (a, b),
        _ => net_id.type0_dev_addr_range(),
    };
    let mut ns = NetworkServer::new(NsConfig {
        gateway_id: config.gateway.id.clone(),
        join: JoinConfig { net_id, rx, ..JoinConfig::default() },
        dev_addr_range: range,
        queue: QueueConfig {
            max_attempts: l.max_attempts,
            max_queued: l.max_queued,
            dev_status_interval_ms: (l.dev_status_interval_s > 0).then_some(l.dev_status_interval_s * 1000),
            class_c_ack_timeout_ms: l.class_c_ack_timeout_s * 1000,
        },
        min_lead_ms: l.min_lead_ms,
    })
    .map_err(|e| anyhow::anyhow!("lorawan: {e}"))?;
    ns.set_mac_options(l.adr.to_core(), l.mac.max_tries, l.mac.abp_channels_hz.clone());
    let mut devices = Vec::new();
    // Wireless M-Bus meters are not the network server's: their source decodes them.
    for d in config.device.iter().filter(|d| !d.is_wmbus()) {
        let loaded = provisioning(d).map_err(|e| anyhow::anyhow!("device {}: {e}", d.name)).and_then(|p| {
            if let Some(path) = d.js_codec_path() {
                if !ns.has_decoder(&d.profile) {
                    ns.set_decoder(&d.profile, crate::codecs::load_js_codec(config, &d.profile, path)?);
                }
            }
            Ok(p)
        });
        match loaded {
            Ok((info, prov)) => devices.push((d.name.clone(), info, prov)),
            // A device from the store that cannot be loaded is quarantined; the config file's own
            // devices fail the start with a clear message (an operator is editing the file, and
            // `check-config` shows the problem).
            Err(e) if remote.contains(&d.name) => {
                quarantined.push(Quarantined { device: d.name.clone(), reason: format!("{e:#}") });
            }
            Err(e) => return Err(e),
        }
    }
    let sources = source_names(config);
    // Before the restore, which gives the groups their stored counters.
    ns.set_multicast_groups(config.multicast_groups());
    let startup = crate::ns_store::restore(&mut ns, store, devices, &sources)?;
    ns.set_default_route(default_route(config));
    crate::ns_store::commit_restore(store, startup, &sources)?;
    let mut events = Batch::default();
    for q in &quarantined {
        tracing::error!(device = %q.device, reason = %q.reason,
            "a remotely added device cannot be loaded: quarantined (kept in the store, not used); send a corrected device.upsert or device.remove");
        let seq = store.allocate_seq();
        let payload = serde_json::json!({"seq": seq, "device": q.device, "at": rfc3339(crate::clock::now()),
            "event": "device_quarantined", "reason": q.reason});
        events.push_record(Record::new(
            seq,
            crate::topic::Topic::Event(q.device.clone()),
            payload.to_string().into_bytes(),
        ));
    }
    if !events.is_empty() {
        // Before any task runs: the pipeline is not writing yet.
        store.commit(events, crate::clock::now())?;
        store.flush_blocking()?;
    }
    tracing::info!(devices = ns.device_count(), sessions = ns.session_count(), "LoRaWAN network server ready");
    Ok((ns, quarantined))
}

/// The one source that can transmit, when there is exactly one (a packet forwarder or an SX127x):
/// class C devices never heard since they were installed are sent through it. A gwmp route with
/// gateway 0 means "the one gateway pulling on this source".
fn default_route(config: &Config) -> Option<crate::ingest::Origin> {
    let mut tx =
        config.source.iter().enumerate().filter(|(_, s)| matches!(s, SourceConfig::Gwmp(_) | SourceConfig::Sx127x(_)));
    let (i, _) = tx.next()?;
    tx.next().is_none().then_some(crate::ingest::Origin { source: i, gateway: Eui64(0) })
}

/// The sources' names by index (stored routes name their source).
pub(super) fn source_names(config: &Config) -> Vec<String> {
    config.source.iter().map(|s| s.name().to_string()).collect()
}

pub(super) type Relays = std::collections::HashMap<u32, crate::io::gpio::Relay<Box<dyn crate::io::gpio::OutputPin>>>;

/// The control loops (their saved state is restored by the pipeline when it starts) and the relays
/// they switch (GPIO: on a Pi only, and a config that needs them fails to start elsewhere, saying so).
pub(super) fn build_loops(config: &Config, hardware: &Hardware) -> anyhow::Result<(crate::loops::Loops, Relays)> {
    let now = crate::clock::now();
    let loops = crate::loops::Loops::new(&config.loops_setup(), now).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut relays = Relays::new();
    if let Some(dr) = &config.demand_response {
        for load in &dr.load {
            if let Some(crate::control::demand::params::OutputSpec::Gpio { pins, active_low }) = &load.output {
                for pin in pins {
                    let cfg = crate::io::gpio::RelayConfig {
                        name: load.name.clone(),
                        pin: u8::try_from(*pin).unwrap_or(u8::MAX),
                        active_low: *active_low,
                    };
                    let out: Result<Box<dyn crate::io::gpio::OutputPin>, _> = match hardware.relays.get(pin) {
                        Some(fake) => Ok(Box::new(fake.clone())),
                        None => crate::io::gpio::open_relay(&cfg).map(|r| Box::new(r.into_inner()) as Box<_>),
                    };
                    let relay = out
                        .and_then(|o| crate::io::gpio::Relay::new(o, cfg.active_low))
                        .map_err(|e| anyhow::anyhow!("demand_response.load {:?}: {e}", load.name))?;
                    relays.insert(*pin, relay);
                }
            }
        }
    }
    Ok((loops, relays))
}

/// A device table as the network server wants it.
pub(super) fn provisioning(d: &crate::config::DeviceConfig) -> Result<(DeviceInfo, Provisioning), String> {
    let class = match d.class {
        crate::config::DeviceClass::A => DeviceClass::A,
        crate::config::DeviceClass::C => DeviceClass::C,
    };
    let info = DeviceInfo { profile: d.profile.clone(), class, adr: d.adr };
    let prov = match d.activation().map_err(|e| e.to_string())? {
        Activation::Abp { dev_addr, nwk_s_key, app_s_key } => {
            if d.relax_fcnt {
                tracing::warn!(device = %d.name, "relax_fcnt is on: a frame counter reset of this device is accepted, which weakens replay protection");
            }
            Provisioning::Abp { dev_addr, nwk_s_key, app_s_key, relax_fcnt: d.relax_fcnt }
        }
        Activation::Otaa { dev_eui, join_eui, app_key } => Provisioning::Otaa { dev_eui, join_eui, app_key },
    };
    Ok((info, prov))
}

pub(super) fn uplink_settings(config: &Config) -> anyhow::Result<mqtt::UplinkSettings> {
    let m = &config.mqtt;
    let url = &m.url;
    Ok(mqtt::UplinkSettings {
        host: url.host.clone(),
        port: url.port,
        tls: url.tls,
        client_id: m.client_id.clone(),
        keep_alive: Duration::from_secs(u64::from(m.keep_alive_s)),
        username: m.username.clone(),
        password_file: m.password_file.as_deref().map(|p| config.resolve_path(p)),
        ca_file: m.ca_file.as_deref().map(|p| config.resolve_path(p)),
        cert_file: m.cert_file.as_deref().map(|p| config.resolve_path(p)),
        key_file: m.key_file.as_deref().map(|p| config.resolve_path(p)),
        topic_base: format!("{}/{}/", m.topic_prefix, config.gateway.id),
        reconnect_min: Duration::from_millis(m.reconnect_min_ms),
        reconnect_max: Duration::from_millis(m.reconnect_max_ms),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: rfc3339(crate::clock::now()),
        window: 100,
    })
}
