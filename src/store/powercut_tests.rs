//! Power cuts at thousands of random points (seeded, reproducible) under a mixed workload, on the
//! simulated file system (`sim_fs.rs`). At each cut the store is reopened from what was durable and
//! checked:
//! - it always opens, and finds no damage;
//! - nothing acknowledged as durable (committed, then flushed) is lost, unless it was acknowledged
//!   by PUBACK or dropped by the bound (and every drop was counted);
//! - every record a reader could see is still there (readers see only durable records), and no
//!   `seq` is handed out twice: new seqs are above every seq a reader could have seen;
//! - no frame counter (FCntUp, FCntDown, JoinNonce) moves back from its last flushed value; flushed
//!   DevNonces and sessions are there; the control loops' state comes back whole (all the parts of
//!   one save, never a mix of two);
//! - each durability mode keeps its promise (`district_core::durability`, driven in simulated time
//!   as the pipeline drives it): in commit mode nothing acknowledged is lost; in interval mode
//!   nothing accepted more than the window before the cut is lost.
//!
//! `DG_POWERCUT_CUTS` sets the number of cuts (default 5,000: ~30 s on two cores), `DG_POWERCUT_SEED` the base seed;
//! a failure prints the seed of its run, and `DG_POWERCUT_RUN_SEED=<seed>` repeats that run alone.
//! `DG_POWERCUT_NO_DIR_SYNC=1` turns directory fsyncs into no-ops (to see what they are for).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::log_format::read_entry;
use super::sim_fs::SimFs;
use super::state::{FCNT_DOWN_PREFIX, FCNT_PREFIX, JOIN_NONCE, NONCE_PREFIX, SESSION_PREFIX};
use super::*;
use crate::durability::{Durability, SyncPolicy};
use crate::keys::Eui64;

/// SplitMix64: small, seedable, good enough to pick cut points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// What the test knows: what was promised, and what may or may not have survived.
#[derive(Default)]
struct Model {
    payloads: HashMap<u64, (Topic, Vec<u8>)>,
    /// Committed, not yet flushed: may or may not survive a cut (in interval mode: only if accepted
    /// within the window before it).
    committed: BTreeSet<u64>,
    /// When each seq was committed (accepted, in interval mode), in simulated ms.
    accepted_at: HashMap<u64, u64>,
    /// Committed and then flushed: must survive (unless acked or dropped).
    durable: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    dropped: BTreeSet<u64>,
    /// Every seq a reader has seen.
    seen: BTreeSet<u64>,
    /// Published, PUBACK still to come.
    inflight: Vec<u64>,
    /// Frame counters etc. as last flushed, and as committed since (in order).
    fcnt_up: HashMap<String, u32>,
    fcnt_down: HashMap<String, u32>,
    join_nonce: u32,
    nonces: BTreeSet<(u64, u16)>,
    sessions: HashMap<String, [u8; 4]>,
    /// The control loops' state (a number, as text) as last flushed.
    loops: u32,
    pending: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Generators: the next value to commit.
    gen_up: HashMap<String, u32>,
    gen_down: HashMap<String, u32>,
    gen_join: u32,
    gen_nonce: u16,
    gen_session: u32,
    gen_loops: u32,
}

const DEVICES: [&str; 4] = ["d0", "d1", "d2", "d3"];

impl Model {
    fn flushed(&mut self) {
        let committed = std::mem::take(&mut self.committed);
        self.durable.extend(committed);
        for kv in std::mem::take(&mut self.pending) {
            for (k, v) in kv {
                self.apply_kv(&k, &v);
            }
        }
    }
    fn apply_kv(&mut self, k: &[u8], v: &[u8]) {
        let name = |p: &[u8]| String::from_utf8_lossy(&k[p.len()..]).into_owned();
        let u32v = || v.try_into().map(u32::from_be_bytes).unwrap_or(0);
        if k.starts_with(FCNT_PREFIX) {
            self.fcnt_up.insert(name(FCNT_PREFIX), u32v());
        } else if k.starts_with(FCNT_DOWN_PREFIX) {
            self.fcnt_down.insert(name(FCNT_DOWN_PREFIX), u32v());
        } else if k.starts_with(SESSION_PREFIX) {
            if let Some(c) = super::device_state::decode_record(v).and_then(|r| r.current) {
                self.sessions.insert(name(SESSION_PREFIX), c.dev_addr.0.to_be_bytes());
            }
        } else if k.starts_with(NONCE_PREFIX) {
            let rest = &k[NONCE_PREFIX.len()..];
            if let (Ok(e), Ok(n)) = (<[u8; 8]>::try_from(&rest[0..8]), <[u8; 2]>::try_from(&rest[8..10])) {
                self.nonces.insert((u64::from_be_bytes(e), u16::from_be_bytes(n)));
            }
        } else if k == JOIN_NONCE {
            self.join_nonce = u32v();
        } else if k == b"l/root" {
            self.loops = loops_value(Some(v.to_vec()));
        }
    }
    /// Seqs that must be in the outbox after a cut.
    fn must_survive(&self) -> impl Iterator<Item = u64> + '_ {
        self.durable
            .iter()
            .chain(self.seen.iter())
            .copied()
            .filter(|s| !self.acked.contains(s) && !self.dropped.contains(s))
    }
}

