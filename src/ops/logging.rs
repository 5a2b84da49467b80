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
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok().filter(|v| !v.is_empty());
    let filter = from_env
        .ok_or(())
        .and_then(|v| EnvFilter::try_new(with_core_targets(&v)).map_err(|_| ()))
        .or_else(|_| EnvFilter::try_new(with_core_targets(level)))
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
    let filter = EnvFilter::try_new(with_core_targets(directive)).map_err(|e| format!("not a log filter: {e}"))?;
    match RELOAD.get() {
        Some(h) => h.reload(filter).map_err(|e| e.to_string()),
        None => Err("logging is not initialised".into()),
    }
}

/// The modules that moved into the core crate keep their documented log targets: a directive for
/// `district_gateway::lorawan` (or `district_gateway` itself) also covers `district_core::lorawan`
/// (or `district_core`), so `info,district_gateway::lorawan=debug` means what it always meant.
fn with_core_targets(directive: &str) -> String {
    const MOVED: [(&str, &str); 14] = [
        ("district_gateway::ops::commands", "district_core::commands"),
        ("district_gateway::sim::frames", "district_core::device_frames"),
        ("district_gateway::aggregate", "district_core::aggregate"),
        ("district_gateway::control", "district_core::control"),
        ("district_gateway::decode", "district_core::decode"),
        ("district_gateway::events", "district_core::events"),
        ("district_gateway::ingest", "district_core::ingest"),
        ("district_gateway::keys", "district_core::keys"),
        ("district_gateway::loops", "district_core::loops"),
        ("district_gateway::lorawan", "district_core::lorawan"),
        ("district_gateway::meter", "district_core::meter"),
        ("district_gateway::netserver", "district_core::netserver"),
        // The pipeline's decisions (frames refused, events, loop downlinks) are the district step's.
        ("district_gateway::runtime", "district_core::district"),
        ("district_gateway", "district_core"),
    ];
    let mut out: Vec<String> = Vec::new();
    for d in directive.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        out.push(d.to_string());
        let target = d.split(['=', '[']).next().unwrap_or("");
        // The crate itself only as a whole (`district_gateway::io` stays in the shell).
        let moved = MOVED.iter().find(|(from, _)| {
            target == *from
                || (*from != "district_gateway" && target.strip_prefix(from).is_some_and(|rest| rest.starts_with("::")))
        });
        if let Some((from, to)) = moved {
            out.push(format!("{to}{}", &d[from.len()..]));
        }
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::with_core_targets;

    #[test]
    fn directives_for_moved_modules_also_name_the_core_crate() {
        assert_eq!(with_core_targets("info"), "info");
        assert_eq!(
            with_core_targets("info,district_gateway::lorawan=debug"),
            "info,district_gateway::lorawan=debug,district_core::lorawan=debug"
        );
        assert_eq!(
            with_core_targets("district_gateway::lorawan::join=trace, district_gateway::io=debug"),
            "district_gateway::lorawan::join=trace,district_core::lorawan::join=trace,district_gateway::io=debug"
        );
        assert_eq!(with_core_targets("district_gateway=debug"), "district_gateway=debug,district_core=debug");
        assert_eq!(
            with_core_targets("district_gateway::ops::commands=warn"),
            "district_gateway::ops::commands=warn,district_core::commands=warn"
        );
        assert_eq!(
            with_core_targets("district_gateway::runtime=debug"),
            "district_gateway::runtime=debug,district_core::district=debug"
        );
        // A module whose name merely starts like a moved one is not moved.
        assert_eq!(with_core_targets("district_gateway::loopsy=info"), "district_gateway::loopsy=info");
        assert!(
            tracing_subscriber::EnvFilter::try_new(with_core_targets("warn,district_gateway::netserver=debug")).is_ok()
        );
    }
}
