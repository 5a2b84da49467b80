//! The supervisor: owns the running [`Daemon`] and replaces it when the configuration changes
//! (SIGHUP, `config.apply`), rolling back by itself when a new configuration does not become healthy
//! in time. It also talks to systemd: READY once the store and sources are up, WATCHDOG only while
//! the core loop really ticks, STATUS with the backlog and the broker link, STOPPING on SIGTERM.
//!
//! A reload is a stop of the old daemon (sources stop accepting, everything accepted is flushed)
//! followed by a start of the new one with the same store: nothing accepted is lost; datagrams that
//! arrive during the switch (milliseconds) are not acknowledged, as when the gateway is restarted.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{self, Config};
use crate::ops::commands::{response_err, response_ok, RefusalCode};
use crate::ops::executor::{journal_response, ApplyRequest};
use crate::runtime::{Daemon, Options};

/// How a candidate config is judged: healthy (core loop ticking, journal writable, sources up or
/// retrying) and connected to the broker.
fn judged_healthy(d: &Daemon) -> bool {
    d.health.check().healthy && d.counters.mqtt_connected.load(Ordering::Relaxed) == 1
}

pub async fn run(config_path: PathBuf, mut cfg: Config) -> anyhow::Result<()> {
    let (apply_tx, mut apply_rx) = mpsc::channel::<ApplyRequest>(4);
    let mut daemon = start(&cfg, &apply_tx).await?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(gateway = %cfg.gateway.id, "district-gateway running");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Test hook (only with DISTRICT_GATEWAY_TEST_HOOKS=1): SIGUSR1 toggles a stalled core loop, so
    // that tests can watch /healthz and the watchdog react. Ignored otherwise.
    let hooks = std::env::var_os("DISTRICT_GATEWAY_TEST_HOOKS").is_some();
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut stalled = false;
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let mut tick = tokio::time::interval(if watchdog {
        Duration::from_micros(watchdog_usec / 2).max(Duration::from_millis(500))
    } else {
        Duration::from_secs(5)
    });
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                tracing::info!(config = %config_path.display(), "SIGHUP: reloading the configuration");
                match config::load(&config_path) {
                    Ok(new) => {
                        let (d, c, _) = switch(daemon, cfg, new, None, &config_path, &apply_tx).await?;
                        daemon = d;
                        cfg = c;
                    }
                    Err(errors) => tracing::error!(%errors, "SIGHUP: the new configuration is invalid; keeping the running one"),
                }
            }
            Some(req) = apply_rx.recv() => {
                let base = config_path.parent().unwrap_or(Path::new("")).to_path_buf();
                match config::parse_str(&req.toml, &config_path.display().to_string(), &base) {
                    Err(errors) => {
                        let msg = format!("the configuration is invalid:\n{errors}");
                        journal_response(&daemon.control, response_err(Some(&req.id), RefusalCode::InvalidArgs, &msg)).await;
                    }
                    Ok(new) => {
                        let previous_text = std::fs::read_to_string(&config_path).ok();
                        if let Err(e) = write_atomically(&config_path, &req.toml) {
                            let msg = format!("cannot write the configuration: {e}");
                            journal_response(&daemon.control, response_err(Some(&req.id), RefusalCode::Internal, &msg)).await;
                            continue;
                        }
                        let (d, c, outcome) = switch(daemon, cfg, new, previous_text, &config_path, &apply_tx).await?;
                        daemon = d;
                        cfg = c;
                        let payload = match outcome {
                            Switch::Applied => response_ok(&req.id, serde_json::json!({"applied": true})),
                            Switch::RolledBack(why) => response_err(Some(&req.id), RefusalCode::Internal, &format!("rolled back: {why}")),
                        };
                        journal_response(&daemon.control, payload).await;
                    }
                }
            }
            _ = usr1.recv() => {
                if hooks {
                    stalled = !stalled;
                    daemon.health.stall_for_test(stalled);
                    tracing::warn!(stalled, "test hook: core loop stall toggled");
                }
            }
            _ = tick.tick() => {
                let report = daemon.health.check();
                if watchdog && report.healthy {
                    // Only a ticking core loop keeps systemd's watchdog quiet: a stuck loop gets us restarted.
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
                let status = format!(
                    "backlog {} | broker {} | {}",
                    daemon.store.depth(),
                    if daemon.counters.mqtt_connected.load(Ordering::Relaxed) == 1 { "connected" } else { "unreachable" },
                    if report.healthy { "healthy".to_string() } else { report.reason() },
                );
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    daemon.stop().await;
    Ok(())
}

enum Switch {
    Applied,
    RolledBack(String),
}

async fn start(cfg: &Config, apply: &mpsc::Sender<ApplyRequest>) -> anyhow::Result<Daemon> {
    crate::ops::logging::set_filter(&cfg.gateway.log_level).ok();
    Daemon::start_opts(cfg, Options { apply: Some(apply.clone()), ..Options::default() }).await
}

/// Replaces the running daemon with one on `new`; if it is not healthy within `rollback_after_s`,
/// goes back to `old` (and restores `previous_text` to the config file when given).
async fn switch(
    daemon: Daemon,
    old: Config,
    new: Config,
    previous_text: Option<String>,
    path: &Path,
    apply: &mpsc::Sender<ApplyRequest>,
) -> anyhow::Result<(Daemon, Config, Switch)> {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    daemon.stop().await;
    let bound = Duration::from_secs(u64::from(new.ops.rollback_after_s));
    let why = match start(&new, apply).await {
        Ok(d) => {
            let deadline = tokio::time::Instant::now() + bound;
            loop {
                if judged_healthy(&d) {
                    tracing::info!("the new configuration is running and healthy");
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    return Ok((d, new, Switch::Applied));
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let report = d.health.check();
            let connected = d.counters.mqtt_connected.load(Ordering::Relaxed) == 1;
            d.stop().await;
            let mut why = Vec::new();
            if !report.healthy {
                why.push(report.reason());
            }
            if !connected {
                why.push("the broker could not be reached".to_string());
            }
            format!("not healthy within {} s: {}", bound.as_secs(), why.join("; "))
        }
        Err(e) => format!("the new configuration could not start: {e:#}"),
    };
    tracing::error!(reason = %why, "rolling back to the previous configuration");
    if let Some(text) = previous_text {
        if let Err(e) = write_atomically(path, &text) {
            tracing::error!(error = %e, "cannot restore the previous config file");
        }
    }
    let d = start(&old, apply).await.context("restarting with the previous configuration")?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    Ok((d, old, Switch::RolledBack(why)))
}

/// Writes the config file so that a crash leaves either the old or the new file, never half of one.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("toml.new");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}
