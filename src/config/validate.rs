//! From text to a checked [`Config`]: parse with spans, deserialize each table collecting problems,
//! read `devices_file`, then check values and cross-references.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use toml::de::DeValue;
use toml::Spanned;

use super::collect::{de_collect, type_name};
pub(crate) use super::problem::name_problem;
use super::problem::{ConfigErrors, Sink};
use super::schema::*;
use super::spans::{entry, split_off, Doc, KeyPath};
use crate::keys::{DevAddr, Eui64};

const ROOT_KEYS: &[&str] = &[
    "devices_file",
    "gateway",
    "mqtt",
    "publish",
    "aggregate",
    "buffer",
    "ops",
    "source",
    "device",
    "lighting",
    "demand_response",
    "lorawan",
    "power_fail",
    "openadr",
];
const ABP_KEYS: [&str; 3] = ["dev_addr", "nwk_s_key", "app_s_key"];
const OTAA_KEYS: [&str; 3] = ["dev_eui", "join_eui", "app_key"];
use super::wmbus::{WMBUS_KEYS, WMBUS_PROFILE};
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// A device with the file (0 = main config, 1 = devices_file) and index it was found at.
struct DevEntry {
    doc: usize,
    index: usize,
    dev: DeviceConfig,
}

struct Zone {
    index: usize,
    zone: ZoneConfig,
    sensors: Vec<(usize, ZoneSensor)>,
}

#[derive(Default)]
struct Parts {
    gateway: Option<GatewayConfig>,
    mqtt: Option<MqttConfig>,
    publish: Option<PublishConfig>,
    aggregate: Option<AggregateConfig>,
    buffer: Option<BufferConfig>,
    ops: Option<OpsConfig>,
    ops_keys: Vec<(usize, OpsKey)>,
    sources: Vec<(usize, SourceConfig)>,
    devices: Vec<DevEntry>,
    zones: Vec<Zone>,
    demand_response: Option<DemandResponseConfig>,
    loads: Vec<(usize, LoadConfig)>,
    devices_file: Option<PathBuf>,
    lorawan: Option<LorawanConfig>,
    power_fail: Option<PowerFailConfig>,
    openadr: Option<super::openadr::OpenAdrConfig>,
}

pub(crate) fn parse_and_validate(text: &str, label: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut sink = Sink::default();
    let Some(doc) = Doc::parse(0, label, text, &mut sink) else {
        return Err(sink.into_errors());
    };
    let mut parts = Parts::default();
    read_root(&doc, &mut parts, &mut sink);

    // devices_file: read, parse and deserialize its [[device]] tables.
    let mut dev_text = String::new();
    let mut dev_label = String::new();
    let mut dev_doc_ok = false;
    if let Some(rel) = &parts.devices_file {
        let full = base_dir.join(rel);
        let path = KeyPath::root().key("devices_file");
        match std::fs::read_to_string(&full) {
            Ok(t) => {
                dev_text = t;
                dev_label = full.display().to_string();
                dev_doc_ok = true;
            }
            Err(e) => doc.problem(&mut sink, path, format!("cannot read `{}`: {e}", full.display())),
        }
    }
    let dev_doc = if dev_doc_ok { Doc::parse(1, &dev_label, &dev_text, &mut sink) } else { None };
    if let Some(dd) = &dev_doc {
        read_devices_file(dd, &mut parts, &mut sink);
    }

    let docs: Vec<&Doc<'_>> = std::iter::once(&doc).chain(dev_doc.as_ref()).collect();
    check(&docs, base_dir, &mut parts, &mut sink);

    if !sink.is_empty() {
        return Err(sink.into_errors());
    }
    let (Some(gateway), Some(mqtt)) = (parts.gateway, parts.mqtt) else {
        // Unreachable in practice: a missing section is reported above.
        return Err(sink.into_errors());
    };
    let mut ops = parts.ops.unwrap_or_default();
    ops.key = parts.ops_keys.into_iter().map(|(_, k)| k).collect();
    let demand_response = parts.demand_response.map(|mut dr| {
        dr.load = parts.loads.into_iter().map(|(_, l)| l).collect();
        dr
    });
    Ok(Config {
        devices_file: parts.devices_file,
        gateway,
        mqtt,
        publish: parts.publish.unwrap_or_default(),
        aggregate: parts.aggregate.unwrap_or_default(),
        buffer: parts.buffer.unwrap_or_default(),
        ops,
        source: parts.sources.into_iter().map(|(_, s)| s).collect(),
        device: parts.devices.into_iter().map(|d| d.dev).collect(),
        lorawan: parts.lorawan.unwrap_or_default(),
        lighting: LightingConfig { zone: parts.zones.into_iter().map(|z| z.zone).collect() },
        demand_response,
        power_fail: parts.power_fail,
        openadr: parts.openadr,
        base_dir: base_dir.to_path_buf(),
    })
}

