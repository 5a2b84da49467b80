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
//! and is never cancelled mid-operation. Both publishing cursors below (live and drain) queue through
//! the same client from this one task, so they share the one FIFO. Failover only swaps
//! `EventLoop::mqtt_options` between connections, which changes nothing of the above.
//!
//! Why not a persistent session (`clean_session = false`): rumqttc would then re-send its pending
//! publishes itself after a reconnect, with packet ids from the old connection, which breaks the FIFO
//! pairing; the broker would hold per-gateway state that a failover to another broker does not have;
//! and it adds nothing to delivery, because the outbox on disk already re-sends every record without
//! a PUBACK after every reconnect (and after a restart, which a broker session does not cover). The
//! session that survives reconnects is ours: the outbox, `seq`, and the `cmd/req` subscription, which is
//! renewed on every CONNACK.
//!
//! Live first, order per device. When a connection comes up, every record committed so far
//! (`seq <= replay_upto`) is *backlog*, published with `"replayed": true` by the **drain** cursor at
//! `buffer.replay_rate`, using at most 90 % of the in-flight window; newer records are *live*, published
//! at once by the **live** cursor. Order per topic (= per device and kind) is kept by one rule: a live
//! record whose topic still has records ahead of the drain cursor (backlog, or live records already
//! held back) is held back too, and the drain cursor publishes it in seq order after the topic's
//! backlog; once the drain cursor has passed all of a topic's held records, its live records go
//! straight out again. So devices without backlog are never delayed by it, and a device with backlog
//! has its live readings wait for its own older ones only. Both cursors walk the outbox in seq order,
//! so the drain cursor never runs ahead of the live one. Memory: two maps keyed by topic.
//!
//! One exception to "never from memory": the answers to commands the verifier refused (malformed,
//! bad signature, ...: [`RefusalAnswer`]) come from the executor over a small channel and are
//! published at once with QoS 1 on `cmd/res`, never journaled. Anyone who can publish on `cmd/req` can
//! cause them, so they must cost nothing on flash; one that finds no connection (or a full request
//! queue) is dropped and counted as unanswered. They queue through the same client from this task, as
//! `None` entries of the FIFO (like the `state` message).

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

mod drain;

use drain::Drain;

use crate::bus::{CommandLink, RefusalAnswer};
use crate::counters::Counters;
use crate::reading::mark_replayed;
use crate::store::{Record, Store};

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

/// One broker to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Failover and replay: the brokers in the order they are tried, and the drain rate.
#[derive(Debug, Clone)]
pub struct UplinkPolicy {
    /// Empty: only `UplinkSettings::host`/`port`/`tls`.
    pub brokers: Vec<BrokerAddr>,
    /// Backlog messages per second after an outage (live records are not limited).
    pub replay_rate: u32,
}

impl Default for UplinkPolicy {
    fn default() -> Self {
        UplinkPolicy { brokers: Vec::new(), replay_rate: 2000 }
    }
}

impl UplinkPolicy {
    /// `mqtt.url` then `mqtt.urls`, and `buffer.replay_rate`.
    pub fn from_config(config: &crate::config::Config) -> UplinkPolicy {
        UplinkPolicy {
            brokers: config
                .mqtt
                .brokers()
                .map(|u| BrokerAddr { host: u.host.clone(), port: u.port, tls: u.tls })
                .collect(),
            replay_rate: config.buffer.replay_rate.max(1),
        }
    }
}

/// How often the uplink looks at the outbox without being woken (a safety net), and the drain's
/// pacing tick.
const POKE_EVERY: Duration = Duration::from_millis(200);
const DRAIN_TICK: Duration = Duration::from_millis(10);

/// A queued or in-flight publish: its outbox seq (None: not an outbox record) and whether the drain
/// cursor sent it.
type Sent = Option<(u64, bool)>;

/// What the uplink is doing, for status and metrics.
struct Link {
    connected: bool,
    /// Next outbox seq the live cursor looks at.
    live: u64,
    drain: Drain,
    /// Publishes queued to rumqttc whose packet id we have not seen yet.
    queued: VecDeque<Sent>,
    /// Packet id → what it carries, for publishes awaiting their PUBACK.
    inflight: HashMap<u16, Sent>,
    /// Drain publishes queued or in flight.
    drain_unacked: usize,
}

