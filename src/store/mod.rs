//! The store: the outbox (every message waiting for the broker), the `seq` counter and per-device
//! LoRaWAN state. The only module that touches sled and the data dir's files (architecture invariant).
//!
//! # Layout and why
//! Two parts, in `dir`:
//! - `dir/wal/NNNNNNNNNNNNNNNN.seg`: the **outbox log**, append-only segment files. One entry per
//!   [`Store::commit`]: the batch's records *and* its state changes (frame counters, sessions, nonces),
//!   CRC-32 checked, so a reading and the frame counter that admitted it are on disk together or not
//!   at all. [`Store::flush`] is one `fdatasync` of the active segment.
//! - `dir` itself is a sled database with the **state**: frame counters, sessions, nonces, accepted
//!   command ids, remote devices, the acknowledged-seq set. The log's state changes are copied into
//!   sled in the background (at most every [`SLED_APPLY_EVERY`]) and replayed from the log at start
//!   if sled had not made them durable (`m/lsn` says how far it got).
//!
//! sled alone writes 1,400–5,500 bytes to disk per 200-byte record (its page rewrites and an
//! ~11 KB minimum per flush); an append-only log writes what it appends, so the bytes per reading are
//! about the size of the (compacted, see `codec.rs`) record plus the page the fsync rewrites, spread
//! over the readings of one group commit. Deleting is free: a segment file goes when every record in
//! it is acknowledged (or dropped). Acknowledgements are appended to the log without an fsync: they
//! survive kill -9 (the page cache does), and losing some to a power cut only means duplicates.
//!
//! | sled key                | value                                   |
//! |-------------------------|-----------------------------------------|
//! | `m/format`              | store format (u32 LE)                   |
//! | `m/lsn`                 | last log entry whose state is in sled   |
//! | `m/next_seq`            | a seq at or above every seq handed out  |
//! | `m/acked`               | acknowledged seqs (ranges)              |
//! | `m/episode`             | the running drop episode (JSON)         |
//! | `f/` + device name      | last accepted uplink FCnt (u32 BE)      |
//! | `d/` + device name      | next FCntDown (u32 BE)                  |
//! | `s/` + device name      | sessions: current + retired (`device_state.rs`) |
//! | `r/` + device name      | last-heard route: gateway EUI, source name |
//! | `n/` + DevEUI + nonce   | a used DevNonce (empty value)           |
//! | `m/join_nonce`          | the next JoinNonce (u32 BE)             |
//! | `c/` + command id       | an accepted command: forget after (ms)  |
//! | `u/` + device name      | a device added by `device.upsert` (JSON)|
//!
//! Session keys live only here, in the data dir (mode 700, the daemon's user only).
//!
//! # Guarantees
//! - Durability: [`Store::commit`] writes the entry to the log (page cache: survives kill -9);
//!   [`Store::flush`] makes it survive a power cut. The caller flushes before it acknowledges anything.
//! - Readers see only durable records: the uplink-visible watermark ([`Store::max_committed`]) moves
//!   in [`Store::flush`] after the fsync, never in `commit`, and every read path
//!   ([`Store::read_range`], [`Store::read_from`], [`Store::outbox_snapshot`]) stops at it. A record
//!   published before its fsync could be lost to a power cut and its `seq` handed out again (the city
//!   de-duplicates on (gateway, seq) and would drop the new reading). At open, the segments found are
//!   fsynced before they count as durable (a kill -9 leaves them in the page cache only).
//! - `seq` is never reused: every seq ever committed is either in a log segment or below the
//!   `seq.floor` file, which is written (and synced) before any segment is deleted or rewritten.
//! - Bound: the log's files never exceed `max_bytes` (plus one entry); when they would, the policy
//!   applies ([`DropPolicy`]); raw readings are dropped before aggregates, events and responses. Every
//!   dropped record is counted ([`StoreStats`]) and each drop *episode* is announced by one event record
//!   `event/{gateway_id}` with `"event": "buffer_dropped"` and the counts, written when the episode ends
//!   (no drop for [`EPISODE_QUIET`]).
//! - Directory entries are durable too: the store fsyncs the directory after creating a segment,
//!   `seq.floor` or its marker, after renaming a rewritten segment into place, and after deleting a
//!   segment (a segment that came back would bring back acknowledged or dropped records). An
//!   `fdatasync` of a new file does not make its name durable: without these, a power cut can take a
//!   whole fsynced segment away.
//! - A damaged store (sled fails to open, panics, or lost its data) is moved aside to
//!   `dir.damaged-UNIXTIME` and a fresh one started; the readable log segments are carried over and
//!   replayed. [`Store::open_report`] says what happened; a `store_damaged` event is written.
//!
//! # File I/O and power-cut tests
//! Every file operation on the store's own files (segments, `seq.floor`, the marker, directory
//! operations) goes through the small [`Fs`] trait; production uses [`RealFs`] (std::fs, one
//! dynamic call per operation). Tests use `sim_fs::SimFs`, which cuts the power at a chosen
//! operation and keeps only what was fsynced (file contents as of their last `sync_data` plus a torn
//! prefix of later writes; directory entries as of the last directory fsync), and model sled (which
//! does its own I/O) as keeping what it had at its last explicit flush. `powercut_tests.rs` runs
//! thousands of seeded cuts under a mixed workload and checks every promise above at each reopen:
//! `DG_POWERCUT_CUTS=20000 cargo test --release --lib store::powercut_tests` (the seed of a failing
//! run is printed; `DG_POWERCUT_RUN_SEED=<seed>` repeats it).
//!
//! Single writer: seqs are allocated and committed by one task (the pipeline), so log order is seq
//! order; the readers rely on that. The store itself never allocates a seq behind the writer's back:
//! the end of a drop episode is returned by [`Store::maintain`] (which the pipeline calls) as a
//! [`DropAnnouncement`], and the pipeline journals it. (A seq allocated between the pipeline's
//! `allocate_seq` and its `commit` would move the live cursor past the lower seq, which would then
//! never be published, and its segment never deleted.) The uplink only reads and calls
//! [`Store::ack`], which touches memory; the acknowledgements reach the log with the pipeline's next
//! commit or `maintain`.

mod codec;
mod device_state;
mod fs;
mod ranges;
#[cfg(test)]
mod sim_fs;

pub use fs::{FileRef, Fs, FsFile, RealFs};

pub use device_state::StoredRoute;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::keys::Eui64;
use ranges::RangeSet;

const FORMAT: u32 = 2;
const FORMAT_KEY: &[u8] = b"m/format";
const LSN_KEY: &[u8] = b"m/lsn";
const NEXT_SEQ: &[u8] = b"m/next_seq";
const ACKED_KEY: &[u8] = b"m/acked";
const EPISODE_KEY: &[u8] = b"m/episode";
const FCNT_PREFIX: &[u8] = b"f/";
const FCNT_DOWN_PREFIX: &[u8] = b"d/";
const SESSION_PREFIX: &[u8] = b"s/";
const NONCE_PREFIX: &[u8] = b"n/";
const JOIN_NONCE: &[u8] = b"m/join_nonce";
const COMMAND_PREFIX: &[u8] = b"c/";
const REMOTE_DEVICE_PREFIX: &[u8] = b"u/";
/// The legacy (format 1) outbox: one sled key per record. Migrated into the log at open.
const LEGACY_OUTBOX: u8 = b'o';
/// A file next to sled saying a store was created here: sled coming up empty then means damage.
const MARKER: &str = "district-gateway-store";
const SEQ_FLOOR: &str = "seq.floor";
/// How often the log's state changes are copied into sled.
pub const SLED_APPLY_EVERY: Duration = Duration::from_millis(1000);
/// A drop episode ends after this long without a drop.
pub const EPISODE_QUIET: Duration = Duration::from_secs(5);
/// Log entry header: body length and CRC-32 of the body.
const HEADER: usize = 8;
/// Entries larger than this are refused (and a longer length in a header means damage).
const MAX_ENTRY: usize = 64 << 20;
/// When the seq floor cannot be read after damage, jump this far ahead so no seq is reused.
const SEQ_GAP_AFTER_DAMAGE: u64 = 1 << 32;
const ENOSPC: i32 = 28;

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

/// What a record is, for the drop policy: raw readings go first, everything else outranks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Reading,
    Aggregate,
    Event,
    /// Command responses, state and anything else.
    Other,
}

impl RecordKind {
    /// The kind follows from the topic (PRODUCT.md pins the topics), so producers need not say it.
    pub fn of_topic(topic_suffix: &str) -> RecordKind {
        if topic_suffix.starts_with("reading/") {
            RecordKind::Reading
        } else if topic_suffix.starts_with("agg/") {
            RecordKind::Aggregate
        } else if topic_suffix.starts_with("event/") {
            RecordKind::Event
        } else {
            RecordKind::Other
        }
    }
}

