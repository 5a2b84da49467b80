//! Wires sources, the core, the store and the uplink together, and owns their lifetimes:
//! [`Daemon::start_opts`] starts every task, [`Daemon::stop`] stops them in order.
//!
//! Data flow: sources → (mpsc, [`crate::bus`]) → pipeline task [core: the district step] → store
//! (commit+flush) → acknowledgement back to the source → uplink task publishes from the store's outbox.
//!
//! - `pipeline.rs`: the pipeline task (group commit, persist → flush → send; the store's housekeeping);
//! - `builders.rs`: the network server, the loops and relays, the uplink's settings, from the config;
//! - `views.rs`: what the HTTP side sees (`/metrics`, the status page);
//! - `forwarders.rs`: small tasks between local sources and the pipeline;
//! - `power_fail.rs`: the power-fail input (watcher task) and the pipeline's view of mains power;
//! - `control_box.rs`: the §14a control box's contacts (watcher tasks) into the demand-response loop;
//! - `supervisor.rs`: the daemon under systemd (reloads with rollback, watchdog).

mod builders;
mod control_box;
mod forwarders;
mod pipeline;
mod power_fail;
pub mod supervisor;
mod views;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;

use crate::bus::{Control, IngestRequest, SourceDownlink, TxFailed};
use crate::config::{Config, SourceConfig};
use crate::counters::Counters;
use crate::district::District;
use crate::ingest::{MeterSample, RadioFrame};
use crate::io::status::SourceStatus;
use crate::io::{gwmp, mqtt, serial_lora, sml, sx127x};
use crate::store::{Batch, Store};

use builders::{build_loops, build_network_server, source_names, uplink_settings, with_remote_devices};
use forwarders::{drop_downlinks, forward_downlinks_to_chip, forward_frames, forward_samples};
use pipeline::Pipeline;
use views::{metrics_fn, page_fn};

/// Replacements for hardware this machine lacks (tests, the demo): an SX127x register model per
/// source name instead of rppal.
#[derive(Default, Clone)]
pub struct Hardware {
    pub sx127x: std::collections::HashMap<String, crate::io::sx127x::Sx127xModel>,
    /// Relay outputs by BCM pin (fakes that record their levels) instead of rppal.
    pub relays: std::collections::HashMap<u32, crate::io::gpio::FakeOutput>,
    /// The `[power_fail]` input (a fake the test drives) instead of rppal.
    pub power_fail: Option<crate::io::gpio::FakeInput>,
    /// The §14a control box's contacts by BCM pin (fakes the test drives) instead of rppal.
    pub control_box: std::collections::HashMap<u8, crate::io::gpio::FakeInput>,
}

/// How the daemon is embedded: hardware replacements, and where `config.apply` requests go.
#[derive(Default)]
pub struct Options {
    pub hardware: Hardware,
    /// The supervisor's channel for `config.apply` (None: the command is not available).
    pub apply: Option<mpsc::Sender<crate::ops::executor::ApplyRequest>>,
}

