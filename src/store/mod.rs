//! The store: the outbox (every message waiting for the broker), the `seq` counter and the state that
//! must survive a restart (per-device LoRaWAN state, accepted command ids, remote devices, the control
//! loops' state). The only module that touches sled and the data dir's files (architecture invariant).
//!
//! Two parts, in `dir`: the **outbox log**, append-only segment files in `dir/wal/` (one entry per
//! [`Store::commit`]: the batch's records *and* its state changes, CRC-checked, so a reading and the
//! frame counter that admitted it are on disk together or not at all; [`Store::flush`] is one
//! `fdatasync`), and the **state**, a sled database in `dir` itself, copied from the log in the
//! background. sled alone writes 1,400–5,500 bytes per 200-byte record; the log writes what it
//! appends (compacted, `codec.rs`), and deleting is free: a segment file goes when every record in it
//! is acknowledged or dropped.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the [`Store`] handle and its types: open, commit, flush, housekeeping ([`Store::maintain`]) |
//! | `log_format.rs` | a log entry's bytes: encoding, decoding, CRC check |
//! | `segment.rs` | segment files: append, rotation, deletion, the `seq.floor` file |
//! | `recovery.rs` | opening: the scan of the log, replay, damage (moved aside), legacy migration |
//! | `bound.rs` | `max_bytes`, `max_age_s`, a full disk: the drop policy, drop episodes and their event |
//! | `state.rs` | the state in sled (its keys), its readers, the control loops' state |
//! | `outbox.rs` | reading the outbox (only up to the durable watermark) and acknowledgements |
//! | `device_state.rs` | per-device LoRaWAN lifecycle state: session records, routes |
//! | `codec.rs`, `ranges.rs`, `fs.rs` | payload compaction and CRC, the acked-seq set, the file I/O trait |
//!
//! # Guarantees
//! - Durability: [`Store::commit`] writes the entry to the log (page cache: survives kill -9);
//!   [`Store::flush`] makes it survive a power cut. The caller flushes before it acknowledges anything.
//! - Readers see only durable records (`outbox.rs`).
//! - `seq` is never reused: every seq ever committed is either in a log segment or below the
//!   `seq.floor` file (`segment.rs`), and a damaged store continues above everything (`recovery.rs`).
//! - Bound: the log's files never exceed `max_bytes` (plus one entry); every drop is counted and each
//!   drop episode announced (`bound.rs`).
//! - Directory entries are durable too: the store fsyncs the directory after creating a segment,
//!   `seq.floor` or its marker, after renaming a rewritten segment into place, and after deleting a
//!   segment. An `fdatasync` of a new file does not make its name durable.
//!
//! # Time: the caller's clock
//! The store reads no wall clock. Whatever it stamps (a log entry's time, which the age bound and
//! [`Store::oldest_record_age_s`] use; the `at` of its events; the name of a moved-aside store) is
//! the `now` its caller passes: the shell's clock (`crate::clock`), which the demo accelerates.
//! Monotonic [`std::time::Instant`]s only pace the store's own work (copying state into sled, group
//! commit, a drop episode's quiet period, waiting for sled's lock), so a step of the wall clock
//! cannot stall them.
//!
//! # One writer; the store allocates no seq
//! Seqs are allocated and committed by one task (the pipeline), so log order is seq order; the readers
//! rely on that. The store itself never allocates a seq: what it wants journaled is handed to the
//! writer as an [`Announcement`] (the end of a drop episode, returned by [`Store::maintain`]; the
//! damage found at open, [`OpenReport::damage_event`]), and the writer journals it with a seq it
//! allocates. (A seq allocated between the pipeline's `allocate_seq` and its `commit` would move the
//! live cursor past the lower seq, which would then never be published, and its segment never
//! deleted.) The uplink only reads and calls [`Store::ack`], which touches memory.
//!
//! # File I/O and power-cut tests
//! Every file operation on the store's own files goes through the small [`Fs`] trait; production uses
//! [`RealFs`]. Tests use `sim_fs::SimFs`, which cuts the power at a chosen operation and keeps only
//! what was fsynced (file contents as of their last `sync_data` plus a torn prefix of later writes;
//! directory entries as of the last directory fsync), and model sled as keeping what it had at its
//! last explicit flush. `powercut_tests.rs` runs thousands of seeded cuts under a mixed workload and
//! checks every promise above at each reopen:
//! `DG_POWERCUT_CUTS=20000 cargo test --release --lib store::powercut_tests` (the seed of a failing
//! run is printed; `DG_POWERCUT_RUN_SEED=<seed>` repeats it).