impl Link {
    fn unacked(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }

    fn publish(&mut self, client: &AsyncClient, s: &UplinkSettings, r: Record, replayed: bool, drain: bool) -> bool {
        // `"replayed": true` marks data messages (readings, aggregates, events) sent late; a `cmd/res`
        // or a state message keeps its pinned shape.
        let payload = if replayed && r.topic.replayable() { mark_replayed(&r.payload) } else { r.payload };
        let retain = r.topic.retained();
        let topic = format!("{}{}", s.topic_base, r.topic);
        if client.try_publish(topic, QoS::AtLeastOnce, retain, payload).is_err() {
            return false; // request channel full: try again after the next event
        }
        self.queued.push_back(Some((r.seq, drain)));
        if drain {
            self.drain_unacked += 1;
        }
        true
    }

    /// Publishes the answer to a refused command (not journaled: dropped when it cannot be sent now).
    fn answer_refusal(&mut self, client: &AsyncClient, s: &UplinkSettings, a: RefusalAnswer) -> bool {
        if !self.connected {
            return false;
        }
        let topic = format!("{}{}", s.topic_base, crate::topic::Topic::CommandResult);
        if client.try_publish(topic, QoS::AtLeastOnce, false, a.payload).is_err() {
            return false;
        }
        self.queued.push_back(None);
        true
    }

    /// A PUBACK (or the end of a connection) for what `sent` carried.
    fn settle(&mut self, sent: Sent) -> Option<u64> {
        let (seq, drain) = sent?;
        if drain {
            self.drain_unacked = self.drain_unacked.saturating_sub(1);
        }
        Some(seq)
    }

    /// Queues outbox records until the window is full: live records first, then the backlog at the
    /// replay rate in the window less a reserve for live records.
    fn top_up(&mut self, client: &AsyncClient, store: &Store, s: &UplinkSettings) {
        if !self.connected {
            return;
        }
        // Live (nothing to read unless something was committed past the live cursor).
        'live: while self.unacked() < s.window && store.max_committed() >= self.live {
            let want = s.window - self.unacked();
            let records = match store.read_range(self.live, u64::MAX, want, |_| true) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox failed");
                    return;
                }
            };
            if records.is_empty() {
                break;
            }
            for r in records {
                let seq = r.seq;
                if self.drain.holds(&r.topic) {
                    self.drain.held_last.insert(r.topic.clone(), seq);
                    self.live = seq + 1;
                    continue;
                }
                if !self.publish(client, s, r, false, false) {
                    break 'live;
                }
                self.live = seq + 1;
            }
        }
        // Drain: one record per free slot, so that every PUBACK is answered by the next publish.
        if self.drain.done {
            return;
        }
        self.drain.refill();
        // The drain may fill the window up to a reserve kept for live records (which are queued
        // first anyway).
        let cap = (s.window * 9 / 10).max(1);
        while self.drain_unacked < cap && self.unacked() < s.window && self.drain.tokens >= 1.0 {
            let Some(r) = self.drain.next(store, self.live) else {
                if self.drain.done {
                    tracing::info!("backlog drained");
                }
                return;
            };
            let seq = r.seq;
            let replayed = seq <= self.drain.replay_upto;
            if !self.publish(client, s, r, replayed, true) {
                // Request channel full (rare: it holds twice the window): read it again next time.
                self.drain.reread();
                return;
            }
            self.drain.cursor = seq + 1;
            self.drain.tokens -= 1.0;
        }
    }
}

/// Runs until `shutdown` turns true, connecting to `s.host` only. See [`run_with`].
pub async fn run(
    s: UplinkSettings,
    store: Store,
    journaled: Arc<Notify>,
    counters: Arc<Counters>,
    commands: CommandLink,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    run_with(s, UplinkPolicy::default(), store, journaled, counters, commands, shutdown).await
}

fn broker_options(s: &UplinkSettings, b: &BrokerAddr) -> anyhow::Result<MqttOptions> {
    let s = UplinkSettings { host: b.host.clone(), port: b.port, tls: b.tls, ..s.clone() };
    options(&s)
}

