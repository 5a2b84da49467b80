//! Wires sources, the core, the store and the uplink together, and owns their lifetimes.
//!
//! Data flow: sources → (mpsc) → pipeline task [core: dedup, LoRaWAN, reading] → store (commit+flush)
//! → acknowledgement back to the source → uplink task publishes from the store's outbox.
//! The pipeline does group commit: it takes every request waiting in its queue, journals them in one
//! batch and one flush, then acknowledges them all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;

use crate::config::{Activation, Config, SourceConfig};
use crate::ingest::{DeviceInfo, Ingest, Outcome, RadioFrame};
use crate::io::{gwmp, mqtt};
use crate::lorawan::{Sessions, UplinkError};
use crate::ops::counters::Counters;
use crate::reading::rfc3339;
use crate::store::{Batch, Record, Store};

/// Frames from one source datagram; `done` says whether they are on disk.
pub struct IngestRequest {
    pub frames: Vec<RadioFrame>,
    pub done: oneshot::Sender<bool>,
}

/// Sled's page cache: small, a Raspberry Pi has little RAM to spare.
const STORE_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Requests journaled in one group commit, at most.
const MAX_GROUP: usize = 512;

/// A started daemon. Dropping it does not stop it; call [`Daemon::stop`].
pub struct Daemon {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    pub gwmp_addrs: Vec<SocketAddr>,
    pub counters: Arc<Counters>,
    pub store: Store,
}

impl Daemon {
    /// Opens the store, binds the sources and starts every task. Errors here are start-up errors
    /// (store cannot be opened, address in use, ...).
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        let data_dir = &config.resolve_path(&config.gateway.data_dir);
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data_dir {}", data_dir.display()))?;
        restrict_permissions(data_dir);
        let store = Store::open(&data_dir.join("store"), STORE_CACHE_BYTES)?;
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let journaled = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();

        let ingest = build_ingest(config, &store)?;
        let (tx, rx) = mpsc::channel::<IngestRequest>(1024);
        tasks.spawn(pipeline(ingest, store.clone(), rx, journaled.clone(), counters.clone(), config.publish.readings));

        let mut gwmp_addrs = Vec::new();
        for (i, source) in config.source.iter().enumerate() {
            match source {
                SourceConfig::Gwmp(g) => {
                    let socket = gwmp::bind(g.bind).await?;
                    let addr = socket.local_addr()?;
                    let name = if g.name.is_empty() { format!("gwmp-{i}") } else { g.name.clone() };
                    tracing::info!(source = %name, %addr, "packet-forwarder source listening");
                    gwmp_addrs.push(addr);
                    tasks.spawn(gwmp::run(name, socket, tx.clone(), counters.clone(), shutdown_rx.clone()));
                }
                other => {
                    tracing::warn!(source = other.name(), kind = other.kind(), "source type not supported yet; ignored")
                }
            }
        }
        drop(tx);

        let settings = uplink_settings(config)?;
        let (store2, counters2, rx2) = (store.clone(), counters.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = mqtt::run(settings, store2, journaled, counters2, rx2).await {
                tracing::error!(error = %e, "uplink stopped");
            }
        });
        Ok(Daemon { shutdown, tasks, gwmp_addrs, counters, store })
    }

    /// Stops the sources, lets the pipeline finish what it holds, says goodbye to the broker.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
            tracing::warn!("tasks did not stop within 10 s; aborting them");
            self.tasks.abort_all();
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// The data dir holds session keys and the journal: readable by the daemon's user only.
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not restrict the data dir to mode 700");
    }
}

fn build_ingest(config: &Config, store: &Store) -> anyhow::Result<Ingest> {
    let mut sessions = Sessions::new();
    let mut devices = HashMap::new();
    for d in &config.device {
        devices.insert(d.name.clone(), DeviceInfo { profile: d.profile.clone() });
        match d.activation() {
            Ok(Activation::Abp { dev_addr, nwk_s_key, app_s_key }) => {
                sessions.upsert(&d.name, dev_addr, nwk_s_key, app_s_key, d.relax_fcnt);
                if d.relax_fcnt {
                    tracing::warn!(device = %d.name, "relax_fcnt is on: replayed frames of this device can be accepted");
                }
            }
            Ok(Activation::Otaa { .. }) => {
                tracing::warn!(device = %d.name, "OTAA devices are not served yet; ignored");
            }
            Err(e) => anyhow::bail!("device {}: {e}", d.name),
        }
    }
    for (device, fcnt) in store.fcnts()? {
        sessions.set_last_fcnt(&device, fcnt);
    }
    tracing::info!(sessions = sessions.len(), "LoRaWAN sessions loaded");
    Ok(Ingest::new(config.gateway.id.clone(), sessions, devices))
}

fn uplink_settings(config: &Config) -> anyhow::Result<mqtt::UplinkSettings> {
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
        started_at: rfc3339(Utc::now()),
        window: 100,
    })
}

/// The pipeline task: the shell around the pure ingest core. One owner of the LoRaWAN sessions.
async fn pipeline(
    mut ingest: Ingest,
    store: Store,
    mut rx: mpsc::Receiver<IngestRequest>,
    journaled: Arc<Notify>,
    counters: Arc<Counters>,
    publish_readings: bool,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let now = Utc::now();
        let mut batch = Batch::default();
        let mut readings = 0u64;
        for req in &group {
            for frame in &req.frames {
                match ingest.handle(now, frame) {
                    Outcome::Reading { mut reading, fcnt } => {
                        batch.set_fcnt(&reading.device, fcnt);
                        if publish_readings {
                            reading.seq = store.allocate_seq();
                            tracing::debug!(device = %reading.device, seq = reading.seq, f_cnt = fcnt, "reading");
                            batch.push_record(Record {
                                seq: reading.seq,
                                topic_suffix: reading.topic_suffix(),
                                payload: reading.to_json(),
                            });
                            readings += 1;
                        }
                        Counters::inc(&counters.frames_ok);
                    }
                    Outcome::MacOnly { device, fcnt } => {
                        batch.set_fcnt(&device, fcnt);
                        Counters::inc(&counters.frames_ok);
                        Counters::inc(&counters.frames_mac_only);
                    }
                    Outcome::Duplicate => Counters::inc(&counters.frames_duplicate),
                    Outcome::Rejected(e) => count_rejection(&counters, &e),
                }
            }
        }
        let ok = if batch.is_empty() {
            true
        } else {
            match store.commit(batch) {
                Ok(()) => match store.flush().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "journal flush failed; frames not acknowledged");
                        false
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "journal write failed; frames not acknowledged");
                    false
                }
            }
        };
        if ok {
            counters.readings_journaled.fetch_add(readings, std::sync::atomic::Ordering::Relaxed);
            journaled.notify_one();
        } else {
            Counters::inc(&counters.journal_errors);
        }
        for req in group {
            let _ = req.done.send(ok);
        }
    }
}

fn count_rejection(counters: &Counters, e: &UplinkError) {
    let c = match e {
        UplinkError::BadMic { .. } => &counters.frames_bad_mic,
        UplinkError::Replay { .. } => &counters.frames_replay,
        UplinkError::UnknownDevAddr(_) => &counters.frames_unknown_dev_addr,
        UplinkError::NotUplinkData { .. } => &counters.frames_not_data,
        _ => &counters.frames_malformed,
    };
    Counters::inc(c);
    // UplinkError's messages carry addresses and counters, never keys or payload bytes.
    tracing::info!(error = %e, "frame refused");
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let daemon = Daemon::start(&config).await?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(gateway = %config.gateway.id, "district-gateway running");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    daemon.stop().await;
    Ok(())
}
