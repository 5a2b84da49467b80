//! The store's state in sled (`dir` itself is a sled database): frame counters, sessions, nonces,
//! accepted command ids, remote devices, the control loops' state, the acknowledged-seq set. State
//! changes travel in the log entry of their [`Batch`] (atomic with its records) and are kept in memory
//! until sled needs them: they are copied into sled (and sled flushed) only before a log segment that
//! carries them is deleted, at open, and when a reader asks (without a flush). sled runs without its
//! own flush timer: it writes to flash only when the store flushes it, once per deleted segment, so
//! an idle gateway writes nothing and a busy one writes its state once per segment, not per second.
//! At open, what sled had not made durable is replayed from the log (`m/lsn` says how far it got).
//!
//! | sled key                | value                                   |
//! |-------------------------|-----------------------------------------|
//! | `m/format`              | store format (u32 LE)                   |
//! | `m/lsn`                 | last log entry whose state is in sled   |
//! | `m/next_seq`            | a seq at or above every seq handed out  |
//! | `m/acked`               | acknowledged seqs (ranges)              |
//! | `m/episode`             | the running drop episode (JSON)         |
//! | `m/loops`               | the control loops' state (the pipeline's JSON) |
//! | `f/` + device name      | last accepted uplink FCnt (u32 BE)      |
//! | `d/` + device name      | next FCntDown (u32 BE)                  |
//! | `s/` + device name      | sessions: current + retired (`device_state.rs`) |
//! | `r/` + device name      | last-heard route: gateway EUI, source name |
//! | `a/` + device name      | MAC state: accepted settings, pending MAC requests (JSON) |
//! | `n/` + DevEUI + nonce   | a used DevNonce (empty value)           |
//! | `m/join_nonce`          | the next JoinNonce (u32 BE)             |
//! | `c/` + command id       | an accepted command: forget after (ms)  |
//! | `u/` + device name      | a device added by `device.upsert` (JSON)|
//!
//! Session keys live only here, in the data dir (mode 700, the daemon's user only).
//!
//! The control loops' state is written only when it changed (flash wear): a batch carrying the same
//! bytes as the last written state writes nothing. Older versions kept it in `loops.json` beside the
//! store; [`Store::adopt_loops_file`] takes that file over once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::fs::Fs;
use super::log_format::read_entry;
use super::{io_err, Batch, State, Store, StoreError};
use crate::keys::Eui64;

/// A file next to sled saying a store was created here: sled coming up empty then means damage.
pub(super) const MARKER: &str = "district-gateway-store";
/// How long an open waits for sled's lock: the previous store of this process (a reload, a restart
/// in tests) releases it only when sled's background threads have ended, shortly after the drop.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);
pub(super) const FORMAT_KEY: &[u8] = b"m/format";
pub(super) const LSN_KEY: &[u8] = b"m/lsn";
pub(super) const NEXT_SEQ: &[u8] = b"m/next_seq";
pub(super) const ACKED_KEY: &[u8] = b"m/acked";
pub(super) const EPISODE_KEY: &[u8] = b"m/episode";
pub(super) const LOOPS_KEY: &[u8] = b"m/loops";
/// A part of the control loops' state (`l/` + part name; an empty value: the part is gone).
pub(super) const LOOPS_PART_PREFIX: &[u8] = b"l/";

/// Whether a key holds (part of) the control loops' state.
pub(super) fn is_loops_key(k: &[u8]) -> bool {
    k == LOOPS_KEY || k.starts_with(LOOPS_PART_PREFIX)
}
pub(super) const FCNT_PREFIX: &[u8] = b"f/";
pub(super) const FCNT_DOWN_PREFIX: &[u8] = b"d/";
/// A multicast group's next frame counter (`g/` + group name).
pub(super) const MC_FCNT_DOWN_PREFIX: &[u8] = b"g/";
pub(super) const SESSION_PREFIX: &[u8] = b"s/";
pub(super) const NONCE_PREFIX: &[u8] = b"n/";
pub(super) const JOIN_NONCE: &[u8] = b"m/join_nonce";
pub(super) const COMMAND_PREFIX: &[u8] = b"c/";
pub(super) const REMOTE_DEVICE_PREFIX: &[u8] = b"u/";

