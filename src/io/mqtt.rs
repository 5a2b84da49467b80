//! The uplink: the one owner of the MQTT connection to the city's broker.
//!
//! It publishes from the store's outbox, never from memory: a record is read from sled, published with
//! QoS 1, and deleted from the outbox only when its PUBACK arrives. The broker being slow or gone never
//! blocks a source; readings simply stay in the outbox.
//!
//! Packet-id bookkeeping. rumqttc hands out packet ids inside its event loop and reports each one as
//! `Outgoing::Publish(pkid)` in the order the requests were queued, so we keep the queued seqs in a FIFO
//! and pair them with those events. That pairing is only sound if no request from a previous connection
//! can surface after a reconnect. It holds because (a) we use a clean session, so rumqttc drops everything
//! pending at reconnect, and (b) this task is the only one that queues publishes and it does so only
//! while `poll()` is suspended and the connection is known to be up; `poll()` drains the request channel
//! into its pending list (cleared on reconnect) before it returns the error, so nothing we queued before
//! the error can leak into the next connection. The poll future is kept pinned across `select!` rounds
//! and is never cancelled mid-operation.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{watch, Notify};

use crate::ops::counters::Counters;
use crate::reading::mark_replayed;
use crate::store::Store;

/// Where and how to connect. Built from the config by the runtime.
#[derive(Clone)]
pub struct UplinkSettings {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub client_id: String,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `{topic_prefix}/{gateway_id}/`
    pub topic_base: String,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub version: String,
    pub started_at: String,
    /// Publishes in flight at once.
    pub window: usize,
}

/// Debian's CA bundle: the default trust store for `mqtts://` when no `ca_file` is configured.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn options(s: &UplinkSettings) -> anyhow::Result<MqttOptions> {
    use anyhow::Context;
    let mut o = MqttOptions::new(&s.client_id, &s.host, s.port);
    o.set_keep_alive(s.keep_alive);
    o.set_clean_session(true);
    o.set_inflight(u16::try_from(s.window.clamp(1, 1000)).unwrap_or(100));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_last_will(LastWill::new(format!("{}state", s.topic_base), r#"{"online":false}"#, QoS::AtLeastOnce, true));
    if let Some(user) = &s.username {
        let password = match &s.password_file {
            // The file's content is a secret: the error names the file, never what is in it.
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading mqtt.password_file {}", p.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            None => String::new(),
        };
        o.set_credentials(user, password);
    }
    if s.tls {
        let ca_path = s.ca_file.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        let ca = std::fs::read(&ca_path).with_context(|| format!("reading CA file {}", ca_path.display()))?;
        let client_auth = match (&s.cert_file, &s.key_file) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c).with_context(|| format!("reading mqtt.cert_file {}", c.display()))?,
                std::fs::read(k).with_context(|| format!("reading mqtt.key_file {}", k.display()))?,
            )),
            _ => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
    }
    Ok(o)
}

/// What the uplink is doing, for status and metrics.
struct Link {
    connected: bool,
    /// Next outbox seq to publish on this connection.
    cursor: u64,
    /// Records at or below this seq were in the outbox when the connection came up: they are replays.
    replay_upto: u64,
    /// Publishes queued to rumqttc whose packet id we have not seen yet (None = not an outbox record).
    queued: VecDeque<Option<u64>>,
    /// Packet id → outbox seq, for publishes awaiting their PUBACK.
    inflight: HashMap<u16, Option<u64>>,
}

impl Link {
    fn unacked(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }

    /// Queues outbox records until the window is full.
    fn top_up(&mut self, client: &AsyncClient, store: &Store, s: &UplinkSettings) {
        if !self.connected {
            return;
        }
        while self.unacked() < s.window {
            let want = s.window - self.unacked();
            let records = match store.read_from(self.cursor, want) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox failed");
                    return;
                }
            };
            if records.is_empty() {
                return;
            }
            for r in records {
                let payload = if r.seq <= self.replay_upto { mark_replayed(&r.payload) } else { r.payload };
                let topic = format!("{}{}", s.topic_base, r.topic_suffix);
                if client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_err() {
                    // Request channel full: try again after the next event.
                    return;
                }
                self.queued.push_back(Some(r.seq));
                self.cursor = r.seq + 1;
            }
        }
    }
}