fn read_root(doc: &Doc<'_>, parts: &mut Parts, sink: &mut Sink) {
    let DeValue::Table(root) = doc.root.get_ref() else {
        return;
    };
    for (k, v) in root.iter() {
        let key = k.get_ref().as_ref();
        let path = KeyPath::root().key(key);
        match key {
            "gateway" => parts.gateway = de_collect(doc, v, &path, sink),
            "mqtt" => parts.mqtt = de_collect(doc, v, &path, sink),
            "publish" => parts.publish = de_collect(doc, v, &path, sink),
            "aggregate" => parts.aggregate = de_collect(doc, v, &path, sink),
            "buffer" => parts.buffer = de_collect(doc, v, &path, sink),
            "lorawan" => parts.lorawan = de_collect(doc, v, &path, sink),
            "power_fail" => parts.power_fail = de_collect(doc, v, &path, sink),
            "openadr" => parts.openadr = de_collect(doc, v, &path, sink),
            "ops" => {
                let (rest, keys) = split_off(v, "key");
                parts.ops = de_collect(doc, &rest, &path, sink);
                parts.ops_keys = de_array(doc, keys.as_ref(), &path.key("key"), sink, de_collect);
            }
            "source" => parts.sources = de_array(doc, Some(v), &path, sink, read_source),
            "device" => {
                parts.devices = de_array(doc, Some(v), &path, sink, de_collect)
                    .into_iter()
                    .map(|(index, dev)| DevEntry { doc: 0, index, dev })
                    .collect()
            }
            "lighting" => {
                let (rest, zones) = split_off(v, "zone");
                // Only to report unknown keys and a wrong type of [lighting] itself.
                let _: Option<LightingConfig> = de_collect(doc, &rest, &path, sink);
                parts.zones = de_array(doc, zones.as_ref(), &path.key("zone"), sink, read_zone)
                    .into_iter()
                    .map(|(_, z)| z)
                    .collect();
            }
            "demand_response" => {
                let (rest, loads) = split_off(v, "load");
                parts.demand_response = de_collect(doc, &rest, &path, sink);
                parts.loads = de_array(doc, loads.as_ref(), &path.key("load"), sink, de_collect);
            }
            "devices_file" => match v.get_ref() {
                DeValue::String(s) if !s.is_empty() => parts.devices_file = Some(PathBuf::from(s.as_ref())),
                DeValue::String(_) => doc.problem(sink, path, "expected a file path, found \"\""),
                other => sink.push(
                    doc.at(Some(v.span().start), true),
                    path,
                    format!("expected a file path (a string), found {}", type_name(other)),
                ),
            },
            _ => sink.push(
                doc.at(Some(k.span().start), true),
                path,
                format!("unknown key (expected one of {})", quoted_list(ROOT_KEYS)),
            ),
        }
    }
    for (section, value) in [("gateway", parts.gateway.is_some()), ("mqtt", parts.mqtt.is_some())] {
        if !value && !doc.has(&KeyPath::root(), section) {
            sink.push(
                doc.at(Some(0), true),
                KeyPath::root().key(section),
                format!("required section [{section}] is missing"),
            );
        }
    }
}

fn read_devices_file(doc: &Doc<'_>, parts: &mut Parts, sink: &mut Sink) {
    let DeValue::Table(root) = doc.root.get_ref() else {
        return;
    };
    for (k, v) in root.iter() {
        let key = k.get_ref().as_ref();
        let path = KeyPath::root().key(key);
        if key == "device" {
            parts.devices.extend(de_array(doc, Some(v), &path, sink, de_collect::<DeviceConfig>).into_iter().map(
                |(index, mut dev)| {
                    dev.from_devices_file = true;
                    DevEntry { doc: 1, index, dev }
                },
            ));
        } else {
            sink.push(
                doc.at(Some(k.span().start), true),
                path,
                "unknown key (a devices_file holds only [[device]] tables)",
            );
        }
    }
}

type ReadItem<T> = fn(&Doc<'_>, &Spanned<DeValue<'_>>, &KeyPath, &mut Sink) -> Option<T>;