pub(super) fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + rest.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(rest);
    k
}

pub(super) fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

impl Batch {
    pub fn set_fcnt(&mut self, device: &str, fcnt: u32) {
        self.kv.push((prefixed(FCNT_PREFIX, device.as_bytes()), fcnt.to_be_bytes().to_vec()));
    }
    pub fn set_fcnt_down(&mut self, device: &str, next: u32) {
        self.kv.push((prefixed(FCNT_DOWN_PREFIX, device.as_bytes()), next.to_be_bytes().to_vec()));
    }
    pub fn set_mc_fcnt_down(&mut self, group: &str, next: u32) {
        self.kv.push((prefixed(MC_FCNT_DOWN_PREFIX, group.as_bytes()), next.to_be_bytes().to_vec()));
    }
    pub fn add_dev_nonce(&mut self, dev_eui: Eui64, nonce: u16) {
        let mut rest = dev_eui.0.to_be_bytes().to_vec();
        rest.extend_from_slice(&nonce.to_be_bytes());
        self.kv.push((prefixed(NONCE_PREFIX, &rest), Vec::new()));
    }
    pub fn set_join_nonce(&mut self, next: u32) {
        self.kv.push((JOIN_NONCE.to_vec(), next.to_be_bytes().to_vec()));
    }
    /// The control loops' state (opaque bytes: the pipeline's JSON). Written only if it differs from
    /// the state last written: [`Store::commit`] leaves an unchanged state out (and writes nothing for
    /// a batch that had nothing else). See also [`Store::stage_loops_state`].
    pub fn set_loops_state(&mut self, bytes: Vec<u8>) {
        self.kv.push((LOOPS_KEY.to_vec(), bytes));
    }
}

/// Takes unchanged loops state (keys whose last value in the batch equals what was last written;
/// an absent key counts as written empty) out of a batch.
pub(super) fn drop_unchanged_loops_state(kv: &mut Vec<(Vec<u8>, Vec<u8>)>, written: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut last: HashMap<&[u8], &[u8]> = HashMap::new();
    for (k, v) in kv.iter().filter(|(k, _)| is_loops_key(k)) {
        last.insert(k, v);
    }
    let unchanged: Vec<Vec<u8>> = last
        .into_iter()
        .filter(|(k, v)| written.get(*k).map_or(v.is_empty(), |w| w.as_slice() == *v))
        .map(|(k, _)| k.to_vec())
        .collect();
    if !unchanged.is_empty() {
        kv.retain(|(k, _)| !unchanged.contains(k));
    }
}

