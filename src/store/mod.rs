//! The store: the journal/outbox, the `seq` counter and per-device LoRaWAN state, in sled.
//!
//! This is the only module that touches sled (architecture invariant). Everything that must survive a
//! crash together is written in one atomic batch of one tree, so that a reading and the frame counter
//! that admitted it are either both on disk or both absent:
//!
//! | key                     | value                                   |
//! |-------------------------|-----------------------------------------|
//! | `o` + seq (u64 BE)      | an outbox record (see [`Record`])       |
//! | `m/next_seq`            | the next `seq` to hand out (u64 BE)     |
//! | `f/` + device name      | last accepted uplink FCnt (u32 BE)      |
//!
//! Durability: writes are buffered by sled until [`Store::flush`]; the caller flushes before it
//! acknowledges anything to the outside (PUSH_ACK). A record leaves the outbox only when the broker's
//! PUBACK for it arrived ([`Store::ack`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;

const OUTBOX: u8 = b'o';
const NEXT_SEQ: &[u8] = b"m/next_seq";
const FCNT_PREFIX: &[u8] = b"f/";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
}

/// One message waiting for the broker: where it goes (relative to `{prefix}/{gateway}/`) and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub topic_suffix: String,
    pub payload: Vec<u8>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let topic = self.topic_suffix.as_bytes();
        let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
        let mut v = Vec::with_capacity(2 + topic.len() + self.payload.len());
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&topic[..len as usize]);
        v.extend_from_slice(&self.payload);
        v
    }

    fn decode(seq: u64, bytes: &[u8]) -> Option<Record> {
        let len = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]) as usize;
        let topic = bytes.get(2..2 + len)?;
        let payload = bytes.get(2 + len..)?;
        Some(Record { seq, topic_suffix: String::from_utf8(topic.to_vec()).ok()?, payload: payload.to_vec() })
    }
}

/// State changes that go to disk in the same atomic batch as the records.
#[derive(Debug, Default)]
pub struct Batch {
    records: Vec<Record>,
    fcnt: Vec<(String, u32)>,
}

impl Batch {
    pub fn push_record(&mut self, record: Record) {
        self.records.push(record);
    }
    pub fn set_fcnt(&mut self, device: &str, fcnt: u32) {
        self.fcnt.push((device.to_string(), fcnt));
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.fcnt.is_empty()
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// A cheap, cloneable handle: the pipeline writes, the uplink reads and acknowledges.
#[derive(Clone)]
pub struct Store {
    _db: sled::Db,
    tree: sled::Tree,
    /// Shared so that every clone hands out distinct, increasing seqs.
    next_seq: Arc<AtomicU64>,
}

fn outbox_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = OUTBOX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

impl Store {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache (a few MiB on a Pi).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // We flush ourselves, before every external acknowledgement (group commit); sled's own
            // timer stays as a backstop for state written outside the hot path.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|source| StoreError::Open { path: dir.display().to_string(), source })?;
        let tree = db.open_tree("journal")?;
        let stored_next = tree.get(NEXT_SEQ)?.and_then(|v| be_u64(&v)).unwrap_or(1);
        // The last outbox key is a second witness of the counter: never hand out a seq at or below it.
        let last_in_outbox = tree.scan_prefix([OUTBOX]).next_back().transpose()?.and_then(|(k, _)| be_u64(k.get(1..)?));
        let next_seq = stored_next.max(last_in_outbox.map_or(1, |s| s + 1));
        Ok(Store { _db: db, tree, next_seq: Arc::new(AtomicU64::new(next_seq)) })
    }

    /// The `seq` the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// Hands out the next `seq`. It is persisted with the next [`Store::commit`].
    pub fn allocate_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Writes a batch atomically (records, frame counters and the seq counter). Not yet durable:
    /// call [`Store::flush`] before acknowledging.
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for r in &batch.records {
            b.insert(&outbox_key(r.seq), r.encode());
        }
        for (device, fcnt) in &batch.fcnt {
            let mut k = FCNT_PREFIX.to_vec();
            k.extend_from_slice(device.as_bytes());
            b.insert(k, &fcnt.to_be_bytes());
        }
        b.insert(NEXT_SEQ, &self.next_seq().to_be_bytes());
        self.tree.apply_batch(b)?;
        Ok(())
    }

    /// Makes everything committed so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush_async().await?;
        Ok(())
    }

    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.tree.flush()?;
        Ok(())
    }

    /// Last accepted frame counter per device, to restore the LoRaWAN sessions at start.
    pub fn fcnts(&self) -> Result<HashMap<String, u32>, StoreError> {
        let mut out = HashMap::new();
        for item in self.tree.scan_prefix(FCNT_PREFIX) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[FCNT_PREFIX.len()..]).into_owned();
            if let Ok(b) = <[u8; 4]>::try_from(v.as_ref()) {
                out.insert(name, u32::from_be_bytes(b));
            }
        }
        Ok(out)
    }

    /// Up to `max` outbox records with `seq >= from`, oldest first.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::with_capacity(max.min(1024));
        let end = outbox_key(u64::MAX);
        for item in self.tree.range(outbox_key(from)..=end).take(max) {
            let (k, v) = item?;
            let Some(seq) = k.get(1..).and_then(be_u64) else { continue };
            match Record::decode(seq, &v) {
                Some(r) => out.push(r),
                None => tracing::warn!(seq, "outbox record unreadable, skipped"),
            }
        }
        Ok(out)
    }

    /// Deletes acknowledged records from the outbox.
    pub fn ack(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for s in seqs {
            b.remove(&outbox_key(*s));
        }
        self.tree.apply_batch(b)?;
        Ok(())
    }

    /// Number of records waiting in the outbox.
    pub fn depth(&self) -> usize {
        self.tree.scan_prefix([OUTBOX]).count()
    }

    /// The smallest seq still in the outbox.
    pub fn oldest(&self) -> Option<u64> {
        self.tree.scan_prefix([OUTBOX]).next().and_then(|r| r.ok()).and_then(|(k, _)| be_u64(k.get(1..)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record { seq, topic_suffix: "reading/d".into(), payload: format!("{{\"seq\":{seq}}}").into_bytes() }
    }

    #[test]
    fn seq_survives_reopen_and_outbox_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 1 << 20).unwrap();
            let mut b = Batch::default();
            for _ in 0..3 {
                let seq = s.allocate_seq();
                b.push_record(rec(seq));
            }
            b.set_fcnt("d", 41);
            s.commit(b).unwrap();
            s.flush_blocking().unwrap();
            s.ack(&[1]).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.next_seq(), 4);
        assert_eq!(s.fcnts().unwrap().get("d"), Some(&41));
        let r = s.read_from(0, 10).unwrap();
        assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(r[0], rec(2));
        assert_eq!(s.depth(), 2);
        assert_eq!(s.oldest(), Some(2));
    }
}