/// Reads every element of an array of tables, keeping each one's index in the file.
fn de_array<T>(
    doc: &Doc<'_>,
    node: Option<&Spanned<DeValue<'_>>>,
    path: &KeyPath,
    sink: &mut Sink,
    read: ReadItem<T>,
) -> Vec<(usize, T)> {
    let Some(node) = node else {
        return Vec::new();
    };
    match node.get_ref() {
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| read(doc, item, &path.index(i), sink).map(|v| (i, v)))
            .collect(),
        other => {
            sink.push(
                doc.at(Some(node.span().start), true),
                path.clone(),
                format!("expected an array of tables, found {}", type_name(other)),
            );
            Vec::new()
        }
    }
}

fn read_source(doc: &Doc<'_>, item: &Spanned<DeValue<'_>>, path: &KeyPath, sink: &mut Sink) -> Option<SourceConfig> {
    if !matches!(item.get_ref(), DeValue::Table(_)) {
        sink.push(
            doc.at(Some(item.span().start), true),
            path.clone(),
            format!("expected a table, found {}", type_name(item.get_ref())),
        );
        return None;
    }
    let known = SourceConfig::TYPES.join(", ");
    let kind = match entry(item, "type") {
        None => {
            sink.push(
                doc.at(Some(item.span().start), true),
                path.key("type"),
                format!("required key is missing (one of: {known})"),
            );
            return None;
        }
        Some((_, v)) => match v.get_ref() {
            DeValue::String(s) => (s.to_string(), v.span().start),
            other => {
                sink.push(
                    doc.at(Some(v.span().start), true),
                    path.key("type"),
                    format!("expected a string (one of: {known}), found {}", type_name(other)),
                );
                return None;
            }
        },
    };
    let (rest, _) = split_off(item, "type");
    match kind.0.as_str() {
        "gwmp" => de_collect(doc, &rest, path, sink).map(SourceConfig::Gwmp),
        "sml" => de_collect(doc, &rest, path, sink).map(SourceConfig::Sml),
        "sx127x" => de_collect(doc, &rest, path, sink).map(SourceConfig::Sx127x),
        "serial_lora" => de_collect(doc, &rest, path, sink).map(SourceConfig::SerialLora),
        "wmbus" => de_collect(doc, &rest, path, sink).map(SourceConfig::Wmbus),
        other => {
            sink.push(
                doc.at(Some(kind.1), true),
                path.key("type"),
                format!("unknown source type `{other}` (known types: {known})"),
            );
            None
        }
    }
}

fn read_zone(doc: &Doc<'_>, item: &Spanned<DeValue<'_>>, path: &KeyPath, sink: &mut Sink) -> Option<Zone> {
    let (rest, sensors) = split_off(item, "sensors");
    let zone: Option<ZoneConfig> = de_collect(doc, &rest, path, sink);
    let sensors = de_array(doc, sensors.as_ref(), &path.key("sensors"), sink, de_collect::<ZoneSensor>);
    zone.map(|mut zone| {
        zone.sensors = sensors.iter().map(|(_, s)| s.clone()).collect();
        Zone { index: path_index(path), zone, sensors }
    })
}

fn path_index(path: &KeyPath) -> usize {
    match path.0.last() {
        Some(super::spans::Seg::Index(i)) => *i,
        _ => 0,
    }
}

fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

fn file_problem(base_dir: &Path, p: &Path) -> Option<String> {
    let full = base_dir.join(p);
    match std::fs::metadata(&full) {
        Ok(m) if m.is_file() => None,
        Ok(_) => Some(format!("`{}` is not a file", full.display())),
        Err(e) => Some(format!("cannot read `{}`: {e}", full.display())),
    }
}

