//! Wires sources, the core, the store and the uplink together, and owns their lifetimes.
//!
//! Data flow: sources → (mpsc) → pipeline task [core: dedup, LoRaWAN, reading] → store (commit+flush)
//! → acknowledgement back to the source → uplink task publishes from the store's outbox.
//! The pipeline does group commit: it takes every request waiting in its queue, journals them in one
//! batch and one flush, then acknowledges them all.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;

use crate::config::{Activation, Config, SourceConfig};
use crate::ingest::RadioFrame;
use crate::io::sml::MeterSample;
use crate::io::status::SourceStatus;
use crate::io::{gwmp, mqtt, serial_lora, sml, sx127x};
use crate::keys::Eui64;
use crate::lorawan::downlink::{DeviceClass, QueueConfig};
use crate::lorawan::join::{JoinConfig, NetId};
use crate::lorawan::region::{RxSettings, TxParams};
use crate::lorawan::UplinkError;
use crate::netserver::{DeviceInfo, NetworkServer, Note, NsConfig, Outcome, Output, Provisioning};
use crate::ops::counters::Counters;
use crate::reading::rfc3339;
use crate::store::{Batch, Record, Store};

/// Frames from one source datagram (or meter samples); `done` says whether they are on disk.
pub struct IngestRequest {
    pub frames: Vec<RadioFrame>,
    pub meter: Vec<MeterSample>,
    pub done: oneshot::Sender<bool>,
}

/// Replacements for hardware this machine lacks (tests, the demo): an SX127x register model per
/// source name instead of rppal.
#[derive(Default, Clone)]
pub struct Hardware {
    pub sx127x: std::collections::HashMap<String, crate::io::sx127x::Sx127xModel>,
    /// Relay outputs by BCM pin (fakes that record their levels) instead of rppal.
    pub relays: std::collections::HashMap<u32, crate::io::gpio::FakeOutput>,
}

