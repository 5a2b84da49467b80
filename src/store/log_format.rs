//! The outbox log's entry format: how one [`Store::commit`](super::Store::commit) becomes bytes in a
//! segment file, and back.
//!
//! An entry is a header (body length, CRC-32 of the body; both u32 LE) and a body: lsn, time (ms since
//! 1970), the counts of records, state changes and acknowledgement ranges, then each of them. A record
//! is its seq, its topic's code (`Topic::code`), payload format (`codec.rs`), the topic's name (see
//! [`TAG_NAME`]) and stored payload; a state change is a sled key and value; an acknowledgement is an inclusive seq
//! range. The CRC makes a torn or damaged entry detectable: reading stops there.

use super::codec;
use super::fs::FsFile;
use super::Topic;

/// Log entry header: body length and CRC-32 of the body.
const HEADER: usize = 8;
/// Entries larger than this are refused (and a longer length in a header means damage).
const MAX_ENTRY: usize = 64 << 20;

/// One decoded log entry.
#[derive(Debug, Default)]
pub(super) struct Entry {
    pub(super) lsn: u64,
    pub(super) time_ms: u64,
    /// (seq, topic, format, stored payload)
    pub(super) records: Vec<(u64, Topic, u8, Vec<u8>)>,
    pub(super) kv: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) acks: Vec<(u64, u64)>,
}

/// How a record's topic is written: its [`Topic::code`] (one byte), then a tag and a string. Tag 1: the
/// string is the topic's [`Topic::name`]. Tag 0: the string is a whole topic suffix — written by
/// versions before topics were stored by variant (code 3, "any other topic": `lighting/{zone}`,
/// `dr/status`, `cmd/res`, ...), read back with [`Topic::from_legacy`]; this version writes tag 0
/// only for a [`Topic::Legacy`]. Codes 0-2 (readings, aggregates, events) were always written with
/// tag 1 and their name, as now.
const TAG_NAME: u8 = 1;

/// The key of a padding entry's one state change: an entry of lsn 0 whose only content is this key
/// with a value of zeros, written to fill a segment up to a page boundary
/// ([`encode_padding`]). Reading drops it, so it never reaches sled. It is a well-formed entry with a
/// CRC, not bare zeros: zeros in a segment still mean "torn or not written" (reading stops there, so a
/// power cut can never make the log skip over an unsynced hole), and a previous version reading the
/// log (a rollback) takes it for an ordinary state change of a key nothing reads.
pub(super) const PAD_KEY: &[u8] = b"~pad";

/// The smallest padding entry: header, the body's fixed part, one state change with [`PAD_KEY`].
pub(super) const MIN_PADDING: usize = HEADER + 28 + 2 + PAD_KEY.len() + 4;

/// A padding entry of exactly `len` bytes; None if `len` is below [`MIN_PADDING`].
pub(super) fn encode_padding(len: usize) -> Option<Vec<u8>> {
    let fill = len.checked_sub(MIN_PADDING)?;
    let e = Entry { kv: vec![(PAD_KEY.to_vec(), vec![0; fill])], ..Entry::default() };
    let b = encode_entry(&e);
    (b.len() == len).then_some(b)
}

pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + e.records.iter().map(|r| r.3.len() + r.1.name().len() + 16).sum::<usize>());
    b.extend_from_slice(&[0; HEADER]);
    b.extend_from_slice(&e.lsn.to_le_bytes());
    b.extend_from_slice(&e.time_ms.to_le_bytes());
    b.extend_from_slice(&(e.records.len() as u32).to_le_bytes());
    b.extend_from_slice(&(e.kv.len() as u32).to_le_bytes());
    b.extend_from_slice(&(e.acks.len() as u32).to_le_bytes());
    for (seq, topic, fmt, payload) in &e.records {
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(topic.code());
        b.push(*fmt);
        let (tag, t) = match topic {
            Topic::Legacy(t) => (0u8, t.as_str()),
            t => (TAG_NAME, t.name()),
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
        let code = r.u8()?;
        let fmt = r.u8()?;
        let tag = r.u8()?;
        let tlen = r.u16()? as usize;
        let t = std::str::from_utf8(r.bytes(tlen)?).ok()?.to_string();
        let topic = if tag == TAG_NAME { Topic::from_code(code, t) } else { Topic::from_legacy(t) };
        let plen = r.u32()? as usize;
        let payload = r.bytes(plen)?.to_vec();
        e.records.push((seq, topic, fmt, payload));
    }
    for _ in 0..n_kv {
        let klen = r.u16()? as usize;
        let k = r.bytes(klen)?.to_vec();
        let vlen = r.u32()? as usize;
        let v = r.bytes(vlen)?;
        if k != PAD_KEY {
            e.kv.push((k, v.to_vec()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of an entry with one record, as versions before `Topic` wrote it: code, format, tag 0
    /// and the whole topic string.
    fn old_body(code: u8, topic: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&7u64.to_le_bytes()); // lsn
        b.extend_from_slice(&0u64.to_le_bytes()); // time
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&42u64.to_le_bytes());
        b.extend_from_slice(&[code, 0, 0]);
        b.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        b.extend_from_slice(topic.as_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(b"{}");
        b
    }

    #[test]
    fn records_of_older_versions_read_back_as_their_topics() {
        for (topic, want) in [
            ("lighting/north", Topic::Lighting("north".into())),
            ("dr/status", Topic::DrStatus),
            ("cmd/res", Topic::CommandResult),
            ("loads/hp-1", Topic::Legacy("loads/hp-1".into())),
        ] {
            let e = decode_body(&old_body(3, topic)).expect("an old entry decodes");
            assert_eq!(e.records[0].1, want, "{topic}");
        }
    }

    #[test]
    fn every_topic_round_trips_through_an_entry() {
        let topics = [
            Topic::Reading("d".into()),
            Topic::Aggregate("lighting-north".into()),
            Topic::Event("gw".into()),
            Topic::Lighting("north".into()),
            Topic::DrStatus,
            Topic::CommandResult,
            Topic::Load("reading/looks-like-one".into()),
            Topic::Legacy("x/y".into()),
        ];
        let e = Entry {
            lsn: 1,
            records: topics.iter().enumerate().map(|(i, t)| (i as u64, t.clone(), 0, b"{}".to_vec())).collect(),
            ..Entry::default()
        };
        let bytes = encode_entry(&e);
        let back = decode_body(&bytes[HEADER..]).expect("decodes");
        let got: Vec<Topic> = back.records.into_iter().map(|r| r.1).collect();
        assert_eq!(got, topics);
    }
}
