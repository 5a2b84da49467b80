use super::log_format::read_entry;
use super::*;
use crate::keys::{DevAddr, Eui64, Key128};
use std::io::Write;
use std::os::unix::fs::FileExt;

/// The caller's clock (the store reads none).
fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn rec(seq: u64) -> Record {
    let pad = "x".repeat(200);
    Record::new(
        seq,
        Topic::Reading("d".into()),
        format!("{{\"seq\":{seq},\"device\":\"d\",\"pad\":\"{pad}\"}}").into_bytes(),
    )
}

fn opts(max_bytes: u64) -> StoreOptions {
    StoreOptions { max_bytes, segment_bytes: Some(4096), gateway_id: "gw".into(), ..StoreOptions::default() }
}

fn put(s: &Store, n: usize) -> Vec<u64> {
    let mut b = Batch::default();
    let mut seqs = Vec::new();
    for _ in 0..n {
        let seq = s.allocate_seq();
        seqs.push(seq);
        b.push_record(rec(seq));
    }
    s.commit(b, now()).unwrap();
    s.flush_blocking().unwrap();
    seqs
}

#[test]
fn seq_survives_reopen_and_outbox_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), 1 << 20, now()).unwrap();
        let mut b = Batch::default();
        for _ in 0..3 {
            let seq = s.allocate_seq();
            b.push_record(rec(seq));
        }
        b.set_fcnt("d", 41);
        s.commit(b, now()).unwrap();
        s.flush_blocking().unwrap();
        s.ack(&[1]).unwrap();
        s.maintain(now()).unwrap();
    }
    let s = Store::open(dir.path(), 1 << 20, now()).unwrap();
    assert!(s.next_seq() >= 4);
    assert_eq!(s.fcnts().unwrap().get("d"), Some(&41));
    let r = s.read_from(0, 10).unwrap();
    assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(r[0], rec(2));
    assert_eq!(s.depth(), 2);
    assert_eq!(s.oldest(), Some(1));
}

#[test]
fn lorawan_state_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let sess = crate::lorawan::lifecycle::SessionRecord {
        current: Some(crate::lorawan::lifecycle::SessionId {
            dev_addr: DevAddr(0x0100_0001),
            nwk_s_key: Key128::new([1; 16]),
            app_s_key: Key128::new([2; 16]),
        }),
        retired: Vec::new(),
    };
    {
        let s = Store::open(dir.path(), 1 << 20, now()).unwrap();
        let mut b = Batch::default();
        b.set_session_record("pir-01", &sess);
        b.set_fcnt_down("pir-01", 7);
        b.add_dev_nonce(Eui64(0x0102030405060708), 0x1234);
        b.add_dev_nonce(Eui64(0x0102030405060708), 0x0001);
        b.set_join_nonce(3);
        s.commit(b, now()).unwrap();
        s.flush_blocking().unwrap();
        s.remember_command("cmd-1", i64::MAX, now()).unwrap();
        s.set_remote_device("x", Some(b"{}"), now()).unwrap();
        s.flush_blocking().unwrap();
        // No sled apply, no clean close: the state comes back from the log alone.
        drop(s);
    }
    let s = Store::open(dir.path(), 1 << 20, now()).unwrap();
    assert_eq!(s.session_records().unwrap().get("pir-01"), Some(&sess));
    assert_eq!(s.fcnts_down().unwrap().get("pir-01"), Some(&7));
    let mut n = s.dev_nonces().unwrap().remove(&Eui64(0x0102030405060708)).unwrap();
    n.sort();
    assert_eq!(n, vec![1, 0x1234]);
    assert_eq!(s.join_nonce().unwrap(), 3);
    assert_eq!(s.commands_seen(0).unwrap().len(), 1);
    assert_eq!(s.remote_devices().unwrap(), vec![("x".to_string(), b"{}".to_vec())]);
}

