//! The size and age bounds and the drop policy.
//!
//! The log's files never exceed `max_bytes` (plus one entry); when they would, the policy applies
//! ([`DropPolicy`]): raw readings are dropped before aggregates, events and responses. A full disk is
//! handled the same way (reason `disk_full`), and records older than `max_age_s` are dropped whole
//! segments at a time (reason `max_age`). Every dropped record is counted ([`StoreStats`]) and each
//! drop *episode* is announced by one event record `event/{gateway_id}` with
//! `"event": "buffer_dropped"` and the counts, when the episode ends (no drop for [`EPISODE_QUIET`]).
//!
//! The store does not journal that event itself: [`Store::maintain`] returns it as an
//! [`Announcement`] and the outbox's one writer (the pipeline) allocates its seq and commits it, so
//! seqs are committed in the order they are allocated.
//!
//! [`StoreStats`]: super::StoreStats

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::fs::FileRef;
use super::log_format::{encode_entry, read_entry, Entry};
use super::segment::Segment;
use super::state::{episode_json, Episode, NEXT_SEQ};
use super::{io_err, Record, RecordKind, State, Store, StoreError, Topic};

/// A drop episode ends after this long without a drop.
pub const EPISODE_QUIET: Duration = Duration::from_secs(5);
const ENOSPC: i32 = 28;

/// What happens when the bound is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Delete the oldest unsent readings (then, if still needed, the oldest other records).
    #[default]
    DropOldest,
    /// Refuse new readings (their frames are still acknowledged: they are counted as dropped).
    DropNewest,
}

/// What one commit dropped to stay within the bound.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitReport {
    pub readings_dropped: u64,
    pub others_dropped: u64,
}

/// An event the store wants journaled: the `buffer_dropped` event of a finished drop episode,
/// returned by [`Store::maintain`], or the `store_damaged` event of an open that found damage
/// ([`OpenReport::damage_event`](super::OpenReport::damage_event)). The outbox's one writer (the
/// pipeline) allocates its seq and journals it like any other record ([`Batch::push_announcement`]),
/// so seqs stay in commit order: the store never allocates a seq itself.
///
/// [`Batch::push_announcement`]: super::Batch::push_announcement
#[derive(Debug, Clone)]
pub struct Announcement {
    pub(super) topic: Topic,
    pub(super) json: serde_json::Value,
}

/// The former name of [`Announcement`] (drop episodes were the only announcements).
pub type DropAnnouncement = Announcement;

impl Announcement {
    /// The event record, carrying `seq`.
    pub fn into_record(self, seq: u64) -> Record {
        let mut j = self.json;
        j["seq"] = seq.into();
        Record::new(seq, self.topic, j.to_string().into_bytes())
    }
}

fn is_enospc(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if source.raw_os_error() == Some(ENOSPC))
        || matches!(e, StoreError::DiskFull(_))
}

