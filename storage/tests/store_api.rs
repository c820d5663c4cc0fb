//! The store's API: appends, queries, frontiers with sparse (epoch) seqs,
//! dedup and equivocation, batches, epochs, the group-commit writer.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use libp2p_identity::Keypair;
use metamesh_protocol::record::{PatternBody, SignedRecord};
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::stats::DepthTable;
use metamesh_protocol::wire::RequestFilters;
use metamesh_storage::{
    AppendOutcome, Batch, InsertOutcome, Outcomes, Store, StoreConfig, StoreError, Writer,
    WriterConfig, MAX_MODES_PER_ORIGIN, SCHEMA_VERSION,
};

fn key(i: u8) -> Keypair {
    Keypair::ed25519_from_bytes([i; 32]).unwrap()
}

fn pattern(i: u64, depth: Depth, q: f64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("p{i}"), "node_id": "n", "timestamp": 1_700_000_000.0 + i as f64,
            "platform": "test", "depth_used": depth.as_str(), "mode": format!("m{}", i % 3),
            "quality_achieved": q, "success": q > 0.5, "atp_before": 100.0, "atp_after": 90.0
        }),
        None,
    )
    .unwrap()
}

/// Open, waiting while a just-dropped instance's background threads still
/// hold sled's file lock (they release it shortly after the drop).
fn open_at(path: &Path) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match Store::open(path, &StoreConfig::default()) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => return r,
        }
    }
}

fn open(dir: &Path) -> Store {
    open_at(&dir.join("store")).unwrap()
}

fn signed(k: &Keypair, seq: u64, prev: Option<u64>, p: Pattern) -> (SignedRecord, PatternBody) {
    SignedRecord::sign_pattern_after(p, seq, prev, k)
}

#[test]
fn append_query_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let k = key(1);
    let mut seqs = Vec::new();
    for i in 0..10u64 {
        let d = Depth::ALL[(i % 5) as usize];
        let (_, b) = s.append_local(&k, pattern(i, d, i as f64 / 10.0)).unwrap();
        seqs.push(b.seq);
    }
    let epoch = s.current_epoch().unwrap() as u64;
    assert_eq!(seqs, (1..=10).map(|c| epoch << 32 | c).collect::<Vec<_>>());
    assert_eq!(s.own_seq(), epoch << 32 | 10);
    assert_eq!(s.pattern_count(), 10);
    let me = k.public().to_peer_id();
    assert_eq!(s.frontier().get(&me), Some(&(epoch << 32 | 10)));
    assert_eq!(s.depth_distribution()[&Depth::Deep], 2);
    assert_eq!(s.stats_of(&me), s.merged_stats());
    assert_eq!(s.origin_stats().len(), 1);
    let modes = s.origin_mode_stats(&me);
    assert_eq!(modes.len(), 3);
    assert_eq!(modes.values().map(|m| m.n).sum::<u64>(), 10);

    let f = RequestFilters {
        depths: Some(vec![Depth::Deep, Depth::Thorough]),
        min_quality: Some(0.35),
        ..Default::default()
    };
    let (page, cur) = s.query(&f, None, 100).unwrap();
    assert!(cur.is_none());
    let qs: Vec<f64> = page
        .iter()
        .map(|(_, b)| b.pattern.quality_achieved)
        .collect();
    assert_eq!(qs, vec![0.4, 0.8, 0.9]);
    // paging by cursor, in (origin, seq) order
    let f = RequestFilters {
        min_timestamp: Some(1_700_000_003.0),
        ..Default::default()
    };
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = s.query(&f, cursor, 2).unwrap();
        got.extend(page.into_iter().map(|(_, b)| b.seq & 0xffff_ffff));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(got, vec![4, 5, 6, 7, 8, 9, 10]);
    let f = RequestFilters {
        max_count: Some(3),
        ..Default::default()
    };
    assert_eq!(s.query(&f, None, 100).unwrap().0.len(), 3);

    // A range across the whole epoch gap counts records, not slots.
    let r = s
        .records_in_range(me, 0, u64::MAX, 100, usize::MAX)
        .unwrap();
    assert_eq!(r.len(), 10);
    let r = s
        .records_in_range(me, seqs[2], seqs[6], 100, usize::MAX)
        .unwrap();
    assert_eq!(r.len(), 5);
    let one = r[0].to_bytes().len();
    assert_eq!(
        s.records_in_range(me, seqs[2], seqs[6], 2, usize::MAX)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.records_in_range(me, seqs[2], seqs[6], 100, one * 2 + 1)
            .unwrap()
            .len(),
        2
    );
    let h = r[0].content_hash();
    assert_eq!(s.get_by_hash(&h).unwrap().unwrap(), r[0]);
    assert!(s.contains_hash(&h).unwrap());
    assert!(s.holds(&me, seqs[2], &h).unwrap());
    assert!(!s.holds(&me, seqs[3], &h).unwrap());
    assert_eq!(s.get(&me, seqs[2]).unwrap().unwrap().0, r[0]);
    assert_eq!(s.iter_records().count(), 10);
}

