//! The pipeline task: the shell around the pure district step ([`District`]: the network server and
//! the control loops), and its only owner. It turns what arrives (frames and meter samples from the
//! sources, requests from the executor, failed transmissions, its own ticks) into [`Input`]s, and
//! carries out the [`Effects`]: it allocates a seq for each message and journals the messages with the
//! state to persist in one batch, flushes, and only then acknowledges the frames and sends the
//! downlinks; it switches the relays, adds the counts and logs the notes.
//!
//! Group commit: it takes every request waiting in its queue, journals them in one batch and one
//! flush, then acknowledges them all. Being the outbox's one writer, it also runs the store's
//! housekeeping, journals the executor's answers, and applies remote device changes all or nothing.
//! It keeps the control loops' saved state and the status page's board.
//!
//! Mains power lost (the power-fail input, [`Control::PowerFail`]): it fsyncs the journal at once and,
//! until power is back, refuses every frame and meter sample (not acknowledged, counted, not given to
//! the district: nothing is half-accepted) and skips the periodic save of the loops' state. The control
//! loops keep ticking and switching relays, and commands are still carried out.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify};

use crate::bus::{Control, DeviceChange, IngestRequest, Quarantined, SourceDownlink, TxFailed};
use crate::counters::Counters;
use crate::district::{Answer, District, Effects, Input, Message, Received};
use crate::durability::SyncPolicy;
use crate::lorawan::mac_engine::MacEvent;
use crate::netserver::Note;
use crate::ops::commands::RefusalCode;
use crate::store::{Batch, Record, Store};

use super::builders::{provisioning, Relays};
use super::power_fail::{duration_text, Change, MainsPower};

/// Requests journaled in one group commit, at most.
const MAX_GROUP: usize = 512;
/// The control loops' state is looked at about this often and the parts that changed are saved (at
/// once when an event fired, and at a clean stop); a state that has only grown older is not written.
/// Five minutes, the default aggregate window: a device heard every few seconds costs one write of its
/// open aggregate window per five minutes, not one per reading. The save waits for the tick that
/// closes aggregate windows (from [`LOOPS_SAVE_EVERY`] minus [`LOOPS_SAVE_SLACK`] on): the open windows
/// are empty then, so a device heard less than once a window (most sensors) has no part to write at
/// all, where a save at any other moment would write its open window every time. Without such a tick
/// the save comes [`LOOPS_SAVE_SLACK`] later. A crash or power cut loses at most the last 5¼ minutes of
/// the open windows' sums (the readings themselves are journaled).
const LOOPS_SAVE_EVERY: Duration = Duration::from_secs(300);
/// See [`LOOPS_SAVE_EVERY`]: longer than a tick, so that with five-minute windows the closing tick
/// always comes first and the saves stay aligned with it.
const LOOPS_SAVE_SLACK: Duration = Duration::from_secs(15);
/// How often class C queues and downlink timeouts are looked at.
const TICK: Duration = Duration::from_millis(500);
/// How often the store's housekeeping runs (acknowledgements to the log, deleting acknowledged
/// segments, the age bound, ending drop episodes).
const MAINTAIN_EVERY: Duration = Duration::from_millis(200);
/// After a failed fsync, the next try waits this long (a failing disk is not hammered).
const SYNC_RETRY: Duration = Duration::from_secs(1);

/// The control loops' saved state, from the store (in parts, one per device; older versions saved one
/// blob); on the first start after an upgrade, from the `loops.json` even older versions kept in the
/// data dir (the store adopts it once, then removes it).
fn read_loops_state(store: &Store, legacy_file: &Path, now: DateTime<Utc>) -> Option<crate::loops::LoopsState> {
    if let Err(e) = store.adopt_loops_file(legacy_file, now) {
        tracing::warn!(path = %legacy_file.display(), error = %e, "the control loops' old state file could not be adopted");
    }
    let parts = store.loops_parts();
    let state = if parts.is_empty() {
        serde_json::from_slice(&store.loops_state()?)
    } else {
        crate::loops::LoopsState::from_parts(&parts)
    };
    match state {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "the control loops' saved state is unreadable; starting fresh");
            None
        }
    }
}