mod bound;
mod codec;
mod device_state;
mod fs;
mod log_format;
mod outbox;
mod ranges;
mod recovery;
mod segment;
#[cfg(test)]
mod sim_fs;
mod state;

pub use bound::{Announcement, CommitReport, DropAnnouncement, DropPolicy, EPISODE_QUIET};
pub use device_state::StoredRoute;
pub use fs::{FileRef, Fs, FsFile, RealFs};
pub use recovery::OpenReport;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use thiserror::Error;

use log_format::{ack_ranges, encode_entry, Entry};
use ranges::RangeSet;
use segment::Segment;
use state::Episode;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("store: disk full ({0}); nothing more could be dropped to make room")]
    DiskFull(String),
    #[error("store: the state database is unavailable after an earlier error; retrying")]
    StateUnavailable,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

/// The caller's `now` as the log stores times: ms since 1970 (0 before it).
fn ms(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp_millis()).unwrap_or(0)
}

pub use crate::topic::Topic;
/// What a record is, for the drop policy (raw readings go first, everything else outranks them): its
/// topic's kind.
pub use crate::topic::TopicKind as RecordKind;

/// One message waiting for the broker: its topic (which says where it goes, relative to
/// `{prefix}/{gateway}/`, its kind and whether it is retained; the log keeps it as the topic's code
/// and name) and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub topic: Topic,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn new(seq: u64, topic: Topic, payload: Vec<u8>) -> Record {
        Record { seq, topic, payload }
    }
    pub fn kind(&self) -> RecordKind {
        self.topic.kind()
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache. sled's default is 1 GiB; a Pi wants a few MiB.
    pub cache_bytes: u64,
    /// Bound on the outbox log's files.
    pub max_bytes: u64,
    /// Records older than this are dropped (counted and announced). None: no age limit.
    pub max_age_s: Option<u64>,
    pub policy: DropPolicy,
    /// For the topic and payload of the store's own events.
    pub gateway_id: String,
    /// Segment file size; None: `max_bytes / 16` within 64 KiB..=4 MiB, so the bound is enforced in
    /// steps of at most 1/16 of it.
    pub segment_bytes: Option<u64>,
    /// Group commit: a flush that comes sooner than this after the previous one waits for the rest
    /// of this gap, so that under load each fsync carries more readings (each fsync rewrites at least
    /// one 4 KiB page of flash). Zero disables it. Never longer than `flush_interval_ms`.
    pub coalesce: Duration,
    /// Before an fsync that writes new entries, fill the active segment up to the next 4 KiB page with
    /// a padding entry ([`log_format::encode_padding`]), so that the next window's entries start on a
    /// fresh page: the synced page is never dirtied (and rewritten on flash) again. Worth it when fsyncs
    /// are a window apart (interval durability, a few KB per window); per-commit fsyncs would
    /// waste most of a page each.
    pub pad_on_sync: bool,
    /// Reserve each new segment's whole size when it is created (`segment::create_segment`), so that
    /// appends never change the file's size.
    pub preallocate: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 4 << 20,
            max_bytes: 256 << 20,
            max_age_s: None,
            policy: DropPolicy::DropOldest,
            gateway_id: "gateway".into(),
            segment_bytes: None,
            coalesce: Duration::ZERO,
            pad_on_sync: false,
            preallocate: false,
        }
    }
}

impl StoreOptions {
    /// The options the daemon runs with: `[buffer]` and `gateway.id` from the config.
    pub fn from_config(config: &crate::config::Config) -> StoreOptions {
        let b = &config.buffer;
        StoreOptions {
            cache_bytes: 4 << 20,
            max_bytes: b.max_bytes,
            max_age_s: b.max_age_s,
            policy: match b.policy {
                crate::config::BufferPolicy::DropOldest => DropPolicy::DropOldest,
                crate::config::BufferPolicy::DropNewest => DropPolicy::DropNewest,
            },
            gateway_id: config.gateway.id.clone(),
            segment_bytes: None,
            // Only per-commit fsyncs need spacing; in interval mode they are a window apart anyway.
            coalesce: match b.durability {
                crate::config::DurabilityMode::Commit => Duration::from_millis(u64::from(b.flush_interval_ms).min(10)),
                crate::config::DurabilityMode::Interval => Duration::ZERO,
            },
            pad_on_sync: b.durability == crate::config::DurabilityMode::Interval,
            preallocate: true,
        }
    }

