//! Reading the outbox: what the uplink publishes, and its acknowledgements.
//!
//! Readers see only durable records: the uplink-visible watermark ([`Store::max_committed`]) moves in
//! [`Store::flush`] after the fsync, never in `commit`, and every read path ([`Store::read_range`],
//! [`Store::read_from`], [`Store::outbox_snapshot`]) stops at it. A record published before its fsync
//! could be lost to a power cut and its `seq` handed out again (the city de-duplicates on
//! (gateway, seq) and would drop the new reading).
//!
//! [`Store::ack`] only touches memory; the acknowledgements reach the log with the writer's next
//! commit or `maintain`, without an fsync: they survive kill -9 (the page cache does), and losing
//! some to a power cut only means duplicates.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::codec;
use super::log_format::read_entry;
use super::{Record, Store, StoreError, Topic};

impl Store {
    /// The highest seq committed to the outbox *and made durable* (fsynced) so far, without taking
    /// the lock. Readers never see a record above it: [`Store::read_range`] stops there.
    pub fn max_committed(&self) -> u64 {
        self.inner.durable_seq.load(Ordering::Acquire)
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
                for (seq, topic, fmt, payload) in e.records {
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
                    let r = Record { seq, topic, payload };
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

    /// Age of the oldest unacknowledged record at `now`, from the time it was journaled.
    pub fn oldest_record_age_s(&self, now: DateTime<Utc>) -> Option<f64> {
        let st = self.lock();
        let seg = st.segments.values().find(|s| s.unacked() > 0)?;
        let t = seg.first_ms;
        let now = u64::try_from(now.timestamp_millis()).ok()?;
        Some(now.saturating_sub(t) as f64 / 1000.0)
    }

    /// The highest durable seq ([`Store::max_committed`]) and, for each topic, the highest seq
    /// journaled on it that may still wait in the outbox, taken together. The uplink takes this
    /// snapshot when it connects, to keep each device's order while it drains the backlog.
    pub fn outbox_snapshot(&self) -> (u64, HashMap<Topic, u64>) {
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