#[test]
fn acked_segments_are_deleted_and_seq_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let last;
    {
        let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
        let mut all = Vec::new();
        for _ in 0..50 {
            all.extend(put(&s, 20));
        }
        assert!(s.lock().segments.len() > 3);
        s.ack(&all).unwrap();
        s.maintain(now()).unwrap();
        assert_eq!(s.depth(), 0);
        assert!(s.lock().segments.len() <= 2, "acknowledged segments go");
        last = *all.last().unwrap();
        drop(s);
    }
    let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
    assert!(s.next_seq() > last);
    assert_eq!(s.depth(), 0, "acks survive a crash");
}

#[test]
fn drop_oldest_keeps_events_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), opts(64 << 10), now()).unwrap();
    let mut events = Vec::new();
    let mut readings = 0u64;
    for i in 0..400 {
        let mut b = Batch::default();
        let seq = s.allocate_seq();
        if i % 50 == 0 {
            events.push(seq);
            b.push_record(Record::new(
                seq,
                Topic::Event("bin-1".into()),
                format!("{{\"seq\":{seq},\"event\":\"x\"}}").into_bytes(),
            ));
        } else {
            readings += 1;
            b.push_record(rec(seq));
        }
        s.commit(b, now()).unwrap();
    }
    s.flush_blocking().unwrap();
    assert!(s.log_bytes() <= 64 << 10);
    let dropped = s.stats().readings_dropped.load(Ordering::Relaxed);
    assert!(dropped > 0);
    assert_eq!(s.stats().others_dropped.load(Ordering::Relaxed), 0);
    let left = s.read_from(0, 10_000).unwrap();
    for e in &events {
        assert!(left.iter().any(|r| r.seq == *e), "event {e} kept");
    }
    let left_readings = left.iter().filter(|r| r.kind() == RecordKind::Reading).count() as u64;
    assert_eq!(left_readings + dropped, readings, "every reading is either there or counted");
    // The episode ends after a quiet period with one event carrying the counts.
    s.lock().episode.as_mut().unwrap().last_drop -= EPISODE_QUIET;
    let a = s.maintain(now()).unwrap().expect("the episode ended");
    let mut b = Batch::default();
    b.push_announcement(a, s.allocate_seq());
    s.commit(b, now()).unwrap();
    s.flush_blocking().unwrap();
    let ev: Vec<_> =
        s.read_from(0, 10_000).unwrap().into_iter().filter(|r| r.topic == Topic::Event("gw".into())).collect();
    assert_eq!(ev.len(), 1);
    let j: serde_json::Value = serde_json::from_slice(&ev[0].payload).unwrap();
    assert_eq!(j["event"], "buffer_dropped");
    assert_eq!(j["readings_dropped"], dropped);
    assert_eq!(j["seq"], ev[0].seq);
    assert_eq!(j["policy"], "drop-oldest");
    assert!(s.maintain(now()).unwrap().is_none(), "one announcement per episode");
}

#[test]
fn drop_newest_refuses_new_readings() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        Store::open_with(dir.path(), StoreOptions { policy: DropPolicy::DropNewest, ..opts(64 << 10) }, now()).unwrap();
    let mut total = 0;
    for _ in 0..100 {
        put(&s, 10);
        total += 10;
    }
    let dropped = s.stats().readings_dropped.load(Ordering::Relaxed);
    let kept = s.read_from(0, 100_000).unwrap();
    assert!(dropped > 0);
    assert_eq!(kept.len() as u64 + dropped, total);
    assert_eq!(kept.first().unwrap().seq, 1, "the oldest stay");
}