impl Store {
    /// Appends a commit's entry within the bound: makes room by the policy first if the entry would
    /// take the log past `max_bytes`, and once more if the file system fills up before the bound does.
    pub(super) fn append_within_bound(
        &self,
        st: &mut State,
        entry: &mut Entry,
        now: u64,
        report: &mut CommitReport,
    ) -> Result<(), StoreError> {
        let mut encoded = encode_entry(entry);
        let max = self.inner.opts.max_bytes;
        if st.total_bytes + encoded.len() as u64 > max {
            match self.inner.opts.policy {
                DropPolicy::DropOldest => {
                    let need = st.total_bytes + encoded.len() as u64 - max;
                    self.drop_oldest(st, need, "max_bytes", now, report)?;
                }
                DropPolicy::DropNewest => {
                    let dropped = self.drop_new_readings(st, entry, "max_bytes", now);
                    report.readings_dropped += dropped;
                    encoded = encode_entry(entry);
                    if st.total_bytes + encoded.len() as u64 > max && !entry.records.is_empty() {
                        // Aggregates, events and responses outrank the old readings.
                        let need = st.total_bytes + encoded.len() as u64 - max;
                        self.drop_oldest_readings_only(st, need, "max_bytes", now, report)?;
                    }
                }
            }
        }
        match self.append(st, entry, &encoded) {
            Ok(()) => Ok(()),
            Err(e) if is_enospc(&e) => {
                // The file system filled up before our bound did. Make room the policy's way and try
                // once more; the caller gets an error (and acknowledges nothing) if that fails too.
                tracing::warn!("disk full while journaling: applying the buffer policy");
                match self.inner.opts.policy {
                    DropPolicy::DropOldest => {
                        let need = (encoded.len() as u64).max(self.inner.opts.segment_bytes());
                        self.drop_oldest(st, need, "disk_full", now, report)?;
                    }
                    DropPolicy::DropNewest => {
                        report.readings_dropped += self.drop_new_readings(st, entry, "disk_full", now);
                        encoded = encode_entry(entry);
                    }
                }
                if let Err(e) = self.append(st, entry, &encoded) {
                    self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    // The records never made it: their seqs are not reused (next_seq moved on).
                    return Err(if is_enospc(&e) { StoreError::DiskFull(e.to_string()) } else { e });
                }
                Ok(())
            }
            Err(e) => {
                self.inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Drops oldest records until `need` bytes are free: first readings (segments are deleted, or
    /// rewritten keeping their other records), then, if that is not enough, the other records.
    fn drop_oldest(
        &self,
        st: &mut State,
        need: u64,
        reason: &'static str,
        now: u64,
        report: &mut CommitReport,
    ) -> Result<(), StoreError> {
        let freed = self.drop_oldest_readings_only(st, need, reason, now, report)?;
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
            let seqs = unacked_range(st, id);
            self.remove_segment(st, id);
            freed += bytes;
            report.others_dropped += others;
            self.note_drop(st, now, (0, others), reason, seqs);
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
        now: u64,
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
            let seqs = unacked_range(st, id);
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
                self.note_drop(st, now, (readings, 0), reason, seqs);
            }
        }
        Ok(freed)
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
    fn drop_new_readings(&self, st: &mut State, entry: &mut Entry, reason: &'static str, now: u64) -> u64 {
        let before = entry.records.len();
        let (mut first, mut last) = (u64::MAX, 0);
        entry.records.retain(|r| {
            if r.1.kind() == RecordKind::Reading {
                first = first.min(r.0);
                last = last.max(r.0);
                false
            } else {
                true
            }
        });
        let n = (before - entry.records.len()) as u64;
        if n > 0 {
            self.note_drop(st, now, (n, 0), reason, (first, last));
            // The refused seqs are not in the log, but they were handed out (and the drop event names
            // them): the entry says where seqs continue, so a power cut cannot bring them back.
            entry.kv.push((NEXT_SEQ.to_vec(), (last + 1).to_be_bytes().to_vec()));
        }
        n
    }

    /// Drops records older than `max_age_s` before `now` (whole segments; records of every kind).
    pub(super) fn enforce_age(&self, st: &mut State, now: u64, report: &mut CommitReport) -> Result<(), StoreError> {
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
            let seqs = unacked_range(st, id);
            self.remove_segment(st, id);
            report.readings_dropped += r;
            report.others_dropped += o;
            self.note_drop(st, now, (r, o), "max_age", seqs);
        }
        Ok(())
    }

    /// Counts a drop of (readings, others) records with seqs in `first..=last` into the running
    /// episode (starting one at `now` if none runs).
    fn note_drop(
        &self,
        st: &mut State,
        now: u64,
        (readings, others): (u64, u64),
        reason: &'static str,
        (first, last): (u64, u64),
    ) {
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
                started_ms: now,
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

    /// Ends the running drop episode if it has been quiet for [`EPISODE_QUIET`]: its announcement,
    /// stamped `now`, for the caller to journal.
    pub(super) fn end_quiet_episode(&self, st: &mut State, now: DateTime<Utc>) -> Option<Announcement> {
        let quiet = st.episode.as_ref().is_some_and(|e| e.last_drop.elapsed() >= EPISODE_QUIET);
        if !quiet {
            return None;
        }
        let ep = st.episode.take()?;
        Some(self.announcement(&ep, now))
    }

    /// The one event of a finished drop episode (its seq is filled in by the writer).
    fn announcement(&self, ep: &Episode, now: DateTime<Utc>) -> Announcement {
        let mut j = episode_json(ep);
        j["seq"] = 0.into();
        j["device"] = self.inner.opts.gateway_id.clone().into();
        j["at"] = crate::reading::rfc3339(now).into();
        j["event"] = "buffer_dropped".into();
        j["policy"] = match self.inner.opts.policy {
            DropPolicy::DropOldest => "drop-oldest",
            DropPolicy::DropNewest => "drop-newest",
        }
        .into();
        j["ended_at"] = j["at"].clone();
        tracing::warn!(readings = ep.readings, others = ep.others, "buffer drop episode ended: announced as an event");
        Announcement { topic: Topic::Event(self.inner.opts.gateway_id.clone()), json: j }
    }
}

/// The smallest and largest unacknowledged seq of a segment (for the event).
fn unacked_range(st: &State, id: u64) -> (u64, u64) {
    let Some(seg) = st.segments.get(&id) else { return (0, 0) };
    let first = seg.first_seq.unwrap_or(0);
    (first, seg.last_seq)
}