/// Runs until `shutdown` turns true. Never returns an error for broker trouble: it retries forever,
/// trying the brokers of `policy` in turn, with exponential backoff and full jitter (so that a whole
/// city of gateways does not reconnect in the same instant when a broker comes back). `commands`:
/// envelopes from `cmd/req` go to the executor; answers to refused ones come back to be published.
pub async fn run_with(
    s: UplinkSettings,
    policy: UplinkPolicy,
    store: Store,
    journaled: Arc<Notify>,
    counters: Arc<Counters>,
    commands: CommandLink,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let CommandLink { requests: commands, answers: mut refusals } = commands;
    let mut refusals_open = true;
    // Messages on `cmd/req` dropped because the executor's queue was full, not logged yet.
    let mut dropped_unlogged = 0u64;
    let mut drop_log = district_core::commands::TokenBucket::new(1, 1.0 / 60.0);
    let cmd_topic = format!("{}cmd/req", s.topic_base);
    let brokers = if policy.brokers.is_empty() {
        vec![BrokerAddr { host: s.host.clone(), port: s.port, tls: s.tls }]
    } else {
        policy.brokers.clone()
    };
    // Fail early on unreadable TLS files or passwords, for every broker.
    let mut opts = Vec::with_capacity(brokers.len());
    for b in &brokers {
        opts.push(broker_options(&s, b)?);
    }
    let mut current = 0usize;
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(opts[0].clone(), s.window * 2 + 16);
    // Nagle's algorithm stays on (rumqttc's default): rumqttc writes and flushes each PUBLISH on its
    // own, and Nagle coalesces them while earlier ones await their TCP ACK (which the broker's PUBACKs
    // carry at once). Measured on a drain delivered to a subscriber: TCP_NODELAY cost 40 % more CPU
    // in the daemon and ~25 % of the rate (docs/BENCHMARKS.md). A lone live reading on an idle
    // connection is not delayed; the next one waits at most one round trip.
    let mut link = Link {
        connected: false,
        live: 0,
        drain: Drain::new(0, HashMap::new(), policy.replay_rate),
        queued: VecDeque::new(),
        inflight: HashMap::new(),
        drain_unacked: 0,
    };
    link.drain.done = true;
    let mut backoff = s.reconnect_min;
    let online = serde_json::json!({"online": true, "version": s.version, "started_at": s.started_at}).to_string();
    // The store's housekeeping (logging acknowledgements, deleting segments, ending drop episodes)
    // is the pipeline's, the outbox's one writer; this tick only looks for work missed by a wake-up.
    let mut poke = tokio::time::interval(POKE_EVERY);
    poke.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = tokio::time::interval(DRAIN_TICK);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let event = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    ev = &mut poll => break Some(ev),
                    _ = journaled.notified() => link.top_up(&client, &store, &s),
                    _ = pace.tick(), if link.connected && !link.drain.done => link.top_up(&client, &store, &s),
                    _ = poke.tick() => link.top_up(&client, &store, &s),
                    a = refusals.recv(), if refusals_open => match a {
                        Some(a) => {
                            if !link.answer_refusal(&client, &s, a) {
                                Counters::inc(&counters.commands_unanswered);
                            }
                        }
                        None => refusals_open = false,
                    },
                    _ = shutdown.changed() => break None,
                }
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                let b = &brokers[current];
                tracing::info!(host = %b.host, port = b.port, code = ?ack.code, "connected to the broker");
                // Clean session: nothing of the previous connection is in flight any more.
                link.connected = true;
                link.queued.clear();
                link.inflight.clear();
                link.drain_unacked = 0;
                let (replay_upto, topics) = store.outbox_snapshot();
                link.live = replay_upto + 1;
                link.drain = Drain::new(replay_upto, topics, policy.replay_rate);
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
                        // Under a flood the queue stays full: one line a minute at most.
                        dropped_unlogged += 1;
                        if drop_log.try_take(crate::clock::now()) {
                            tracing::warn!(
                                "command queue full: {dropped_unlogged} commands dropped since the last such line \
                                 (the city may resend them)"
                            );
                            dropped_unlogged = 0;
                        }
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(entry) = link.queued.pop_front() {
                    link.inflight.insert(pkid, entry);
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(sent) = link.inflight.remove(&ack.pkid) {
                    if let Some(seq) = link.settle(sent) {
                        if let Err(e) = store.ack(&[seq]) {
                            tracing::error!(error = %e, seq, "recording an acknowledgement failed");
                        }
                        counters.published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let b = &brokers[current];
                if link.connected {
                    tracing::warn!(error = %e, host = %b.host, "broker connection lost; readings stay in the outbox");
                    counters.mqtt_reconnects.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::debug!(error = %e, host = %b.host, "broker not reachable");
                    // A failed attempt: the next one goes to the next broker (`url`, then `urls`).
                    if brokers.len() > 1 {
                        current = (current + 1) % brokers.len();
                        eventloop.mqtt_options = opts[current].clone();
                        tracing::info!(host = %brokers[current].host, port = brokers[current].port, "trying the next broker");
                    }
                }
                link.connected = false;
                counters.mqtt_connected.store(0, Ordering::Relaxed);
                // Full jitter between the minimum and the current backoff.
                let span = backoff.saturating_sub(s.reconnect_min).as_secs_f64();
                let wait = s.reconnect_min + Duration::from_secs_f64(rand::thread_rng().gen_range(0.0..=span.max(0.0)));
                backoff = (backoff * 2).min(s.reconnect_max);
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                tokio::select! {
                    _ = &mut sleep => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
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
                    if let Some(seq) = link.inflight.remove(&ack.pkid).and_then(|sent| link.settle(sent)) {
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
    // The last acknowledgements reach the log with the store's last housekeeping (`Daemon::stop`).
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, StoreOptions};

    fn settings() -> UplinkSettings {
        UplinkSettings {
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
            client_id: "gw".into(),
            keep_alive: Duration::from_secs(30),
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            topic_base: "city/gw/".into(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            version: "test".into(),
            started_at: "now".into(),
            window: 100,
        }
    }

    /// Every PUBACK during a drain is answered by the next publish at once. Waiting for a batch of
    /// PUBACKs instead stalls the connection on delayed TCP acknowledgements (the broker's PUBACKs
    /// wait for our ACK, which waits for data we do not send): 3,500 instead of 100,000 msg/s.
    #[tokio::test]
    async fn a_puback_during_the_drain_is_answered_by_the_next_publish() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            dir.path(),
            StoreOptions { gateway_id: "gw".into(), ..StoreOptions::default() },
            crate::clock::now(),
        )
        .unwrap();
        for _ in 0..1000 {
            let mut b = Batch::default();
            let seq = store.allocate_seq();
            b.push_record(Record::new(
                seq,
                crate::topic::Topic::Reading("d".into()),
                format!("{{\"seq\":{seq}}}").into_bytes(),
            ));
            store.commit(b, crate::clock::now()).unwrap();
        }
        store.flush_blocking().unwrap();
        let s = settings();
        let (client, _eventloop) = AsyncClient::new(options(&s).unwrap(), s.window * 2 + 16);
        let (upto, topics) = store.outbox_snapshot();
        let mut link = Link {
            connected: true,
            live: upto + 1,
            drain: Drain::new(upto, topics, 1_000_000),
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            drain_unacked: 0,
        };
        tokio::time::sleep(Duration::from_millis(20)).await; // the rate limiter fills
        link.top_up(&client, &store, &s);
        let cap = s.window * 9 / 10;
        assert_eq!(link.unacked(), cap, "the drain fills its share of the window");
        for expected_next in cap as u64 + 1..cap as u64 + 51 {
            // A PUBACK for the oldest publish.
            let sent = link.queued.pop_front().unwrap();
            assert!(link.settle(sent).is_some());
            link.top_up(&client, &store, &s);
            assert_eq!(link.unacked(), cap, "one PUBACK, one new publish");
            assert_eq!(link.queued.back().copied().flatten().map(|(seq, _)| seq), Some(expected_next));
        }
    }
}
