//! The drain cursor: publishes the backlog that was in the outbox when the connection came up (and
//! the live records held back behind it), in seq order, reading ahead from the outbox in batches.
//! The rules it keeps are described in the parent module.

use crate::store::Topic;
use std::collections::{HashMap, VecDeque};

use crate::store::{Record, Store};

/// The drain of the backlog that was in the outbox when the connection came up.
pub(super) struct Drain {
    /// Records at or below this seq were in the outbox when the connection came up.
    pub(super) replay_upto: u64,
    /// Per topic: the last seq journaled on it by the time the connection came up.
    backlog_last: HashMap<Topic, u64>,
    /// Per topic: the last live record the live cursor held back (the drain cursor publishes it).
    pub(super) held_last: HashMap<Topic, u64>,
    /// Next seq the drain cursor looks at: everything of ours below it has been published. It never
    /// passes the live cursor.
    pub(super) cursor: u64,
    /// Records of ours read ahead from the outbox, not yet published, oldest first. Reading in
    /// batches keeps the outbox reads cheap while publishing one record per PUBACK keeps data
    /// flowing both ways on the connection (waiting for a batch of PUBACKs before sending again
    /// stalls on delayed TCP acknowledgements: ~3,500 msg/s instead of ~40,000).
    ahead: VecDeque<Record>,
    /// Where the next outbox read starts (`cursor` when `ahead` is empty).
    read_pos: u64,
    /// Set when a read came back short: nothing more of ours below this seq (the live cursor at the
    /// time of the read).
    exhausted_at: Option<u64>,
    /// The store's drop count when `ahead` was filled; a change discards `ahead`, so that a record
    /// the bound dropped is never published.
    drops_seen: u64,
    pub(super) done: bool,
    pub(super) tokens: f64,
    refilled: tokio::time::Instant,
    rate: f64,
}

impl Drain {
    pub(super) fn new(replay_upto: u64, backlog_last: HashMap<Topic, u64>, rate: u32) -> Drain {
        let backlog_last = backlog_last.into_iter().map(|(t, s)| (t, s.min(replay_upto))).collect();
        Drain {
            replay_upto,
            backlog_last,
            held_last: HashMap::new(),
            cursor: 0,
            ahead: VecDeque::new(),
            read_pos: 0,
            exhausted_at: None,
            drops_seen: 0,
            done: false,
            tokens: 0.0,
            refilled: tokio::time::Instant::now(),
            rate: f64::from(rate.max(1)),
        }
    }

    /// Whether a live record on `topic` must wait for the drain cursor.
    pub(super) fn holds(&self, topic: &Topic) -> bool {
        !self.done
            && (self.backlog_last.get(topic).is_some_and(|l| *l >= self.cursor)
                || self.held_last.get(topic).is_some_and(|l| *l >= self.cursor))
    }

    /// Whether the drain cursor publishes `r` (backlog, or a live record that was held back).
    fn owns(&self, r: &Record) -> bool {
        r.seq <= self.replay_upto || self.held_last.get(&r.topic).is_some_and(|l| r.seq <= *l)
    }

    pub(super) fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        let burst = (self.rate / 10.0).max(1.0);
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.rate).min(burst);
        self.refilled = now;
    }

    /// Forgets what was read ahead: the next record is read from the outbox again, from `cursor`.
    pub(super) fn reread(&mut self) {
        self.ahead.clear();
        self.read_pos = self.cursor;
        self.exhausted_at = None;
    }

    fn check_done(&mut self) {
        if self.cursor > self.replay_upto && self.held_last.values().all(|l| *l < self.cursor) {
            self.done = true;
            self.backlog_last.clear();
            self.held_last.clear();
            self.ahead = VecDeque::new();
        }
    }

    /// The next record the drain cursor publishes, reading ahead from the outbox when needed.
    /// `None`: nothing of ours before the live cursor (the drain may be done), or the outbox could
    /// not be read.
    pub(super) fn next(&mut self, store: &Store, live: u64) -> Option<Record> {
        let drops = store.drops();
        if drops != self.drops_seen {
            // The bound dropped records: what was read ahead may be gone. Read again.
            self.drops_seen = drops;
            self.reread();
        }
        if self.ahead.is_empty() {
            if let Some(at) = self.exhausted_at.take() {
                // Everything of ours before `at` is published; records after it that the live
                // cursor held back since are read next time.
                self.cursor = self.cursor.max(at);
                self.read_pos = self.cursor;
                self.check_done();
                return None;
            }
            if self.read_pos >= live {
                self.cursor = self.cursor.max(live);
                self.check_done();
                return None;
            }
            let this = &*self;
            let records = match store.read_range(this.read_pos, live, READ_AHEAD, |r| this.owns(r)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbox backlog failed");
                    return None;
                }
            };
            if records.len() < READ_AHEAD {
                self.exhausted_at = Some(live);
            }
            self.read_pos = records.last().map_or(live, |r| r.seq + 1);
            self.ahead.extend(records);
            if self.ahead.is_empty() {
                return self.next(store, live);
            }
        }
        self.ahead.pop_front()
    }
}