#[test]
fn torn_tail_is_cut_and_damage_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    {
        let s = Store::open_with(&store_dir, opts(1 << 20), now()).unwrap();
        put(&s, 10);
        drop(s);
    }
    // A torn write at the end of the log.
    let seg = std::fs::read_dir(store_dir.join("wal")).unwrap().flatten().map(|e| e.path()).max().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);
    let next;
    {
        let s = Store::open_with(&store_dir, opts(1 << 20), now()).unwrap();
        assert_eq!(s.open_report().entries_cut, 1);
        assert_eq!(s.depth(), 10);
        next = s.next_seq();
        drop(s);
    }
    // Garbage in sled's file: moved aside, a fresh store starts with the log's records.
    let db = store_dir.join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.write_all_at(&vec![0xA5; len as usize], 0).unwrap();
    drop(f);
    let s = Store::open_with(&store_dir, opts(1 << 20), now()).unwrap();
    let (aside, _) = s.open_report().damaged.clone().expect("damage detected");
    assert!(aside.exists());
    let first_new = s.next_seq();
    assert!(first_new >= next, "no seq reused after damage");
    // The store allocated no seq for its event: the opener journals it.
    let event = s.open_report().damage_event.clone().expect("a store_damaged event to journal");
    assert_eq!(s.next_seq(), first_new);
    let mut b = Batch::default();
    b.push_announcement(event, s.allocate_seq());
    s.commit(b, now()).unwrap();
    s.flush_blocking().unwrap();
    let recs = s.read_from(0, 100).unwrap();
    assert_eq!(recs.iter().filter(|r| r.kind() == RecordKind::Reading).count(), 10);
    let ev = recs.iter().find(|r| r.topic == Topic::Event("gw".into())).expect("the event is in the outbox");
    let j: serde_json::Value = serde_json::from_slice(&ev.payload).unwrap();
    assert_eq!((j["event"].as_str(), j["seq"].as_u64()), (Some("store_damaged"), Some(first_new)));
    assert_eq!(j["records_recovered"], 10);
}

#[test]
fn read_range_filters_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
    let seqs: Vec<u64> = (0..30).flat_map(|_| put(&s, 7)).collect();
    let mut got = Vec::new();
    let mut from = 0;
    loop {
        let r = s.read_range(from, u64::MAX, 5, |r| r.seq % 2 == 0).unwrap();
        if r.is_empty() {
            break;
        }
        from = r.last().unwrap().seq + 1;
        got.extend(r.into_iter().map(|r| r.seq));
    }
    assert_eq!(got, seqs.iter().copied().filter(|s| s % 2 == 0).collect::<Vec<_>>());
    assert_eq!(s.read_range(0, 5, 100, |_| true).unwrap().len(), 4);
}

#[test]
fn readers_see_only_what_is_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
    let flushed = put(&s, 3);
    assert_eq!(s.max_committed(), *flushed.last().unwrap());
    // Committed, not yet flushed: not visible to the uplink by any read path.
    let mut b = Batch::default();
    let seq = s.allocate_seq();
    b.push_record(rec(seq));
    b.set_fcnt("d", 9);
    s.commit(b, now()).unwrap();
    assert_eq!(s.max_committed(), *flushed.last().unwrap(), "the watermark waits for the fsync");
    assert_eq!(s.outbox_snapshot().0, *flushed.last().unwrap());
    let seen: Vec<u64> = s.read_from(0, 100).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(seen, flushed, "read_from stops at the durable watermark");
    assert!(s.read_range(seq, u64::MAX, 10, |_| true).unwrap().is_empty());
    s.flush_blocking().unwrap();
    assert_eq!(s.max_committed(), seq);
    assert_eq!(s.read_range(seq, u64::MAX, 10, |_| true).unwrap().len(), 1);
}

/// The state keys of the last entry in the active segment.
fn last_entry_keys(s: &Store) -> Vec<Vec<u8>> {
    let st = s.lock();
    let seg = &st.segments[&st.active];
    let (mut off, mut keys) = (0, Vec::new());
    while let Ok(Some((e, next))) = read_entry(&*seg.file, off, seg.bytes) {
        keys = e.kv.into_iter().map(|(k, _)| k).collect();
        off = next;
    }
    keys
}