fn check(docs: &[&Doc<'_>], base_dir: &Path, parts: &mut Parts, sink: &mut Sink) {
    let Some(&main) = docs.first() else {
        return;
    };
    let root = KeyPath::root();

    if let Some(g) = &parts.gateway {
        check_gateway(main, g, sink);
    }
    if let Some(m) = &mut parts.mqtt {
        check_mqtt(main, base_dir, m, sink);
        if m.client_id.is_empty() {
            if let Some(g) = &parts.gateway {
                m.client_id = format!("district-gateway-{}", g.id);
            }
        }
    }
    if let Some(a) = &parts.aggregate {
        let p = root.key("aggregate").key("window_s");
        if !(10..=86_400).contains(&a.window_s) {
            main.problem(sink, p, "must be 10..=86400 seconds");
        } else if 86_400 % a.window_s != 0 {
            main.problem(sink, p, "must divide 86400 (one day), so that windows align with midnight UTC");
        }
    }
    if let Some(l) = &parts.lorawan {
        check_lorawan(main, l, sink);
    }
    if let Some(b) = &parts.buffer {
        let p = root.key("buffer");
        if b.max_bytes < 1 << 20 {
            main.problem(sink, p.key("max_bytes"), "must be at least 1048576 (1 MiB)");
        }
        if !(1..=60_000).contains(&b.flush_interval_ms) {
            main.problem(sink, p.key("flush_interval_ms"), "must be 1..=60000 ms");
        }
        if b.max_age_s == Some(0) {
            main.problem(sink, p.key("max_age_s"), "must be at least 1 s (leave it out for no limit)");
        }
        if b.replay_rate == 0 {
            main.problem(sink, p.key("replay_rate"), "must be at least 1 message/s");
        }
    }
    if let Some(o) = &parts.ops {
        if !(5..=86_400).contains(&o.rollback_after_s) {
            main.problem(sink, root.key("ops").key("rollback_after_s"), "must be 5..=86400 s");
        }
    }
    let mut key_ids: HashMap<&str, usize> = HashMap::new();
    for (i, k) in &parts.ops_keys {
        let p = root.key("ops").key("key").index(*i).key("id");
        if let Some(msg) = name_problem(&k.id) {
            main.problem(sink, p, msg);
        } else if let Some(first) = key_ids.insert(&k.id, *i) {
            main.problem(sink, p, format!("duplicate key id {:?} (also ops.key[{first}])", k.id));
        }
    }

    check_sources(main, &mut parts.sources, sink);
    check_devices(docs, base_dir, &parts.devices, sink);

    // Names that references may use: every [[device]] name written in either file (even of devices
    // with other problems, so that one problem is not reported twice), plus the SML meters' names.
    let mut devices: HashSet<String> = HashSet::new();
    for d in docs {
        if let Some(DeValue::Array(items)) = d.node(&root.key("device")).map(|n| n.get_ref()) {
            for item in items.iter() {
                if let Some(DeValue::String(s)) = entry(item, "name").map(|(_, v)| v.get_ref()) {
                    devices.insert(s.to_string());
                }
            }
        }
    }
    let mut meters = devices.clone();
    for (_, s) in &parts.sources {
        if let SourceConfig::Sml(s) = s {
            meters.insert(s.device.clone());
        }
    }
    check_lighting(main, &parts.zones, &devices, sink);
    if let Some(l) = &parts.lorawan {
        let zones: Vec<&ZoneConfig> = parts.zones.iter().map(|z| &z.zone).collect();
        let devs: Vec<&DeviceConfig> = parts.devices.iter().map(|d| &d.dev).collect();
        super::multicast::check(main, l, &zones, &devs, sink);
    }
    if let Some(dr) = &parts.demand_response {
        check_demand_response(main, dr, &parts.loads, &meters, sink);
        if let Some(cb) = &dr.control_box {
            super::control_box::check(main, cb, &parts.sources, parts.power_fail.as_ref(), sink);
        }
    }
    if let Some(o) = &parts.openadr {
        super::openadr::check(main, o, parts.demand_response.is_some(), sink);
    }
    if let Some(pf) = &parts.power_fail {
        super::power_fail::check(main, pf, &parts.sources, &parts.loads, sink);
    }
}

fn check_gateway(doc: &Doc<'_>, g: &GatewayConfig, sink: &mut Sink) {
    let p = KeyPath::root().key("gateway");
    let id_ok = (1..=32).contains(&g.id.len())
        && g.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        doc.problem(sink, p.key("id"), format!("expected 1 to 32 characters of a-z, 0-9 and `-`, got {:?}", g.id));
    }
    if g.data_dir.as_os_str().is_empty() {
        doc.problem(sink, p.key("data_dir"), "must not be empty");
    }
    if let Some(lat) = g.latitude {
        if !(-90.0..=90.0).contains(&lat) {
            doc.problem(sink, p.key("latitude"), "must be -90..=90 degrees");
        }
    }
    if let Some(lon) = g.longitude {
        if !(-180.0..=180.0).contains(&lon) {
            doc.problem(sink, p.key("longitude"), "must be -180..=180 degrees");
        }
    }
    match (g.latitude, g.longitude) {
        (Some(_), None) => doc.problem(sink, p.key("longitude"), "latitude is set, longitude is missing"),
        (None, Some(_)) => doc.problem(sink, p.key("latitude"), "longitude is set, latitude is missing"),
        _ => {}
    }
    let level_ok = |l: &str| LOG_LEVELS.contains(&l.to_ascii_lowercase().as_str());
    let directives_ok = !g.log_level.trim().is_empty()
        && g.log_level.split(',').all(|d| match d.trim().rsplit_once('=') {
            Some((target, level)) => !target.is_empty() && level_ok(level),
            None => level_ok(d.trim()),
        });
    if !directives_ok {
        doc.problem(
            sink,
            p.key("log_level"),
            "expected a level (trace, debug, info, warn, error, off) or directives like \"info,district_gateway::lorawan=debug\"",
        );
    }
}