/// Sled's page cache: small, a Raspberry Pi has little RAM to spare.
const STORE_CACHE_BYTES: u64 = 8 * 1024 * 1024;

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
        install_crypto_provider();
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
        let (tx_failed_tx, tx_failed_rx) = mpsc::channel::<TxFailed>(256);

        let mut gwmp_addrs = Vec::new();
        let mut downlink_txs = Vec::new();
        let mut sources = Vec::new();
        // The wM-Bus meters every wM-Bus stick decodes; all other meters' telegrams are only counted.
        let wmbus_meters = Arc::new(crate::wmbus_meters::MeterTable::new(
            config.device.iter().filter_map(crate::config::DeviceConfig::wmbus_meter),
        ));
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
                        tx_failed: tx_failed_tx.clone(),
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
                SourceConfig::Wmbus(c) => {
                    let (samples_tx, samples_rx) = mpsc::channel::<MeterSample>(64);
                    tasks.spawn(forward_samples(samples_rx, tx.clone()));
                    tasks.spawn(drop_downlinks(c.name.clone(), dl_rx, counters.clone()));
                    let wiring = crate::io::wmbus::WmbusWiring {
                        meters: wmbus_meters.clone(),
                        out: samples_tx,
                        status,
                        counters: counters.clone(),
                    };
                    tasks.spawn(crate::io::wmbus::run(c.clone(), wiring, shutdown_rx.clone()));
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
        drop(tx_failed_tx);
        let power_fail = config.power_fail.as_ref();
        if let Some(status) =
            power_fail::start(power_fail, &hardware, control_tx.clone(), shutdown_rx.clone(), &mut tasks)?
        {
            sources.push(status);
        }
        let control_box = config.demand_response.as_ref().and_then(|d| d.control_box.as_ref());
        sources.extend(control_box::start(
            control_box,
            &hardware,
            control_tx.clone(),
            shutdown_rx.clone(),
            &mut tasks,
        )?);
        let vtn_reports = match &config.openadr {
            Some(cfg) => {
                let secret = crate::config::openadr::read_client_secret(&config.resolve_path(&cfg.client_secret_file))
                    .map_err(|e| anyhow::anyhow!(e))?;
                // The client is built here once so that a bad URL fails the start, not the task.
                drop(crate::io::openadr::client(cfg, secret.clone())?);
                let status = SourceStatus::new(crate::io::openadr::NAME, "openadr");
                sources.push(status.clone());
                let (reports_tx, reports) = mpsc::channel(64);
                let wiring = crate::io::openadr::VenWiring {
                    control: control_tx.clone(),
                    reports,
                    status,
                    counters: counters.clone(),
                    shutdown: shutdown_rx.clone(),
                };
                let cfg = cfg.clone();
                tasks.spawn(async move {
                    if let Err(e) = crate::io::openadr::run(cfg, secret, wiring).await {
                        tracing::error!(error = %e, "the OpenADR VEN stopped");
                    }
                });
                Some(reports_tx)
            }
            None => None,
        };
        let (loops, relays) = build_loops(config, &hardware)?;
        let board =
            crate::ops::board::Board::new_shared(config.device.iter().map(|d| (d.name.clone(), d.profile.clone())));
        let pipeline = Pipeline {
            district: District::new(ns, loops, config.publish.readings),
            health: health.clone(),
            board: board.clone(),
            legacy_loops_file: data_dir.join("loops.json"),
            relays,
            store: store.clone(),
            journaled: journaled.clone(),
            counters: counters.clone(),
            downlinks: downlink_txs,
            sources: source_names(config),
            quarantined,
            sync: crate::durability::SyncPolicy::new(config.buffer.durability()),
            sync_epoch: tokio::time::Instant::now(),
            sync_retry_at: None,
            loops_saved: None,
            mains: power_fail::MainsPower::default(),
            vtn_reports,
        };
        tasks.spawn(pipeline.run(rx, control_rx, tx_failed_rx));

        let (cmd_tx, cmd_rx) = mpsc::channel::<Vec<u8>>(64);
        let (refusals_tx, refusals_rx) = mpsc::channel(crate::bus::REFUSAL_ANSWERS_QUEUE);
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
            refusals: refusals_tx,
        };
        tasks.spawn(crate::ops::executor::run(ctx, verifier, cmd_rx));

        let metrics_fn = metrics_fn(
            config,
            board.clone(),
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
        let link = crate::bus::CommandLink { requests: cmd_tx, answers: refusals_rx };
        tasks.spawn(async move {
            if let Err(e) = mqtt::run_with(settings, policy, store2, journaled, counters2, link, rx2).await {
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

/// The data dir holds session keys and the journal: readable by the daemon's user only.
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not restrict the data dir to mode 700");
    }
}

/// rustls has two crypto providers compiled in (ring, which the MQTT and broker TLS use, and aws-lc-rs,
/// which openleadr-client's HTTP client brings and selects itself), so rustls cannot pick a process
/// default on its own: ring is installed as the default once, before any TLS configuration is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