#[test]
fn loops_state_survives_reopen_and_an_unchanged_state_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = br#"{"aggregates":null,"events":{"containers":{}}}"#.to_vec();
    {
        let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
        assert_eq!(s.loops_state(), None);
        let mut b = Batch::default();
        assert!(s.stage_loops_state(&mut b, state.clone()), "a new state is staged");
        s.commit(b, now()).unwrap();
        s.flush_blocking().unwrap();
        assert_eq!(s.loops_state().as_deref(), Some(state.as_slice()));

        // The same state again: the batch stays empty, and even set directly nothing is written.
        let mut b = Batch::default();
        assert!(!s.stage_loops_state(&mut b, state.clone()));
        assert!(b.is_empty());
        let (bytes, lsn) = (s.stats().log_bytes.load(Ordering::Relaxed), s.lock().written_lsn);
        let mut b = Batch::default();
        b.set_loops_state(state.clone());
        s.commit(b, now()).unwrap();
        assert_eq!(s.stats().log_bytes.load(Ordering::Relaxed), bytes, "no log write");
        assert_eq!(s.lock().written_lsn, lsn, "no entry (so nothing new for sled either)");
        // With other changes, only they are written.
        let mut b = Batch::default();
        b.set_fcnt("d", 3);
        b.set_loops_state(state.clone());
        s.commit(b, now()).unwrap();
        assert_eq!(last_entry_keys(&s), vec![b"f/d".to_vec()], "the unchanged state is left out");
        s.flush_blocking().unwrap();
        // Not in sled yet: the state comes back from the log alone.
        drop(s);
    }
    let changed = br#"{"aggregates":null,"events":null}"#.to_vec();
    {
        let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
        assert_eq!(s.loops_state().as_deref(), Some(state.as_slice()), "survives a reopen");
        let mut b = Batch::default();
        assert!(!s.stage_loops_state(&mut b, state.clone()), "unchanged after a reopen too");
        assert!(s.stage_loops_state(&mut b, changed.clone()));
        s.commit(b, now()).unwrap();
        s.flush_blocking().unwrap();
        // Made durable in sled: at the next open it comes from sled, not from the log.
        let mut st = s.lock();
        s.apply_to_sled(&mut st, true).unwrap();
        drop(st);
        drop(s);
    }
    let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
    assert_eq!(s.loops_state().as_deref(), Some(changed.as_slice()));
    assert_eq!(s.fcnts().unwrap().get("d"), Some(&3));
}

#[test]
fn the_old_loops_file_is_adopted_once_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("loops.json");
    let store_dir = dir.path().join("store");
    std::fs::write(&file, b"{\"old\":1}").unwrap();
    {
        let s = Store::open_with(&store_dir, opts(1 << 20), now()).unwrap();
        assert!(s.adopt_loops_file(&file, now()).unwrap(), "adopted");
        assert!(!file.exists(), "removed once committed");
        assert_eq!(s.loops_state().as_deref(), Some(&b"{\"old\":1}"[..]));
        assert!(!s.adopt_loops_file(&file, now()).unwrap(), "nothing to adopt any more");
    }
    // A file left over (as if the removal had been cut short) does not replace the store's state.
    std::fs::write(&file, b"{\"older\":0}").unwrap();
    let s = Store::open_with(&store_dir, opts(1 << 20), now()).unwrap();
    assert_eq!(s.loops_state().as_deref(), Some(&b"{\"old\":1}"[..]), "durable: came back from the store");
    assert!(!s.adopt_loops_file(&file, now()).unwrap());
    assert!(!file.exists());
    assert_eq!(s.loops_state().as_deref(), Some(&b"{\"old\":1}"[..]));
}

#[test]
fn a_reopened_state_database_gets_the_newest_values_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
    for (fcnt, loops) in [(1, "a"), (2, "b"), (3, "c")] {
        let mut b = Batch::default();
        b.set_fcnt("d", fcnt);
        b.set_loops_state(loops.into());
        s.commit(b, now()).unwrap();
    }
    s.flush_blocking().unwrap();
    // sled failed (an I/O error): the store dropped it, with the changes it had not applied yet.
    {
        let mut st = s.lock();
        st.pending_kv.clear();
        st.tree = None;
        st.db = None;
        st.sled_broken_since = Some(Instant::now() - Duration::from_secs(3));
    }
    s.maintain(now()).unwrap();
    assert!(s.lock().tree.is_some(), "sled is back");
    assert_eq!(s.fcnts().unwrap().get("d"), Some(&3), "the newest value from the log, not the oldest");
    drop(s);
    let s = Store::open_with(dir.path(), opts(1 << 20), now()).unwrap();
    assert_eq!(s.fcnts().unwrap().get("d"), Some(&3));
    assert_eq!(s.loops_state().as_deref(), Some(&b"c"[..]));
}

