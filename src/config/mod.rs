//! Configuration: the TOML schema, loading, and validation that reports every problem with its
//! file, line and column (`gateway.toml:14:9: device[3].app_s_key: expected 32 hex digits, got 30`).
//!
//! - [`schema`]: the serde types (`deny_unknown_fields`, defaults as in `config/gateway.toml`).
//! - [`values`]: broker URLs, public keys, hex/socket-address adapters.
//! - `spans`, `collect`: key paths, positions in the spanned document, serde with error collection.
//! - `validate`: the pipeline and the checks of values and cross-references (`power_fail`: the
//!   `[power_fail]` input's, including pins used twice; `control_box`: the §14a control box's pins
//!   against the other GPIO users, and the loop's problems with it at their exact key).
//! - [`mac`]: `[lorawan.adr]` and `[lorawan.mac]` (ADR and the MAC command engine) and their checks.
//! - [`problem`]: [`ConfigProblem`] and [`ConfigErrors`].
//!
//! Invariant: no key material ever appears in an error message, a `Debug` output or
//! [`Config::redacted_toml`]; keys are parsed into [`crate::keys::Key128`] at load time.
//! This module does no I/O apart from reading the config, the devices file and checking that
//! referenced files exist. Serial ports are deliberately not checked (adapters come and go).

mod collect;
mod control_box;
mod keypath;
pub mod mac;
mod multicast;
pub mod openadr;
mod power_fail;
pub mod problem;
pub mod radio;
pub mod schema;
mod spans;
mod validate;
pub mod values;
mod wmbus;

use std::path::Path;

pub use problem::{ConfigErrors, ConfigProblem};
pub use schema::*;
pub use values::{Ed25519PublicKey, MqttUrl};

/// The fully commented example configuration (`config/gateway.toml`).
pub fn example() -> &'static str {
    include_str!("../../config/gateway.toml")
}

/// Reads the config at `path` (and its `devices_file`), parses and validates it. Relative paths in
/// the config are resolved against the config file's directory. Problems name `path` as given.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigProblem {
            file: label.clone(),
            line: 0,
            col: 0,
            key_path: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_str(&text, &label, base_dir)
}

/// Parses and validates config text. `file_label` names the text in problems; `base_dir` is where
/// relative paths (`devices_file`, `mqtt.ca_file`, `js:PATH`, ...) are resolved.
pub fn parse_str(text: &str, file_label: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    validate::parse_and_validate(text, file_label, base_dir)
}

/// Reads a devices file on its own (the `devices_file` format: `[[device]]` tables only), validated
/// exactly as when a config names it. Used by `simulate`, which shares the daemon's device list.
pub fn load_devices(path: &Path) -> Result<Vec<DeviceConfig>, ConfigErrors> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = abs.parent().unwrap_or(Path::new("/"));
    let file = abs.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let wrapper = format!(
        "devices_file = {}\n[gateway]\nid = \"simulate\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
        toml::Value::String(file)
    );
    parse_str(&wrapper, "<devices>", base_dir).map(|c| c.device)
}

/// Checks one device table on its own (for `device.upsert`): name syntax and a complete activation.
pub fn check_device(d: &DeviceConfig) -> Result<(), String> {
    if let Some(msg) = validate::name_problem(&d.name) {
        return Err(format!("name: {msg}"));
    }
    if d.profile.is_empty() {
        return Err("profile: must not be empty".into());
    }
    d.activation().map(|_| ()).map_err(|e| e.to_string())
}

/// Keys whose values [`Config::redacted_toml`] replaces.
const SECRET_KEYS: &[&str] = &["nwk_s_key", "app_s_key", "app_key", "aes_key", "password"];

impl Config {
    /// The effective configuration (defaults filled in, devices of `devices_file` inline) as TOML,
    /// with every key and password replaced by `"<redacted>"`; for `config.get` and logs.
    pub fn redacted_toml(&self) -> String {
        // Rendered in the schema's order, with secret values replaced line by line; the result is
        // parsed back and checked, and if anything is off, a sorted rendering redacted as a table is
        // used instead.
        let ordered = toml::to_string(self).map(|text| {
            text.lines()
                .map(|line| match line.split_once('=') {
                    Some((k, _)) if SECRET_KEYS.contains(&k.trim()) => format!("{}= \"<redacted>\"", k),
                    _ => line.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        });
        if let Ok(text) = &ordered {
            if toml::from_str::<toml::Table>(text).is_ok_and(|t| is_redacted(&t)) {
                return text.clone();
            }
        }
        let rendered = toml::Table::try_from(self).and_then(|mut table| {
            redact(&mut table);
            toml::to_string(&table)
        });
        rendered.unwrap_or_else(|e| format!("# the configuration cannot be rendered: {e}\n"))
    }
}

fn is_redacted(table: &toml::Table) -> bool {
    table.iter().all(|(k, v)| match v {
        _ if SECRET_KEYS.contains(&k.as_str()) => v.as_str() == Some("<redacted>"),
        toml::Value::Table(t) => is_redacted(t),
        toml::Value::Array(items) => items.iter().all(|i| match i {
            toml::Value::Table(t) => is_redacted(t),
            _ => true,
        }),
        _ => true,
    })
}

fn redact(table: &mut toml::Table) {
    for (k, v) in table.iter_mut() {
        if SECRET_KEYS.contains(&k.as_str()) {
            *v = toml::Value::String("<redacted>".to_string());
            continue;
        }
        match v {
            toml::Value::Table(t) => redact(t),
            toml::Value::Array(items) => {
                for item in items.iter_mut() {
                    if let toml::Value::Table(t) = item {
                        redact(t);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