/// Requests to the pipeline (the network server and the control loops) from the rest of the daemon.
pub enum Control {
    /// Queue a downlink for a device (control loops, commands).
    Enqueue {
        device: String,
        f_port: u8,
        payload: Vec<u8>,
        confirmed: bool,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// A gateway could not send a downlink.
    TxFailed {
        device: String,
        f_cnt_down: u32,
    },
    /// Journal one message for the broker (e.g. a `cmd/res`); `reply` says whether it is on disk.
    Journal {
        topic: crate::topic::Topic,
        payload: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    /// `device.upsert`: applied live and persisted together with the session state it changes;
    /// `Err` when it could not be persisted (then nothing changed). `decoder`: its `js:` codec, already
    /// loaded and test-run by the executor.
    UpsertDevice {
        device: Box<crate::config::DeviceConfig>,
        decoder: Option<Box<dyn crate::decode::Decoder>>,
        reply: oneshot::Sender<Result<DeviceChange, String>>,
    },
    RemoveDevice {
        device: String,
        reply: oneshot::Sender<Result<DeviceChange, String>>,
    },
    /// The control loops' state, for `status`.
    LoopStatus {
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// A control-loop command (`lighting.*`, `dr.*`).
    Command {
        cmd: crate::ops::commands::CommandName,
        args: serde_json::Value,
        reply: oneshot::Sender<Result<serde_json::Value, (crate::ops::commands::RefusalCode, String)>>,
    },
}

/// What a remote device change did.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceChange {
    /// Downlinks queued under keys the change retired (dropped, never sent).
    pub downlinks_dropped: usize,
}

/// How the daemon is embedded: hardware replacements, and where `config.apply` requests go.
#[derive(Default)]
pub struct Options {
    pub hardware: Hardware,
    /// The supervisor's channel for `config.apply` (None: the command is not available).
    pub apply: Option<mpsc::Sender<crate::ops::executor::ApplyRequest>>,
}

/// A downlink for a source to send through one of its gateways.
#[derive(Debug, Clone)]
pub struct SourceDownlink {
    pub gateway: Eui64,
    pub device: String,
    pub f_cnt_down: Option<u32>,
    /// How to transmit it; each source converts it at its own edge (gwmp: `TxPk`, SX127x: `TxRequest`).
    pub params: TxParams,
    pub phy: Vec<u8>,
}

/// Sled's page cache: small, a Raspberry Pi has little RAM to spare.
const STORE_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Requests journaled in one group commit, at most.
const MAX_GROUP: usize = 512;
/// The control loops' state is also saved this often (and at once when an event fired).
const LOOPS_SAVE_EVERY: Duration = Duration::from_secs(30);
/// How often class C queues and downlink timeouts are looked at.
const TICK: Duration = Duration::from_millis(500);
/// How often the store's housekeeping runs (acknowledgements to the log, deleting acknowledged
/// segments, the age bound, ending drop episodes).
const MAINTAIN_EVERY: Duration = Duration::from_millis(200);

/// A started daemon. Dropping it does not stop it; call [`Daemon::stop`].
pub struct Daemon {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    pub gwmp_addrs: Vec<SocketAddr>,
    pub counters: Arc<Counters>,
    pub store: Store,
    pub control: mpsc::Sender<Control>,
    pub sources: Vec<Arc<SourceStatus>>,
    pub health: crate::ops::health::Health,
    pub http_addr: SocketAddr,
}

impl Daemon {
    /// Opens the store, binds the sources and starts every task. Errors here are start-up errors
    /// (store cannot be opened, address in use, ...).
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        Self::start_opts(config, Options::default()).await
    }

    /// [`Daemon::start`] with hardware replaced (register models instead of rppal).
    pub async fn start_with(config: &Config, hardware: Hardware) -> anyhow::Result<Daemon> {
        Self::start_opts(config, Options { hardware, apply: None }).await
    }

    pub async fn start_opts(config: &Config, options: Options) -> anyhow::Result<Daemon> {
        let hardware = options.hardware;
        let started = std::time::Instant::now();
        let started_at = crate::clock::now();
        let data_dir = &config.resolve_path(&config.gateway.data_dir);
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data_dir {}", data_dir.display()))?;
        restrict_permissions(data_dir);
        let store = Store::open_with(
            &data_dir.join("store"),
            crate::store::StoreOptions {
                cache_bytes: STORE_CACHE_BYTES,
                ..crate::store::StoreOptions::from_config(config)
            },
            started_at,
        )?;
        // The store allocates no seq: the `store_damaged` event of its open is journaled here, before
        // any task writes.
        if let Some(event) = store.open_report().damage_event.clone() {
            let mut b = Batch::default();
            b.push_announcement(event, store.allocate_seq());
            store.commit(b, crate::clock::now())?;
            store.flush_blocking()?;
        }
        let (config, remote, quarantined) = with_remote_devices(config, &store)?;
        let config = &config;
        let health = crate::ops::health::Health::new(Duration::from_secs(10));
        let commands = Arc::new(crate::ops::commands::CommandCounts::default());
        let verifier = crate::ops::executor::verifier(config).map_err(|e| anyhow::anyhow!("ops.key: {e}"))?;
        let http = crate::ops::http::HttpServer::bind(config.ops.http_bind)
            .await
            .with_context(|| format!("binding ops.http_bind {}", config.ops.http_bind))?;
        let http_addr = http.local_addr();
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let journaled = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();

        let (ns, quarantined) = build_network_server(config, &store, &remote, quarantined)?;
        let (tx, rx) = mpsc::channel::<IngestRequest>(1024);
        let (control_tx, control_rx) = mpsc::channel::<Control>(256);

        let mut gwmp_addrs = Vec::new();
        let mut downlink_txs = Vec::new();
        let mut sources = Vec::new();
        for (i, source) in config.source.iter().enumerate() {
            let (dl_tx, dl_rx) = mpsc::channel::<SourceDownlink>(256);
            downlink_txs.push(dl_tx);
            let status = SourceStatus::new(source.name(), source.kind());
            sources.push(status.clone());
            match source {
                SourceConfig::Gwmp(g) => {
                    let socket = gwmp::bind(g.bind).await?;
                    let addr = socket.local_addr()?;
                    tracing::info!(source = %g.name, %addr, "packet-forwarder source listening");
                    status.set_up();
                    gwmp_addrs.push(addr);
                    let wiring = gwmp::Wiring {
                        status: status.clone(),
                        pipeline: tx.clone(),
                        control: control_tx.clone(),
                        downlinks: dl_rx,
                        counters: counters.clone(),
                        shutdown: shutdown_rx.clone(),
                    };
                    tasks.spawn(gwmp::run(g.name.clone(), i, socket, wiring));
                }
                SourceConfig::Sx127x(c) => {
                    let (frames_tx, frames_rx) = mpsc::channel::<RadioFrame>(256);
                    let (txreq_tx, txreq_rx) = mpsc::channel::<sx127x::TxRequest>(64);
                    tasks.spawn(forward_frames(i, frames_rx, tx.clone()));
                    tasks.spawn(forward_downlinks_to_chip(dl_rx, txreq_tx));
                    let (cfg, rx) = (c.clone(), shutdown_rx.clone());
                    match hardware.sx127x.get(&c.name) {
                        Some(model) => {
                            tasks.spawn(sx127x::run_sx127x(cfg, model.factory(), frames_tx, txreq_rx, status, rx));
                        }
                        None => {
                            let wiring = c.wiring();
                            let factory = move || sx127x::spi::open_rppal(&wiring);
                            tasks.spawn(sx127x::run_sx127x(cfg, factory, frames_tx, txreq_rx, status, rx));
                        }
                    }
                }
                SourceConfig::SerialLora(c) => {
                    let (frames_tx, frames_rx) = mpsc::channel::<RadioFrame>(256);
                    tasks.spawn(forward_frames(i, frames_rx, tx.clone()));
                    tasks.spawn(drop_downlinks(c.name.clone(), dl_rx, counters.clone()));
                    tasks.spawn(serial_lora::run_serial_lora(c.clone(), frames_tx, status, shutdown_rx.clone()));
                }
                SourceConfig::Sml(c) => {
                    let (samples_tx, samples_rx) = mpsc::channel::<MeterSample>(64);
                    tasks.spawn(forward_samples(samples_rx, tx.clone()));
                    tasks.spawn(drop_downlinks(c.name.clone(), dl_rx, counters.clone()));
                    tasks.spawn(sml::run(c.clone(), samples_tx, status, shutdown_rx.clone()));
                }
            }
        }
        drop(tx);
        let (loops, relays) = build_loops(config, &hardware)?;
        let board =
            crate::ops::board::Board::new_shared(config.device.iter().map(|d| (d.name.clone(), d.profile.clone())));
        let pipeline = Pipeline {
            gateway_id: config.gateway.id.clone(),
            health: health.clone(),
            loops,
            board: board.clone(),
            legacy_loops_file: data_dir.join("loops.json"),
            relays,
            ns,
            store: store.clone(),
            journaled: journaled.clone(),
            counters: counters.clone(),
            publish_readings: config.publish.readings,
            downlinks: downlink_txs,
            sources: source_names(config),
            quarantined,
        };
        tasks.spawn(pipeline.run(rx, control_rx));

        let (cmd_tx, cmd_rx) = mpsc::channel::<Vec<u8>>(64);
        let ctx = crate::ops::executor::ExecutorContext {
            config: config.clone(),
            store: store.clone(),
            control: control_tx.clone(),
            counters: counters.clone(),
            commands: commands.clone(),
            sources: sources.clone(),
            started,
            started_at,
            apply: options.apply,
        };
        tasks.spawn(crate::ops::executor::run(ctx, verifier, cmd_rx));

        let metrics_fn = metrics_fn(
            config,
            store.clone(),
            counters.clone(),
            commands.clone(),
            sources.clone(),
            health.clone(),
            started,
        );
        let mut handlers = crate::ops::http::Handlers::new(metrics_fn, health.clone());
        handlers.page = page_fn(
            config,
            board.clone(),
            store.clone(),
            counters.clone(),
            sources.clone(),
            health.clone(),
            started_at,
        );
        tasks.spawn(http.run(handlers, shutdown_rx.clone()));

        let settings = uplink_settings(config)?;
        let policy = mqtt::UplinkPolicy::from_config(config);
        let (store2, counters2, rx2) = (store.clone(), counters.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = mqtt::run_with(settings, policy, store2, journaled, counters2, cmd_tx, rx2).await {
                tracing::error!(error = %e, "uplink stopped");
            }
        });
        Ok(Daemon { shutdown, tasks, gwmp_addrs, counters, store, control: control_tx, sources, health, http_addr })
    }