    /// How much of a new segment to reserve (`preallocate`).
    fn reserve(&self) -> Option<u64> {
        self.preallocate.then(|| self.segment_bytes())
    }

    fn segment_bytes(&self) -> u64 {
        self.segment_bytes.unwrap_or((self.max_bytes / 16).clamp(64 << 10, 4 << 20)).max(4096)
    }
}

/// Counters since the store was opened (drops are also announced as events).
#[derive(Debug, Default)]
pub struct StoreStats {
    pub readings_dropped: AtomicU64,
    pub others_dropped: AtomicU64,
    pub drop_episodes: AtomicU64,
    /// Bytes appended to the log (what the store asked to write; the kernel's figure is larger).
    pub log_bytes: AtomicU64,
    /// Of `log_bytes`: padding up to a page boundary before an fsync (`StoreOptions::pad_on_sync`).
    pub padding_bytes: AtomicU64,
    pub write_errors: AtomicU64,
    pub fsyncs: AtomicU64,
}

/// Records and state changes that go to disk in one atomic log entry. The state setters are in
/// `state.rs` and `device_state.rs`.
#[derive(Debug, Default)]
pub struct Batch {
    records: Vec<Record>,
    kv: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Batch {
    pub fn push_record(&mut self, record: Record) {
        self.records.push(record);
    }
    /// Adds an event the store asked to have journaled ([`Store::maintain`],
    /// [`OpenReport::damage_event`]) with its `seq`.
    pub fn push_announcement(&mut self, a: Announcement, seq: u64) {
        self.records.push(a.into_record(seq));
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.kv.is_empty()
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

struct State {
    db: Option<sled::Db>,
    tree: Option<sled::Tree>,
    wal: PathBuf,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    next_lsn: u64,
    written_lsn: u64,
    synced_lsn: u64,
    /// Files written since their last sync (the active one, and ones rotated out).
    unsynced: Vec<(u64, FileRef)>,
    acked: RangeSet,
    /// Acknowledgements not yet appended to the log.
    pending_acks: Vec<u64>,
    /// State changes from the log not yet in sled (and the lsn they reach).
    pending_kv: BTreeMap<Vec<u8>, Vec<u8>>,
    pending_lsn: u64,
    sled_lsn_durable: u64,
    topic_last: HashMap<Topic, u64>,
    /// The highest seq in the log (single writer: every seq below it that will ever be committed is).
    max_committed: u64,
    /// The highest seq in the log that is fsynced (durable): what readers may see.
    durable_seq: u64,
    episode: Option<Episode>,
    total_bytes: u64,
    /// Positions where reads stopped: (segment, offset, first seq at that offset).
    read_hints: Vec<(u64, u64, u64)>,
    sled_broken_since: Option<Instant>,
    /// Records committed since the last flush, and in the last flush: how busy the pipeline is.
    records_since_sync: u64,
    records_last_sync: u64,
    /// The control loops' state as last written to the log, by key (the whole-blob key of older
    /// versions and the parts; an unchanged part is not written again).
    loops_written: BTreeMap<Vec<u8>, Vec<u8>>,
}

struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    opts: StoreOptions,
    next_seq: AtomicU64,
    /// `State::durable_seq`, readable without the lock: the uplink polls it after every PUBACK.
    durable_seq: AtomicU64,
    stats: StoreStats,
    state: Mutex<State>,
    last_flush: Mutex<Option<Instant>>,
    flush_lock: tokio::sync::Mutex<()>,
    report: OpenReport,
}

/// A cheap, cloneable handle: the pipeline writes, the uplink reads and acknowledges.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the store in `dir` with default bounds. `cache_bytes` bounds sled's cache.
    /// `now`: the caller's clock (see the module doc).
    pub fn open(dir: &Path, cache_bytes: u64, now: DateTime<Utc>) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions { cache_bytes, ..StoreOptions::default() }, now)
    }

    /// Opens (or creates) the store in `dir`. A damaged store is moved aside and a fresh one started
    /// (see [`Store::open_report`]); only environment errors (permissions, the store locked by another
    /// process, ...) are returned as errors. `now`: the caller's clock (see the module doc).
    pub fn open_with(dir: &Path, opts: StoreOptions, now: DateTime<Utc>) -> Result<Store, StoreError> {
        Store::open_with_fs(dir, opts, Arc::new(RealFs), now)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state (every method keeps its
        // invariants between statements that can fail); carry on rather than poison the daemon.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What opening found (damage, cut entries), and the `store_damaged` event to journal.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// The `seq` the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.next_seq.load(Ordering::SeqCst)
    }

    /// Hands out the next `seq`. It becomes durable with the record that carries it. Called by the
    /// outbox's one writer only, never by the store itself.
    pub fn allocate_seq(&self) -> u64 {
        self.inner.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Writes a batch atomically (records and state), stamped `now` (the caller's clock: the age
    /// bound and [`Store::oldest_record_age_s`] measure from it). Not yet power-cut safe: call
    /// [`Store::flush`] before acknowledging. Applies the bound (see [`Store::commit_report`]).
    pub fn commit(&self, batch: Batch, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.commit_report(batch, now).map(|_| ())
    }

    /// [`Store::commit`], saying what was dropped to stay within the bound.
    pub fn commit_report(&self, mut batch: Batch, now: DateTime<Utc>) -> Result<CommitReport, StoreError> {
        let now = ms(now);
        let mut st = self.lock();
        let mut report = CommitReport::default();
        self.enforce_age(&mut st, now, &mut report)?;
        state::drop_unchanged_loops_state(&mut batch.kv, &st.loops_written);
        if batch.is_empty() && st.pending_acks.is_empty() {
            return Ok(report);
        }
        let mut entry = self.entry_for(&mut st, &mut batch, now);
        self.append_within_bound(&mut st, &mut entry, now, &mut report)?;
        Ok(report)
    }

    /// Builds the log entry for a batch (plus acknowledgements waiting to be logged).
    fn entry_for(&self, st: &mut State, batch: &mut Batch, now: u64) -> Entry {
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        let records = std::mem::take(&mut batch.records)
            .into_iter()
            .map(|r| {
                let (fmt, payload) = codec::compact(&r.payload);
                (r.seq, r.topic, fmt, payload)
            })
            .collect();
        // The last value per key is enough (a batch may set one device's counter several times).
        let mut kv: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(batch.kv.len());
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for (k, v) in std::mem::take(&mut batch.kv) {
            match seen.get(&k) {
                Some(i) => kv[*i].1 = v,
                None => {
                    seen.insert(k.clone(), kv.len());
                    kv.push((k, v));
                }
            }
        }
        let acks = ack_ranges(std::mem::take(&mut st.pending_acks));
        Entry { lsn, time_ms: now, records, kv, acks }
    }

    /// Makes everything committed so far durable (power-cut safe). Concurrent callers share fsyncs.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let coalesce = self.inner.opts.coalesce;
        // Only when busy (groups of several readings): a lone reading is not made to wait.
        let busy = {
            let st = self.lock();
            st.records_since_sync >= 2 || st.records_last_sync >= 2
        };
        if !coalesce.is_zero() && busy {
            let last = *self.inner.last_flush.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(wait) = last.and_then(|l| coalesce.checked_sub(l.elapsed())) {
                // Under load flushes come back to back; waiting for the rest of the gap lets the
                // next group grow, so each fsync (and each rewritten flash page) carries more readings.
                tokio::time::sleep(wait).await;
            }
        }
        let _guard = self.inner.flush_lock.lock().await;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.flush_blocking())
            .await
            .map_err(|e| StoreError::Io { what: "flush task".into(), source: std::io::Error::other(e.to_string()) })?
    }

    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        // The seqs in the log now become durable with this fsync (single writer: every record up to
        // `max_committed` is in an entry at or below `written_lsn`).
        let (target, seq_target, files) = {
            let mut st = self.lock();
            st.records_last_sync = std::mem::take(&mut st.records_since_sync);
            if self.inner.opts.pad_on_sync && st.synced_lsn < st.written_lsn {
                self.pad_to_page(&mut st);
            }
            if st.synced_lsn >= st.written_lsn {
                (st.written_lsn, st.max_committed, Vec::new())
            } else {
                let active = st.active;
                let files: Vec<(u64, FileRef)> = std::mem::take(&mut st.unsynced);
                st.unsynced = files.iter().filter(|(id, _)| *id == active).cloned().collect();
                (st.written_lsn, st.max_committed, files)
            }
        };
        // fsync outside the lock: the pipeline keeps committing and the uplink keeps reading.
        if !files.is_empty() {
            crate::test_hooks::before_fsync();
        }
        for (i, (_, f)) in files.iter().enumerate() {
            if let Err(e) = f.sync_data() {
                // Not durable: these files must be synced again by the next flush.
                let mut st = self.lock();
                for (id, f) in &files[i..] {
                    if !st.unsynced.iter().any(|(u, _)| u == id) && st.segments.contains_key(id) {
                        st.unsynced.push((*id, f.clone()));
                    }
                }
                return Err(io_err("syncing the outbox log")(e));
            }
        }
        if !files.is_empty() {
            self.inner.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut st = self.lock();
            st.synced_lsn = st.synced_lsn.max(target);
            // Only now may readers (the uplink) see these records: a record published before its
            // fsync could be lost to a power cut and its seq handed out again.
            st.durable_seq = st.durable_seq.max(seq_target);
            self.inner.durable_seq.store(st.durable_seq, Ordering::Release);
        }
        *self.inner.last_flush.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// fsyncs the log's unsynced files with the lock held (rare: before sled is made durable).
    fn sync_log_locked(&self, st: &mut State) -> Result<(), StoreError> {
        if st.synced_lsn >= st.written_lsn && st.unsynced.iter().all(|(id, _)| *id == st.active) {
            return Ok(());
        }
        for (_, f) in &st.unsynced {
            f.sync_data().map_err(io_err("syncing the outbox log"))?;
        }
        let active = st.active;
        st.unsynced.retain(|(id, _)| *id == active);
        self.inner.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        st.synced_lsn = st.written_lsn;
        st.durable_seq = st.durable_seq.max(st.max_committed);
        self.inner.durable_seq.store(st.durable_seq, Ordering::Release);
        Ok(())
    }

    /// Housekeeping, called about every 200 ms by the pipeline (the outbox's one writer) with its
    /// clock's `now`: logs acknowledgements, deletes acknowledged segments, applies `max_age_s`,
    /// copies state to sled, reopens sled after a failure, and ends a drop episode that has been
    /// quiet for [`EPISODE_QUIET`].
    ///
    /// It journals nothing that needs a seq: the ended episode's `buffer_dropped` event is returned
    /// (stamped `now`), and the caller journals it with a seq it allocates
    /// ([`Batch::push_announcement`]). The store never allocates a seq behind the writer's back.
    pub fn maintain(&self, now: DateTime<Utc>) -> Result<Option<Announcement>, StoreError> {
        let now_ms = ms(now);
        let mut st = self.lock();
        if st.tree.is_none() && st.sled_broken_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(2)) {
            self.reopen_sled(&mut st);
        }
        let mut report = CommitReport::default();
        self.enforce_age(&mut st, now_ms, &mut report)?;
        if !st.pending_acks.is_empty() {
            let mut entry = self.entry_for(&mut st, &mut Batch::default(), now_ms);
            entry.lsn = 0; // carries no state: never needs replaying into sled, nor an fsync
            st.next_lsn -= 1;
            let encoded = encode_entry(&entry);
            if let Err(e) = self.append(&mut st, &entry, &encoded) {
                // Acks lost here only cost duplicates; put them back for the next try.
                for (s, e) in entry.acks {
                    st.pending_acks.extend(s..=e.min(s + 100_000));
                }
                tracing::debug!(error = %e, "logging acknowledgements failed");
            }
        }
        if st.tree.is_some() {
            if let Err(e) = self.collect_garbage(&mut st) {
                tracing::debug!(error = %e, "removing acknowledged segments failed; will retry");
            }
        }
        Ok(self.end_quiet_episode(&mut st, now))
    }

    /// Bytes the store uses on disk: the outbox log plus sled.
    pub fn size_on_disk(&self) -> u64 {
        let st = self.lock();
        st.total_bytes + st.db.as_ref().and_then(|d| d.size_on_disk().ok()).unwrap_or(0)
    }

    /// Records dropped by the bounds since the store was opened (readings and others): a change
    /// tells a reader that records it read ahead may be gone.
    pub fn drops(&self) -> u64 {
        let st = &self.inner.stats;
        st.readings_dropped.load(Ordering::Relaxed) + st.others_dropped.load(Ordering::Relaxed)
    }

    /// Bytes of the outbox log (what `max_bytes` bounds).
    pub fn log_bytes(&self) -> u64 {
        self.lock().total_bytes
    }
}

#[cfg(test)]
mod powercut_tests;
#[cfg(test)]
mod tests;
