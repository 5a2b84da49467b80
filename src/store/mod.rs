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
//! | `d/` + device name      | next FCntDown (u32 BE)                  |
//! | `s/` + device name      | OTAA session: DevAddr, NwkSKey, AppSKey |
//! | `n/` + DevEUI + nonce   | a used DevNonce (empty value)           |
//! | `m/join_nonce`          | the next JoinNonce (u32 BE)             |
//! | `c/` + command id       | an accepted command: forget after (ms)  |
//! | `u/` + device name      | a device added by `device.upsert` (JSON)|
//!
//! Session keys live only here, in the data dir (mode 700, the daemon's user only).
//!
//! Durability: writes are buffered by sled until [`Store::flush`]; the caller flushes before it
//! acknowledges anything to the outside (PUSH_ACK). A record leaves the outbox only when the broker's
//! PUBACK for it arrived ([`Store::ack`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;

use crate::keys::{DevAddr, Eui64, Key128};

const OUTBOX: u8 = b'o';
const NEXT_SEQ: &[u8] = b"m/next_seq";
const FCNT_PREFIX: &[u8] = b"f/";
const FCNT_DOWN_PREFIX: &[u8] = b"d/";
const SESSION_PREFIX: &[u8] = b"s/";
const NONCE_PREFIX: &[u8] = b"n/";
const JOIN_NONCE: &[u8] = b"m/join_nonce";
const COMMAND_PREFIX: &[u8] = b"c/";
const REMOTE_DEVICE_PREFIX: &[u8] = b"u/";

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
    other: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An OTAA session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub dev_addr: DevAddr,
    pub nwk_s_key: Key128,
    pub app_s_key: Key128,
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
        self.fcnt.push((device.to_string(), fcnt));
    }
    pub fn set_fcnt_down(&mut self, device: &str, next: u32) {
        self.other.push((prefixed(FCNT_DOWN_PREFIX, device.as_bytes()), next.to_be_bytes().to_vec()));
    }
    pub fn set_session(&mut self, device: &str, s: &StoredSession) {
        let mut v = Vec::with_capacity(36);
        v.extend_from_slice(&s.dev_addr.0.to_be_bytes());
        v.extend_from_slice(s.nwk_s_key.expose());
        v.extend_from_slice(s.app_s_key.expose());
        self.other.push((prefixed(SESSION_PREFIX, device.as_bytes()), v));
    }
    pub fn add_dev_nonce(&mut self, dev_eui: Eui64, nonce: u16) {
        let mut rest = dev_eui.0.to_be_bytes().to_vec();
        rest.extend_from_slice(&nonce.to_be_bytes());
        self.other.push((prefixed(NONCE_PREFIX, &rest), Vec::new()));
    }
    pub fn set_join_nonce(&mut self, next: u32) {
        self.other.push((JOIN_NONCE.to_vec(), next.to_be_bytes().to_vec()));
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.fcnt.is_empty() && self.other.is_empty()
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
        for (k, v) in &batch.other {
            b.insert(k.as_slice(), v.as_slice());
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

    /// Next FCntDown per device.
    pub fn fcnts_down(&self) -> Result<HashMap<String, u32>, StoreError> {
        let mut out = HashMap::new();
        for item in self.tree.scan_prefix(FCNT_DOWN_PREFIX) {
            let (k, v) = item?;
            if let Ok(b) = <[u8; 4]>::try_from(v.as_ref()) {
                out.insert(String::from_utf8_lossy(&k[FCNT_DOWN_PREFIX.len()..]).into_owned(), u32::from_be_bytes(b));
            }
        }
        Ok(out)
    }

    /// OTAA sessions per device.
    pub fn sessions(&self) -> Result<HashMap<String, StoredSession>, StoreError> {
        let mut out = HashMap::new();
        for item in self.tree.scan_prefix(SESSION_PREFIX) {
            let (k, v) = item?;
            let (Some(a), Some(n), Some(s)) = (v.get(0..4), v.get(4..20), v.get(20..36)) else { continue };
            let (Ok(a), Ok(n), Ok(s)) = (<[u8; 4]>::try_from(a), <[u8; 16]>::try_from(n), <[u8; 16]>::try_from(s))
            else {
                continue;
            };
            out.insert(
                String::from_utf8_lossy(&k[SESSION_PREFIX.len()..]).into_owned(),
                StoredSession {
                    dev_addr: DevAddr(u32::from_be_bytes(a)),
                    nwk_s_key: Key128::new(n),
                    app_s_key: Key128::new(s),
                },
            );
        }
        Ok(out)
    }

    /// Used DevNonces per DevEUI.
    pub fn dev_nonces(&self) -> Result<HashMap<Eui64, Vec<u16>>, StoreError> {
        let mut out: HashMap<Eui64, Vec<u16>> = HashMap::new();
        for item in self.tree.scan_prefix(NONCE_PREFIX) {
            let (k, _) = item?;
            let rest = &k[NONCE_PREFIX.len()..];
            let (Some(eui), Some(nonce)) = (rest.get(0..8), rest.get(8..10)) else { continue };
            let (Ok(eui), Ok(nonce)) = (<[u8; 8]>::try_from(eui), <[u8; 2]>::try_from(nonce)) else { continue };
            out.entry(Eui64(u64::from_be_bytes(eui))).or_default().push(u16::from_be_bytes(nonce));
        }
        Ok(out)
    }

    /// The next JoinNonce (0 on a new store).
    pub fn join_nonce(&self) -> Result<u32, StoreError> {
        Ok(self.tree.get(JOIN_NONCE)?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map_or(0, u32::from_be_bytes))
    }

    /// Remembers an accepted command id until `forget_after_ms` (replay protection across restarts).
    pub fn remember_command(&self, id: &str, forget_after_ms: i64) -> Result<(), StoreError> {
        self.tree.insert(prefixed(COMMAND_PREFIX, id.as_bytes()), &forget_after_ms.to_be_bytes())?;
        Ok(())
    }

    /// Accepted command ids with their forget-after time (ms); expired ones are deleted on the way.
    pub fn commands_seen(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(COMMAND_PREFIX) {
            let (k, v) = item?;
            let Ok(b) = <[u8; 8]>::try_from(v.as_ref()) else { continue };
            let until = i64::from_be_bytes(b);
            if until < now_ms {
                self.tree.remove(&k)?;
                continue;
            }
            out.push((String::from_utf8_lossy(&k[COMMAND_PREFIX.len()..]).into_owned(), until));
        }
        Ok(out)
    }

    /// Devices added or changed remotely (`device.upsert`), as the JSON of their config table.
    pub fn remote_devices(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(REMOTE_DEVICE_PREFIX) {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k[REMOTE_DEVICE_PREFIX.len()..]).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Stores (Some) or deletes (None) a remote device; a deleted device is remembered as an empty
    /// value so that it stays removed even if the config file still lists it.
    pub fn set_remote_device(&self, name: &str, json: Option<&[u8]>) -> Result<(), StoreError> {
        self.tree.insert(prefixed(REMOTE_DEVICE_PREFIX, name.as_bytes()), json.unwrap_or(&[]))?;
        Ok(())
    }

    /// Age of the oldest record in the outbox, from the `at` of its payload.
    pub fn oldest_record_age_s(&self, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
        let r = self.read_from(0, 1).ok()?.into_iter().next()?;
        let v: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
        let at = chrono::DateTime::parse_from_rfc3339(v.get("at")?.as_str()?).ok()?;
        Some((now - at.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self._db.size_on_disk().unwrap_or(0)
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

    #[test]
    fn lorawan_state_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        let sess = StoredSession {
            dev_addr: DevAddr(0x0100_0001),
            nwk_s_key: Key128::new([1; 16]),
            app_s_key: Key128::new([2; 16]),
        };
        {
            let s = Store::open(dir.path(), 1 << 20).unwrap();
            let mut b = Batch::default();
            b.set_session("pir-01", &sess);
            b.set_fcnt_down("pir-01", 7);
            b.add_dev_nonce(Eui64(0x0102030405060708), 0x1234);
            b.add_dev_nonce(Eui64(0x0102030405060708), 0x0001);
            b.set_join_nonce(3);
            s.commit(b).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.sessions().unwrap().get("pir-01"), Some(&sess));
        assert_eq!(s.fcnts_down().unwrap().get("pir-01"), Some(&7));
        let mut n = s.dev_nonces().unwrap().remove(&Eui64(0x0102030405060708)).unwrap();
        n.sort();
        assert_eq!(n, vec![1, 0x1234]);
        assert_eq!(s.join_nonce().unwrap(), 3);
    }
}
