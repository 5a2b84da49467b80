//! The outbox log's entry format: how one [`Store::commit`](super::Store::commit) becomes bytes in a
//! segment file, and back.
//!
//! An entry is a header (body length, CRC-32 of the body; both u32 LE) and a body: lsn, time (ms since
//! 1970), the counts of records, state changes and acknowledgement ranges, then each of them. A record
//! is its seq, kind, payload format (`codec.rs`), topic (the kind's usual prefix stored as one tag byte)
//! and stored payload; a state change is a sled key and value; an acknowledgement is an inclusive seq
//! range. The CRC makes a torn or damaged entry detectable: reading stops there.

use super::codec;
use super::fs::FsFile;
use super::RecordKind;

/// Log entry header: body length and CRC-32 of the body.
const HEADER: usize = 8;
/// Entries larger than this are refused (and a longer length in a header means damage).
const MAX_ENTRY: usize = 64 << 20;

/// One decoded log entry.
#[derive(Debug, Default)]
pub(super) struct Entry {
    pub(super) lsn: u64,
    pub(super) time_ms: u64,
    /// (seq, kind, topic, format, stored payload)
    pub(super) records: Vec<(u64, RecordKind, String, u8, Vec<u8>)>,
    pub(super) kv: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) acks: Vec<(u64, u64)>,
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

pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
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
pub(super) fn read_entry(file: &dyn FsFile, offset: u64, file_len: u64) -> Result<Option<(Entry, u64)>, ()> {
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

/// Acknowledged seqs as the inclusive ranges an entry stores.
pub(super) fn ack_ranges(mut seqs: Vec<u64>) -> Vec<(u64, u64)> {
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