#[test]
fn has_seq_is_exactly_the_stored_or_declined_slots() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let (ka, kb) = (key(3), key(4));
    let (a, b) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    // (origin index, seq, declined?) in arrival order; seq 9 of `a` never arrives.
    let arrivals = [
        (0, 3, false),
        (1, 1, false),
        (0, 5, true),
        (0, 1, false),
        (0, 2, true),
        (1, 3, false),
        (0, 4, false),
        (0, 10, false),
        (1, 2, true),
        (0, 6, false),
        (0, 8, false),
        (0, 7, false),
    ];
    let mut held: std::collections::HashSet<(usize, u64)> = Default::default();
    for (o, seq, declined) in arrivals {
        let (k, origin) = if o == 0 { (&ka, a) } else { (&kb, b) };
        let (rec, body) = signed(
            k,
            seq,
            None,
            pattern(seq * 10 + o as u64, Depth::Light, 0.5),
        );
        if declined {
            s.mark_declined(origin, seq, rec.content_hash()).unwrap();
        } else {
            assert_eq!(s.insert(&rec, &body).unwrap(), InsertOutcome::Inserted);
        }
        held.insert((o, seq));
        for (oi, origin) in [(0usize, a), (1, b)] {
            for q in 0..=12u64 {
                assert_eq!(
                    s.has_seq(&origin, q).unwrap(),
                    held.contains(&(oi, q)),
                    "origin {oi} seq {q} after ({o}, {seq})"
                );
            }
        }
    }
    assert_eq!(s.frontier()[&a], 8);
    assert_eq!(s.frontier()[&b], 3);
}

#[test]
fn frontier_follows_prev_across_epoch_gaps_in_any_arrival_order() {
    let k = key(7);
    let o = k.public().to_peer_id();
    let (e1, e2) = (5u64 << 32, 9u64 << 32);
    // chain: 1, 2, 3 | e1|1 (prev 3), e1|2 | e2|1 (prev e1|2), e2|2
    let chain: Vec<(u64, Option<u64>)> = vec![
        (1, None),
        (2, None),
        (3, None),
        (e1 | 1, Some(3)),
        (e1 | 2, None),
        (e2 | 1, Some(e1 | 2)),
        (e2 | 2, None),
    ];
    let recs: Vec<_> = chain
        .iter()
        .enumerate()
        .map(|(i, (seq, prev))| signed(&k, *seq, *prev, pattern(i as u64, Depth::Deep, 0.5)))
        .collect();
    for order in [
        vec![0, 1, 2, 3, 4, 5, 6],
        vec![6, 5, 4, 3, 2, 1, 0],
        vec![3, 0, 5, 1, 6, 2, 4],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        for (n, &i) in order.iter().enumerate() {
            let (r, b) = &recs[i];
            assert_eq!(s.insert(r, b).unwrap(), InsertOutcome::Inserted);
            // the frontier is the end of the longest held prefix of the chain
            let held: std::collections::HashSet<usize> = order[..=n].iter().copied().collect();
            let prefix = (0..recs.len()).take_while(|j| held.contains(j)).count();
            let expect = if prefix == 0 {
                None
            } else {
                Some(chain[prefix - 1].0)
            };
            assert_eq!(
                s.frontier().get(&o).copied(),
                expect,
                "order {order:?} after {n}"
            );
            for (j, (seq, _)) in chain.iter().enumerate() {
                assert_eq!(s.has_seq(&o, *seq).unwrap(), held.contains(&j));
            }
            // An empty slot inside the chain's span is "held" only once the
            // frontier passed it (nothing to fetch there).
            let f = s.frontier().get(&o).copied().unwrap_or(0);
            assert_eq!(s.has_seq(&o, e1 | 3).unwrap(), f > e1 | 3);
        }
        // a declined record also extends by its prev
        let (r, b) = signed(&k, e2 | 10, Some(e2 | 2), pattern(99, Depth::Deep, 0.5));
        assert!(s.decline(&b, r.content_hash()).unwrap());
        assert_eq!(s.frontier()[&o], e2 | 10);
        assert!(!s.decline(&b, r.content_hash()).unwrap(), "already held");
    }
}