    /// Queues a downlink for a device; returns its id.
    pub async fn enqueue_downlink(
        &self,
        device: &str,
        f_port: u8,
        payload: &[u8],
        confirmed: bool,
    ) -> Result<u64, String> {
        let (reply, answer) = oneshot::channel();
        let req = Control::Enqueue { device: device.into(), f_port, payload: payload.to_vec(), confirmed, reply };
        self.control.send(req).await.map_err(|_| "the daemon is stopping".to_string())?;
        answer.await.map_err(|_| "the daemon is stopping".to_string())?
    }

    /// Stops the sources, lets the pipeline finish what it holds, says goodbye to the broker.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        drop(self.control);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
            tracing::warn!("tasks did not stop within 10 s; aborting them");
            self.tasks.abort_all();
        }
        // Every task has stopped: this is the outbox's only writer now. The last acknowledgements
        // reach the log (so a restart does not send them again), and an ended drop episode is
        // journaled.
        let now = crate::clock::now();
        match self.store.maintain(now) {
            Ok(Some(a)) => {
                let mut b = Batch::default();
                b.push_announcement(a, self.store.allocate_seq());
                if let Err(e) = self.store.commit(b, now) {
                    tracing::error!(error = %e, "journaling the end of a drop episode failed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "final store housekeeping failed"),
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// A device kept out of service: a remote change that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub device: String,
    pub reason: String,
}

/// The config's devices with the remote changes (`device.upsert` / `device.remove`) from the store
/// applied on top: remote changes survive restarts and win over the file until the file changes them.
/// A remote device that cannot be read is quarantined (kept in the store, not used, reported): a
/// start never fails because of one.
/// Also returns the names of the devices that came from the store.
fn with_remote_devices(
    config: &Config,
    store: &Store,
) -> anyhow::Result<(Config, std::collections::HashSet<String>, Vec<Quarantined>)> {
    let mut c = config.clone();
    let mut remote = std::collections::HashSet::new();
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

fn metrics_fn(
    config: &Config,
    store: Store,
    counters: Arc<Counters>,
    commands: Arc<crate::ops::commands::CommandCounts>,
    sources: Vec<Arc<SourceStatus>>,
    health: crate::ops::health::Health,
    started: std::time::Instant,
) -> crate::ops::http::MetricsFn {
    use crate::ops::metrics::{MetricsSnapshot, ProcessStats, SourceMetrics};
    let gateway_id = config.gateway.id.clone();
    Arc::new(move || {
        let source_metrics = sources
            .iter()
            .map(|s| SourceMetrics {
                name: s.name().to_string(),
                kind: s.snapshot().kind.to_string(),
                state: health_state(s.state()),
            })
            .collect();
        crate::ops::metrics::render(&MetricsSnapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            gateway_id: gateway_id.clone(),
            uptime_s: started.elapsed().as_secs_f64(),
            counters: counters.snapshot(),
            backlog_records: store.depth() as u64,
            backlog_bytes: store.size_on_disk(),
            backlog_oldest_age_s: store.oldest_record_age_s(crate::clock::now()),
            readings_dropped: counters.readings_dropped.load(std::sync::atomic::Ordering::Relaxed),
            sources: source_metrics,
            commands: commands.snapshot(),
            health: Some(health.check()),
            process: ProcessStats::read(),
            ..MetricsSnapshot::default()
        })
    })
}

#[allow(clippy::too_many_arguments)]
fn page_fn(
    config: &Config,
    board: crate::ops::board::SharedBoard,
    store: Store,
    counters: Arc<Counters>,
    sources: Vec<Arc<SourceStatus>>,
    health: crate::ops::health::Health,
    started_at: chrono::DateTime<Utc>,
) -> crate::ops::http::PageFn {
    use crate::ops::board::{SourceView, StatusView};
    use std::sync::atomic::Ordering::Relaxed;
    let gateway_id = config.gateway.id.clone();
    Arc::new(move || {
        let now = crate::clock::now();
        let report = health.check();
        let (devices, control) = match board.lock() {
            Ok(b) => (b.devices.values().cloned().collect(), b.control.clone()),
            Err(_) => (Vec::new(), serde_json::Value::Null),
        };
        let view = StatusView {
            gateway_id: gateway_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            now: Some(now),
            started_at: Some(started_at),
            mqtt_connected: counters.mqtt_connected.load(Relaxed) == 1,
            mqtt_reconnects: counters.mqtt_reconnects.load(Relaxed),
            backlog_depth: store.depth() as u64,
            backlog_oldest_age_s: store.oldest_record_age_s(now),
            readings_journaled: counters.readings_journaled.load(Relaxed),
            readings_published: counters.published.load(Relaxed),
            readings_dropped: counters.readings_dropped.load(Relaxed),
            healthy: report.healthy,
            health_reason: report.reason(),
            sources: sources
                .iter()
                .map(|s| {
                    let snap = s.snapshot();
                    SourceView {
                        name: snap.name,
                        kind: snap.kind.to_string(),
                        state: snap.state.as_str().to_string(),
                        since: Some(snap.since.into()),
                        frames: snap.frames,
                        errors: snap.errors,
                        last_error: snap.last_error,
                    }
                })
                .collect(),
            devices,
            control,
            counters: counters.snapshot().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        crate::ops::status_page::render(&view)
    })
}

fn health_state(s: crate::io::status::SourceState) -> crate::ops::health::SourceState {
    use crate::io::status::SourceState as S;
    use crate::ops::health::SourceState as H;
    match s {
        S::Up => H::Up,
        S::Starting | S::Retrying => H::Retrying,
        S::Down | S::Stopped => H::Down,
    }
}

/// Frames from a local radio (SX127x, serial module) into the pipeline. Nothing outside waits for an
/// acknowledgement here, but the frames are journaled the same way.
async fn forward_frames(source: usize, mut rx: mpsc::Receiver<RadioFrame>, pipeline: mpsc::Sender<IngestRequest>) {
    while let Some(mut frame) = rx.recv().await {
        frame.origin.source = source;
        let (done, _) = oneshot::channel();
        if pipeline.send(IngestRequest { frames: vec![frame], meter: vec![], done }).await.is_err() {
            break;
        }
    }
}

async fn forward_samples(mut rx: mpsc::Receiver<MeterSample>, pipeline: mpsc::Sender<IngestRequest>) {
    while let Some(sample) = rx.recv().await {
        let (done, _) = oneshot::channel();
        if pipeline.send(IngestRequest { frames: vec![], meter: vec![sample], done }).await.is_err() {
            break;
        }
    }
}

/// Downlinks for a source with an SX127x: sent by the same chip (class C on RX2 parameters).
async fn forward_downlinks_to_chip(mut rx: mpsc::Receiver<SourceDownlink>, chip: mpsc::Sender<sx127x::TxRequest>) {
    while let Some(d) = rx.recv().await {
        let p = &d.params;
        if chip.send(sx127x::TxRequest::downlink(d.phy, p.freq_hz, p.sf, p.bw_khz)).await.is_err() {
            break;
        }
    }
}

/// Sources that cannot transmit: a downlink routed to them is counted and dropped.
async fn drop_downlinks(name: String, mut rx: mpsc::Receiver<SourceDownlink>, counters: Arc<Counters>) {
    while let Some(d) = rx.recv().await {
        Counters::inc(&counters.downlinks_failed);
        tracing::warn!(source = %name, device = %d.device, "this source cannot transmit: downlink dropped");
    }
}

/// The data dir holds session keys and the journal: readable by the daemon's user only.
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not restrict the data dir to mode 700");
    }
}

/// The network server with every device and its stored state. Whatever the restore decided (new
/// sessions for re-keyed devices, session records for devices seen the first time) is committed and
/// flushed here, before any task can send. Returns the devices quarantined.
fn build_network_server(
    config: &Config,
    store: &Store,
    remote: &std::collections::HashSet<String>,
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
    let mut devices = Vec::new();
    for d in &config.device {
        let loaded = provisioning(d).map_err(|e| anyhow::anyhow!("device {}: {e}", d.name)).and_then(|p| {
            if let Some(path) = d.js_codec_path() {
                if !ns.has_decoder(&d.profile) {
                    ns.set_decoder(&d.profile, load_js_codec(config, &d.profile, path)?);
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
fn source_names(config: &Config) -> Vec<String> {
    config.source.iter().map(|s| s.name().to_string()).collect()
}

/// Loads a TTN-format JavaScript codec (`profile = "js:PATH"`), sandboxed with the default limits,
/// and test-runs it ([`crate::decode::js::JsCodec::self_test`]).
pub(crate) fn load_js_codec(
    config: &Config,
    profile: &str,
    path: &str,
) -> anyhow::Result<Box<dyn crate::decode::Decoder>> {
    use crate::decode::js::{JsCodec, JsLimits};
    let full = config.resolve_path(Path::new(path));
    let source = std::fs::read_to_string(&full).with_context(|| format!("reading codec {}", full.display()))?;
    // The decode module is pure: the shell gives the codec runtime its clock (monotonic).
    let origin = std::time::Instant::now();
    let clock: crate::decode::js::Clock = Arc::new(move || origin.elapsed());
    let mut codec = JsCodec::load(profile, &source, JsLimits::default(), clock)
        .map_err(|e| anyhow::anyhow!("codec {}: {e}", full.display()))?;
    codec.self_test().map_err(|e| anyhow::anyhow!("codec {}: {e}", full.display()))?;
    Ok(Box::new(codec))
}

type Relays = std::collections::HashMap<u32, crate::io::gpio::Relay<Box<dyn crate::io::gpio::OutputPin>>>;

/// The control loops, restored from the state file, and the relays they switch (GPIO: on a Pi only,
/// and a config that needs them fails to start elsewhere, saying so).
fn build_loops(config: &Config, hardware: &Hardware) -> anyhow::Result<(crate::loops::Loops, Relays)> {
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
fn provisioning(d: &crate::config::DeviceConfig) -> Result<(DeviceInfo, Provisioning), String> {
    let class = match d.class {
        crate::config::DeviceClass::A => DeviceClass::A,
        crate::config::DeviceClass::C => DeviceClass::C,
    };
    let info = DeviceInfo { profile: d.profile.clone(), class };
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
        started_at: rfc3339(crate::clock::now()),
        window: 100,
    })
}

/// The control loops' saved state, from the store; on the first start after an upgrade, from the
/// `loops.json` older versions kept in the data dir (the store adopts it once, then removes it).
fn read_loops_state(store: &Store, legacy_file: &Path, now: chrono::DateTime<Utc>) -> Option<crate::loops::LoopsState> {
    if let Err(e) = store.adopt_loops_file(legacy_file, now) {
        tracing::warn!(path = %legacy_file.display(), error = %e, "the control loops' old state file could not be adopted");
    }
    let bytes = store.loops_state()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "the control loops' saved state is unreadable; starting fresh");
            None
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(crate::clock::now().timestamp_millis()).unwrap_or(0)
}

/// The pipeline task: the shell around the pure network server, and its only owner.
struct Pipeline {
    gateway_id: String,
    health: crate::ops::health::Health,
    loops: crate::loops::Loops,
    board: crate::ops::board::SharedBoard,
    /// Where older versions kept the loops' state (adopted into the store at start).
    legacy_loops_file: std::path::PathBuf,
    /// Relays of demand-response loads wired to the gateway, by BCM pin.
    relays: Relays,
    ns: NetworkServer,
    store: Store,
    journaled: Arc<Notify>,
    counters: Arc<Counters>,
    publish_readings: bool,
    downlinks: Vec<mpsc::Sender<SourceDownlink>>,
    /// The sources' names by index, for stored routes.
    sources: Vec<String>,
    quarantined: Vec<Quarantined>,
}

impl Pipeline {
    async fn run(mut self, mut rx: mpsc::Receiver<IngestRequest>, mut control: mpsc::Receiver<Control>) {
        let now = crate::clock::now();
        if let Some(state) = read_loops_state(&self.store, &self.legacy_loops_file, now) {
            let out = self.loops.restore(state, now);
            self.loop_output(out).await;
        }
        let mut last_save = tokio::time::Instant::now();
        // With an accelerated clock (the demo) the loops are ticked more often in real time.
        let tick_every = TICK.div_f64(crate::clock::speed().max(1.0)).max(Duration::from_millis(20));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintain = tokio::time::interval(MAINTAIN_EVERY);
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.loop_tick();
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(r) => group.push(r),
                            Err(_) => break,
                        }
                    }
                    self.ingest(group).await;
                }
                Some(c) = control.recv() => self.control(c).await,
                _ = maintain.tick() => self.housekeeping().await,
                _ = tick.tick() => {
                    let out = self.ns.tick(now_ms());
                    self.apply(Batch::default(), out, 0).await;
                    let lo = self.loops.tick(crate::clock::now());
                    self.loop_output(lo).await;
                    let mut control = self.loops.status(crate::clock::now());
                    if let Some(o) = control.as_object_mut() {
                        o.insert("lorawan".into(), self.lorawan_status());
                    }
                    if let Ok(mut b) = self.board.lock() {
                        b.control = control;
                    }
                    if last_save.elapsed() >= LOOPS_SAVE_EVERY {
                        self.save_loops().await;
                        last_save = tokio::time::Instant::now();
                    }
                }
            }
        }
        self.save_loops().await;
    }

    /// The store's housekeeping. It runs here, not in the uplink, because it writes to the outbox
    /// log (acknowledgements; the event that ends a drop episode, which takes a seq) and deletes
    /// segments: the pipeline is the log's one writer, so seqs are committed in the order they are
    /// allocated and nothing is appended between an `allocate_seq` and its `commit`.
    async fn housekeeping(&mut self) {
        match self.store.maintain(crate::clock::now()) {
            Ok(Some(announcement)) => {
                let mut batch = Batch::default();
                batch.push_announcement(announcement, self.store.allocate_seq());
                self.apply(batch, Output::default(), 0).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "store housekeeping failed"),
        }
        self.counters.readings_dropped.store(
            self.store.stats().readings_dropped.load(std::sync::atomic::Ordering::Relaxed),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn board_seen(&self, r: &crate::reading::Reading, now: chrono::DateTime<Utc>) {
        if let Ok(mut b) = self.board.lock() {
            b.seen(r, now);
        }
    }

    /// Journals the control loops' state, if it changed since it was last written (flash wear).
    async fn save_loops(&mut self) {
        let state = self.loops.snapshot(crate::clock::now());
        match serde_json::to_vec(&state) {
            Ok(bytes) => {
                let mut batch = Batch::default();
                if self.store.stage_loops_state(&mut batch, bytes) && !self.apply(batch, Output::default(), 0).await {
                    tracing::warn!("saving the control loops' state failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "serialising the control loops' state failed"),
        }
    }

    /// Journals what the loops want published and hands their actuator commands on.
    async fn loop_output(&mut self, lo: crate::loops::LoopOutput) {
        if lo.publish.is_empty() && lo.actuate.is_empty() {
            return;
        }
        let mut batch = Batch::default();
        self.push_publishes(&mut batch, lo.publish);
        let out = self.actuate(lo.actuate);
        self.apply(batch, out, 0).await;
        if lo.save_now {
            self.save_loops().await;
        }
    }

    fn push_publishes(&mut self, batch: &mut Batch, publish: Vec<crate::loops::Publish>) -> u64 {
        use crate::loops::Publish;
        let mut n = 0;
        for p in publish {
            let seq = self.store.allocate_seq();
            let (topic, payload) = match p {
                Publish::Aggregate(w) => (w.topic(), w.to_json(seq, &self.gateway_id)),
                Publish::Event(e) => {
                    tracing::info!(device = %e.device, event = e.kind, "event");
                    (e.topic(), e.to_json(seq))
                }
                Publish::Json { topic, mut payload } => {
                    if let Some(o) = payload.as_object_mut() {
                        o.entry("seq").or_insert(serde_json::Value::from(seq));
                    }
                    (topic, payload)
                }
            };
            let payload = serde_json::to_vec(&payload).unwrap_or_else(|_| b"{}".to_vec());
            batch.push_record(Record { seq, topic, payload });
            n += 1;
        }
        n
    }

    /// Actuator commands: downlinks go to the network server's queues, relays are switched here.
    fn actuate(&mut self, actuate: Vec<crate::loops::Actuate>) -> Output {
        use crate::loops::Actuate;
        let mut all = Output::default();
        for a in actuate {
            match a {
                Actuate::Downlink { device, f_port, payload } => {
                    match self.ns.enqueue(now_ms(), &device, f_port, &payload, false) {
                        Ok((_, out)) => {
                            all.persist.extend(out.persist);
                            all.downlinks.extend(out.downlinks);
                            all.notes.extend(out.notes);
                        }
                        Err(e) => tracing::warn!(%device, error = %e, "control-loop downlink not queued"),
                    }
                }
                Actuate::Relays { load, pins, on, .. } => {
                    for (pin, on) in pins.iter().zip(on) {
                        match self.relays.get_mut(pin) {
                            Some(r) => {
                                if let Err(e) = r.set(on) {
                                    tracing::error!(%load, pin, error = %e, "relay could not be switched");
                                }
                            }
                            None => tracing::warn!(%load, pin, "no relay on this pin"),
                        }
                    }
                }
            }
        }
        all
    }

    async fn ingest(&mut self, group: Vec<IngestRequest>) {
        let now = crate::clock::now();
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let mut batch = Batch::default();
        let mut all = Output::default();
        let mut readings = 0u64;
        let mut loop_out = crate::loops::LoopOutput::default();
        for req in &group {
            for sample in &req.meter {
                Counters::inc(&self.counters.meter_samples);
                let mut reading = crate::reading::Reading::from_meter(
                    &self.gateway_id,
                    &sample.device,
                    sample.at,
                    sample.metrics.clone(),
                );
                loop_out.merge(self.loops.on_reading(now, &mut reading));
                self.board_seen(&reading, now);
                if self.publish_readings {
                    let seq = self.store.allocate_seq();
                    batch.push_record(Record { seq, topic: reading.topic(), payload: reading.to_json(seq) });
                    readings += 1;
                }
            }
            for frame in &req.frames {
                let (outcome, out) = self.ns.handle_frame(now, now_ms, frame);
                match outcome {
                    Outcome::Reading(mut reading) => {
                        Counters::inc(&self.counters.frames_ok);
                        self.counters.last_uplink_unix_ms.store(now_ms, std::sync::atomic::Ordering::Relaxed);
                        loop_out.merge(self.loops.on_reading(now, &mut reading));
                        self.board_seen(&reading, now);
                        if self.publish_readings {
                            let seq = self.store.allocate_seq();
                            tracing::debug!(device = %reading.device, seq, "reading");
                            batch.push_record(Record { seq, topic: reading.topic(), payload: reading.to_json(seq) });
                            readings += 1;
                        }
                    }
                    Outcome::MacOnly { .. } => {
                        Counters::inc(&self.counters.frames_ok);
                        Counters::inc(&self.counters.frames_mac_only);
                    }
                    Outcome::Joined { .. } => Counters::inc(&self.counters.joins),
                    Outcome::JoinRejected(e) => {
                        Counters::inc(&self.counters.joins_refused);
                        tracing::info!(error = %e, "join request refused");
                    }
                    Outcome::Duplicate => Counters::inc(&self.counters.frames_duplicate),
                    Outcome::Rejected(e) => count_rejection(&self.counters, &e),
                }
                all.persist.extend(out.persist);
                all.downlinks.extend(out.downlinks);
                all.notes.extend(out.notes);
            }
        }
        // What the loops derived goes into the same batch (after the readings it came from).
        self.push_publishes(&mut batch, std::mem::take(&mut loop_out.publish));
        let acted = self.actuate(std::mem::take(&mut loop_out.actuate));
        all.persist.extend(acted.persist);
        all.downlinks.extend(acted.downlinks);
        all.notes.extend(acted.notes);
        let ok = self.apply(batch, all, readings).await;
        if loop_out.save_now {
            self.save_loops().await;
        }
        for req in group {
            let _ = req.done.send(ok);
        }
    }

    async fn control(&mut self, c: Control) {
        match c {
            Control::Enqueue { device, f_port, payload, confirmed, reply } => {
                match self.ns.enqueue(now_ms(), &device, f_port, &payload, confirmed) {
                    Ok((id, out)) => {
                        self.apply(Batch::default(), out, 0).await;
                        let _ = reply.send(Ok(id));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Control::TxFailed { device, f_cnt_down } => self.ns.tx_failed(&device, f_cnt_down),
            Control::Journal { topic, payload, reply } => {
                let mut batch = Batch::default();
                batch.push_record(Record { seq: self.store.allocate_seq(), topic, payload });
                let ok = self.apply(batch, Output::default(), 0).await;
                let _ = reply.send(ok);
            }
            Control::UpsertDevice { device, decoder, reply } => {
                let _ = reply.send(self.upsert_device(*device, decoder).await);
            }
            Control::RemoveDevice { device, reply } => {
                let _ = reply.send(self.remove_device(&device).await);
            }
            Control::LoopStatus { reply } => {
                let mut status = self.loops.status(crate::clock::now());
                if let Some(o) = status.as_object_mut() {
                    o.insert("lorawan".into(), self.lorawan_status());
                }
                let _ = reply.send(status);
            }
            Control::Command { cmd, args, reply } => {
                let (result, out) = self.loops.command(crate::clock::now(), cmd, &args);
                let _ = reply.send(result);
                self.loop_output(out).await;
            }
        }
    }

    /// The network server's part of `status` and of the status page: counts, class C devices that
    /// wait for a route (and why), quarantined devices.
    fn lorawan_status(&self) -> serde_json::Value {
        let waiting: Vec<serde_json::Value> = self
            .ns
            .waiting_for_route()
            .into_iter()
            .map(|(device, why)| serde_json::json!({"device": device, "reason": why.reason()}))
            .collect();
        let quarantined: Vec<serde_json::Value> =
            self.quarantined.iter().map(|q| serde_json::json!({"device": q.device, "reason": q.reason})).collect();
        serde_json::json!({"devices": self.ns.device_count(), "sessions": self.ns.session_count(),
            "queued_downlinks": self.ns.queued_downlinks(), "waiting_for_route": waiting, "quarantined": quarantined})
    }

    /// `device.upsert`, all or nothing: the network server changes, and the device's JSON and the
    /// session state the change causes are committed in one entry and flushed. When that fails, the
    /// network server is put back as it was (the old keys resume their counters) and the caller answers
    /// `ok: false`.
    async fn upsert_device(
        &mut self,
        device: crate::config::DeviceConfig,
        decoder: Option<Box<dyn crate::decode::Decoder>>,
    ) -> Result<DeviceChange, String> {
        let (info, prov) = provisioning(&device)?;
        let json = serde_json::to_vec(&device).map_err(|e| e.to_string())?;
        let before = self.ns.device_config(&device.name);
        if let Some(d) = decoder {
            self.ns.set_decoder(&device.profile, d);
        }
        let out = self.ns.upsert_device(&device.name, info, prov);
        let change = DeviceChange { downlinks_dropped: dropped_downlinks(&out) };
        let mut batch = Batch::default();
        batch.set_remote_device(&device.name, Some(&json));
        if self.apply(batch, out, 0).await {
            self.quarantined.retain(|q| q.device != device.name);
            tracing::info!(device = %device.name, "device added or changed remotely");
            return Ok(change);
        }
        let undo = match before {
            Some((info, prov)) => self.ns.upsert_device(&device.name, info, prov),
            None => self.ns.remove_device(&device.name),
        };
        // Best effort: the old state is what the store still has; this only records the undo.
        self.apply(Batch::default(), undo, 0).await;
        Err("the change could not be written to the journal; nothing changed".into())
    }

    /// `device.remove`, all or nothing like [`Pipeline::upsert_device`].
    async fn remove_device(&mut self, name: &str) -> Result<DeviceChange, String> {
        let before = self.ns.device_config(name);
        let out = self.ns.remove_device(name);
        let change = DeviceChange { downlinks_dropped: dropped_downlinks(&out) };
        let mut batch = Batch::default();
        batch.set_remote_device(name, None);
        if self.apply(batch, out, 0).await {
            self.quarantined.retain(|q| q.device != name);
            tracing::info!(device = %name, "device removed remotely");
            return Ok(change);
        }
        if let Some((info, prov)) = before {
            let undo = self.ns.upsert_device(name, info, prov);
            self.apply(Batch::default(), undo, 0).await;
        }
        Err("the change could not be written to the journal; nothing changed".into())
    }

    /// Journals `batch` plus the state in `out`, flushes, and only then sends the downlinks.
    /// Returns whether everything is on disk.
    /// `readings` counts the readings in `batch` (for the metric); other records (aggregates, events,
    /// command answers) wake the uplink too but are not readings.
    async fn apply(&mut self, mut batch: Batch, out: Output, readings: u64) -> bool {
        let records = batch.len() as u64;
        let has_records = records > 0;
        crate::ns_store::persist_into(&mut batch, out.persist, &self.sources);
        for n in out.notes {
            self.note(n);
        }
        let ok = if batch.is_empty() {
            true
        } else {
            match self.store.commit(batch, crate::clock::now()) {
                Ok(()) => match self.store.flush().await {
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
        self.health.journal_ok(ok);
        if !ok {
            Counters::inc(&self.counters.journal_errors);
            // Nothing that depends on unsaved state leaves the gateway.
            return false;
        }
        self.counters.readings_journaled.fetch_add(readings, std::sync::atomic::Ordering::Relaxed);
        self.counters.records_journaled.fetch_add(records, std::sync::atomic::Ordering::Relaxed);
        if has_records {
            self.journaled.notify_one();
        }
        for d in out.downlinks {
            let sd = SourceDownlink {
                gateway: d.origin.gateway,
                device: d.device,
                f_cnt_down: d.f_cnt_down,
                params: d.params,
                phy: d.phy,
            };
            match self.downlinks.get(d.origin.source) {
                Some(tx) if tx.try_send(sd).is_ok() => {}
                _ => {
                    Counters::inc(&self.counters.downlinks_failed);
                    tracing::warn!("downlink could not be handed to its source");
                }
            }
        }
        true
    }

    fn note(&self, n: Note) {
        match n {
            Note::Joined { device, dev_addr } => tracing::info!(%device, %dev_addr, "device joined"),
            Note::JoinRefused { error } => tracing::debug!(%error, "join refused"),
            Note::DownlinkAcked { device, id, attempts } => {
                tracing::info!(%device, id, attempts, "confirmed downlink acknowledged")
            }
            Note::DownlinkFailed { device, id, attempts } => {
                Counters::inc(&self.counters.downlinks_failed);
                tracing::warn!(%device, id, attempts, "confirmed downlink not acknowledged: failed")
            }
            Note::DownlinkDeferred { device, reason, duty_cycle } => {
                Counters::inc(&self.counters.downlinks_deferred);
                if duty_cycle {
                    Counters::inc(&self.counters.downlinks_duty_cycle);
                }
                tracing::info!(%device, %reason, "downlink deferred");
            }
            Note::DecodeError { device } => {
                Counters::inc(&self.counters.decode_errors);
                tracing::debug!(%device, "payload could not be decoded");
            }
            Note::DownlinksDropped { device, count, reason } => {
                tracing::warn!(%device, count, reason, "queued downlinks dropped: their session's keys are gone");
            }
        }
    }
}

fn dropped_downlinks(out: &Output) -> usize {
    out.notes.iter().map(|n| if let Note::DownlinksDropped { count, .. } = n { *count } else { 0 }).sum()
}

fn count_rejection(counters: &Counters, e: &UplinkError) {
    let c = match e {
        UplinkError::BadMic { .. } => &counters.frames_bad_mic,
        UplinkError::Replay { .. } | UplinkError::FCntGap { .. } => &counters.frames_replay,
        UplinkError::UnknownDevAddr(_) => &counters.frames_unknown_dev_addr,
        UplinkError::NotUplinkData { .. } => &counters.frames_not_data,
        _ => &counters.frames_malformed,
    };
    Counters::inc(c);
    // UplinkError's messages carry addresses and counters, never keys or payload bytes.
    tracing::info!(error = %e, "frame refused");
}
