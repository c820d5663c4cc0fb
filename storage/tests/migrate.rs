//! A store written in the schema-1 layout (today's main before this change:
//! one sled tree per index, records keyed `[len][PeerId][seq]`, envelopes in
//! CBOR, `by_hash` and `import_keys` trees, no compression) opens, is
//! upgraded in place, and keeps every record, slot, key and value.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::codec;
use metamesh_protocol::record::SignedRecord;
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::stats::DepthTable;
use metamesh_storage::{AppendOutcome, InsertOutcome, Store, StoreConfig, SCHEMA_VERSION};

fn pattern(i: u64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("m{i}"), "node_id": "n", "timestamp": 1_700_000_000.0 + i as f64,
            "platform": "test", "depth_used": Depth::ALL[(i % 5) as usize].as_str(), "mode": format!("m{}", i % 4),
            "quality_achieved": (i % 10) as f64 / 10.0, "success": i % 2 == 0, "atp_before": 100.0, "atp_after": 90.0
        }),
        None,
    )
    .unwrap()
}

fn v1_key(origin: &PeerId, seq: u64) -> Vec<u8> {
    let b = origin.to_bytes();
    let mut k = vec![b.len() as u8];
    k.extend_from_slice(&b);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The schema-1 writer, reduced to what a store holds: records with their
/// hash and import-key entries, a declined slot, evidence, the own seq,
/// merged statistics, a reputation entry.
fn write_v1(path: &Path, me: &Keypair, peer: &Keypair) -> DepthTable {
    let db = sled::Config::new().path(path).open().unwrap();
    let t = |n: &str| db.open_tree(n).unwrap();
    let (records, by_hash, import_keys, declined, equivocation, meta, reputation) = (
        t("records"),
        t("by_hash"),
        t("import_keys"),
        t("declined"),
        t("equivocation"),
        t("meta"),
        t("reputation"),
    );
    for n in [
        "by_time",
        "frontier",
        "pending",
        "stats",
        "mode_stats",
        "peers",
        "insights",
    ] {
        t(n);
    }
    let mut table = DepthTable::default();
    let mut put = |k: &Keypair, seq: u64, p: Pattern, ik: Option<[u8; 32]>| {
        table.add_pattern(&p);
        let rec = SignedRecord::sign_pattern(p, seq, k);
        let key = v1_key(&k.public().to_peer_id(), seq);
        records.insert(&key, rec.to_bytes()).unwrap();
        by_hash.insert(rec.content_hash().0, key.clone()).unwrap();
        if let Some(ik) = ik {
            import_keys.insert(ik, key).unwrap();
        }
    };
    for seq in 1..=40u64 {
        put(me, seq, pattern(seq), Some([seq as u8; 32]));
    }
    // the peer's seqs 1..=5 and 7; 6 declined; 9 arrived out of order
    for seq in [1u64, 2, 3, 4, 5, 7, 9] {
        put(peer, seq, pattern(100 + seq), None);
    }
    let p = peer.public().to_peer_id();
    declined.insert(v1_key(&p, 6), &[6u8; 32][..]).unwrap();
    let conflicting = SignedRecord::sign_pattern(pattern(999), 3, peer);
    equivocation
        .insert(v1_key(&p, 3), conflicting.to_bytes())
        .unwrap();
    meta.insert(b"schema_version", &1u32.to_be_bytes()[..])
        .unwrap();
    meta.insert(b"own_seq", &40u64.to_be_bytes()[..]).unwrap();
    meta.insert(b"merged_stats", codec::to_cbor(&table))
        .unwrap();
    reputation.insert(p.to_bytes(), &b"rep"[..]).unwrap();
    db.flush().unwrap();
    table
}

#[test]
fn a_schema_1_store_is_upgraded_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("store");
    let me = Keypair::ed25519_from_bytes([1; 32]).unwrap();
    let peer = Keypair::ed25519_from_bytes([2; 32]).unwrap();
    let table = write_v1(&path, &me, &peer);
    // sled releases the lock shortly after the drop
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let s = loop {
        match Store::open(&path, &StoreConfig::default()) {
            Err(metamesh_storage::StoreError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => break r.unwrap(),
        }
    };
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(!tmp.path().join("store.migrating").exists());
    assert!(!tmp.path().join("store.v1-old").exists());
    let (mp, pp) = (me.public().to_peer_id(), peer.public().to_peer_id());
    assert_eq!(s.merged_stats(), table);
    assert_eq!(s.pattern_count(), 47);
    assert_eq!(s.frontier()[&mp], 40);
    assert_eq!(s.frontier()[&pp], 7, "1..=5, declined 6, 7; 9 pending");
    assert!(s.has_seq(&pp, 9).unwrap());
    assert!(!s.has_seq(&pp, 8).unwrap());
    assert!(s
        .holds(&pp, 6, &metamesh_protocol::record::ContentHash([6; 32]))
        .unwrap());
    let ev = s.equivocations().unwrap();
    assert_eq!((ev.len(), ev[0].seq), (1, 3));
    assert_eq!(s.reputation_entries(), vec![(pp, b"rep".to_vec())]);
    let r = s.records_in_range(pp, 1, 9, 100, usize::MAX).unwrap();
    assert_eq!(r.len(), 7);
    for rec in &r {
        rec.open_pattern(2e9).unwrap();
    }
    // the import keys still dedup, and own seqs continue above 40
    assert!(s.has_import_key(&[7u8; 32]).unwrap());
    let out = s
        .append_local_batch(
            &me,
            vec![
                (pattern(7), Some([7u8; 32])),
                (pattern(41), Some([41u8; 32])),
            ],
        )
        .unwrap();
    assert!(matches!(out[0], AppendOutcome::DuplicateImport));
    let AppendOutcome::Appended(_, b) = &out[1] else {
        panic!()
    };
    assert!(b.seq > 40);
    assert_eq!(b.prev_seq, Some(40));
    assert_eq!(s.frontier()[&mp], b.seq);
    // a received record for the pending gap still extends the frontier
    let rec = SignedRecord::sign_pattern(pattern(108), 8, &peer);
    let body = rec.open_pattern(2e9).unwrap();
    assert_eq!(s.insert(&rec, &body).unwrap(), InsertOutcome::Inserted);
    assert_eq!(s.frontier()[&pp], 9);
}