/// One message waiting for the broker: where it goes (relative to `{prefix}/{gateway}/`) and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub topic_suffix: String,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn new(seq: u64, topic_suffix: impl Into<String>, payload: Vec<u8>) -> Record {
        Record { seq, topic_suffix: topic_suffix.into(), payload }
    }
    pub fn kind(&self) -> RecordKind {
        RecordKind::of_topic(&self.topic_suffix)
    }
}

/// What happens when the bound is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Delete the oldest unsent readings (then, if still needed, the oldest other records).
    #[default]
    DropOldest,
    /// Refuse new readings (their frames are still acknowledged: they are counted as dropped).
    DropNewest,
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
            coalesce: Duration::from_millis(u64::from(b.flush_interval_ms).min(10)),
        }
    }

    fn segment_bytes(&self) -> u64 {
        self.segment_bytes.unwrap_or((self.max_bytes / 16).clamp(64 << 10, 4 << 20)).max(4096)
    }
}

/// What [`Store::open_with`] found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// The store was damaged: where it was moved, and why.
    pub damaged: Option<(PathBuf, String)>,
    /// Log entries cut off at a damaged or torn place (a torn last entry after a crash is normal).
    pub entries_cut: u64,
    /// Records waiting in the outbox after opening.
    pub records: u64,
}

/// Counters since the store was opened (drops are also announced as events).
#[derive(Debug, Default)]
pub struct StoreStats {
    pub readings_dropped: AtomicU64,
    pub others_dropped: AtomicU64,
    pub drop_episodes: AtomicU64,
    /// Bytes appended to the log (what the store asked to write; the kernel's figure is larger).
    pub log_bytes: AtomicU64,
    pub write_errors: AtomicU64,
    pub fsyncs: AtomicU64,
}

/// What one commit dropped to stay within the bound.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    pub readings_dropped: u64,
    pub others_dropped: u64,
}

/// The `buffer_dropped` event of a finished drop episode, returned by [`Store::maintain`]. The
/// outbox's one writer (the pipeline) allocates its seq and journals it like any other record
/// ([`Batch::push_announcement`]), so seqs stay in commit order.
#[derive(Debug, Clone)]
pub struct DropAnnouncement {
    topic_suffix: String,
    json: serde_json::Value,
}

impl DropAnnouncement {
    /// The event record, carrying `seq`.
    pub fn into_record(self, seq: u64) -> Record {
        let mut j = self.json;
        j["seq"] = seq.into();
        Record::new(seq, self.topic_suffix, j.to_string().into_bytes())
    }
}

/// State changes that go to disk in the same atomic log entry as the records.
#[derive(Debug, Default)]
pub struct Batch {
    records: Vec<Record>,
    kv: Vec<(Vec<u8>, Vec<u8>)>,
}

fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + rest.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(rest);
    k
}

impl Batch {
    pub fn push_record(&mut self, record: Record) {
        self.records.push(record);
    }
    pub fn set_fcnt(&mut self, device: &str, fcnt: u32) {
        self.kv.push((prefixed(FCNT_PREFIX, device.as_bytes()), fcnt.to_be_bytes().to_vec()));
    }
    pub fn set_fcnt_down(&mut self, device: &str, next: u32) {
        self.kv.push((prefixed(FCNT_DOWN_PREFIX, device.as_bytes()), next.to_be_bytes().to_vec()));
    }
    pub fn add_dev_nonce(&mut self, dev_eui: Eui64, nonce: u16) {
        let mut rest = dev_eui.0.to_be_bytes().to_vec();
        rest.extend_from_slice(&nonce.to_be_bytes());
        self.kv.push((prefixed(NONCE_PREFIX, &rest), Vec::new()));
    }
    pub fn set_join_nonce(&mut self, next: u32) {
        self.kv.push((JOIN_NONCE.to_vec(), next.to_be_bytes().to_vec()));
    }
    /// Adds the event of a finished drop episode ([`Store::maintain`]) with its `seq`.
    pub fn push_announcement(&mut self, a: DropAnnouncement, seq: u64) {
        self.records.push(a.into_record(seq));
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.kv.is_empty()
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

// ------------------------------------------------------------------------------------------ log entries

/// One decoded log entry.
#[derive(Debug, Default)]
struct Entry {
    lsn: u64,
    time_ms: u64,
    /// (seq, kind, topic, format, stored payload)
    records: Vec<(u64, RecordKind, String, u8, Vec<u8>)>,
    kv: Vec<(Vec<u8>, Vec<u8>)>,
    acks: Vec<(u64, u64)>,
}

fn kind_code(k: RecordKind) -> u8 {
    match k {
        RecordKind::Reading => 0,
        RecordKind::Aggregate => 1,
        RecordKind::Event => 2,
        RecordKind::Other => 3,
    }
}

fn kind_from(c: u8) -> RecordKind {
    match c {
        0 => RecordKind::Reading,
        1 => RecordKind::Aggregate,
        2 => RecordKind::Event,
        _ => RecordKind::Other,
    }
}

/// Topic prefixes stored as one byte (the kind already says which).
const TOPIC_PREFIXES: [&str; 4] = ["reading/", "agg/", "event/", ""];

fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + e.records.iter().map(|r| r.4.len() + r.2.len() + 16).sum::<usize>());
    b.extend_from_slice(&[0; HEADER]);
    b.extend_from_slice(&e.lsn.to_le_bytes());
    b.extend_from_slice(&e.time_ms.to_le_bytes());
    b.extend_from_slice(&(e.records.len() as u32).to_le_bytes());
    b.extend_from_slice(&(e.kv.len() as u32).to_le_bytes());
    b.extend_from_slice(&(e.acks.len() as u32).to_le_bytes());
    for (seq, kind, topic, fmt, payload) in &e.records {
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(kind_code(*kind));
        b.push(*fmt);
        let prefix = TOPIC_PREFIXES[kind_code(*kind) as usize];
        let rest = topic.strip_prefix(prefix).filter(|_| !prefix.is_empty());
        let (tag, t) = match rest {
            Some(r) => (1u8, r),
            None => (0u8, topic.as_str()),
        };
        b.push(tag);
        let tb = &t.as_bytes()[..t.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(tb.len() as u16).to_le_bytes());
        b.extend_from_slice(tb);
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
    }
    for (k, v) in &e.kv {
        let k = &k[..k.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(k.len() as u16).to_le_bytes());
        b.extend_from_slice(k);
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        b.extend_from_slice(v);
    }
    for (s, e) in &e.acks {
        b.extend_from_slice(&s.to_le_bytes());
        b.extend_from_slice(&e.to_le_bytes());
    }
    let body_len = (b.len() - HEADER) as u32;
    let crc = codec::crc32(&b[HEADER..]);
    b[0..4].copy_from_slice(&body_len.to_le_bytes());
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_body(body: &[u8]) -> Option<Entry> {
    let mut r = codec::Reader::new(body);
    let mut e = Entry { lsn: r.u64()?, time_ms: r.u64()?, ..Entry::default() };
    let (n_rec, n_kv, n_ack) = (r.u32()?, r.u32()?, r.u32()?);
    for _ in 0..n_rec {
        let seq = r.u64()?;
        let kind = kind_from(r.u8()?);
        let fmt = r.u8()?;
        let tag = r.u8()?;
        let tlen = r.u16()? as usize;
        let t = std::str::from_utf8(r.bytes(tlen)?).ok()?;
        let topic = if tag == 1 { format!("{}{t}", TOPIC_PREFIXES[kind_code(kind) as usize]) } else { t.to_string() };
        let plen = r.u32()? as usize;
        let payload = r.bytes(plen)?.to_vec();
        e.records.push((seq, kind, topic, fmt, payload));
    }
    for _ in 0..n_kv {
        let klen = r.u16()? as usize;
        let k = r.bytes(klen)?.to_vec();
        let vlen = r.u32()? as usize;
        e.kv.push((k, r.bytes(vlen)?.to_vec()));
    }
    for _ in 0..n_ack {
        e.acks.push((r.u64()?, r.u64()?));
    }
    r.is_empty().then_some(e)
}

/// Reads the entry at `offset`: Ok(None) at the clean end of the file, Err(()) when the bytes there
/// are not a whole, valid entry (torn or damaged).
fn read_entry(file: &dyn FsFile, offset: u64, file_len: u64) -> Result<Option<(Entry, u64)>, ()> {
    if offset >= file_len {
        return Ok(None);
    }
    if file_len - offset < HEADER as u64 {
        return Err(());
    }
    let mut h = [0u8; HEADER];
    file.read_exact_at(&mut h, offset).map_err(|_| ())?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_ENTRY || offset + HEADER as u64 + len as u64 > file_len {
        return Err(());
    }
    let mut body = vec![0u8; len];
    file.read_exact_at(&mut body, offset + HEADER as u64).map_err(|_| ())?;
    if codec::crc32(&body) != crc {
        return Err(());
    }
    let e = decode_body(&body).ok_or(())?;
    Ok(Some((e, offset + (HEADER + len) as u64)))
}

// ------------------------------------------------------------------------------------------ segments

/// A segment as read at open: id, file, valid length, and its entries with (offset, length).
type ScannedSegment = (u64, FileRef, u64, Vec<(Entry, u64, u64)>);

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    file: FileRef,
    bytes: u64,
    /// Seqs of the records in this segment, in order (u64 each: 8 MB for a million-record backlog
    /// would be too much, so only the range is kept when it is dense; see `present`).
    first_seq: Option<u64>,
    last_seq: u64,
    /// Records in the file. `first..=last` may have holes (seqs allocated but never committed, or
    /// records dropped by a rewrite); acknowledgements only ever name records that exist.
    records: u64,
    /// Seqs of the non-reading records (rare: aggregates, events, responses).
    others: Vec<u64>,
    unacked_readings: u64,
    unacked_others: u64,
    max_lsn: u64,
    /// Time of the first and the newest entry with records (ms since 1970).
    first_ms: u64,
    newest_ms: u64,
    /// Sparse index for reading by seq: (first seq of an entry, its offset), one per 64 KiB.
    index: Vec<(u64, u64)>,
}