/// The model's loops state: a number as text (0: none).
fn loops_value(v: Option<Vec<u8>>) -> u32 {
    v.and_then(|v| String::from_utf8(v).ok()?.parse().ok()).unwrap_or(0)
}

/// The loops state `n` in parts: `root` holds the number, and one or two device parts that come and
/// go with it (so a save also removes parts).
fn loops_parts(n: u32) -> BTreeMap<String, Vec<u8>> {
    let mut parts = BTreeMap::new();
    if n == 0 {
        return parts;
    }
    parts.insert("root".to_string(), n.to_string().into_bytes());
    parts.insert(format!("d/{}", n % 3), n.to_string().into_bytes());
    if n % 2 == 0 {
        parts.insert("d/even".to_string(), n.to_string().into_bytes());
    }
    parts
}

/// Every unacknowledged record in the log, durable or not (a test's view, past the watermark).
fn all_unacked(s: &Store) -> BTreeSet<u64> {
    let st = s.lock();
    let mut out = BTreeSet::new();
    for seg in st.segments.values() {
        let mut off = 0;
        while let Ok(Some((e, next))) = read_entry(&*seg.file, off, seg.bytes) {
            for r in &e.records {
                if !st.acked.contains(r.0) {
                    out.insert(r.0);
                }
            }
            off = next;
        }
    }
    out
}

/// Each segment's unacknowledged counts agree with its records (debugging aid, verbose mode).
fn counts_agree(s: &Store) -> Result<(), String> {
    let st = s.lock();
    for seg in st.segments.values() {
        let (mut r, mut o) = (0, 0);
        let mut off = 0;
        while let Ok(Some((e, next))) = read_entry(&*seg.file, off, seg.bytes) {
            for rec in &e.records {
                if !st.acked.contains(rec.0) {
                    if rec.1.kind() == RecordKind::Reading {
                        r += 1;
                    } else {
                        o += 1;
                    }
                }
            }
            off = next;
        }
        if (r, o) != (seg.unacked_readings, seg.unacked_others) {
            return Err(format!(
                "segment {} counts ({}, {}) unacked, holds ({r}, {o}); first {:?} last {}",
                seg.id, seg.unacked_readings, seg.unacked_others, seg.first_seq, seg.last_seq
            ));
        }
    }
    Ok(())
}

/// Commits, checking that every drop is counted: what left the outbox is exactly what the report
/// (or, when the power went during the commit, the store's counters) says. None: the commit failed.
fn commit_tracked(s: &Store, m: &mut Model, b: Batch, seqs: &[u64]) -> Result<Option<CommitReport>, String> {
    let before = all_unacked(s);
    let drops_before = s.drops();
    let r = s.commit_report(b, chrono::Utc::now());
    let after = all_unacked(s);
    let committed = r.is_ok();
    let gone: Vec<u64> =
        before.iter().chain(seqs.iter().filter(|_| committed)).copied().filter(|q| !after.contains(q)).collect();
    let n = match &r {
        Ok(rep) => rep.readings_dropped + rep.others_dropped,
        // The power went during the commit, maybe after the bound dropped records.
        Err(_) => s.drops() - drops_before,
    };
    // A failed commit may also have counted the new readings drop-newest refused before the write
    // failed (they were never stored, and the caller acknowledges nothing).
    let refused = if committed { 0 } else { seqs.len() as u64 };
    if !(gone.len() as u64..=gone.len() as u64 + refused).contains(&n) {
        return Err(format!("a commit counted {n} drops, but {} records left the outbox", gone.len()));
    }
    m.dropped.extend(gone);
    Ok(r.ok())
}