#[test]
fn out_of_order_frontier_duplicates_and_equivocation() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let k = key(2);
    let o = k.public().to_peer_id();
    let recs: Vec<_> = (1..=6)
        .map(|i| signed(&k, i, None, pattern(i, Depth::Light, 0.5)))
        .collect();
    for i in [2usize, 4, 5] {
        assert_eq!(
            s.insert(&recs[i].0, &recs[i].1).unwrap(),
            InsertOutcome::Inserted
        );
    }
    assert!(
        !s.frontier().contains_key(&o),
        "no frontier entry until seq 1 is held"
    );
    s.insert(&recs[0].0, &recs[0].1).unwrap();
    assert_eq!(s.frontier()[&o], 1);
    s.mark_declined(o, 2, recs[1].0.content_hash()).unwrap();
    assert_eq!(s.frontier()[&o], 3);
    assert_eq!(
        s.insert(&recs[3].0, &recs[3].1).unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(s.frontier()[&o], 6);
    assert_eq!(
        s.insert(&recs[3].0, &recs[3].1).unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(
        s.insert(&recs[1].0, &recs[1].1).unwrap(),
        InsertOutcome::Duplicate
    );
    assert!(
        s.holds(&o, 2, &recs[1].0.content_hash()).unwrap(),
        "declined counts as held"
    );
    assert_eq!(s.pattern_count(), 5);
    let (bad, bad_body) = signed(&k, 3, None, pattern(99, Depth::Deep, 0.9));
    match s.insert(&bad, &bad_body).unwrap() {
        InsertOutcome::Equivocation { existing } => assert_eq!(existing, recs[2].0),
        other => panic!("{other:?}"),
    }
    assert!(!s.holds(&o, 3, &bad.content_hash()).unwrap());
    assert_eq!(s.pattern_count(), 5);
    let ev = s.equivocations().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].origin, ev[0].seq), (o, 3));
    assert_eq!(ev[0].conflicting, bad);
    assert_eq!(ev[0].held.as_ref(), Some(&recs[2].0));
}

