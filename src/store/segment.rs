//! The outbox log's segment files, `dir/wal/NNNNNNNNNNNNNNNN.seg`: appending entries (rotating to a
//! new segment when the active one is full), what the store knows about each segment in memory, and
//! deleting segments, with the `seq.floor` file that keeps seqs from being reused once the segments
//! holding them are gone.
//!
//! A segment goes when every record in it is acknowledged (or dropped by the bound, `bound.rs`).
//! Before it goes, its state changes are made durable in sled and the seq floor is written; its
//! deletion is made durable with a directory fsync (a segment that came back after a power cut would
//! bring back records that were acknowledged or counted as dropped).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::codec;
use super::fs::{FileRef, Fs};
use super::log_format::{self, Entry};
use super::ranges::RangeSet;
use super::state::is_loops_key;
use super::{io_err, RecordKind, State, Store, StoreError};

/// The file holding a seq at or above every seq that was in a deleted (or rewritten) segment.
pub(super) const SEQ_FLOOR: &str = "seq.floor";
/// The page size the log pads to before an fsync (the file system's and the page cache's unit).
const PAGE: u64 = 4096;

/// A segment as read at open: id, file, valid length, and its entries with (offset, length).
pub(super) type ScannedSegment = (u64, FileRef, u64, Vec<(Entry, u64, u64)>);

#[derive(Debug)]
pub(super) struct Segment {
    pub(super) id: u64,
    pub(super) path: PathBuf,
    pub(super) file: FileRef,
    pub(super) bytes: u64,
    /// Seqs of the records in this segment, in order (u64 each: 8 MB for a million-record backlog
    /// would be too much, so only the range is kept when it is dense; see `present`).
    pub(super) first_seq: Option<u64>,
    pub(super) last_seq: u64,
    /// Records in the file. `first..=last` may have holes (seqs allocated but never committed, or
    /// records dropped by a rewrite); acknowledgements only ever name records that exist.
    pub(super) records: u64,
    /// Seqs of the non-reading records (rare: aggregates, events, responses).
    pub(super) others: Vec<u64>,
    pub(super) unacked_readings: u64,
    pub(super) unacked_others: u64,
    pub(super) max_lsn: u64,
    /// Time of the first and the newest entry with records (ms since 1970, as the committer's `now`).
    pub(super) first_ms: u64,
    pub(super) newest_ms: u64,
    /// Sparse index for reading by seq: (first seq of an entry, its offset), one per 64 KiB.
    pub(super) index: Vec<(u64, u64)>,
}