impl Segment {
    fn unacked(&self) -> u64 {
        self.unacked_readings + self.unacked_others
    }
    fn holds(&self, seq: u64) -> bool {
        self.first_seq.is_some_and(|f| f <= seq && seq <= self.last_seq)
    }
}

fn seg_path(wal: &Path, id: u64) -> PathBuf {
    wal.join(format!("{id:016}.seg"))
}

// ------------------------------------------------------------------------------------------ the store

struct Episode {
    started_ms: u64,
    readings: u64,
    others: u64,
    reasons: BTreeMap<&'static str, u64>,
    first_seq: u64,
    last_seq: u64,
    last_drop: Instant,
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
    last_sled_apply: Instant,
    topic_last: HashMap<String, u64>,
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

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Why sled could not be used, and whether that means damage (move aside) or an environment error.
enum SledOpen {
    Ok(sled::Db, sled::Tree),
    Damaged(String),
    Failed(StoreError),
}

/// How long an open waits for sled's lock: the previous store of this process (a reload, a restart
/// in tests) releases it only when sled's background threads have ended, shortly after the drop.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// [`open_sled_once`], waiting (bounded) while another instance still holds the database's lock.
fn open_sled(dir: &Path, cache_bytes: u64, fs: &dyn Fs) -> SledOpen {
    let start = Instant::now();
    loop {
        match open_sled_once(dir, cache_bytes, fs) {
            SledOpen::Failed(StoreError::Open { source, .. })
                if source.to_string().contains("could not acquire lock") && start.elapsed() < SLED_LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

fn open_sled_once(dir: &Path, cache_bytes: u64, fs: &dyn Fs) -> SledOpen {
    let marker_exists = fs.exists(&dir.join(MARKER));
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Our log is the journal; sled holds state copied from it, so its own timer is enough.
            // (The power-cut simulation turns it off: there sled is durable only when flushed.)
            .flush_every_ms(fs.sled_flush_every_ms())
            .open()?;
        let tree = db.open_tree("journal")?;
        // Touch every page once: sled reads pages lazily, and a damaged one panics when first read.
        let keys = tree.iter().count();
        Ok::<_, sled::Error>((db, tree, keys))
    }));
    match attempt {
        Err(_) => SledOpen::Damaged("the state database panicked while opening (damaged files)".into()),
        Ok(Err(sled::Error::Corruption { .. })) => SledOpen::Damaged("the state database is corrupt".into()),
        Ok(Err(sled::Error::ReportableBug(m))) => SledOpen::Damaged(format!("the state database failed: {m}")),
        Ok(Err(source)) => SledOpen::Failed(StoreError::Open { path: dir.display().to_string(), source }),
        Ok(Ok((db, tree, keys))) => {
            let format = tree.get(FORMAT_KEY).ok().flatten();
            if marker_exists && format.is_none() && keys == 0 {
                return SledOpen::Damaged("the state database lost its contents (truncated files)".into());
            }
            SledOpen::Ok(db, tree)
        }
    }
}

/// Moves a damaged store aside, keeping its log segments (they are checked entry by entry).
fn move_aside(dir: &Path, fs: &dyn Fs) -> Result<PathBuf, StoreError> {
    let ts = chrono::Utc::now().timestamp();
    let mut aside = PathBuf::from(format!("{}.damaged-{ts}", dir.display()));
    let mut n = 1;
    while aside.exists() || fs.exists(&aside) {
        aside = PathBuf::from(format!("{}.damaged-{ts}-{n}", dir.display()));
        n += 1;
    }
    fs.rename_dir(dir, &aside).map_err(io_err(format!("moving the damaged store to {}", aside.display())))?;
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    fs.create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let old_wal = aside.join("wal");
    let wal = dir.join("wal");
    fs.create_dir_all(&wal).map_err(io_err("creating wal"))?;
    fs.sync_dir(dir).map_err(io_err("syncing the store directory"))?;
    // Copy, do not move: the moved-aside store stays complete for inspection.
    for name in fs.read_dir(&old_wal).unwrap_or_default() {
        let _ = copy_file(fs, &old_wal.join(&name), &wal.join(&name));
    }
    fs.sync_dir(&wal).map_err(io_err("syncing wal"))?;
    // The floor keeps seqs from being reused after the move.
    if copy_file(fs, &aside.join(SEQ_FLOOR), &dir.join(SEQ_FLOOR)).is_ok() {
        fs.sync_dir(dir).map_err(io_err("syncing the store directory"))?;
    }
    Ok(aside)
}

/// Copies a file and syncs the copy's contents (the caller syncs the directory).
fn copy_file(fs: &dyn Fs, from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = fs.read(from)?;
    let f = fs.create(to)?;
    f.write_all_at(&bytes, 0)?;
    f.sync_data()
}

/// The floor file holds two slots (value + CRC each) written alternately in place: updating it needs
/// no new disk blocks (it must work on a full disk, when dropping segments is the way out) and a torn
/// write can only spoil the slot being written.
fn read_seq_floor(dir: &Path, fs: &dyn Fs) -> Option<u64> {
    let b = fs.read(&dir.join(SEQ_FLOOR)).ok()?;
    b.chunks_exact(12)
        .filter_map(|c| {
            let v: [u8; 8] = c[..8].try_into().ok()?;
            (codec::crc32(&v).to_le_bytes() == c[8..12]).then(|| u64::from_le_bytes(v))
        })
        .max()
}

fn write_seq_floor(dir: &Path, fs: &dyn Fs, next_seq: u64) -> Result<(), StoreError> {
    let path = dir.join(SEQ_FLOOR);
    let existed = fs.exists(&path);
    let f = fs.open(&path, true).map_err(io_err("opening seq.floor"))?;
    let mut slot = [0u8; 12];
    slot[..8].copy_from_slice(&next_seq.to_le_bytes());
    slot[8..].copy_from_slice(&codec::crc32(&next_seq.to_le_bytes()).to_le_bytes());
    // Overwrite the slot with the smaller value, so the larger one survives a torn write.
    let mut cur = [0u8; 24];
    let n = f.read_at(&mut cur, 0).unwrap_or(0);
    let value = |i: usize| -> u64 {
        let c = &cur[i * 12..i * 12 + 12];
        let v: [u8; 8] = c[..8].try_into().unwrap_or([0; 8]);
        if n >= i * 12 + 12 && codec::crc32(&v).to_le_bytes() == c[8..12] {
            u64::from_le_bytes(v)
        } else {
            0
        }
    };
    let target = if value(0) <= value(1) { 0 } else { 12 };
    f.write_all_at(&slot, target).and_then(|_| f.sync_data()).map_err(io_err("writing seq.floor"))?;
    if !existed {
        // A floor that is not in the directory after a power cut protects nothing.
        fs.sync_dir(dir).map_err(io_err("syncing the store directory"))?;
    }
    Ok(())
}

/// Creates a segment file and makes its directory entry durable (an fsync of the file's data does
/// not: after a power cut the file could be gone with every entry in it).
fn create_segment(fs: &dyn Fs, wal: &Path, id: u64) -> Result<Segment, StoreError> {
    let path = seg_path(wal, id);
    let file = fs.create(&path).map_err(io_err(format!("creating {}", path.display())))?;
    fs.sync_dir(wal).map_err(io_err("syncing wal"))?;
    Ok(Segment::new(id, path, file))
}

impl Segment {
    fn new(id: u64, path: PathBuf, file: FileRef) -> Segment {
        Segment {
            id,
            path,
            file,
            bytes: 0,
            first_seq: None,
            last_seq: 0,
            records: 0,
            others: Vec::new(),
            unacked_readings: 0,
            unacked_others: 0,
            max_lsn: 0,
            first_ms: 0,
            newest_ms: 0,
            index: Vec::new(),
        }
    }