#[test]
fn batch_matches_single_inserts_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(3);
    let recs: Vec<_> = (1..=50)
        .map(|i| {
            signed(
                &k,
                i,
                None,
                pattern(i, Depth::ALL[(i % 5) as usize], (i % 10) as f64 / 10.0),
            )
        })
        .collect();
    let expected = DepthTable::from_patterns(recs.iter().map(|(_, b)| &b.pattern));
    {
        let s = open(dir.path());
        let out = s.insert_batch(&recs).unwrap();
        assert!(out.iter().all(|o| *o == InsertOutcome::Inserted));
        s.close().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(s.merged_stats(), expected);
    assert_eq!(s.frontier()[&k.public().to_peer_id()], 50);
    assert_eq!(s.iter_records().count(), 50);
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.set_schema_version_for_tests(SCHEMA_VERSION + 1).unwrap();
    drop(s);
    match open_at(&dir.path().join("store")) {
        Err(e @ StoreError::NewerSchema { .. }) => assert!(e.to_string().contains("upgrade")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mode_stats_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let k = key(4);
    let batch: Vec<_> = (0..(MAX_MODES_PER_ORIGIN as u64 + 10))
        .map(|i| {
            let mut p = pattern(i, Depth::Deep, 0.5);
            p.mode = format!("mode{i}");
            (p, None)
        })
        .collect();
    s.append_local_batch(&k, batch).unwrap();
    let m = s.origin_mode_stats(&k.public().to_peer_id());
    assert_eq!(m.len(), MAX_MODES_PER_ORIGIN + 1);
    assert_eq!(m[metamesh_storage::store::OTHER_MODE].n, 10);
}

#[test]
fn import_keys_dedup_within_and_across_batches_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(5);
    let ik = [7u8; 32];
    {
        let s = open(dir.path());
        let out = s
            .append_local_batch(
                &k,
                vec![
                    (pattern(1, Depth::Deep, 0.5), Some(ik)),
                    (pattern(1, Depth::Deep, 0.5), Some(ik)),
                    (pattern(2, Depth::Deep, 0.5), None),
                ],
            )
            .unwrap();
        assert!(matches!(out[1], AppendOutcome::DuplicateImport));
        assert!(matches!(&out[2], AppendOutcome::Appended(_, b) if b.seq & 0xffff_ffff == 2));
        assert!(s.has_import_key(&ik).unwrap());
        assert!(!s.has_import_key(&[8u8; 32]).unwrap());
        s.close().unwrap();
    }
    let s = open(dir.path());
    assert!(s.has_import_key(&ik).unwrap());
    let out = s
        .append_local_batch(&k, vec![(pattern(1, Depth::Deep, 0.5), Some(ik))])
        .unwrap();
    assert!(matches!(out[0], AppendOutcome::DuplicateImport));
    assert_eq!(s.pattern_count(), 2);
}

#[test]
fn epochs_are_durable_and_a_restored_copy_never_reissues_a_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("store");
    let backup = tmp.path().join("backup");
    let k = key(6);
    let me = k.public().to_peer_id();
    let mut issued = std::collections::HashSet::new();
    // Day 1: 3 records, then a backup copy of the closed store.
    {
        let s = open_at(&path).unwrap();
        let info = s.begin_epoch(1_000).unwrap();
        assert_eq!((info.epoch, info.prev_seq), (1_000, 0));
        for i in 0..3 {
            let (_, b) = s.append_local(&k, pattern(i, Depth::Deep, 0.5)).unwrap();
            if i == 0 {
                assert_eq!(
                    b.prev_seq,
                    Some(0),
                    "the first record of an epoch names its prev"
                );
            } else {
                assert_eq!(b.prev_seq, None);
            }
            assert!(issued.insert(b.seq));
        }
        s.close().unwrap();
    }
    copy_dir(&path, &backup);
    // Day 2, same clock reading (a clock that did not move): more records.
    {
        let s = open_at(&path).unwrap();
        let info = s.begin_epoch(1_000).unwrap();
        assert_eq!(info.epoch, 1_001, "an epoch sorts after every earlier one");
        assert_eq!(info.prev_seq, 1_000 << 32 | 3);
        for i in 3..6 {
            let (_, b) = s.append_local(&k, pattern(i, Depth::Deep, 0.5)).unwrap();
            assert!(issued.insert(b.seq));
        }
        assert_eq!(
            s.frontier()[&me],
            1_001 << 32 | 3,
            "one gap-free chain across epochs"
        );
        s.close().unwrap();
    }
    // Restore the day-1 copy; the node restarts later (the clock moved on)
    // with no peer to ask, and records at once.
    std::fs::remove_dir_all(&path).unwrap();
    copy_dir(&backup, &path);
    let s = open_at(&path).unwrap();
    let info = s.begin_epoch(2_000).unwrap();
    assert!(info.epoch > 1_001);
    for i in 6..9 {
        let (_, b) = s.append_local(&k, pattern(i, Depth::Deep, 0.5)).unwrap();
        assert!(issued.insert(b.seq), "seq {} issued twice", b.seq);
    }
    // Appends without an explicit epoch begin one themselves (above the last).
    drop(s);
    let s = open_at(&path).unwrap();
    let (_, b) = s.append_local(&k, pattern(9, Depth::Deep, 0.5)).unwrap();
    assert!(issued.insert(b.seq));
    assert!(b.seq >> 32 > info.epoch as u64);
    // Own records coming back from peers above the counter start a new epoch.
    let before = s.current_epoch().unwrap();
    s.bump_own_seq((before as u64 + 5) << 32 | 7).unwrap();
    let (_, b) = s.append_local(&k, pattern(10, Depth::Deep, 0.5)).unwrap();
    assert!(b.seq >> 32 > before as u64 + 5);
    assert_eq!(b.prev_seq, Some((before as u64 + 5) << 32 | 7));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn concurrent_writers_share_flushes_and_every_ack_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let k = key(8);
    let other = key(9);
    let total;
    {
        let s = open_at(&path).unwrap();
        let w = Writer::start(s.clone(), Some(k.clone()), WriterConfig::default()).unwrap();
        let acks: Vec<u64> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8u64)
                .map(|t| {
                    let w = w.clone();
                    let other = &other;
                    sc.spawn(move || {
                        let mut seqs = Vec::new();
                        for i in 0..25u64 {
                            let n = t * 100 + i;
                            if t == 7 {
                                // a foreign record through the same writer
                                let rec = signed(other, i + 1, None, pattern(n, Depth::Light, 0.3));
                                match w.submit(Batch::Insert(vec![rec])).unwrap() {
                                    Outcomes::Inserted(o) => {
                                        assert_eq!(o, vec![InsertOutcome::Inserted])
                                    }
                                    o => panic!("{o:?}"),
                                }
                                continue;
                            }
                            match w
                                .submit(Batch::Append(vec![(pattern(n, Depth::Deep, 0.5), None)]))
                                .unwrap()
                            {
                                Outcomes::Appended(o) => match &o[..] {
                                    [AppendOutcome::Appended(_, b)] => seqs.push(b.seq),
                                    o => panic!("{o:?}"),
                                },
                                o => panic!("{o:?}"),
                            }
                        }
                        seqs
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = acks.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 7 * 25, "every own seq distinct");
        total = sorted;
        let st = w.stats();
        let groups = st.groups.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(st.jobs.load(std::sync::atomic::Ordering::Relaxed), 200);
        assert!(groups <= 200);
        w.shutdown();
        // Not closed cleanly: the acknowledged writes were flushed already.
        drop(s);
    }
    let s = open_at(&path).unwrap();
    let me = k.public().to_peer_id();
    for seq in &total {
        assert!(s.get(&me, *seq).unwrap().is_some());
    }
    assert_eq!(s.frontier()[&me], *total.last().unwrap());
    assert_eq!(s.frontier()[&other.public().to_peer_id()], 25);
    assert_eq!(s.pattern_count(), 200);
}

#[test]
fn kv_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let p = key(6).public().to_peer_id();
    s.put_reputation(&p, b"abc").unwrap();
    assert_eq!(s.reputation_entries(), vec![(p, b"abc".to_vec())]);
    s.put_peer_addrs(&p, &["/ip4/127.0.0.1/tcp/1".to_string()])
        .unwrap();
    assert_eq!(
        s.peer_addrs()[0].1,
        vec!["/ip4/127.0.0.1/tcp/1".to_string()]
    );
    let k = key(6);
    let mk = |seq| {
        let body = metamesh_protocol::record::InsightBody {
            v: metamesh_protocol::record::BODY_VERSION,
            origin: p,
            seq,
            prev_seq: None,
            computed_at: 1.0,
            stats: DepthTable::default(),
            insights: Default::default(),
        };
        (SignedRecord::sign_insight(&body, &k), body)
    };
    let (r2, b2) = mk(2);
    let (r1, b1) = mk(1);
    s.put_latest_insight(&r2, &b2).unwrap();
    s.put_latest_insight(&r1, &b1).unwrap();
    let li = s.latest_insights();
    assert_eq!(li.len(), 1);
    assert_eq!(li[0].1.seq, 2);
}

#[test]
fn concurrent_direct_appends_all_succeed_with_distinct_seqs() {
    // Regression: appends prepared outside the write lock could reserve own
    // seqs in one order and apply them in the other; the later one was then
    // refused ("own seqs moved while the batch was signed").
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let k = key(9);
    let seqs: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let (store, k) = (&store, &k);
                s.spawn(move || {
                    (0..40u64)
                        .map(|i| {
                            let p = pattern(t * 1000 + i, Depth::Standard, 0.5);
                            store.append_local(k, p).unwrap().1.seq
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), 320, "every append got its own seq");
    assert_eq!(store.pattern_count(), 320);
}