impl Store {
    /// Copies the log's state changes into sled. `sync`: also make sled durable (needed before a
    /// segment whose state sled has not persisted is deleted).
    pub(super) fn apply_to_sled(&self, st: &mut State, sync: bool) -> Result<(), StoreError> {
        let Some(tree) = st.tree.clone() else {
            return Err(StoreError::StateUnavailable);
        };
        if sync {
            // sled must never be durable ahead of the log: its `m/lsn` would then cover log entries a
            // power cut can still take away (interval durability), and state written after the
            // reopen under those lsns would never be replayed into it. Rare: only before a segment
            // is deleted, and at open.
            self.sync_log_locked(st)?;
        }
        let mut b = sled::Batch::default();
        for (k, v) in std::mem::take(&mut st.pending_kv) {
            if v.is_empty() && is_loops_key(&k) {
                b.remove(k); // a part that is gone
            } else {
                b.insert(k, v);
            }
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

    /// Reopens sled after a failure (from `maintain`), replaying what it had not made durable.
    pub(super) fn reopen_sled(&self, st: &mut State) {
        match open_sled(&self.inner.dir, self.inner.opts.cache_bytes, &*self.inner.fs) {
            SledOpen::Ok(db, tree) => {
                tracing::info!("the state database is back");
                // Everything since what sled made durable is replayed from the log, in log order so
                // that the newest value of each key wins; then what was appended since the failure
                // (newer than, or the same as, the log's values).
                let from = tree.get(LSN_KEY).ok().flatten().and_then(|v| be_u64(&v)).unwrap_or(0);
                let mut replayed = BTreeMap::new();
                for seg in st.segments.values() {
                    let mut off = 0;
                    while let Ok(Some((e, next))) = read_entry(&*seg.file, off, seg.bytes) {
                        if e.lsn > from {
                            replayed.extend(e.kv);
                        }
                        off = next;
                    }
                }
                replayed.append(&mut st.pending_kv);
                st.pending_kv = replayed;
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

    pub(super) fn read_state<T>(&self, f: impl FnOnce(&sled::Tree) -> Result<T, StoreError>) -> Result<T, StoreError> {
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
        self.counters_under(FCNT_DOWN_PREFIX)
    }

    /// Next frame counter per multicast group.
    pub fn mc_fcnts_down(&self) -> Result<HashMap<String, u32>, StoreError> {
        self.counters_under(MC_FCNT_DOWN_PREFIX)
    }

    /// The 32-bit counters stored under `prefix` + name, by name.
    fn counters_under(&self, prefix: &[u8]) -> Result<HashMap<String, u32>, StoreError> {
        self.read_state(|tree| {
            let mut out = HashMap::new();
            for item in tree.scan_prefix(prefix) {
                let (k, v) = item?;
                if let Ok(b) = <[u8; 4]>::try_from(v.as_ref()) {
                    out.insert(String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), u32::from_be_bytes(b));
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
    /// Durable after the next [`Store::flush`]. `now`: the caller's clock, as for [`Store::commit`].
    pub fn remember_command(&self, id: &str, forget_after_ms: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.kv.push((prefixed(COMMAND_PREFIX, id.as_bytes()), forget_after_ms.to_be_bytes().to_vec()));
        self.commit(b, now)
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
    /// [`Store::flush`]. `now`: the caller's clock, as for [`Store::commit`].
    pub fn set_remote_device(&self, name: &str, json: Option<&[u8]>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.kv.push((prefixed(REMOTE_DEVICE_PREFIX, name.as_bytes()), json.unwrap_or(&[]).to_vec()));
        self.commit(b, now)
    }

    /// The control loops' saved state as one blob (the bytes last committed with
    /// [`Batch::set_loops_state`]; versions before the state was saved in parts wrote only this), if
    /// any. Kept in memory since the open: reading it costs no I/O.
    pub fn loops_state(&self) -> Option<Vec<u8>> {
        self.lock().loops_written.get(LOOPS_KEY).filter(|v| !v.is_empty()).cloned()
    }

    /// The control loops' saved state in parts (name → bytes, as staged with
    /// [`Store::stage_loops_parts`]); empty when none was saved that way. No I/O.
    pub fn loops_parts(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock()
            .loops_written
            .iter()
            .filter(|(k, v)| k.starts_with(LOOPS_PART_PREFIX) && !v.is_empty())
            .map(|(k, v)| (String::from_utf8_lossy(&k[LOOPS_PART_PREFIX.len()..]).into_owned(), v.clone()))
            .collect()
    }

    /// Adds to `batch` the parts of the control loops' state that differ from what was last written,
    /// and removes the parts that are gone (and a whole-blob state of an older version). Returns
    /// whether anything was staged: an unchanged state writes nothing. Saving in parts (one per
    /// device, say) writes only what changed: the state of the devices heard since the last save.
    pub fn stage_loops_parts(&self, batch: &mut Batch, parts: BTreeMap<String, Vec<u8>>) -> bool {
        let st = self.lock();
        let before = batch.kv.len();
        for (k, v) in &st.loops_written {
            let gone = match k.strip_prefix(LOOPS_PART_PREFIX) {
                Some(name) => std::str::from_utf8(name).map_or(true, |n| !parts.contains_key(n)),
                None => k == LOOPS_KEY,
            };
            if gone && !v.is_empty() {
                batch.kv.push((k.clone(), Vec::new()));
            }
        }
        for (name, v) in parts {
            let k = prefixed(LOOPS_PART_PREFIX, name.as_bytes());
            if st.loops_written.get(&k) != Some(&v) {
                batch.kv.push((k, v));
            }
        }
        batch.kv.len() > before
    }

    /// Adds the control loops' state to `batch` if it differs from the state last written; returns
    /// whether it did. An unchanged state leaves the batch as it was (an empty batch needs no commit
    /// and no flush: no write at all).
    pub fn stage_loops_state(&self, batch: &mut Batch, bytes: Vec<u8>) -> bool {
        if self.lock().loops_written.get(LOOPS_KEY) == Some(&bytes) {
            return false;
        }
        batch.set_loops_state(bytes);
        true
    }

    /// Takes over the loops state that older versions kept in a file beside the store (`loops.json`
    /// in the data dir), once: if the store has no loops state and the file exists, its bytes are
    /// committed and flushed as the loops state, and only then is the file removed. If the store
    /// already has a state, a file still there is a leftover of an adoption cut short after its
    /// commit, and is removed. Returns whether a file was adopted. `now`: as for [`Store::commit`].
    pub fn adopt_loops_file(&self, path: &Path, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let fs = &*self.inner.fs;
        if !fs.exists(path) {
            return Ok(false);
        }
        let adopted = if self.loops_state().is_some() || !self.loops_parts().is_empty() {
            tracing::info!(path = %path.display(), "the control loops' state is in the store: removing the old file");
            false
        } else {
            let bytes = fs.read(path).map_err(io_err(format!("reading {}", path.display())))?;
            let mut b = Batch::default();
            b.set_loops_state(bytes);
            self.commit(b, now)?;
            self.flush_blocking()?;
            tracing::info!(path = %path.display(), "the control loops' state moved into the store");
            true
        };
        let removed = fs.remove_file(path).and_then(|_| match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => fs.sync_dir(dir),
            _ => Ok(()),
        });
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "removing the old control loops' state file failed");
        }
        Ok(adopted)
    }
}

/// Why sled could not be used, and whether that means damage (move aside) or an environment error.
pub(super) enum SledOpen {
    Ok(sled::Db, sled::Tree),
    Damaged(String),
    Failed(StoreError),
}

/// [`open_sled_once`], waiting (bounded) while another instance still holds the database's lock.
pub(super) fn open_sled(dir: &Path, cache_bytes: u64, fs: &dyn Fs) -> SledOpen {
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
            // Our log is the journal; sled holds state copied from it and is flushed by the store when
            // it must be durable (before a segment goes). Its own timer would write every 500 ms.
            .flush_every_ms(None)
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

/// A running drop episode: what was dropped since it started, and why.
pub(super) struct Episode {
    pub(super) started_ms: u64,
    pub(super) readings: u64,
    pub(super) others: u64,
    pub(super) reasons: BTreeMap<&'static str, u64>,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// Monotonic: the quiet period is a duration, immune to steps of the wall clock.
    pub(super) last_drop: Instant,
}

/// The episode as kept in sled (`m/episode`) and announced.
pub(super) fn episode_json(ep: &Episode) -> serde_json::Value {
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

/// A drop episode that was running when the daemon stopped, as [`episode_json`] stored it.
pub(super) fn episode_from_json(v: &[u8]) -> Option<Episode> {
    let j = serde_json::from_slice::<serde_json::Value>(v).ok()?;
    let mut reasons = BTreeMap::new();
    for r in ["max_bytes", "max_age", "disk_full", "policy"] {
        if let Some(n) = j["reasons"][r].as_u64() {
            reasons.insert(r, n);
        }
    }
    Some(Episode {
        started_ms: j["started_ms"].as_u64().unwrap_or(0),
        readings: j["readings"].as_u64().unwrap_or(0),
        others: j["others"].as_u64().unwrap_or(0),
        reasons,
        first_seq: j["first_seq"].as_u64().unwrap_or(0),
        last_seq: j["last_seq"].as_u64().unwrap_or(0),
        last_drop: Instant::now(),
    })
}
