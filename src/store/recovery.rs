//! Opening the store: sled (waiting, bounded, for a lock still held by a store of this process that is
//! shutting down), the scan of every log segment (CRC-checked; a torn or damaged tail is cut off and
//! reported), the replay of state sled had not made durable, where seqs continue, and the migration of
//! a legacy (format 1) outbox.
//!
//! A damaged store (sled fails to open, panics, or lost its data) is moved aside to
//! `dir.damaged-UNIXTIME` and a fresh one started; the readable log segments are carried over and
//! replayed, and `seq` jumps far ahead if the seq floor is gone too, so no seq is reused.
//! [`Store::open_report`] says what happened, and [`OpenReport::damage_event`] is the `store_damaged`
//! event for the opener to journal (the store allocates no seq).
//!
//! At open, the segments found are fsynced before they count as durable (a kill -9 leaves them in the
//! page cache only): readers see everything found here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::bound::Announcement;
use super::fs::Fs;
use super::log_format::read_entry;
use super::ranges::RangeSet;
use super::segment::{create_segment, read_seq_floor, seg_path, ScannedSegment, Segment, SEQ_FLOOR};
use super::state::{
    be_u64, episode_from_json, is_loops_key, open_sled, SledOpen, ACKED_KEY, EPISODE_KEY, FORMAT_KEY, LOOPS_KEY,
    LOOPS_PART_PREFIX, LSN_KEY, MARKER, NEXT_SEQ,
};
use super::{io_err, Batch, Inner, Record, State, Store, StoreError, StoreOptions, StoreStats, Topic};

const FORMAT: u32 = 2;
/// The legacy (format 1) outbox: one sled key per record. Migrated into the log at open.
const LEGACY_OUTBOX: u8 = b'o';
/// When the seq floor cannot be read after damage, jump this far ahead so no seq is reused.
const SEQ_GAP_AFTER_DAMAGE: u64 = 1 << 32;

/// What [`Store::open_with`] found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// The store was damaged: where it was moved, and why.
    pub damaged: Option<(PathBuf, String)>,
    /// Log entries cut off at a damaged or torn place (a torn last entry after a crash is normal).
    pub entries_cut: u64,
    /// Records waiting in the outbox after opening.
    pub records: u64,
    /// With `damaged`: the `store_damaged` event, for the opener (the outbox's writer, before anything
    /// else writes) to journal with a seq it allocates, and flush.
    pub damage_event: Option<Announcement>,
}

/// Moves a damaged store aside (named after `now`), keeping its log segments (they are checked entry
/// by entry).
fn move_aside(dir: &Path, fs: &dyn Fs, now: DateTime<Utc>) -> Result<PathBuf, StoreError> {
    let ts = now.timestamp();
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

/// Whether the log has nothing written at `off`: an entry header of zeros (no entry is empty, so a
/// written header never is). Segments are reserved ahead and read as zeros where nothing was written.
fn unwritten_at(file: &dyn super::fs::FsFile, off: u64, len: u64) -> bool {
    let mut h = [0u8; 8];
    let n = usize::try_from(len.saturating_sub(off)).unwrap_or(usize::MAX).min(h.len());
    file.read_exact_at(&mut h[..n], off).is_ok() && h[..n].iter().all(|b| *b == 0)
}

/// Copies a file and syncs the copy's contents (the caller syncs the directory).
fn copy_file(fs: &dyn Fs, from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = fs.read(from)?;
    let f = fs.create(to)?;
    f.write_all_at(&bytes, 0)?;
    f.sync_data()
}

impl Store {
    /// [`Store::open_with`] on a given file system (the power-cut tests use a simulated one; sled
    /// always uses the real one, in `dir`).
    pub fn open_with_fs(
        dir: &Path,
        opts: StoreOptions,
        fs: Arc<dyn Fs>,
        now: DateTime<Utc>,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        fs.create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut report = OpenReport::default();
        let (db, tree) = match open_sled(dir, opts.cache_bytes, &*fs) {
            SledOpen::Ok(db, tree) => (db, tree),
            SledOpen::Failed(e) => return Err(e),
            SledOpen::Damaged(why) => {
                let aside = move_aside(dir, &*fs, now)?;
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
                    Err(()) if unwritten_at(&*file, off, len) => {
                        // The reserved rest of a segment (or a tail that was never written): the end
                        // of the log, not damage. Given back, so a closed segment holds no reservation.
                        file.set_len(off).map_err(io_err("trimming a segment"))?;
                        break;
                    }
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
                for (seq, topic, ..) in &e.records {
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
        let active = create_segment(&*fs, &wal, active_id, opts.reserve())?;
        let unsynced = vec![(active_id, active.file.clone())];
        segments.insert(active_id, active);

        // The loops state as last written: the log's newer value, else sled's.
        // The loops state as last written: sled's, overridden by the log's newer values.
        let mut loops_written = BTreeMap::new();
        if let Some(v) = tree.get(LOOPS_KEY)? {
            loops_written.insert(LOOPS_KEY.to_vec(), v.to_vec());
        }
        for item in tree.scan_prefix(LOOPS_PART_PREFIX) {
            let (k, v) = item?;
            loops_written.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in pending_kv.iter().filter(|(k, _)| is_loops_key(k)) {
            loops_written.insert(k.clone(), v.clone());
        }
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
            topic_last,
            max_committed: max_seq,
            durable_seq: max_seq,
            episode: None,
            total_bytes,
            read_hints: Vec::new(),
            sled_broken_since: None,
            records_since_sync: 0,
            records_last_sync: 0,
            loops_written,
        };
        // Restore a drop episode that was running when the daemon stopped.
        if let Some(tree) = &state.tree {
            if let Some(v) = tree.get(EPISODE_KEY)? {
                if let Some(ep) = episode_from_json(&v) {
                    state.episode = Some(ep);
                }
            }
        }
        state.pending_kv.insert(NEXT_SEQ.to_vec(), next_seq.to_be_bytes().to_vec());
        report.records = state.segments.values().map(|s| s.unacked()).sum();
        if let Some((aside, why)) = &report.damaged {
            let payload = serde_json::json!({
                "seq": 0,
                "device": opts.gateway_id,
                "at": crate::reading::rfc3339(now),
                "event": "store_damaged",
                "reason": why,
                "moved_to": aside.display().to_string(),
                "records_recovered": report.records,
            });
            report.damage_event = Some(Announcement { topic: Topic::Event(opts.gateway_id.clone()), json: payload });
        }

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
                stats: StoreStats::default(),
                state: Mutex::new(state),
                last_flush: Mutex::new(None),
                flush_lock: tokio::sync::Mutex::new(()),
                report: report.clone(),
            }),
        };
        if !legacy.is_empty() {
            store.migrate_legacy(legacy, now)?;
        }
        {
            let mut st = store.lock();
            store.apply_to_sled(&mut st, true)?;
            store.collect_garbage(&mut st)?;
        }
        tracing::info!(records = report.records, next_seq, "store opened");
        Ok(store)
    }

    fn migrate_legacy(&self, legacy: Vec<(u64, Vec<u8>)>, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        let mut keys = Vec::new();
        for (seq, v) in legacy {
            keys.push(seq);
            let len = u16::from_be_bytes([v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0)]) as usize;
            let (Some(topic), Some(payload)) = (v.get(2..2 + len), v.get(2 + len..)) else { continue };
            b.push_record(Record::new(
                seq,
                Topic::from_legacy(String::from_utf8_lossy(topic).into_owned()),
                payload.to_vec(),
            ));
        }
        self.commit(b, now)?;
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
}