fn check_mqtt(doc: &Doc<'_>, base_dir: &Path, m: &MqttConfig, sink: &mut Sink) {
    let p = KeyPath::root().key("mqtt");
    let tp = &m.topic_prefix;
    let tp_problem = if tp.is_empty() {
        Some("must not be empty")
    } else if tp.contains(['#', '+']) {
        Some("must not contain the MQTT wildcards `#` or `+`")
    } else if tp.starts_with('/') || tp.ends_with('/') {
        Some("must not start or end with `/`")
    } else if tp.contains("//") {
        Some("must not contain an empty topic level (`//`)")
    } else if tp.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    if let Some(msg) = tp_problem {
        doc.problem(sink, p.key("topic_prefix"), msg);
    }
    if doc.has(&p, "client_id")
        && (m.client_id.is_empty() || m.client_id.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        doc.problem(
            sink,
            p.key("client_id"),
            "must be non-empty, without spaces or control characters (leave it out for district-gateway-{gateway.id})",
        );
    }
    if let Some(u) = &m.username {
        if u.is_empty() {
            doc.problem(sink, p.key("username"), "must not be empty (leave it out for none)");
        }
    }
    if m.password_file.is_some() && m.username.is_none() {
        doc.problem(
            sink,
            p.key("username"),
            "password_file is set but username is missing (MQTT sends a password only with a user name)",
        );
    }
    for (key, file) in [
        ("password_file", &m.password_file),
        ("ca_file", &m.ca_file),
        ("cert_file", &m.cert_file),
        ("key_file", &m.key_file),
    ] {
        if let Some(f) = file {
            if let Some(msg) = file_problem(base_dir, f) {
                doc.problem(sink, p.key(key), msg);
            }
        }
    }
    match (&m.cert_file, &m.key_file) {
        (Some(_), None) => doc.problem(
            sink,
            p.key("key_file"),
            "cert_file is set, key_file is missing (client authentication needs both)",
        ),
        (None, Some(_)) => doc.problem(
            sink,
            p.key("cert_file"),
            "key_file is set, cert_file is missing (client authentication needs both)",
        ),
        _ => {}
    }
    if !m.brokers().any(|u| u.tls) {
        for (key, set) in
            [("ca_file", m.ca_file.is_some()), ("cert_file", m.cert_file.is_some()), ("key_file", m.key_file.is_some())]
        {
            if set {
                doc.problem(sink, p.key(key), "only used with TLS, but no broker URL is mqtts://");
            }
        }
    }
    if !(5..=3600).contains(&m.keep_alive_s) {
        doc.problem(sink, p.key("keep_alive_s"), "must be 5..=3600 seconds");
    }
    if m.reconnect_min_ms == 0 {
        doc.problem(sink, p.key("reconnect_min_ms"), "must be at least 1 ms");
    } else if m.reconnect_min_ms > m.reconnect_max_ms {
        doc.problem(sink, p.key("reconnect_min_ms"), "must not exceed reconnect_max_ms");
    }
    if m.reconnect_max_ms > 3_600_000 {
        doc.problem(sink, p.key("reconnect_max_ms"), "must be at most 3600000 ms (one hour)");
    }
}