struct Run {
    seed: u64,
    rng: Rng,
    fs: SimFs,
    dir: tempfile::TempDir,
    opts: StoreOptions,
    m: Model,
    cuts: u64,
    log: Vec<String>,
    /// The durability policy under test, and the simulated clock it runs on (ms).
    policy: SyncPolicy,
    now_ms: u64,
}

type Check = Result<(), String>;

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = Rng(seed);
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("temp dir");
        let policy = if rng.percent(70) { DropPolicy::DropOldest } else { DropPolicy::DropNewest };
        let durability =
            if rng.percent(50) { Durability::Commit } else { Durability::Interval { window_ms: 50 + rng.below(5000) } };
        // As the daemon: interval mode pads each fsynced window to a page (segments of 4-16 KiB, so that
        // the padding fits and also ends segments).
        let pad_on_sync = matches!(durability, Durability::Interval { .. });
        let opts = StoreOptions {
            cache_bytes: 1 << 20,
            max_bytes: (16 + rng.below(48)) << 10,
            policy,
            gateway_id: "gw".into(),
            segment_bytes: Some(if pad_on_sync { 4096 << rng.below(3) } else { 4096 }),
            pad_on_sync,
            // As the daemon (half the runs): segments reserved whole at creation, read as zeros.
            preallocate: rng.percent(50),
            ..StoreOptions::default()
        };
        let fs = SimFs::new();
        if std::env::var("DG_POWERCUT_NO_DIR_SYNC").is_ok_and(|v| v == "1") {
            fs.set_ignore_dir_sync(true);
        }
        let policy = SyncPolicy::new(durability);
        Run { seed, rng, fs, dir, opts, m: Model::default(), cuts: 0, log: Vec::new(), policy, now_ms: 0 }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("store")
    }

    fn open(&mut self) -> Result<Store, String> {
        let s = Store::open_with_fs(&self.path(), self.opts.clone(), Arc::new(self.fs.clone()), chrono::Utc::now())
            .map_err(|e| format!("the store did not open: {e}"))?;
        if let Some((_, why)) = &s.open_report().damaged {
            return Err(format!("the store found damage after a power cut: {why}"));
        }
        Ok(s)
    }

    fn fail(&self, what: String) -> String {
        format!(
            "power-cut test failed: run seed {} (repeat: DG_POWERCUT_RUN_SEED={} cargo test --release --lib \
             store::powercut_tests), cut #{}: {what}\nlast steps: {:?}",
            self.seed,
            self.seed,
            self.cuts,
            self.log
                .iter()
                .rev()
                .take(if std::env::var("DG_POWERCUT_VERBOSE").is_ok() { usize::MAX } else { 12 })
                .rev()
                .collect::<Vec<_>>()
        )
    }

    /// One step of the workload. Err: a broken promise; Ok(false): an operation failed (the power
    /// went).
    fn step(&mut self, s: &Store) -> Result<bool, String> {
        let fsyncs = s.stats().fsyncs.load(std::sync::atomic::Ordering::SeqCst);
        let (committed, pending) = (self.m.committed.clone(), self.m.pending.len());
        let r = self.step_inner(s);
        // The store also fsyncs the log by itself (before sled is made durable, when a segment is
        // closed): what was committed before this step is durable then (what this step committed
        // may have gone into the next segment). The policy is not told, as in the pipeline: its
        // deadline stays, and brings one fsync more.
        if s.stats().fsyncs.load(std::sync::atomic::Ordering::SeqCst) > fsyncs {
            let m = &mut self.m;
            let now_durable: Vec<u64> = committed.intersection(&m.committed).copied().collect();
            for q in now_durable {
                m.committed.remove(&q);
                m.durable.insert(q);
            }
            let n = pending.min(m.pending.len());
            for kv in m.pending.drain(..n).collect::<Vec<_>>() {
                for (k, v) in kv {
                    m.apply_kv(&k, &v);
                }
            }
        }
        r
    }

    fn step_inner(&mut self, s: &Store) -> Result<bool, String> {
        // Time passes; the pipeline fsyncs when the policy's deadline comes.
        let dt = self.rng.below(400);
        if let Some(d) = self.policy.deadline_ms().filter(|d| *d <= self.now_ms + dt) {
            self.now_ms = self.now_ms.max(d);
            if s.flush_blocking().is_err() {
                return Ok(false);
            }
            self.policy.on_synced();
            self.log.push(format!("window flush at {} ms", self.now_ms));
            self.m.flushed();
            return Ok(!self.fs.crashed());
        }
        self.now_ms += dt;
        let r = self.rng.below(100);
        let m = &mut self.m;
        if r < 45 {
            // A group commit: records and state, usually flushed at once.
            let mut b = Batch::default();
            let mut kv = Vec::new();
            let mut seqs = Vec::new();
            for _ in 0..1 + self.rng.below(6) {
                let seq = s.allocate_seq();
                // Every kind of topic: each must come back as the same variant.
                let topic = match self.rng.below(14) {
                    0 => Topic::Event("bin-1".into()),
                    1 => Topic::Aggregate("d0".into()),
                    2 => Topic::Lighting("north".into()),
                    3 => Topic::DrStatus,
                    4 => Topic::CommandResult,
                    5 => Topic::Load("loads/hp-1".into()),
                    n => Topic::Reading(DEVICES[n as usize % 4].into()),
                };
                let pad = "p".repeat(self.rng.below(300) as usize);
                let payload = format!("{{\"seq\":{seq},\"pad\":\"{pad}\"}}").into_bytes();
                m.payloads.insert(seq, (topic.clone(), payload.clone()));
                b.push_record(Record::new(seq, topic, payload));
                seqs.push(seq);
            }
            let dev = DEVICES[self.rng.below(4) as usize];
            let up = m.gen_up.entry(dev.into()).or_insert(0);
            *up += 1 + self.rng.below(3) as u32;
            b.set_fcnt(dev, *up);
            if self.rng.percent(30) {
                let down = m.gen_down.entry(dev.into()).or_insert(0);
                *down += 1 + self.rng.below(2) as u32;
                b.set_fcnt_down(dev, *down);
            }
            if self.rng.percent(8) {
                m.gen_session += 1;
                let sess = crate::lorawan::lifecycle::SessionRecord {
                    current: Some(crate::lorawan::lifecycle::SessionId {
                        dev_addr: crate::keys::DevAddr(m.gen_session),
                        nwk_s_key: crate::keys::Key128::new([1; 16]),
                        app_s_key: crate::keys::Key128::new([2; 16]),
                    }),
                    retired: Vec::new(),
                };
                b.set_session_record(dev, &sess);
            }
            if self.rng.percent(8) {
                m.gen_nonce += 1;
                b.add_dev_nonce(Eui64(7), m.gen_nonce);
            }
            if self.rng.percent(5) {
                m.gen_join += 1;
                b.set_join_nonce(m.gen_join);
            }
            if self.rng.percent(10) {
                // The control loops' state, in parts: sometimes changed, sometimes the same again
                // (which writes nothing); parts come and go.
                if self.rng.percent(50) {
                    m.gen_loops += 1;
                }
                s.stage_loops_parts(&mut b, loops_parts(m.gen_loops));
            }
            kv.extend(b.kv.iter().cloned());
            let rep = match commit_tracked(s, m, b, &seqs)? {
                Some(r) => r,
                None => return Ok(false),
            };
            m.committed.extend(seqs.iter().copied());
            m.pending.push(kv);
            self.log.push(format!("commit {seqs:?} at {} ms dropped {rep:?}", self.now_ms));
            // As the pipeline does: the policy says whether to fsync before acknowledging (always
            // in commit mode; in interval mode when a downlink depends on it).
            if self.policy.on_commit(self.now_ms, self.rng.percent(10)) {
                if s.flush_blocking().is_err() {
                    return Ok(false); // not acknowledged
                }
                self.policy.on_synced();
                self.log.push("flush".into());
                m.flushed();
            }
            // Acknowledged now: accepted.
            m.accepted_at.extend(seqs.iter().map(|q| (*q, self.now_ms)));
        } else if r < 55 {
            // An fsync out of turn (a command id, the power-fail input, a clean stop).
            if s.flush_blocking().is_err() {
                return Ok(false);
            }
            self.policy.on_synced();
            self.log.push("flush".into());
            m.flushed();
        } else if r < 72 {
            // A reader (the uplink): sees only durable records; acknowledges some.
            let from = if self.rng.percent(50) { 0 } else { m.seen.iter().next_back().map_or(0, |s| s + 1) };
            let got = s.read_range(from, u64::MAX, 64, |_| true).map_err(|e| format!("read failed: {e}"))?;
            let wm = s.max_committed();
            for r in &got {
                if !m.durable.contains(&r.seq) {
                    return Err(format!("a reader saw seq {} before it was flushed (watermark {wm})", r.seq));
                }
                if m.payloads.get(&r.seq).is_some_and(|(t, p)| *t != r.topic || *p != r.payload) {
                    return Err(format!("seq {} read back different from what was committed", r.seq));
                }
                m.seen.insert(r.seq);
            }
            self.log.push(format!("read {:?}", got.iter().map(|r| r.seq).collect::<Vec<_>>()));
            // Published now: some PUBACKs come at once, some later (after more commits, drops and
            // housekeeping, as on a slow connection).
            let mut acks: Vec<u64> = Vec::new();
            for r in &got {
                match self.rng.below(10) {
                    0..=3 => acks.push(r.seq),
                    4..=6 => m.inflight.push(r.seq),
                    _ => {}
                }
            }
            if self.rng.percent(50) {
                acks.append(&mut m.inflight);
            }
            if !acks.is_empty() {
                s.ack(&acks).map_err(|e| format!("ack failed: {e}"))?;
                m.acked.extend(acks.iter().copied());
                self.log.push(format!("ack {acks:?}"));
            }
        } else if r < 90 {
            // Housekeeping; sometimes a drop episode ends (as if it had been quiet for long).
            if self.rng.percent(30) {
                if let Some(ep) = s.lock().episode.as_mut() {
                    ep.last_drop -= EPISODE_QUIET;
                }
            }
            let before = all_unacked(s);
            let a = match s.maintain(chrono::Utc::now()) {
                Ok(a) => a,
                Err(_) => return Ok(false),
            };
            if self.fs.crashed() {
                return Ok(false);
            }
            let after = all_unacked(s);
            if let Some(q) = before.iter().find(|q| !after.contains(q) && !m.acked.contains(q)) {
                return Err(format!("housekeeping removed seq {q}, which was neither acked nor dropped"));
            }
            self.log.push("maintain".into());
            if let Some(a) = a {
                let seq = s.allocate_seq();
                let rec = a.into_record(seq);
                let j: serde_json::Value = serde_json::from_slice(&rec.payload).map_err(|e| e.to_string())?;
                if j["event"] != "buffer_dropped" || j["seq"] != seq {
                    return Err(format!("a bad announcement: {j}"));
                }
                m.payloads.insert(seq, (rec.topic.clone(), rec.payload.clone()));
                let mut b = Batch::default();
                b.push_record(rec);
                if commit_tracked(s, m, b, &[seq])?.is_none() {
                    return Ok(false);
                }
                m.committed.insert(seq);
                m.pending.push(Vec::new());
                self.log.push(format!("announce {seq}"));
            }
        } else {
            // State copied into sled (sometimes made durable there).
            let sync = self.rng.percent(50);
            let mut st = s.lock();
            if s.apply_to_sled(&mut st, sync).is_err() {
                return Ok(false);
            }
            self.log.push(format!("sled apply sync={sync}"));
        }
        Ok(!self.fs.crashed())
    }

    /// After a cut: reopen, check every promise, and bring the model up to date.
    fn check(&mut self, s: &Store) -> Check {
        let m = &mut self.m;
        let present: BTreeMap<u64, Record> = s
            .read_from(0, usize::MAX)
            .map_err(|e| format!("reading the outbox after reopening: {e}"))?
            .into_iter()
            .map(|r| (r.seq, r))
            .collect();
        if let Some(q) = m.must_survive().find(|q| !present.contains_key(q)) {
            let how = if m.seen.contains(&q) { "seen by a reader" } else { "flushed" };
            return Err(format!("seq {q} ({how}, neither acked nor dropped) is lost after the cut"));
        }
        // The mode's window: what was accepted longer ago than that is there (or acked or dropped).
        let window = self.policy.window_ms();
        let cut_at = self.now_ms;
        if let Some(q) = m.committed.iter().find(|q| {
            !present.contains_key(q)
                && !m.acked.contains(q)
                && !m.dropped.contains(q)
                && m.accepted_at.get(q).is_some_and(|t| t + window < cut_at)
        }) {
            return Err(format!(
                "seq {q}, accepted at {} ms, is lost by a cut at {cut_at} ms: older than the {:?} window",
                m.accepted_at.get(q).copied().unwrap_or(0),
                self.policy.durability()
            ));
        }
        for (seq, r) in &present {
            match m.payloads.get(seq) {
                Some((t, p)) if *t == r.topic && *p == r.payload => {}
                Some(_) => return Err(format!("seq {seq} came back different")),
                None => return Err(format!("seq {seq} came back but was never committed")),
            }
        }
        let highest_seen = m.seen.iter().next_back().copied().unwrap_or(0);
        let highest_durable = m.durable.iter().next_back().copied().unwrap_or(0);
        let highest_present = present.keys().next_back().copied().unwrap_or(0);
        let next = s.next_seq();
        if next <= highest_seen.max(highest_durable).max(highest_present) {
            return Err(format!(
                "next seq {next} would hand out a seq again (seen up to {highest_seen}, flushed up to \
                 {highest_durable}, present up to {highest_present})"
            ));
        }
        let fmax = |m: &HashMap<String, u32>, d: &str| m.get(d).copied().unwrap_or(0);
        let up = s.fcnts().map_err(|e| e.to_string())?;
        let down = s.fcnts_down().map_err(|e| e.to_string())?;
        for d in DEVICES {
            let (got, want, gen) = (fmax(&up, d), fmax(&m.fcnt_up, d), fmax(&m.gen_up, d));
            if got < want || got > gen {
                return Err(format!("FCntUp of {d} is {got} after the cut; flushed {want}, committed up to {gen}"));
            }
            let (got, want, gen) = (fmax(&down, d), fmax(&m.fcnt_down, d), fmax(&m.gen_down, d));
            if got < want || got > gen {
                return Err(format!("FCntDown of {d} is {got} after the cut; flushed {want}, committed up to {gen}"));
            }
        }
        let jn = s.join_nonce().map_err(|e| e.to_string())?;
        if jn < m.join_nonce || jn > m.gen_join {
            return Err(format!("JoinNonce is {jn} after the cut; flushed {}", m.join_nonce));
        }
        let nonces: BTreeSet<(u64, u16)> = s
            .dev_nonces()
            .map_err(|e| e.to_string())?
            .into_iter()
            .flat_map(|(e, ns)| ns.into_iter().map(move |n| (e.0, n)))
            .collect();
        if let Some(n) = m.nonces.iter().find(|n| !nonces.contains(n)) {
            return Err(format!("DevNonce {n:?} was flushed but is forgotten after the cut"));
        }
        let sessions: HashMap<String, u32> = s
            .session_records()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|(d, r)| Some((d, r.current?.dev_addr.0)))
            .collect();
        for (d, a) in &m.sessions {
            let got = sessions.get(d).copied().unwrap_or(0);
            if got < u32::from_be_bytes(*a) {
                return Err(format!("the session of {d} went back after the cut"));
            }
        }
        let parts = s.loops_parts();
        let loops = loops_value(parts.get("root").cloned());
        if parts != loops_parts(loops) {
            return Err(format!("the loops state came back in pieces of different saves: {parts:?}"));
        }
        if loops < m.loops || loops > m.gen_loops {
            return Err(format!(
                "the loops state is {loops} after the cut; flushed {}, committed up to {}",
                m.loops, m.gen_loops
            ));
        }
        // What survived is durable now (the store syncs what it finds at open).
        m.durable.extend(present.keys().copied());
        m.committed.clear();
        m.accepted_at.clear();
        m.pending.clear();
        // After a restart nothing waits for an fsync (the open synced what it found).
        self.policy.on_synced();
        m.inflight.clear();
        for d in DEVICES {
            m.fcnt_up.insert(d.into(), fmax(&up, d));
            m.fcnt_down.insert(d.into(), fmax(&down, d));
            // Generators continue from what is there (a device never goes below its last value).
            let g = m.gen_up.entry(d.into()).or_insert(0);
            *g = (*g).max(fmax(&up, d));
        }
        m.join_nonce = jn;
        m.loops = loops;
        m.nonces = nonces;
        for (d, x) in sessions {
            m.sessions.insert(d, x.to_be_bytes());
        }
        Ok(())
    }

    /// Runs `cuts` power cuts on one store.
    fn run(&mut self, cuts: u64) -> Check {
        let mut s = self.open().map_err(|e| self.fail(e))?;
        while self.cuts < cuts {
            // Cut within the next few hundred file operations (sometimes at once, during the open
            // that follows the last cut's checks).
            let span = if self.rng.percent(10) { 8 } else { 300 };
            let n = 1 + self.rng.below(span);
            self.fs.cut_after(n);
            self.log.push(format!("-- cut after {n} ops"));
            let mut steps = 0;
            loop {
                let r = self.step(&s);
                if std::env::var("DG_POWERCUT_VERBOSE").is_ok() && !self.fs.crashed() {
                    counts_agree(&s).map_err(|e| self.fail(e))?;
                    let now = all_unacked(&s);
                    if let Some(q) = self.m.must_survive().find(|q| !now.contains(q)) {
                        return Err(self.fail(format!("seq {q} left the outbox in memory")));
                    }
                }
                match r {
                    Ok(true) if steps < 5_000 => steps += 1,
                    Ok(_) => break,
                    Err(e) => return Err(self.fail(e)),
                }
            }
            let pre = all_unacked(&s);
            PADDED.fetch_add(s.stats().padding_bytes.load(Relaxed), Relaxed);
            drop(s);
            self.cuts += 1;
            let mut rng = Rng(self.rng.next());
            self.fs.power_cut(&self.path(), &mut |n| rng.below(n)).map_err(|e| self.fail(e.to_string()))?;
            // The reopen itself may be cut (sometimes): then it is cut and reopened again.
            if self.rng.percent(10) {
                self.fs.cut_after(1 + self.rng.below(6));
                if let Ok(s) = self.open() {
                    drop(s);
                }
                let mut rng = Rng(self.rng.next());
                self.fs.power_cut(&self.path(), &mut |n| rng.below(n)).map_err(|e| self.fail(e.to_string()))?;
                // Nothing was promised during that open; what it carried over must still hold.
            }
            s = self.open().map_err(|e| self.fail(e))?;
            self.log.push("-- reopened".into());
            self.check(&s).map_err(|e| {
                let verbose = std::env::var("DG_POWERCUT_VERBOSE").is_ok();
                let e = if verbose { format!("{e}; in the outbox before the cut: {pre:?}") } else { e };
                self.fail(e)
            })?;
        }
        Ok(())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// Cuts per store (a run); runs are independent, seeded from the base seed.
const CUTS_PER_RUN: u64 = 40;

#[test]
fn power_cuts_lose_nothing_promised() {
    if let Some(seed) = env_u64("DG_POWERCUT_RUN_SEED") {
        let mut run = Run::new(seed);
        if let Err(e) = run.run(env_u64("DG_POWERCUT_CUTS").unwrap_or(CUTS_PER_RUN)) {
            panic!("{e}");
        }
        return;
    }
    let total = env_u64("DG_POWERCUT_CUTS").unwrap_or(5_000);
    let base = env_u64("DG_POWERCUT_SEED").unwrap_or(0x15_D15C);
    let runs = total.div_ceil(CUTS_PER_RUN);
    let started = std::time::Instant::now();
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs {
                    break;
                }
                let seed = Rng(base ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D)).next();
                let cuts = CUTS_PER_RUN.min(total - i * CUTS_PER_RUN);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Run::new(seed).run(cuts)));
                let r = r.unwrap_or_else(|_| Err(format!("panicked: run seed {seed} (DG_POWERCUT_RUN_SEED={seed})")));
                if let Err(e) = r {
                    failures.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!("power-cut test: {total} cuts in {runs} runs (base seed {base}), {:.1?}", started.elapsed());
    assert!(failures.is_empty(), "{} of {runs} runs failed; the first:\n{}", failures.len(), failures[0]);
    assert!(PADDED.load(Relaxed) > 0, "no run padded a window to a page: the padding was not exercised");
}

/// Padding bytes written over all runs (interval mode pads each fsynced window to a page).
static PADDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