/// Runs until `shutdown` turns true. Never returns an error for broker trouble: it retries forever with
/// exponential backoff and jitter.
pub async fn run(
    s: UplinkSettings,
    store: Store,
    journaled: Arc<Notify>,
    counters: Arc<Counters>,
    commands: tokio::sync::mpsc::Sender<Vec<u8>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cmd_topic = format!("{}cmd/req", s.topic_base);
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(options(&s)?, s.window * 2 + 16);
    let mut link =
        Link { connected: false, cursor: 0, replay_upto: 0, queued: VecDeque::new(), inflight: HashMap::new() };
    let mut backoff = s.reconnect_min;
    let online = serde_json::json!({"online": true, "version": s.version, "started_at": s.started_at}).to_string();

    loop {
        let event = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    ev = &mut poll => break Some(ev),
                    _ = journaled.notified() => link.top_up(&client, &store, &s),
                    _ = shutdown.changed() => break None,
                }
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                tracing::info!(host = %s.host, port = s.port, code = ?ack.code, "connected to the broker");
                // Clean session: nothing of the previous connection is in flight any more.
                link.connected = true;
                link.queued.clear();
                link.inflight.clear();
                link.cursor = 0;
                link.replay_upto = store.next_seq().saturating_sub(1);
                backoff = s.reconnect_min;
                counters.mqtt_connected.store(1, Ordering::Relaxed);
                if client.try_publish(format!("{}state", s.topic_base), QoS::AtLeastOnce, true, online.clone()).is_ok()
                {
                    link.queued.push_back(None);
                }
                // Clean session: subscribe again on every connection.
                let _ = client.try_subscribe(cmd_topic.clone(), QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if p.topic == cmd_topic {
                    Counters::inc(&counters.commands_received);
                    if commands.try_send(p.payload.to_vec()).is_err() {
                        Counters::inc(&counters.commands_dropped);
                        tracing::warn!("command queue full: command dropped (the city may resend it)");
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(entry) = link.queued.pop_front() {
                    link.inflight.insert(pkid, entry);
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(Some(seq)) = link.inflight.remove(&ack.pkid) {
                    if let Err(e) = store.ack(&[seq]) {
                        tracing::error!(error = %e, seq, "deleting an acknowledged record failed");
                    }
                    counters.published.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if link.connected {
                    tracing::warn!(error = %e, "broker connection lost; readings stay in the outbox");
                    counters.mqtt_reconnects.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::debug!(error = %e, "broker not reachable");
                }
                link.connected = false;
                counters.mqtt_connected.store(0, Ordering::Relaxed);
                let jitter = rand::thread_rng().gen_range(0.5..1.0);
                let wait = backoff.mul_f64(jitter);
                backoff = (backoff * 2).min(s.reconnect_max);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
        link.top_up(&client, &store, &s);
    }

    // Graceful end: say we are going offline (the last will would say it too, but only after the
    // broker's keep-alive timeout), then disconnect. Bounded so that shutdown never hangs on the broker.
    if link.connected {
        let _ = client.try_publish(format!("{}state", s.topic_base), QoS::AtLeastOnce, true, r#"{"online":false}"#);
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Incoming(Incoming::PubAck(ack)) = &ev {
                    if let Some(Some(seq)) = link.inflight.remove(&ack.pkid) {
                        let _ = store.ack(&[seq]);
                    }
                }
                if let Event::Outgoing(Outgoing::Publish(pkid)) = ev {
                    if let Some(entry) = link.queued.pop_front() {
                        link.inflight.insert(pkid, entry);
                    }
                }
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}