/// Whether the periodic save of the control loops' state is due (see [`LOOPS_SAVE_EVERY`]).
fn loops_save_due(since_last: Duration, windows_closed: bool) -> bool {
    since_last >= LOOPS_SAVE_EVERY + LOOPS_SAVE_SLACK
        || (windows_closed && since_last >= LOOPS_SAVE_EVERY - LOOPS_SAVE_SLACK)
}

/// The outbox record of a message, journaled under `seq`.
fn record(seq: u64, m: &Message, gateway_id: &str) -> Record {
    Record { seq, topic: m.topic(), payload: m.to_json(seq, gateway_id) }
}

/// The pipeline task: the shell around the pure district step, and its only owner.
pub(super) struct Pipeline {
    pub(super) district: District,
    pub(super) health: crate::ops::health::Health,
    pub(super) board: crate::ops::board::SharedBoard,
    /// Where older versions kept the loops' state (adopted into the store at start).
    pub(super) legacy_loops_file: std::path::PathBuf,
    /// Relays of demand-response loads wired to the gateway, by BCM pin.
    pub(super) relays: Relays,
    pub(super) store: Store,
    pub(super) journaled: Arc<Notify>,
    pub(super) counters: Arc<Counters>,
    pub(super) downlinks: Vec<mpsc::Sender<SourceDownlink>>,
    /// The sources' names by index, for stored routes.
    pub(super) sources: Vec<String>,
    pub(super) quarantined: Vec<Quarantined>,
    /// Whether mains power is lost (the power-fail input), and since when.
    pub(super) mains: MainsPower,
    /// When the journal is fsynced (`buffer.durability`): per commit, or a window after the first
    /// unsynced commit.
    pub(super) sync: SyncPolicy,
    /// The monotonic clock the sync policy's milliseconds count from.
    pub(super) sync_epoch: tokio::time::Instant,
    /// After a failed fsync: no new try before this.
    pub(super) sync_retry_at: Option<tokio::time::Instant>,
    /// The control loops' state as last journaled (to skip saves that would change only its time).
    pub(super) loops_saved: Option<crate::loops::LoopsState>,
    /// The OpenADR VEN's queue of reports for the VTN (None: no `[openadr]`).
    pub(super) vtn_reports: Option<mpsc::Sender<crate::openadr::IntervalReport>>,
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Pipeline {
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<IngestRequest>,
        mut control: mpsc::Receiver<Control>,
        mut tx_failed: mpsc::Receiver<TxFailed>,
    ) {
        let now = crate::clock::now();
        if let Some(state) = read_loops_state(&self.store, &self.legacy_loops_file, now) {
            let fx = self.district.on_input(now, Input::RestoreLoops(state));
            self.loop_effects(fx).await;
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
                Some(TxFailed { device, f_cnt_down }) = tx_failed.recv() => {
                    // Changes only the device's queue (the downlink is retried); nothing to journal.
                    let _ = self.district.on_input(crate::clock::now(), Input::TxFailed { device, f_cnt_down });
                }
                _ = maintain.tick() => self.housekeeping().await,
                _ = sleep_until(self.sync_deadline()) => {
                    let ok = self.sync_now().await;
                    self.health.journal_ok(ok);
                    if !ok {
                        Counters::inc(&self.counters.journal_errors);
                    }
                }
                _ = tick.tick() => {
                    let fx = self.district.on_input(crate::clock::now(), Input::Tick);
                    let save_now = fx.save_loops;
                    let windows_closed =
                        fx.records.iter().any(|m| matches!(m.topic(), crate::topic::Topic::Aggregate(_)));
                    self.apply(Batch::default(), fx).await;
                    if save_now {
                        self.save_loops().await;
                    }
                    let control = self.status(crate::clock::now());
                    if let Ok(mut b) = self.board.lock() {
                        b.control = control;
                    }
                    // Not while on backup power: no flash writes that can wait.
                    if loops_save_due(last_save.elapsed(), windows_closed) && !self.mains.is_lost() {
                        self.save_loops_if_changed().await;
                        last_save = tokio::time::Instant::now();
                    }
                }
            }
        }
        self.save_loops().await;
        // A clean stop leaves nothing unsynced, whatever the durability mode.
        self.sync_now().await;
    }

    /// The policy's ms: time since the pipeline started, on the monotonic clock.
    fn sync_ms(&self) -> u64 {
        u64::try_from(self.sync_epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the journal must next be fsynced (None: nothing waits for an fsync).
    fn sync_deadline(&self) -> Option<tokio::time::Instant> {
        let due = self.sync.deadline_ms().map(|ms| self.sync_epoch + Duration::from_millis(ms))?;
        Some(self.sync_retry_at.map_or(due, |r| r.max(due)))
    }

    /// fsyncs the journal now: what was committed becomes power-cut safe and visible to the uplink.
    /// Returns whether it worked.
    async fn sync_now(&mut self) -> bool {
        match self.store.flush().await {
            Ok(()) => {
                self.sync.on_synced();
                self.sync_retry_at = None;
                self.journaled.notify_one();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "journal fsync failed; will retry");
                self.sync_retry_at = Some(tokio::time::Instant::now() + SYNC_RETRY);
                false
            }
        }
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
                self.apply(batch, Effects::default()).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "store housekeeping failed"),
        }
        self.counters.readings_dropped.store(
            self.store.stats().readings_dropped.load(std::sync::atomic::Ordering::Relaxed),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn board_seen(&self, r: &crate::reading::Reading, now: DateTime<Utc>) {
        if let Ok(mut b) = self.board.lock() {
            b.seen(r, now);
        }
    }

    /// Journals the parts of the control loops' state (one per device) that changed since they were
    /// last written.
    async fn save_loops(&mut self) {
        let state = self.district.loops_snapshot(crate::clock::now());
        match state.to_parts() {
            Ok(parts) => {
                let mut batch = Batch::default();
                if self.store.stage_loops_parts(&mut batch, parts) && !self.apply(batch, Effects::default()).await {
                    tracing::warn!("saving the control loops' state failed");
                    return;
                }
                self.loops_saved = Some(state);
            }
            Err(e) => tracing::warn!(error = %e, "serialising the control loops' state failed"),
        }
    }

    /// The periodic save: only when the state changed in more than the time it was taken.
    async fn save_loops_if_changed(&mut self) {
        let state = self.district.loops_snapshot(crate::clock::now());
        if self.loops_saved.as_ref().is_none_or(|saved| state.changed_since(saved)) {
            self.save_loops().await;
        }
    }

    /// What the control loops produced outside the tick and the ingest (a restore, a command): journaled
    /// and carried out when there is anything to do.
    async fn loop_effects(&mut self, fx: Effects) {
        if fx.is_empty() {
            return;
        }
        let save_now = fx.save_loops;
        self.apply(Batch::default(), fx).await;
        if save_now {
            self.save_loops().await;
        }
    }

    /// One group commit: every frame and sample of `group`, in arrival order, through the district;
    /// the readings and what the loops derived from them journaled in one batch; then every request
    /// is told whether it is on disk.
    async fn ingest(&mut self, mut group: Vec<IngestRequest>) {
        if self.mains.is_lost() {
            self.refuse(group);
            return;
        }
        let now = crate::clock::now();
        let mut received = Vec::new();
        for req in &mut group {
            received.extend(std::mem::take(&mut req.meter).into_iter().map(Received::Sample));
            received.extend(std::mem::take(&mut req.frames).into_iter().map(Received::Frame));
        }
        let mut fx = self.district.on_input(now, Input::Ingest(received));
        for reading in std::mem::take(&mut fx.seen) {
            self.board_seen(&reading, now);
        }
        let save_now = fx.save_loops;
        let ok = self.apply(Batch::default(), fx).await;
        if save_now {
            self.save_loops().await;
        }
        for req in group {
            let _ = req.done.send(ok);
        }
    }

    /// Mains power is lost: the frames and samples of `group` are not accepted (the sources do not
    /// acknowledge them; a packet forwarder counts them as not acknowledged).
    fn refuse(&self, group: Vec<IngestRequest>) {
        let n: usize = group.iter().map(|r| r.frames.len() + r.meter.len()).sum();
        self.counters.readings_refused_power_fail.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(frames = n, "mains power lost: frames refused");
        for req in group {
            let _ = req.done.send(false);
        }
    }

    /// A settled level of the power-fail input. Lost: fsync everything committed at once, then refuse
    /// new readings. Back: accept them again.
    async fn power_fail(&mut self, lost: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = crate::clock::now();
        match self.mains.signal(lost, std::time::Instant::now(), now) {
            Change::Lost => {
                self.counters.power_fail.store(1, Relaxed);
                let since = self.mains.lost_since().unwrap_or(now);
                self.counters.power_fail_since_unix_ms.store(since.timestamp_millis().max(1) as u64, Relaxed);
                if self.sync_now().await {
                    tracing::warn!("mains power lost: journal synced, not accepting new readings");
                } else {
                    tracing::error!("mains power lost: the journal could not be synced; not accepting new readings");
                }
            }
            Change::Restored(lasted) => {
                self.counters.power_fail.store(0, Relaxed);
                self.counters.power_fail_since_unix_ms.store(0, Relaxed);
                let refused = self.counters.readings_refused_power_fail.load(Relaxed);
                tracing::info!(
                    lasted_s = lasted.as_secs_f64(),
                    refused_total = refused,
                    "mains power restored after {}: accepting readings again",
                    duration_text(lasted)
                );
            }
            Change::Unchanged => {}
        }
    }

    async fn control(&mut self, c: Control) {
        match c {
            Control::Enqueue { device, f_port, payload, confirmed, reply } => {
                let input = Input::Enqueue { device, f_port, payload, confirmed };
                let mut fx = self.district.on_input(crate::clock::now(), input);
                match fx.answer.take() {
                    Some(Answer::Enqueued(Ok(id))) => {
                        self.apply(Batch::default(), fx).await;
                        let _ = reply.send(Ok(id));
                    }
                    Some(Answer::Enqueued(Err(e))) => {
                        let _ = reply.send(Err(e));
                    }
                    _ => {
                        let _ = reply.send(Err("the network server did not answer".into()));
                    }
                }
            }
            Control::Journal { topic, payload, reply } => {
                let mut batch = Batch::default();
                batch.push_record(Record { seq: self.store.allocate_seq(), topic, payload });
                let ok = self.apply(batch, Effects::default()).await;
                let _ = reply.send(ok);
            }
            Control::UpsertDevice { device, decoder, reply } => {
                let _ = reply.send(self.upsert_device(*device, decoder).await);
            }
            Control::RemoveDevice { device, reply } => {
                let _ = reply.send(self.remove_device(&device).await);
            }
            Control::LoopStatus { reply } => {
                let _ = reply.send(self.status(crate::clock::now()));
            }
            Control::PowerFail { lost } => self.power_fail(lost).await,
            Control::ControlBox { contact, closed } => {
                let fx = self.district.on_input(crate::clock::now(), Input::ControlBox { contact, closed });
                self.loop_effects(fx).await;
            }
            Control::VtnEvents { events, reply } => {
                let mut fx = self.district.on_input(crate::clock::now(), Input::VtnEvents(events));
                if let Some(Answer::VtnEvents(acks)) = fx.answer.take() {
                    let _ = reply.send(acks);
                }
                self.loop_effects(fx).await;
            }
            Control::Command { cmd, args, reply } => {
                let mut fx = self.district.on_input(crate::clock::now(), Input::Command { cmd, args });
                let result = match fx.answer.take() {
                    Some(Answer::Command(result)) => result,
                    _ => Err((RefusalCode::Internal, "the control loops did not answer".into())),
                };
                let _ = reply.send(result);
                self.loop_effects(fx).await;
            }
        }
    }

    /// Hands the reports of the VTN's events to the VEN (they are journaled for the city as well; a
    /// full queue — the VTN long unreachable — drops the VTN's copy, counted).
    fn to_vtn(&self, reports: Vec<crate::openadr::IntervalReport>) {
        for r in reports {
            match &self.vtn_reports {
                Some(tx) if tx.try_send(r).is_ok() => {}
                _ => Counters::inc(&self.counters.openadr_reports_dropped),
            }
        }
    }

    /// The district's status (control loops, network server) with the quarantined devices, for
    /// `status` and the status page.
    fn status(&self, now: DateTime<Utc>) -> serde_json::Value {
        let mut status = self.district.status(now);
        let quarantined: Vec<serde_json::Value> =
            self.quarantined.iter().map(|q| serde_json::json!({"device": q.device, "reason": q.reason})).collect();
        if let Some(o) = status.get_mut("lorawan").and_then(serde_json::Value::as_object_mut) {
            o.insert("quarantined".into(), quarantined.into());
        }
        status
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
        let before = self.district.device_config(&device.name);
        let fx = self.district.upsert_device(&device.name, info, prov, decoder);
        let change = DeviceChange { downlinks_dropped: fx.downlinks_dropped() };
        let mut batch = Batch::default();
        batch.set_remote_device(&device.name, Some(&json));
        if self.apply(batch, fx).await {
            self.quarantined.retain(|q| q.device != device.name);
            tracing::info!(device = %device.name, "device added or changed remotely");
            return Ok(change);
        }
        let undo = match before {
            Some((info, prov)) => self.district.upsert_device(&device.name, info, prov, None),
            None => self.district.remove_device(&device.name),
        };
        // Best effort: the old state is what the store still has; this only records the undo.
        self.apply(Batch::default(), undo).await;
        Err("the change could not be written to the journal; nothing changed".into())
    }

    /// `device.remove`, all or nothing like [`Pipeline::upsert_device`].
    async fn remove_device(&mut self, name: &str) -> Result<DeviceChange, String> {
        let before = self.district.device_config(name);
        let fx = self.district.remove_device(name);
        let change = DeviceChange { downlinks_dropped: fx.downlinks_dropped() };
        let mut batch = Batch::default();
        batch.set_remote_device(name, None);
        if self.apply(batch, fx).await {
            self.quarantined.retain(|q| q.device != name);
            tracing::info!(device = %name, "device removed remotely");
            return Ok(change);
        }
        if let Some((info, prov)) = before {
            let undo = self.district.upsert_device(name, info, prov, None);
            self.apply(Batch::default(), undo).await;
        }
        Err("the change could not be written to the journal; nothing changed".into())
    }

    /// Switches the relays at once (local control does not wait for the journal), then journals
    /// `batch` plus the messages (each under a new seq) and the state in `fx`, fsyncs as the
    /// durability policy says (always before a downlink: it uses a frame counter), and only then
    /// sends the downlinks. Returns whether everything is in the journal (what the caller may
    /// acknowledge).
    async fn apply(&mut self, mut batch: Batch, mut fx: Effects) -> bool {
        self.switch_relays(&fx.relays);
        self.to_vtn(std::mem::take(&mut fx.vtn_reports));
        for m in &fx.records {
            let seq = self.store.allocate_seq();
            if let Message::Reading(r) = m {
                tracing::debug!(device = %r.device, seq, "reading");
            }
            batch.push_record(record(seq, m, self.district.gateway_id()));
        }
        // Readings, aggregates, events and command answers all wake the uplink; only readings count
        // as readings (for the metric).
        let records = batch.len() as u64;
        let has_records = records > 0;
        crate::ns_store::persist_into(&mut batch, fx.persist, &self.sources);
        self.counters.add(&fx.counts);
        for n in fx.notes {
            note(n);
        }
        let ok = if batch.is_empty() {
            true
        } else {
            match self.store.commit(batch, crate::clock::now()) {
                Ok(()) => {
                    let now_ms = self.sync_ms();
                    !self.sync.on_commit(now_ms, !fx.downlinks.is_empty()) || self.sync_now().await
                }
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
        self.counters.readings_journaled.fetch_add(fx.readings, std::sync::atomic::Ordering::Relaxed);
        self.counters.records_journaled.fetch_add(records, std::sync::atomic::Ordering::Relaxed);
        if has_records {
            self.journaled.notify_one();
        }
        for d in fx.downlinks {
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

    fn switch_relays(&mut self, switches: &[crate::district::RelaySwitch]) {
        for s in switches {
            match self.relays.get_mut(&s.pin) {
                Some(r) => {
                    if let Err(e) = r.set(s.on) {
                        tracing::error!(load = %s.load, pin = s.pin, error = %e, "relay could not be switched");
                    }
                }
                None => tracing::warn!(load = %s.load, pin = s.pin, "no relay on this pin"),
            }
        }
    }
}

/// A log line for a network-server note (what it counts is already in the step's counts).
fn note(n: Note) {
    match n {
        Note::Joined { device, dev_addr } => tracing::info!(%device, %dev_addr, "device joined"),
        Note::JoinRefused { error } => tracing::debug!(%error, "join refused"),
        Note::DownlinkAcked { device, id, attempts } => {
            tracing::info!(%device, id, attempts, "confirmed downlink acknowledged")
        }
        Note::DownlinkFailed { device, id, attempts } => {
            tracing::warn!(%device, id, attempts, "confirmed downlink not acknowledged: failed")
        }
        Note::DownlinkDeferred { device, reason, .. } => tracing::info!(%device, %reason, "downlink deferred"),
        Note::DecodeError { device } => tracing::debug!(%device, "payload could not be decoded"),
        Note::DownlinksDropped { device, count, reason } => {
            tracing::warn!(%device, count, reason, "queued downlinks dropped: their session's keys are gone");
        }
        Note::MulticastSent { group, f_cnt, airtime_us } => {
            tracing::debug!(%group, f_cnt, airtime_us, "multicast frame to the group")
        }
        Note::Mac { device, event } => mac_note(&device, event),
    }
}

/// A log line for a MAC engine event (requests carry settings, never keys).
fn mac_note(device: &str, event: MacEvent) {
    match event {
        MacEvent::Accepted { req } => tracing::info!(%device, ?req, "MAC request accepted"),
        MacEvent::Refused { req, status } => tracing::warn!(%device, ?req, status, "MAC request refused"),
        MacEvent::Dropped { req, tries } => {
            tracing::warn!(%device, ?req, tries, "MAC request not answered: dropped")
        }
        MacEvent::Unexpected { cid } => tracing::debug!(%device, cid, "MAC answer without a request"),
        MacEvent::AdrRequested { decision: d } => tracing::info!(
            %device, margin_db = d.margin_db, steps = d.steps, from_dr = d.from.dr, to_dr = d.to.dr,
            to_tx_power = d.to.tx_power, nb_trans = d.to.nb_trans, "ADR: LinkADRReq queued"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The periodic save of the loops' state follows the tick that closes aggregate windows (their open
    /// windows are empty then), and without one comes a little after five minutes.
    #[test]
    fn the_loops_save_waits_for_closing_windows() {
        let s = Duration::from_secs;
        assert!(!loops_save_due(s(200), true), "not twice within a window");
        assert!(!loops_save_due(s(300), false), "waits for the windows to close");
        assert!(loops_save_due(s(290), true));
        assert!(loops_save_due(s(315), false), "without closing windows, a little later");
    }
}