/// Records the drain reads from the outbox at once (~300 bytes each in memory).
const READ_AHEAD: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, StoreOptions};

    fn store(dir: &std::path::Path, max_bytes: u64) -> Store {
        let opts = StoreOptions {
            max_bytes,
            segment_bytes: Some(16 << 10),
            gateway_id: "gw".into(),
            ..StoreOptions::default()
        };
        Store::open_with(dir, opts, crate::clock::now()).unwrap()
    }

    /// Commits `n` readings spread over three devices; returns their seqs.
    fn put(s: &Store, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for i in 0..n {
            let mut b = Batch::default();
            let seq = s.allocate_seq();
            let pad = "x".repeat(200);
            b.push_record(Record::new(
                seq,
                Topic::Reading(format!("d{}", i % 3)),
                format!("{{\"seq\":{seq},\"pad\":\"{pad}\"}}").into_bytes(),
            ));
            s.commit(b, crate::clock::now()).unwrap();
            seqs.push(seq);
        }
        s.flush_blocking().unwrap();
        seqs
    }

    fn drain_for(s: &Store) -> Drain {
        let (upto, topics) = s.outbox_snapshot();
        Drain::new(upto, topics, 1_000_000)
    }

    #[test]
    fn the_backlog_comes_out_in_seq_order_read_ahead_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 1 << 30);
        let seqs = put(&s, 1000);
        let live = s.next_seq();
        let mut d = drain_for(&s);
        let first = d.next(&s, live).unwrap();
        assert_eq!(first.seq, seqs[0]);
        // One outbox read served the next READ_AHEAD - 1 records: a publish per PUBACK costs no read.
        assert_eq!(d.ahead.len(), READ_AHEAD - 1);
        let mut got = vec![first.seq];
        while let Some(r) = d.next(&s, live) {
            d.cursor = r.seq + 1;
            got.push(r.seq);
        }
        assert_eq!(got, seqs);
        assert!(d.done, "the drain ends when the backlog is out");
        assert!(!d.holds(&Topic::Reading("d0".into())));
    }

    #[test]
    fn live_records_wait_for_their_topics_backlog_and_are_drained_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 1 << 30);
        let backlog = put(&s, 300);
        let mut d = drain_for(&s);
        let live_seqs = put(&s, 3); // one new reading on each device
        for seq in &live_seqs {
            let topic = Topic::Reading(format!("d{}", (seq - 1) % 3));
            assert!(d.holds(&topic));
            d.held_last.insert(topic, *seq);
        }
        let live = s.next_seq();
        let mut got = Vec::new();
        while let Some(r) = d.next(&s, live) {
            d.cursor = r.seq + 1;
            got.push(r.seq);
        }
        assert_eq!(got, backlog.iter().chain(&live_seqs).copied().collect::<Vec<_>>());
        assert!(d.done);
    }

    #[test]
    fn records_the_bound_drops_while_read_ahead_are_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 256 << 10);
        put(&s, 600);
        let live = s.next_seq();
        let mut d = drain_for(&s);
        let first = d.next(&s, live).unwrap();
        d.cursor = first.seq + 1;
        assert!(!d.ahead.is_empty());
        // More readings arrive; the bound drops the oldest, among them records read ahead.
        let dropped_before = s.drops();
        put(&s, 600);
        assert!(s.drops() > dropped_before, "the bound dropped records");
        let present: std::collections::HashSet<u64> =
            s.read_from(0, 100_000).unwrap().into_iter().map(|r| r.seq).collect();
        let mut got = Vec::new();
        while let Some(r) = d.next(&s, live) {
            d.cursor = r.seq + 1;
            assert!(present.contains(&r.seq), "seq {} was dropped by the bound but published", r.seq);
            got.push(r.seq);
        }
        assert!(!got.is_empty());
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }
}
