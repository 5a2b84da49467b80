//! Logging: journald when started by systemd, human-readable text on a terminal otherwise.
//!
//! Secrets never reach a log line: keys are `Key128` (redacted `Debug`, no `Display`) and error types
//! carry lengths and names, never key material. The filter can be changed at run time (`log.level`).

use std::sync::OnceLock;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{reload, EnvFilter, Registry};

static RELOAD: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `level` is the config's `gateway.log_level`; `RUST_LOG` overrides it.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = RELOAD.set(handle);
    // systemd sets JOURNAL_STREAM for services whose output goes to the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry().with(filter).with(journald).try_init();
            return;
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false))
        .try_init();
}

/// Changes the log filter (`info`, `debug`, `warn,district_gateway::lorawan=debug`, ...).
pub fn set_filter(directive: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(directive).map_err(|e| format!("not a log filter: {e}"))?;
    match RELOAD.get() {
        Some(h) => h.reload(filter).map_err(|e| e.to_string()),
        None => Err("logging is not initialised".into()),
    }
}