fn check_sources(doc: &Doc<'_>, sources: &mut [(usize, SourceConfig)], sink: &mut Sink) {
    let p = KeyPath::root().key("source");
    for (i, s) in sources.iter_mut() {
        match s {
            SourceConfig::Gwmp(g) if g.name.is_empty() => g.name = format!("gwmp-{i}"),
            SourceConfig::Sml(m) if m.name.is_empty() => m.name = format!("sml-{i}"),
            SourceConfig::Sx127x(x) if x.name.is_empty() => x.name = format!("sx127x-{i}"),
            SourceConfig::SerialLora(x) if x.name.is_empty() => x.name = format!("serial_lora-{i}"),
            SourceConfig::Wmbus(x) if x.name.is_empty() => x.name = format!("wmbus-{i}"),
            _ => {}
        }
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut binds: HashMap<std::net::SocketAddr, usize> = HashMap::new();
    let mut ports: HashMap<&Path, usize> = HashMap::new();
    for (i, s) in sources.iter() {
        let sp = p.index(*i);
        if let Some(msg) = name_problem(s.name()) {
            doc.problem(sink, sp.key("name"), msg);
        } else if let Some(first) = names.insert(s.name(), *i) {
            doc.problem(sink, sp.key("name"), format!("duplicate source name {:?} (also source[{first}])", s.name()));
        }
        match s {
            SourceConfig::Gwmp(g) => {
                if let Some(first) = binds.insert(g.bind, *i) {
                    doc.problem(
                        sink,
                        sp.key("bind"),
                        format!("bind address {} is already used by source[{first}]", g.bind),
                    );
                }
            }
            SourceConfig::Sml(m) => {
                if m.port.as_os_str().is_empty() {
                    doc.problem(sink, sp.key("port"), "must name a serial device, e.g. /dev/ttyUSB0");
                } else if let Some(first) = ports.insert(&m.port, *i) {
                    doc.problem(sink, sp.key("port"), format!("serial port is already used by source[{first}]"));
                }
                if let Some(msg) = name_problem(&m.device) {
                    doc.problem(sink, sp.key("device"), msg);
                }
                if !(300..=4_000_000).contains(&m.baud) {
                    doc.problem(sink, sp.key("baud"), "must be 300..=4000000 baud");
                }
            }
            SourceConfig::Sx127x(x) => {
                for msg in x.validate() {
                    doc.problem(sink, sp.clone(), msg);
                }
            }
            SourceConfig::SerialLora(x) => {
                if let Some(first) = ports.insert(&x.port, *i) {
                    doc.problem(sink, sp.key("port"), format!("serial port is already used by source[{first}]"));
                }
                for msg in x.validate() {
                    doc.problem(sink, sp.clone(), msg);
                }
            }
            SourceConfig::Wmbus(x) => {
                if !x.port.as_os_str().is_empty() {
                    if let Some(first) = ports.insert(&x.port, *i) {
                        doc.problem(sink, sp.key("port"), format!("serial port is already used by source[{first}]"));
                    }
                }
                for (key, msg) in x.validate() {
                    doc.problem(sink, sp.key(key), msg);
                }
            }
        }
    }
}

fn check_devices(docs: &[&Doc<'_>], base_dir: &Path, devices: &[DevEntry], sink: &mut Sink) {
    let dp = KeyPath::root().key("device");
    let mut names: HashMap<&str, &DevEntry> = HashMap::new();
    let mut sessions: HashMap<(DevAddr, [u8; 16]), &DevEntry> = HashMap::new();
    let mut euis: HashMap<Eui64, &DevEntry> = HashMap::new();
    let mut meters: HashMap<(String, Option<String>), &DevEntry> = HashMap::new();
    // "device[2] `bin-017`", plus the file when it is another one.
    let describe = |e: &DevEntry, here: usize| -> String {
        let mut s = format!("device[{}] {:?}", e.index, e.dev.name);
        if e.doc != here {
            if let Some(d) = docs.get(e.doc) {
                s.push_str(&format!(" in {}", d.label));
            }
        }
        s
    };
    for e in devices {
        let Some(doc) = docs.get(e.doc) else { continue };
        let p = dp.index(e.index);
        let d = &e.dev;
        if let Some(msg) = name_problem(&d.name) {
            doc.problem(sink, p.key("name"), msg);
        } else if let Some(first) = names.insert(&d.name, e) {
            doc.problem(sink, p.key("name"), format!("duplicate device name (also {})", describe(first, e.doc)));
        }
        if d.profile.trim().is_empty() {
            doc.problem(sink, p.key("profile"), "must not be empty (use \"raw\" for no decoder)");
        } else if let Some(js) = d.js_codec_path() {
            if js.is_empty() {
                doc.problem(sink, p.key("profile"), "js: needs a path to the codec file, e.g. js:codecs/em310.js");
            } else if let Some(msg) = file_problem(base_dir, Path::new(js)) {
                doc.problem(sink, p.key("profile"), msg);
            }
        }

        // A wireless M-Bus meter has no LoRaWAN activation: its own checks instead.
        let wmbus_keys: Vec<&str> = WMBUS_KEYS.into_iter().filter(|k| doc.has(&p, k)).collect();
        if d.profile == WMBUS_PROFILE || !wmbus_keys.is_empty() {
            super::wmbus::check_meter(doc, &p, d, &wmbus_keys, sink);
            if let Some(key) = d.wmbus_meter().map(|m| (m.id, m.manufacturer)) {
                if let Some(first) = meters.insert(key, e) {
                    doc.problem(
                        sink,
                        p.key("wmbus_id"),
                        format!("the same meter (wmbus_id, manufacturer) as {}", describe(first, e.doc)),
                    );
                }
            }
            continue;
        }

        // Activation: judged on the keys written in the file, so that a key with a bad value does
        // not also count as missing.
        let abp: Vec<&str> = ABP_KEYS.into_iter().filter(|k| doc.has(&p, k)).collect();
        let otaa: Vec<&str> = OTAA_KEYS.into_iter().filter(|k| doc.has(&p, k)).collect();
        match (abp.is_empty(), otaa.is_empty()) {
            (false, false) => doc.problem(
                sink,
                p.clone(),
                format!(
                    "has ABP keys ({}) and OTAA keys ({}); a device is either ABP (dev_addr, nwk_s_key, app_s_key) or OTAA (dev_eui, join_eui, app_key)",
                    abp.join(", "),
                    otaa.join(", ")
                ),
            ),
            (true, true) => doc.problem(
                sink,
                p.clone(),
                "needs either ABP keys (dev_addr, nwk_s_key, app_s_key) or OTAA keys (dev_eui, join_eui, app_key)",
            ),
            (false, true) | (true, false) => {
                let (set, have, kind) = if otaa.is_empty() {
                    (ABP_KEYS, &abp, "ABP")
                } else {
                    (OTAA_KEYS, &otaa, "OTAA")
                };
                for k in set.iter().filter(|k| !have.contains(k)) {
                    doc.problem(
                        sink,
                        p.key(k),
                        format!("required key is missing ({kind} needs {})", set.join(", ")),
                    );
                }
            }
        }
        if let (Some(addr), Some(nwk)) = (d.dev_addr, d.nwk_s_key) {
            if let Some(first) = sessions.insert((addr, *nwk.expose()), e) {
                doc.problem(
                    sink,
                    p.key("nwk_s_key"),
                    format!(
                        "same dev_addr and nwk_s_key as {} (their frames could not be told apart)",
                        describe(first, e.doc)
                    ),
                );
            }
        }
        if let Some(eui) = d.dev_eui {
            if let Some(first) = euis.insert(eui, e) {
                doc.problem(sink, p.key("dev_eui"), format!("dev_eui is already used by {}", describe(first, e.doc)));
            }
        }
    }
}

fn check_lighting(doc: &Doc<'_>, zones: &[Zone], devices: &HashSet<String>, sink: &mut Sink) {
    let zp = KeyPath::root().key("lighting").key("zone");
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut lamp_zone: HashMap<&str, usize> = HashMap::new();
    for z in zones {
        let p = zp.index(z.index);
        let zone = &z.zone;
        if let Some(msg) = name_problem(&zone.name) {
            doc.problem(sink, p.key("name"), msg);
        } else if let Some(first) = names.insert(&zone.name, z.index) {
            doc.problem(sink, p.key("name"), format!("duplicate zone name (also lighting.zone[{first}])"));
        }
        let tz_ok = !zone.time_zone.is_empty()
            && zone.time_zone.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
        if !tz_ok {
            doc.problem(sink, p.key("time_zone"), "expected an IANA time zone name such as \"Europe/Berlin\"");
        }
        // Judged on the file: lamps that were refused (wrong type) are already reported.
        let written_lamps = match doc.node(&p.key("lamps")).map(|n| n.get_ref()) {
            Some(DeValue::Array(a)) => a.len(),
            _ => zone.lamps.len(),
        };
        if written_lamps == 0 {
            doc.problem(sink, p.key("lamps"), "must list at least one lamp device");
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, lamp) in zone.lamps.iter().map(|l| l.device()).enumerate() {
            let lp = p.key("lamps").index(i);
            if !devices.contains(lamp) {
                doc.problem(sink, lp, format!("no [[device]] is named {lamp:?}"));
            } else if !seen.insert(lamp) {
                doc.problem(sink, lp, format!("lamp {lamp:?} is listed twice"));
            } else if let Some(other) = lamp_zone.insert(lamp, z.index) {
                if other != z.index {
                    doc.problem(sink, lp, format!("lamp {lamp:?} is also in lighting.zone[{other}]"));
                }
            }
        }
        for (i, s) in &z.sensors {
            let sp = p.key("sensors").index(*i);
            if !devices.contains(&s.device) {
                doc.problem(sink, sp.key("device"), format!("no [[device]] is named {:?}", s.device));
            }
            if !zone.lamps.iter().any(|l| l.device() == s.lamp) {
                doc.problem(sink, sp.key("lamp"), format!("{:?} is not one of this zone's lamps", s.lamp));
            }
        }
        for (key, v) in [("base_level_pct", zone.base_level_pct), ("boost_level_pct", zone.boost_level_pct)] {
            if v > 100 {
                doc.problem(sink, p.key(key), "must be 0..=100 percent");
            }
        }
        if zone.base_level_pct > zone.boost_level_pct && zone.base_level_pct <= 100 {
            doc.problem(sink, p.key("boost_level_pct"), "must not be below base_level_pct");
        }
        // The loop's own checks (schedule periods, debounce, ranges): reported at the zone's table.
        for problem in zone.validate() {
            // Names, references and levels are reported above with their exact positions.
            let k = problem.key.as_str();
            let dup = k.contains("level_pct")
                || k.contains("lamps")
                || k.ends_with(".lamp")
                || k.ends_with(".device")
                || k.ends_with("name")
                || k.ends_with("time_zone");
            if !dup {
                doc.problem(sink, p.clone(), problem.to_string());
            }
        }
    }
}

fn check_demand_response(
    doc: &Doc<'_>,
    dr: &DemandResponseConfig,
    loads: &[(usize, LoadConfig)],
    meters: &HashSet<String>,
    sink: &mut Sink,
) {
    let p = KeyPath::root().key("demand_response");
    if !meters.contains(&dr.meter) {
        doc.problem(sink, p.key("meter"), format!("no [[device]] or sml source device is named {:?}", dr.meter));
    }
    if !(dr.limit_kw.is_finite() && dr.limit_kw > 0.0) {
        doc.problem(sink, p.key("limit_kw"), "must be a positive number of kW");
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, l) in loads {
        let lp = p.key("load").index(*i);
        if let Some(msg) = name_problem(&l.name) {
            doc.problem(sink, lp.key("name"), msg);
        } else if let Some(first) = names.insert(&l.name, *i) {
            doc.problem(sink, lp.key("name"), format!("duplicate load name (also demand_response.load[{first}])"));
        }
        if !(l.rated_kw.is_finite() && l.rated_kw > 0.0) {
            doc.problem(sink, lp.key("rated_kw"), "must be a positive number of kW");
        }
    }
    // The loop's own checks (limits, per-kind output wiring, §14a floor): reported at the section.
    let mut full = dr.clone();
    full.load = loads.iter().map(|(_, l)| l.clone()).collect();
    for problem in full.validate() {
        if problem.key.starts_with("demand_response.control_box") {
            // the control box's keys are all in the file: at their exact position
            if let Some(path) = super::control_box::key_path(&problem.key) {
                doc.problem(sink, path, problem.message.clone());
                continue;
            }
        }
        if problem.key.ends_with(".meter") || problem.key.ends_with(".limit_kw") || problem.key.ends_with(".name") {
            continue; // reported above with their exact position
        }
        doc.problem(sink, p.clone(), problem.to_string());
    }
}

fn check_lorawan(doc: &Doc<'_>, l: &LorawanConfig, sink: &mut Sink) {
    let p = KeyPath::root().key("lorawan");
    if l.net_id.len() != 6 || !l.net_id.chars().all(|c| c.is_ascii_hexdigit()) {
        doc.problem(sink, p.key("net_id"), format!("expected 6 hex digits, got {}", l.net_id.chars().count()));
    }
    match (l.dev_addr_first, l.dev_addr_last) {
        (Some(a), Some(b)) if a > b => {
            doc.problem(sink, p.key("dev_addr_last"), "must not be below dev_addr_first");
        }
        (Some(_), None) => doc.problem(sink, p.key("dev_addr_first"), "set dev_addr_last too (or neither)"),
        (None, Some(_)) => doc.problem(sink, p.key("dev_addr_last"), "set dev_addr_first too (or neither)"),
        _ => {}
    }
    if l.rx1_dr_offset > 5 {
        doc.problem(sink, p.key("rx1_dr_offset"), "must be 0..=5 (EU868)");
    }
    if l.rx2_dr > 7 {
        doc.problem(sink, p.key("rx2_dr"), "must be 0..=7 (EU868)");
    }
    if !(863_000_000..=870_000_000).contains(&l.rx2_freq_hz) {
        doc.problem(sink, p.key("rx2_freq_hz"), "must be within the EU868 band (863-870 MHz)");
    }
    if !(1..=15).contains(&l.rx1_delay_s) {
        doc.problem(sink, p.key("rx1_delay_s"), "must be 1..=15 seconds");
    }
    if !(1..=15).contains(&l.max_attempts) {
        doc.problem(sink, p.key("max_attempts"), "must be 1..=15");
    }
    if !(1..=1000).contains(&l.max_queued) {
        doc.problem(sink, p.key("max_queued"), "must be 1..=1000");
    }
    if l.min_lead_ms > 900 {
        doc.problem(sink, p.key("min_lead_ms"), "must be at most 900 ms (RX1 opens 1 s after the uplink)");
    }
    super::mac::check(doc, &l.adr, &l.mac, sink);
}