#[test]
fn padding_entries_have_the_asked_length_and_read_back_empty() {
    assert_eq!(log_format::encode_padding(log_format::MIN_PADDING - 1), None);
    for len in [log_format::MIN_PADDING, 100, 4000, 4096] {
        let pad = log_format::encode_padding(len).unwrap();
        assert_eq!(pad.len(), len);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, &pad).unwrap();
        let f = super::fs::Fs::open(&super::fs::RealFs, &path, false).unwrap();
        let (e, end) = read_entry(&*f, 0, len as u64).unwrap().unwrap();
        assert_eq!((e.lsn, e.records.len(), e.kv.len(), e.acks.len(), end), (0, 0, 0, 0, len as u64));
    }
}

/// Interval durability: each fsync that wrote entries ends the segment on a page boundary, so the
/// next window starts on a fresh page; the padding never reaches the state or the outbox.
#[test]
fn pad_on_sync_starts_each_window_on_a_fresh_page() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions { pad_on_sync: true, segment_bytes: Some(1 << 20), ..opts(16 << 20) };
    let seg_len = || {
        let seg = std::fs::read_dir(dir.path().join("wal")).unwrap().flatten().map(|e| e.path()).max().unwrap();
        std::fs::metadata(seg).unwrap().len()
    };
    let mut seqs = Vec::new();
    {
        let s = Store::open_with(dir.path(), o.clone(), now()).unwrap();
        for window in 1..=3u64 {
            let mut b = Batch::default();
            b.set_fcnt("d", window as u32);
            let seq = s.allocate_seq();
            seqs.push(seq);
            b.push_record(rec(seq));
            s.commit(b, now()).unwrap();
            s.flush_blocking().unwrap();
            assert_eq!(seg_len() % 4096, 0, "window {window}");
            assert!(seg_len() >= window * 4096);
        }
        // A flush with nothing new writes nothing.
        let before = seg_len();
        s.flush_blocking().unwrap();
        assert_eq!(seg_len(), before);
        assert!(s.stats().padding_bytes.load(Ordering::Relaxed) > 0);
    }
    let s = Store::open_with(dir.path(), o, now()).unwrap();
    assert_eq!(s.open_report().entries_cut, 0);
    assert_eq!(s.read_from(0, 10).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(s.fcnts().unwrap().get("d"), Some(&3));
    assert_eq!(s.fcnts().unwrap().len(), 1);
}

/// Reserved segments: a new segment has its whole size from the start and appends never grow it (the
/// fsyncs carry no size change); reopening reads every entry up to the zeros (not counted as damage)
/// and gives a closed segment's unused reservation back.
#[test]
fn reserved_segments_never_grow_and_read_back_to_their_last_entry() {
    let dir = tempfile::tempdir().unwrap();
    let seg_size = 64 << 10;
    let o = StoreOptions { preallocate: true, segment_bytes: Some(seg_size), ..opts(16 << 20) };
    let segs = || {
        let mut v: Vec<_> = std::fs::read_dir(dir.path().join("wal")).unwrap().flatten().map(|e| e.path()).collect();
        v.sort();
        v.into_iter().map(|p| std::fs::metadata(p).unwrap().len()).collect::<Vec<_>>()
    };
    let mut seqs = Vec::new();
    {
        let s = Store::open_with(dir.path(), o.clone(), now()).unwrap();
        assert_eq!(segs(), vec![seg_size], "reserved at creation");
        for _ in 0..8 {
            seqs.extend(put(&s, 40));
            s.flush_blocking().unwrap();
        }
        let sizes = segs();
        assert!(sizes.len() > 1, "the records span segments: {sizes:?}");
        assert!(sizes.iter().all(|l| *l == seg_size), "no segment grew or shrank: {sizes:?}");
    }
    let s = Store::open_with(dir.path(), o, now()).unwrap();
    assert_eq!(s.open_report().entries_cut, 0, "zeros after the last entry are not damage");
    assert_eq!(s.read_from(0, 1000).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    let sizes = segs();
    let (last, closed) = sizes.split_last().unwrap();
    assert_eq!(*last, seg_size, "the new active segment is reserved");
    assert!(closed.iter().all(|l| *l < seg_size), "closed segments give their reservation back: {sizes:?}");
}