impl Segment {
    pub(super) fn new(id: u64, path: PathBuf, file: FileRef) -> Segment {
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

    pub(super) fn unacked(&self) -> u64 {
        self.unacked_readings + self.unacked_others
    }

    pub(super) fn holds(&self, seq: u64) -> bool {
        self.first_seq.is_some_and(|f| f <= seq && seq <= self.last_seq)
    }

    /// Accounts for an entry appended at `offset`.
    pub(super) fn add(&mut self, e: &Entry, offset: u64, len: u64, acked: &RangeSet) {
        if let Some((first, ..)) = e.records.first() {
            if self.index.last().is_none_or(|(_, o)| offset >= o + (64 << 10)) {
                self.index.push((*first, offset));
            }
            if self.first_seq.is_none() {
                self.first_seq = Some(*first);
                self.first_ms = e.time_ms;
            }
        }
        for (seq, topic, ..) in &e.records {
            self.last_seq = self.last_seq.max(*seq);
            self.records += 1;
            let done = acked.contains(*seq);
            if topic.kind() == RecordKind::Reading {
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

pub(super) fn seg_path(wal: &Path, id: u64) -> PathBuf {
    wal.join(format!("{id:016}.seg"))
}

/// Creates a segment file and makes its directory entry durable (an fsync of the file's data does
/// not: after a power cut the file could be gone with every entry in it).
/// Creates segment `id`; with `reserve`, its whole size is reserved at once ([`FsFile::preallocate`](super::fs::FsFile::preallocate):
/// `fallocate`, read back as zeros) and that length made durable here, once per segment. Appends then
/// never grow the file, so the per-window `fdatasync` carries data only, not a new file size (on
/// ext4 each size change is a journal commit of the inode: a few KiB of flash per fsync). Zeros still
/// mean "not written": reading stops there (`recovery.rs`). Without the reservation (a file system that
/// cannot, a nearly full disk) the segment grows as it is written, as before.
pub(super) fn create_segment(fs: &dyn Fs, wal: &Path, id: u64, reserve: Option<u64>) -> Result<Segment, StoreError> {
    let path = seg_path(wal, id);
    let file = fs.create(&path).map_err(io_err(format!("creating {}", path.display())))?;
    if let Some(len) = reserve {
        match file.preallocate(len).and_then(|done| if done { file.sync_data() } else { Ok(()) }) {
            Ok(()) => {}
            // Not fatal: the segment is written as an ordinary growing file.
            Err(e) => tracing::debug!(error = %e, segment = %path.display(), "reserving an outbox segment failed"),
        }
    }
    fs.sync_dir(wal).map_err(io_err("syncing wal"))?;
    Ok(Segment::new(id, path, file))
}

/// The floor file holds two slots (value + CRC each) written alternately in place: updating it needs
/// no new disk blocks (it must work on a full disk, when dropping segments is the way out) and a torn
/// write can only spoil the slot being written.
pub(super) fn read_seq_floor(dir: &Path, fs: &dyn Fs) -> Option<u64> {
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

impl Store {
    /// Appends an encoded entry to the active segment (rotating first if it is full).
    pub(super) fn append(&self, st: &mut State, entry: &Entry, encoded: &[u8]) -> Result<(), StoreError> {
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
        for (seq, topic, ..) in &entry.records {
            st.max_committed = st.max_committed.max(*seq);
            match st.topic_last.get_mut(topic) {
                Some(v) => *v = (*v).max(*seq),
                None => {
                    st.topic_last.insert(topic.clone(), *seq);
                }
            }
        }
        for (k, v) in &entry.kv {
            if is_loops_key(k) {
                // What an unchanged loops state is compared with (`state.rs`): it is written now.
                st.loops_written.insert(k.clone(), v.clone());
            }
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

    /// Fills the active segment up to the next 4 KiB page with a padding entry (see
    /// [`StoreOptions::pad_on_sync`](super::StoreOptions::pad_on_sync)). Nothing when the segment ends on a
    /// page, when the rest of the page is too short for an entry (the next window then shares that page,
    /// as without padding), or when the padding would fill the segment. A failed write is left to the
    /// fsync and the next append (`append` removes what it wrote).
    pub(super) fn pad_to_page(&self, st: &mut State) {
        let Some(bytes) = st.segments.get(&st.active).map(|s| s.bytes) else { return };
        let rest = PAGE - bytes % PAGE;
        if rest == PAGE || bytes + rest > self.inner.opts.segment_bytes() {
            return;
        }
        if let Some(pad) = log_format::encode_padding(rest as usize) {
            if self.append(st, &Entry::default(), &pad).is_ok() {
                self.inner.stats.padding_bytes.fetch_add(rest, Ordering::Relaxed);
            }
        }
    }

    fn rotate(&self, st: &mut State) -> Result<(), StoreError> {
        // The segment being closed is fsynced before anything goes into the next one: without it a
        // power cut could keep later entries (in the new file) and lose earlier ones (in the old
        // file's unsynced tail), and the log would have a hole. Once per segment.
        self.sync_log_locked(st)?;
        let id = st.active + 1;
        let seg = create_segment(&*self.inner.fs, &st.wal, id, self.inner.opts.reserve())?;
        st.unsynced.push((id, seg.file.clone()));
        st.segments.insert(id, seg);
        st.active = id;
        Ok(())
    }

    /// Deletes segments whose records are all acknowledged.
    pub(super) fn collect_garbage(&self, st: &mut State) -> Result<(), StoreError> {
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
    pub(super) fn before_removing(&self, st: &mut State, ids: &[u64], forced: bool) -> Result<(), StoreError> {
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

    pub(super) fn remove_segment(&self, st: &mut State, id: u64) {
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
}