    /// Accounts for an entry appended at `offset`.
    fn add(&mut self, e: &Entry, offset: u64, len: u64, acked: &RangeSet) {
        if let Some((first, ..)) = e.records.first() {
            if self.index.last().is_none_or(|(_, o)| offset >= o + (64 << 10)) {
                self.index.push((*first, offset));
            }
            if self.first_seq.is_none() {
                self.first_seq = Some(*first);
                self.first_ms = e.time_ms;
            }
        }
        for (seq, kind, ..) in &e.records {
            self.last_seq = self.last_seq.max(*seq);
            self.records += 1;
            let done = acked.contains(*seq);
            if *kind == RecordKind::Reading {
                self.unacked_readings += u64::from(!done);
            } else {
                self.others.push(*seq);
                self.unacked_others += u64::from(!done);
            }
        }
        self.max_lsn = self.max_lsn.max(e.lsn);
        if !e.records.is_empty() {
            self.newest_ms = self.newest_ms.max(e.time_ms);
        }
        self.bytes = offset + len;
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` with default bounds. `cache_bytes` bounds sled's cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions { cache_bytes, ..StoreOptions::default() })
    }

    /// Opens (or creates) the store in `dir`. A damaged store is moved aside and a fresh one started
    /// (see [`Store::open_report`]); only environment errors (permissions, the store locked by another
    /// process, ...) are returned as errors.
    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::open_with_fs(dir, opts, Arc::new(RealFs))
    }

    /// [`Store::open_with`] on a given file system (the power-cut tests use a simulated one; sled
    /// always uses the real one, in `dir`).
    pub fn open_with_fs(dir: &Path, opts: StoreOptions, fs: Arc<dyn Fs>) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        fs.create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut report = OpenReport::default();
        let (db, tree) = match open_sled(dir, opts.cache_bytes, &*fs) {
            SledOpen::Ok(db, tree) => (db, tree),
            SledOpen::Failed(e) => return Err(e),
            SledOpen::Damaged(why) => {
                let aside = move_aside(dir, &*fs)?;
                tracing::error!(store = %dir.display(), moved_to = %aside.display(), reason = %why,
                    "the store is damaged: moved aside, starting a fresh one (readable outbox entries are kept)");
                report.damaged = Some((aside, why));
                match open_sled(dir, opts.cache_bytes, &*fs) {
                    SledOpen::Ok(db, tree) => (db, tree),
                    SledOpen::Failed(e) => return Err(e),
                    SledOpen::Damaged(why) => {
                        return Err(StoreError::Io {
                            what: format!("a fresh store in {} cannot be opened: {why}", dir.display()),
                            source: std::io::Error::other("damaged"),
                        })
                    }
                }
            }
        };
        if tree.get(FORMAT_KEY)?.is_none() {
            tree.insert(FORMAT_KEY, &FORMAT.to_le_bytes())?;
            tree.flush()?;
            fs.sled_flushed(dir);
        }
        let marker = dir.join(MARKER);
        if !fs.exists(&marker) {
            let f = fs.create(&marker).map_err(io_err("writing the store marker"))?;
            f.write_all_at(b"district-gateway store: sled state + wal/ outbox log\n", 0)
                .and_then(|_| f.sync_data())
                .map_err(io_err("writing the store marker"))?;
            fs.sync_dir(dir).map_err(io_err("syncing the store directory"))?;
        }
        let wal = dir.join("wal");
        if !fs.exists(&wal) {
            fs.create_dir_all(&wal).map_err(io_err("creating wal"))?;
            fs.sync_dir(dir).map_err(io_err("syncing the store directory"))?;
        }

        let lsn_applied = tree.get(LSN_KEY)?.and_then(|v| be_u64(&v)).unwrap_or(0);
        let mut acked = tree.get(ACKED_KEY)?.map(|v| RangeSet::decode(&v)).unwrap_or_default();
        let sled_next = tree.get(NEXT_SEQ)?.and_then(|v| be_u64(&v)).unwrap_or(1);
        let floor = read_seq_floor(dir, &*fs);

        // Scan the log: every segment, every entry, CRC-checked.
        let mut ids: Vec<u64> = fs
            .read_dir(&wal)
            .map_err(io_err("listing wal"))?
            .iter()
            .filter_map(|name| name.strip_suffix(".seg")?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut entries_by_seg: Vec<ScannedSegment> = Vec::new();
        let mut max_seq = 0u64;
        // Where seqs continue, as entries that refused readings (drop-newest) recorded it.
        let mut log_next = 0u64;
        let mut max_lsn = lsn_applied;
        let mut pending_kv = BTreeMap::new();
        let mut topic_last = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            let path = seg_path(&wal, *id);
            let file = fs.open(&path, false).map_err(io_err(format!("opening {}", path.display())))?;
            let len = file.size().map_err(io_err("stat segment"))?;
            let mut off = 0;
            let mut entries = Vec::new();
            loop {
                match read_entry(&*file, off, len) {
                    Ok(Some((e, next))) => {
                        entries.push((e, off, next - off));
                        off = next;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        report.entries_cut += 1;
                        if i + 1 == ids.len() {
                            tracing::info!(segment = %path.display(), offset = off,
                                "outbox log ends in a torn entry (a crash during a write): cut off; it was never acknowledged");
                        } else {
                            tracing::error!(segment = %path.display(), offset = off, bytes = len - off,
                                "outbox log damaged: the rest of this segment is cut off");
                        }
                        file.set_len(off).map_err(io_err("cutting a damaged segment"))?;
                        break;
                    }
                }
            }
            for (e, ..) in &entries {
                for (s, en) in &e.acks {
                    acked.insert_range(*s, *en);
                }
                for (seq, _, topic, ..) in &e.records {
                    max_seq = max_seq.max(*seq);
                    topic_last.insert(topic.clone(), *seq);
                }
                for (k, v) in &e.kv {
                    if k == NEXT_SEQ {
                        log_next = log_next.max(be_u64(v).unwrap_or(0));
                    }
                }
                if e.lsn > lsn_applied {
                    for (k, v) in &e.kv {
                        pending_kv.insert(k.clone(), v.clone());
                    }
                }
                max_lsn = max_lsn.max(e.lsn);
            }
            // What a previous run wrote may still be only in the page cache (it was killed before its
            // flush): make it durable before readers may see it (they see everything found here).
            file.sync_data().map_err(io_err(format!("syncing {}", path.display())))?;
            entries_by_seg.push((*id, file, off, entries));
        }

        // sled recovers silently to an earlier point when the tail of its files is damaged. Its lsn then
        // lags what the log still covers: it lost state that the log no longer has (frame counters). Treat that as damage too (reported; state from the
        // log is replayed, the lost part is logged).
        let min_lsn =
            entries_by_seg.iter().flat_map(|(_, _, _, es)| es.iter().map(|(e, ..)| e.lsn)).filter(|l| *l > 0).min();
        let lost_state = min_lsn.is_some_and(|m| m > lsn_applied + 1);
        if lost_state && report.damaged.is_none() {
            tracing::error!(sled_lsn = lsn_applied, log_from = ?min_lsn,
                "the state database lost recent changes (damaged files): some frame counters may be older than they were");
            report.damaged = Some((dir.to_path_buf(), "the state database lost recent changes".into()));
        }
        let mut segments = BTreeMap::new();
        let mut total_bytes = 0;
        for (id, file, len, entries) in entries_by_seg {
            let mut seg = Segment::new(id, seg_path(&wal, id), file);
            for (e, off, l) in &entries {
                seg.add(e, *off, *l, &acked);
            }
            seg.bytes = len;
            total_bytes += len;
            segments.insert(id, seg);
        }

        let mut next_seq = sled_next.max(max_seq + 1).max(floor.unwrap_or(1)).max(log_next);
        if report.damaged.is_some() && floor.is_none() {
            // Seqs handed out before the damage may be above everything we can still read.
            next_seq = next_seq.max(max_seq + SEQ_GAP_AFTER_DAMAGE);
        }
        let active_id = segments.keys().next_back().map_or(1, |id| id + 1);
        let active = create_segment(&*fs, &wal, active_id)?;
        let unsynced = vec![(active_id, active.file.clone())];
        segments.insert(active_id, active);

        let mut state = State {
            db: Some(db),
            tree: Some(tree),
            wal,
            segments,
            active: active_id,
            next_lsn: max_lsn + 1,
            written_lsn: max_lsn,
            synced_lsn: max_lsn,
            unsynced,
            acked,
            pending_acks: Vec::new(),
            pending_kv,
            pending_lsn: max_lsn,
            sled_lsn_durable: lsn_applied,
            last_sled_apply: Instant::now(),
            topic_last,
            max_committed: max_seq,
            durable_seq: max_seq,
            episode: None,
            total_bytes,
            read_hints: Vec::new(),
            sled_broken_since: None,
            records_since_sync: 0,
            records_last_sync: 0,
        };
        let inner_stats = StoreStats::default();
        // Restore a drop episode that was running when the daemon stopped.
        if let Some(tree) = &state.tree {
            if let Some(v) = tree.get(EPISODE_KEY)? {
                if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&v) {
                    let mut reasons = BTreeMap::new();
                    for r in ["max_bytes", "max_age", "disk_full", "policy"] {
                        if let Some(n) = j["reasons"][r].as_u64() {
                            reasons.insert(r, n);
                        }
                    }
                    state.episode = Some(Episode {
                        started_ms: j["started_ms"].as_u64().unwrap_or(0),
                        readings: j["readings"].as_u64().unwrap_or(0),
                        others: j["others"].as_u64().unwrap_or(0),
                        reasons,
                        first_seq: j["first_seq"].as_u64().unwrap_or(0),
                        last_seq: j["last_seq"].as_u64().unwrap_or(0),
                        last_drop: Instant::now(),
                    });
                }
            }
        }
        state.pending_kv.insert(NEXT_SEQ.to_vec(), next_seq.to_be_bytes().to_vec());
        report.records = state.segments.values().map(|s| s.unacked()).sum();

        // Carry a legacy (format 1) outbox over into the log.
        let legacy: Vec<(u64, Vec<u8>)> = match &state.tree {
            Some(tree) => tree
                .scan_prefix([LEGACY_OUTBOX])
                .filter_map(|r| r.ok())
                .filter_map(|(k, v)| Some((be_u64(k.get(1..)?)?, v.to_vec())))
                .collect(),
            None => Vec::new(),
        };

        let store = Store {
            inner: Arc::new(Inner {
                fs,
                dir: dir.to_path_buf(),
                opts,
                next_seq: AtomicU64::new(next_seq),
                durable_seq: AtomicU64::new(max_seq),
                stats: inner_stats,
                state: Mutex::new(state),
                last_flush: Mutex::new(None),
                flush_lock: tokio::sync::Mutex::new(()),
                report: report.clone(),
            }),
        };
        if !legacy.is_empty() {
            store.migrate_legacy(legacy)?;
        }
        {
            let mut st = store.lock();
            store.apply_to_sled(&mut st, true)?;
            store.collect_garbage(&mut st)?;
        }
        if let Some((aside, why)) = &report.damaged {
            let seq = store.allocate_seq();
            let payload = serde_json::json!({
                "seq": seq,
                "device": store.inner.opts.gateway_id,
                "at": crate::reading::rfc3339(chrono::Utc::now()),
                "event": "store_damaged",
                "reason": why,
                "moved_to": aside.display().to_string(),
                "records_recovered": report.records,
            });
            let mut b = Batch::default();
            b.push_record(Record::new(
                seq,
                format!("event/{}", store.inner.opts.gateway_id),
                payload.to_string().into_bytes(),
            ));
            store.commit(b)?;
            store.flush_blocking()?;
        }
        tracing::info!(records = report.records, next_seq, "store opened");
        Ok(store)
    }

    fn migrate_legacy(&self, legacy: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        let mut keys = Vec::new();
        for (seq, v) in legacy {
            keys.push(seq);
            let len = u16::from_be_bytes([v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0)]) as usize;
            let (Some(topic), Some(payload)) = (v.get(2..2 + len), v.get(2 + len..)) else { continue };
            b.push_record(Record::new(seq, String::from_utf8_lossy(topic).into_owned(), payload.to_vec()));
        }
        self.commit(b)?;
        self.flush_blocking()?;
        let st = self.lock();
        if let Some(tree) = &st.tree {
            let mut sb = sled::Batch::default();
            for seq in keys {
                let mut k = vec![LEGACY_OUTBOX];
                k.extend_from_slice(&seq.to_be_bytes());
                sb.remove(k);
            }
            tree.apply_batch(sb)?;
            tree.flush()?;
            self.inner.fs.sled_flushed(&self.inner.dir);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state (every method keeps its
        // invariants between statements that can fail); carry on rather than poison the daemon.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What opening found (damage, cut entries).
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

    /// Hands out the next `seq`. It becomes durable with the record that carries it.
    pub fn allocate_seq(&self) -> u64 {
        self.inner.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Writes a batch atomically (records and state). Not yet power-cut safe: call [`Store::flush`]
    /// before acknowledging. Applies the bound (see [`Store::commit_report`]).
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.commit_report(batch).map(|_| ())
    }

    /// [`Store::commit`], saying what was dropped to stay within the bound.
    pub fn commit_report(&self, mut batch: Batch) -> Result<CommitReport, StoreError> {
        let mut st = self.lock();
        let mut report = CommitReport::default();
        let now = now_ms();
        self.enforce_age(&mut st, now, &mut report)?;
        if batch.is_empty() && st.pending_acks.is_empty() {
            return Ok(report);
        }
        let mut entry = self.entry_for(&mut st, &mut batch, now);
        let mut encoded = encode_entry(&entry);
        let max = self.inner.opts.max_bytes;
        if st.total_bytes + encoded.len() as u64 > max {
            match self.inner.opts.policy {
                DropPolicy::DropOldest => {
                    let need = st.total_bytes + encoded.len() as u64 - max;
                    self.drop_oldest(&mut st, need, "max_bytes", &mut report)?;
                }
                DropPolicy::DropNewest => {
                    let dropped = self.drop_new_readings(&mut st, &mut entry, "max_bytes");
                    report.readings_dropped += dropped;
                    encoded = encode_entry(&entry);
                    if st.total_bytes + encoded.len() as u64 > max && !entry.records.is_empty() {
                        // Aggregates, events and responses outrank the old readings.
                        let need = st.total_bytes + encoded.len() as u64 - max;
                        self.drop_oldest_readings_only(&mut st, need, "max_bytes", &mut report)?;
                    }
                }
            }
        }
        match self.append(&mut st, &entry, &encoded) {
            Ok(()) => {}
            Err(e) if is_enospc(&e) => {
                // The file system filled up before our bound did. Make room the policy's way and try
                // once more; the caller gets an error (and acknowledges nothing) if that fails too.
                tracing::warn!("disk full while journaling: applying the buffer policy");
                match self.inner.opts.policy {
                    DropPolicy::DropOldest => {
                        let need = (encoded.len() as u64).max(self.inner.opts.segment_bytes());
                        self.drop_oldest(&mut st, need, "disk_full", &mut report)?;
                    }
                    DropPolicy::DropNewest => {
                        report.readings_dropped += self.drop_new_readings(&mut st, &mut entry, "disk_full");
                        encoded = encode_entry(&entry);
                    }
                }
                if let Err(e) = self.append(&mut st, &entry, &encoded) {
                    self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    // The records never made it: their seqs are not reused (next_seq moved on).
                    return Err(if is_enospc(&e) { StoreError::DiskFull(e.to_string()) } else { e });
                }
            }
            Err(e) => {
                self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        if st.last_sled_apply.elapsed() >= SLED_APPLY_EVERY {
            // Best effort: the log has the state; sled catching up later is fine.
            if let Err(e) = self.apply_to_sled(&mut st, false) {
                tracing::warn!(error = %e, "copying state to the state database failed; will retry");
            }
        }
        Ok(report)
    }

    /// Builds the log entry for a batch (plus acknowledgements waiting to be logged).
    fn entry_for(&self, st: &mut State, batch: &mut Batch, now: u64) -> Entry {
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        let records = std::mem::take(&mut batch.records)
            .into_iter()
            .map(|r| {
                let kind = r.kind();
                let (fmt, payload) = codec::compact(&r.payload);
                (r.seq, kind, r.topic_suffix, fmt, payload)
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

    /// Appends an encoded entry to the active segment (rotating first if it is full).
    fn append(&self, st: &mut State, entry: &Entry, encoded: &[u8]) -> Result<(), StoreError> {
        let seg_max = self.inner.opts.segment_bytes();
        // With an age limit, the active segment must not outlive it by much: age drops whole segments.
        let rotate_for_age = self.inner.opts.max_age_s.is_some_and(|a| {
            st.segments
                .get(&st.active)
                .is_some_and(|s| s.records > 0 && entry.time_ms.saturating_sub(s.first_ms) > a * 1000 / 8)
        });
        let active_bytes = st.segments.get(&st.active).map_or(0, |s| s.bytes);
        if active_bytes > 0 && (active_bytes + encoded.len() as u64 > seg_max || rotate_for_age) {
            self.rotate(st)?;
        }
        let active = st.active;
        let Some(seg) = st.segments.get_mut(&active) else {
            return Err(StoreError::Io { what: "no active segment".into(), source: std::io::Error::other("missing") });
        };
        let offset = seg.bytes;
        if let Err(e) = seg.file.write_all_at(encoded, offset) {
            // Leave no torn entry behind: the next append starts at the same place.
            let _ = seg.file.set_len(offset);
            return Err(StoreError::Io { what: format!("appending to {}", seg.path.display()), source: e });
        }
        let acked = std::mem::take(&mut st.acked);
        seg.add(entry, offset, encoded.len() as u64, &acked);
        st.acked = acked;
        for (s, e) in &entry.acks {
            st.acked.insert_range(*s, *e);
        }
        st.total_bytes += encoded.len() as u64;
        st.records_since_sync += entry.records.len() as u64;
        if entry.lsn > 0 {
            // lsn 0: an entry of acknowledgements only, which needs no fsync and no replay.
            st.written_lsn = entry.lsn;
            st.pending_lsn = entry.lsn;
        }
        for (seq, _, topic, ..) in &entry.records {
            st.max_committed = st.max_committed.max(*seq);
            match st.topic_last.get_mut(topic) {
                Some(v) => *v = (*v).max(*seq),
                None => {
                    st.topic_last.insert(topic.clone(), *seq);
                }
            }
        }
        for (k, v) in &entry.kv {
            st.pending_kv.insert(k.clone(), v.clone());
        }
        if !st.unsynced.iter().any(|(id, _)| *id == active) {
            let f = st.segments.get(&active).map(|s| s.file.clone());
            if let Some(f) = f {
                st.unsynced.push((active, f));
            }
        }
        self.inner.stats.log_bytes.fetch_add(encoded.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn rotate(&self, st: &mut State) -> Result<(), StoreError> {
        let id = st.active + 1;
        let seg = create_segment(&*self.inner.fs, &st.wal, id)?;
        st.unsynced.push((id, seg.file.clone()));
        st.segments.insert(id, seg);
        st.active = id;
        Ok(())
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

    /// Copies the log's state changes into sled. `sync`: also make sled durable (needed before a
    /// segment whose state sled has not persisted is deleted).
    fn apply_to_sled(&self, st: &mut State, sync: bool) -> Result<(), StoreError> {
        let Some(tree) = st.tree.clone() else {
            return Err(StoreError::StateUnavailable);
        };
        let mut b = sled::Batch::default();
        for (k, v) in std::mem::take(&mut st.pending_kv) {
            b.insert(k, v);
        }
        b.insert(LSN_KEY, &st.pending_lsn.to_be_bytes());
        b.insert(NEXT_SEQ, &self.next_seq().to_be_bytes());
        b.insert(ACKED_KEY, st.acked.encode());
        match &st.episode {
            Some(ep) => b.insert(EPISODE_KEY, episode_json(ep).to_string().into_bytes()),
            None => b.remove(EPISODE_KEY),
        }
        let lsn = st.pending_lsn;
        let r = tree.apply_batch(b).and_then(|_| if sync { tree.flush().map(|_| ()) } else { Ok(()) });
        st.last_sled_apply = Instant::now();
        match r {
            Ok(()) => {
                if sync {
                    self.inner.fs.sled_flushed(&self.inner.dir);
                    st.sled_lsn_durable = lsn;
                }
                Ok(())
            }
            Err(e) => {
                // sled keeps failing after an I/O error (it remembers it globally): drop it and
                // reopen later (`maintain`). The log still has everything, and is replayed at reopen.
                tracing::error!(error = %e, "the state database failed; it will be reopened");
                st.tree = None;
                st.db = None;
                st.sled_broken_since = Some(Instant::now());
                Err(StoreError::Sled(e))
            }
        }
    }

    /// Deletes segments whose records are all acknowledged.
    fn collect_garbage(&self, st: &mut State) -> Result<(), StoreError> {
        let done: Vec<u64> = st
            .segments
            .values()
            .filter(|s| s.id != st.active && s.unacked() == 0 && s.max_lsn <= st.synced_lsn)
            .map(|s| s.id)
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        self.before_removing(st, &done, false)?;
        for id in done {
            self.remove_segment(st, id);
        }
        Ok(())
    }

    /// Before a segment goes: its state must be durable in sled, and its seqs below the floor.
    /// When sled cannot be synced (a full disk) the segment goes anyway if `forced`: its state is still
    /// in memory and reaches sled when it can write again; only a crash before that loses it (frame
    /// counters one step older, logged at the next start). Not being able to accept anything would be
    /// worse.
    fn before_removing(&self, st: &mut State, ids: &[u64], forced: bool) -> Result<(), StoreError> {
        let max_lsn = ids.iter().filter_map(|id| st.segments.get(id)).map(|s| s.max_lsn).max().unwrap_or(0);
        if max_lsn > st.sled_lsn_durable {
            if let Err(e) = self.apply_to_sled(st, true) {
                if !forced {
                    return Err(e);
                }
                tracing::warn!(error = %e, "state not yet durable in sled; dropping the segment anyway (disk full)");
            }
        }
        write_seq_floor(&self.inner.dir, &*self.inner.fs, self.next_seq())
    }

    fn remove_segment(&self, st: &mut State, id: u64) {
        if let Some(seg) = st.segments.remove(&id) {
            st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
            st.unsynced.retain(|(i, _)| *i != id);
            st.read_hints.retain(|(s, ..)| *s != id);
            // The deletion is made durable too: a segment that comes back after a power cut brings
            // back records that were acknowledged or counted as dropped.
            if let Err(e) = self.inner.fs.remove_file(&seg.path).and_then(|_| self.inner.fs.sync_dir(&st.wal)) {
                tracing::warn!(error = %e, segment = %seg.path.display(), "removing an outbox segment failed");
            }
        }
        if let Some(first) = st.segments.values().find_map(|s| s.first_seq) {
            st.acked.prune_below(first);
            st.topic_last.retain(|_, last| *last >= first);
        }
    }

    /// Drops oldest records until `need` bytes are free: first readings (segments are deleted, or
    /// rewritten keeping their other records), then, if that is not enough, the other records.
    fn drop_oldest(
        &self,
        st: &mut State,
        need: u64,
        reason: &'static str,
        report: &mut CommitReport,
    ) -> Result<(), StoreError> {
        let freed = self.drop_oldest_readings_only(st, need, reason, report)?;
        if freed >= need {
            return Ok(());
        }
        let mut freed = freed;
        let ids: Vec<u64> = st.segments.keys().copied().filter(|id| *id != st.active).collect();
        for id in ids {
            if freed >= need {
                break;
            }
            let Some(seg) = st.segments.get(&id) else { continue };
            let (bytes, others) = (seg.bytes, seg.unacked_others);
            self.before_removing(st, &[id], reason == "disk_full")?;
            let (first, last) = self.unacked_range(st, id);
            self.remove_segment(st, id);
            freed += bytes;
            report.others_dropped += others;
            self.note_drop(st, 0, others, reason, first, last);
        }
        Ok(())
    }

    /// Drops the oldest readings (never other records) until `need` bytes are free; returns the bytes
    /// freed.
    fn drop_oldest_readings_only(
        &self,
        st: &mut State,
        need: u64,
        reason: &'static str,
        report: &mut CommitReport,
    ) -> Result<u64, StoreError> {
        let mut freed = 0;
        let ids: Vec<u64> = st.segments.keys().copied().filter(|id| *id != st.active).collect();
        for id in ids {
            if freed >= need {
                break;
            }
            let Some(seg) = st.segments.get(&id) else { continue };
            let (bytes, readings, others) = (seg.bytes, seg.unacked_readings, seg.unacked_others);
            if readings == 0 && others > 0 {
                continue; // only records that outrank readings left here
            }
            self.before_removing(st, &[id], reason == "disk_full")?;
            let (first, last) = self.unacked_range(st, id);
            if others == 0 {
                self.remove_segment(st, id);
                freed += bytes;
            } else {
                match self.rewrite_keeping_others(st, id) {
                    Ok(after) => freed += bytes.saturating_sub(after),
                    Err(e) => {
                        // No room even for the survivors (a full disk): leave this one, try the next.
                        tracing::warn!(error = %e, "could not rewrite an outbox segment without its readings");
                        continue;
                    }
                }
            }
            if readings > 0 {
                report.readings_dropped += readings;
                self.note_drop(st, readings, 0, reason, first, last);
            }
        }
        Ok(freed)
    }

    /// The smallest and largest unacknowledged seq of a segment (for the event).
    fn unacked_range(&self, st: &State, id: u64) -> (u64, u64) {
        let Some(seg) = st.segments.get(&id) else { return (0, 0) };
        let first = seg.first_seq.unwrap_or(0);
        (first, seg.last_seq)
    }

    /// Replaces a segment by one holding only its unacknowledged non-reading records. Returns the new
    /// size.
    fn rewrite_keeping_others(&self, st: &mut State, id: u64) -> Result<u64, StoreError> {
        let Some(seg) = st.segments.get(&id) else { return Ok(0) };
        let keep: Vec<u64> = seg.others.iter().copied().filter(|s| !st.acked.contains(*s)).collect();
        let mut kept = Vec::new();
        let mut off = 0;
        let mut newest = 0;
        while let Ok(Some((e, next))) = read_entry(&*seg.file, off, seg.bytes) {
            newest = newest.max(e.time_ms);
            for r in e.records {
                if keep.contains(&r.0) {
                    kept.push(r);
                }
            }
            off = next;
        }
        let entry = Entry { lsn: seg.max_lsn, time_ms: newest, records: kept, kv: Vec::new(), acks: Vec::new() };
        let encoded = encode_entry(&entry);
        let tmp = seg.path.with_extension("tmp");
        let path = seg.path.clone();
        let old_bytes = seg.bytes;
        let fs = &*self.inner.fs;
        let f = (|| {
            let f = fs.create(&tmp)?;
            f.write_all_at(&encoded, 0)?;
            f.sync_data()?;
            fs.rename(&tmp, &path)?;
            // Until the directory is synced, a power cut could bring the old segment back.
            fs.sync_dir(&st.wal)?;
            Ok::<FileRef, std::io::Error>(f)
        })()
        .map_err(io_err(format!("rewriting {}", path.display())))?;
        let mut new = Segment::new(id, path, f);
        let acked = std::mem::take(&mut st.acked);
        new.add(&entry, 0, encoded.len() as u64, &acked);
        st.acked = acked;
        st.total_bytes = st.total_bytes.saturating_sub(old_bytes) + new.bytes;
        st.read_hints.retain(|(s, ..)| *s != id);
        let size = new.bytes;
        st.segments.insert(id, new);
        Ok(size)
    }

    /// drop-newest: takes the readings out of an entry about to be written; returns how many.
    fn drop_new_readings(&self, st: &mut State, entry: &mut Entry, reason: &'static str) -> u64 {
        let before = entry.records.len();
        let (mut first, mut last) = (u64::MAX, 0);
        entry.records.retain(|r| {
            if r.1 == RecordKind::Reading {
                first = first.min(r.0);
                last = last.max(r.0);
                false
            } else {
                true
            }
        });
        let n = (before - entry.records.len()) as u64;
        if n > 0 {
            self.note_drop(st, n, 0, reason, first, last);
            // The refused seqs are not in the log, but they were handed out (and the drop event names
            // them): the entry says where seqs continue, so a power cut cannot bring them back.
            entry.kv.push((NEXT_SEQ.to_vec(), (last + 1).to_be_bytes().to_vec()));
        }
        n
    }

    /// Drops records older than `max_age_s` (whole segments; records of every kind).
    fn enforce_age(&self, st: &mut State, now: u64, report: &mut CommitReport) -> Result<(), StoreError> {
        let Some(age) = self.inner.opts.max_age_s else { return Ok(()) };
        let limit = now.saturating_sub(age.saturating_mul(1000));
        let old: Vec<u64> = st
            .segments
            .values()
            .filter(|s| s.id != st.active && s.unacked() > 0 && s.newest_ms < limit)
            .map(|s| s.id)
            .collect();
        for id in old {
            let Some(seg) = st.segments.get(&id) else { continue };
            let (r, o) = (seg.unacked_readings, seg.unacked_others);
            self.before_removing(st, &[id], false)?;
            let (first, last) = self.unacked_range(st, id);
            self.remove_segment(st, id);
            report.readings_dropped += r;
            report.others_dropped += o;
            self.note_drop(st, r, o, "max_age", first, last);
        }
        Ok(())
    }

    fn note_drop(&self, st: &mut State, readings: u64, others: u64, reason: &'static str, first: u64, last: u64) {
        if readings + others == 0 {
            return;
        }
        self.inner.stats.readings_dropped.fetch_add(readings, Ordering::Relaxed);
        self.inner.stats.others_dropped.fetch_add(others, Ordering::Relaxed);
        let ep = st.episode.get_or_insert_with(|| {
            self.inner.stats.drop_episodes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason, policy = ?self.inner.opts.policy,
                "buffer bound reached: dropping records (counted; announced when the episode ends)");
            Episode {
                started_ms: now_ms(),
                readings: 0,
                others: 0,
                reasons: BTreeMap::new(),
                first_seq: first,
                last_seq: last,
                last_drop: Instant::now(),
            }
        });
        ep.readings += readings;
        ep.others += others;
        *ep.reasons.entry(reason).or_default() += readings + others;
        ep.first_seq = ep.first_seq.min(first);
        ep.last_seq = ep.last_seq.max(last);
        ep.last_drop = Instant::now();
    }

    /// Housekeeping, called about every 200 ms by the pipeline (the outbox's one writer): logs
    /// acknowledgements, deletes acknowledged segments, applies `max_age_s`, copies state to sled,
    /// reopens sled after a failure, and ends a drop episode that has been quiet for
    /// [`EPISODE_QUIET`]: its announcement is returned, for the caller to journal with a seq it
    /// allocates (the store never allocates a seq behind the writer's back).
    pub fn maintain(&self) -> Result<Option<DropAnnouncement>, StoreError> {
        let mut st = self.lock();
        if st.tree.is_none() && st.sled_broken_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(2)) {
            self.reopen_sled(&mut st);
        }
        let mut report = CommitReport::default();
        self.enforce_age(&mut st, now_ms(), &mut report)?;
        if !st.pending_acks.is_empty() {
            let mut entry = self.entry_for(&mut st, &mut Batch::default(), now_ms());
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
        if st.tree.is_some() && st.last_sled_apply.elapsed() >= SLED_APPLY_EVERY {
            let _ = self.apply_to_sled(&mut st, false);
        }
        if st.tree.is_some() {
            if let Err(e) = self.collect_garbage(&mut st) {
                tracing::debug!(error = %e, "removing acknowledged segments failed; will retry");
            }
        }
        let quiet = st.episode.as_ref().is_some_and(|e| e.last_drop.elapsed() >= EPISODE_QUIET);
        if quiet {
            if let Some(ep) = st.episode.take() {
                return Ok(Some(self.announcement(&ep)));
            }
        }
        Ok(None)
    }

    fn reopen_sled(&self, st: &mut State) {
        match open_sled(&self.inner.dir, self.inner.opts.cache_bytes, &*self.inner.fs) {
            SledOpen::Ok(db, tree) => {
                tracing::info!("the state database is back");
                // Everything since what sled made durable is replayed from the log.
                let from = tree.get(LSN_KEY).ok().flatten().and_then(|v| be_u64(&v)).unwrap_or(0);
                for seg in st.segments.values() {
                    let mut off = 0;
                    while let Ok(Some((e, next))) = read_entry(&*seg.file, off, seg.bytes) {
                        if e.lsn > from {
                            for (k, v) in e.kv {
                                st.pending_kv.entry(k).or_insert(v);
                            }
                        }
                        off = next;
                    }
                }
                st.db = Some(db);
                st.tree = Some(tree);
                st.sled_broken_since = None;
                st.sled_lsn_durable = from;
                let _ = self.apply_to_sled(st, true);
            }
            SledOpen::Damaged(why) | SledOpen::Failed(StoreError::Io { what: why, .. }) => {
                tracing::warn!(reason = %why, "the state database cannot be reopened yet");
                st.sled_broken_since = Some(Instant::now());
            }
            SledOpen::Failed(e) => {
                tracing::warn!(error = %e, "the state database cannot be reopened yet");
                st.sled_broken_since = Some(Instant::now());
            }
        }
    }

    /// The one event of a finished drop episode (its seq is filled in by the writer).
    fn announcement(&self, ep: &Episode) -> DropAnnouncement {
        let mut j = episode_json(ep);
        j["seq"] = 0.into();
        j["device"] = self.inner.opts.gateway_id.clone().into();
        j["at"] = crate::reading::rfc3339(chrono::Utc::now()).into();
        j["event"] = "buffer_dropped".into();
        j["policy"] = match self.inner.opts.policy {
            DropPolicy::DropOldest => "drop-oldest",
            DropPolicy::DropNewest => "drop-newest",
        }
        .into();
        j["ended_at"] = j["at"].clone();
        tracing::warn!(readings = ep.readings, others = ep.others, "buffer drop episode ended: announced as an event");
        DropAnnouncement { topic_suffix: format!("event/{}", self.inner.opts.gateway_id), json: j }
    }

    fn read_state<T>(&self, f: impl FnOnce(&sled::Tree) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut st = self.lock();
        if !st.pending_kv.is_empty() {
            self.apply_to_sled(&mut st, false)?;
        }
        let tree = st.tree.clone().ok_or(StoreError::StateUnavailable)?;
        drop(st);
        f(&tree)
    }

    /// Last accepted frame counter per device, to restore the LoRaWAN sessions at start.
    pub fn fcnts(&self) -> Result<HashMap<String, u32>, StoreError> {
        self.read_state(|tree| {
            let mut out = HashMap::new();
            for item in tree.scan_prefix(FCNT_PREFIX) {
                let (k, v) = item?;
                let name = String::from_utf8_lossy(&k[FCNT_PREFIX.len()..]).into_owned();
                if let Ok(b) = <[u8; 4]>::try_from(v.as_ref()) {
                    out.insert(name, u32::from_be_bytes(b));
                }
            }
            Ok(out)
        })
    }

    /// Next FCntDown per device.
    pub fn fcnts_down(&self) -> Result<HashMap<String, u32>, StoreError> {
        self.read_state(|tree| {
            let mut out = HashMap::new();
            for item in tree.scan_prefix(FCNT_DOWN_PREFIX) {
                let (k, v) = item?;
                if let Ok(b) = <[u8; 4]>::try_from(v.as_ref()) {
                    out.insert(
                        String::from_utf8_lossy(&k[FCNT_DOWN_PREFIX.len()..]).into_owned(),
                        u32::from_be_bytes(b),
                    );
                }
            }
            Ok(out)
        })
    }

    /// Used DevNonces per DevEUI.
    pub fn dev_nonces(&self) -> Result<HashMap<Eui64, Vec<u16>>, StoreError> {
        self.read_state(|tree| {
            let mut out: HashMap<Eui64, Vec<u16>> = HashMap::new();
            for item in tree.scan_prefix(NONCE_PREFIX) {
                let (k, _) = item?;
                let rest = &k[NONCE_PREFIX.len()..];
                let (Some(eui), Some(nonce)) = (rest.get(0..8), rest.get(8..10)) else { continue };
                let (Ok(eui), Ok(nonce)) = (<[u8; 8]>::try_from(eui), <[u8; 2]>::try_from(nonce)) else { continue };
                out.entry(Eui64(u64::from_be_bytes(eui))).or_default().push(u16::from_be_bytes(nonce));
            }
            Ok(out)
        })
    }

    /// The next JoinNonce (0 on a new store).
    pub fn join_nonce(&self) -> Result<u32, StoreError> {
        self.read_state(|tree| {
            Ok(tree.get(JOIN_NONCE)?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map_or(0, u32::from_be_bytes))
        })
    }

    /// Remembers an accepted command id until `forget_after_ms` (replay protection across restarts).
    /// Durable after the next [`Store::flush`].
    pub fn remember_command(&self, id: &str, forget_after_ms: i64) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.kv.push((prefixed(COMMAND_PREFIX, id.as_bytes()), forget_after_ms.to_be_bytes().to_vec()));
        self.commit(b)
    }

    /// Accepted command ids with their forget-after time (ms); expired ones are deleted on the way.
    pub fn commands_seen(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.read_state(|tree| {
            let mut out = Vec::new();
            for item in tree.scan_prefix(COMMAND_PREFIX) {
                let (k, v) = item?;
                let Ok(b) = <[u8; 8]>::try_from(v.as_ref()) else { continue };
                let until = i64::from_be_bytes(b);
                if until < now_ms {
                    tree.remove(&k)?;
                    continue;
                }
                out.push((String::from_utf8_lossy(&k[COMMAND_PREFIX.len()..]).into_owned(), until));
            }
            Ok(out)
        })
    }

    /// Devices added or changed remotely (`device.upsert`), as the JSON of their config table.
    pub fn remote_devices(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read_state(|tree| {
            let mut out = Vec::new();
            for item in tree.scan_prefix(REMOTE_DEVICE_PREFIX) {
                let (k, v) = item?;
                out.push((String::from_utf8_lossy(&k[REMOTE_DEVICE_PREFIX.len()..]).into_owned(), v.to_vec()));
            }
            Ok(out)
        })
    }

    /// Stores (Some) or deletes (None) a remote device; a deleted device is remembered as an empty
    /// value so that it stays removed even if the config file still lists it. Durable after the next
    /// [`Store::flush`].
    pub fn set_remote_device(&self, name: &str, json: Option<&[u8]>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.kv.push((prefixed(REMOTE_DEVICE_PREFIX, name.as_bytes()), json.unwrap_or(&[]).to_vec()));
        self.commit(b)
    }

    /// Age of the oldest unacknowledged record, from the time it was journaled.
    pub fn oldest_record_age_s(&self, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
        let st = self.lock();
        let seg = st.segments.values().find(|s| s.unacked() > 0)?;
        let t = seg.first_ms;
        let now = u64::try_from(now.timestamp_millis()).ok()?;
        Some(now.saturating_sub(t) as f64 / 1000.0)
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

    /// The highest seq committed to the outbox *and made durable* (fsynced) so far, without taking
    /// the lock. Readers never see a record above it: [`Store::read_range`] stops there.
    pub fn max_committed(&self) -> u64 {
        self.inner.durable_seq.load(Ordering::Acquire)
    }

    /// Bytes of the outbox log (what `max_bytes` bounds).
    pub fn log_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Up to `max` unacknowledged outbox records with `seq >= from`, oldest first.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, StoreError> {
        self.read_range(from, u64::MAX, max, |_| true)
    }

    /// Up to `max` unacknowledged records with `from <= seq < until` that `want` accepts, oldest
    /// first. Records `want` refuses are skipped (and do not count against `max`). Only durable
    /// records are read (`seq <= max_committed()`): what was committed but not yet flushed waits.
    pub fn read_range(
        &self,
        from: u64,
        until: u64,
        max: usize,
        mut want: impl FnMut(&Record) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut st = self.lock();
        let until = until.min(st.durable_seq.saturating_add(1));
        if max == 0 || from >= until {
            return Ok(out);
        }
        let ids: Vec<u64> =
            st.segments.values().filter(|s| s.first_seq.is_some() && s.last_seq >= from).map(|s| s.id).collect();
        for id in ids {
            let Some(seg) = st.segments.get(&id) else { continue };
            if seg.first_seq.is_some_and(|f| f >= until) {
                break;
            }
            let (file, len) = (seg.file.clone(), seg.bytes);
            // Start at the closest known position at or before `from`.
            let mut off = seg.index.iter().rev().find(|(s, _)| *s <= from).map_or(0, |(_, o)| *o);
            if let Some((_, o, _)) = st.read_hints.iter().find(|(sid, o, s)| *sid == id && *s <= from && *o >= off) {
                off = *o;
            }
            loop {
                let (e, next) = match read_entry(&*file, off, len) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(()) => {
                        tracing::error!(
                            segment = id,
                            offset = off,
                            "outbox entry unreadable while publishing; skipped"
                        );
                        break;
                    }
                };
                let first = e.records.first().map(|r| r.0);
                let mut full = false;
                for (seq, _kind, topic, fmt, payload) in e.records {
                    if seq < from || st.acked.contains(seq) {
                        continue;
                    }
                    if seq >= until {
                        full = true;
                        break;
                    }
                    let Some(payload) = codec::expand(fmt, &payload) else {
                        tracing::warn!(seq, "outbox record unreadable, skipped");
                        continue;
                    };
                    let r = Record { seq, topic_suffix: topic, payload };
                    if want(&r) {
                        out.push(r);
                        if out.len() >= max {
                            full = true;
                        }
                    }
                }
                if full {
                    if let Some(first) = first {
                        remember_hint(&mut st.read_hints, id, off, first);
                    }
                    return Ok(out);
                }
                off = next;
            }
        }
        Ok(out)
    }

    /// Marks records as acknowledged by the broker. They leave the disk with their segment.
    pub fn ack(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut st = self.lock();
        for &seq in seqs {
            let Some(id) = st.segments.values().rev().find(|s| s.holds(seq)).map(|s| s.id) else { continue };
            if !st.acked.insert(seq) {
                continue;
            }
            st.pending_acks.push(seq);
            if let Some(seg) = st.segments.get_mut(&id) {
                if seg.others.contains(&seq) {
                    seg.unacked_others = seg.unacked_others.saturating_sub(1);
                } else {
                    seg.unacked_readings = seg.unacked_readings.saturating_sub(1);
                }
            }
        }
        Ok(())
    }

    /// Number of records waiting in the outbox.
    pub fn depth(&self) -> usize {
        self.lock().segments.values().map(|s| s.unacked() as usize).sum()
    }

    /// The smallest seq still waiting in the outbox (approximately: the first seq of the oldest
    /// segment with unacknowledged records).
    pub fn oldest(&self) -> Option<u64> {
        let st = self.lock();
        st.segments.values().find(|s| s.unacked() > 0).and_then(|s| s.first_seq)
    }

    /// The highest durable seq ([`Store::max_committed`]) and, for each topic, the highest seq
    /// journaled on it that may still wait in the outbox, taken together. The uplink takes this
    /// snapshot when it connects, to keep each device's order while it drains the backlog.
    pub fn outbox_snapshot(&self) -> (u64, HashMap<String, u64>) {
        let st = self.lock();
        (st.durable_seq, st.topic_last.clone())
    }
}

fn remember_hint(hints: &mut Vec<(u64, u64, u64)>, seg: u64, off: u64, first: u64) {
    hints.retain(|(s, o, _)| !(*s == seg && *o == off));
    hints.push((seg, off, first));
    if hints.len() > 4 {
        hints.remove(0);
    }
}

fn is_enospc(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if source.raw_os_error() == Some(ENOSPC))
        || matches!(e, StoreError::DiskFull(_))
}

fn ack_ranges(mut seqs: Vec<u64>) -> Vec<(u64, u64)> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some((_, e)) if *e + 1 == s => *e = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn episode_json(ep: &Episode) -> serde_json::Value {
    serde_json::json!({
        "started_ms": ep.started_ms,
        "started_at": chrono::DateTime::from_timestamp_millis(ep.started_ms as i64).map(crate::reading::rfc3339),
        "readings": ep.readings,
        "readings_dropped": ep.readings,
        "others_dropped": ep.others,
        "others": ep.others,
        "reasons": ep.reasons,
        "first_seq": ep.first_seq,
        "last_seq": ep.last_seq,
    })
}

#[cfg(test)]
mod powercut_tests;
#[cfg(test)]
mod tests;
