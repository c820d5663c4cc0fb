#![allow(clippy::unwrap_used)]
//! Relaxed writes (peers' records): answered once applied and readable,
//! flushed together — with the next durable job, when the writer is idle
//! for `relaxed_flush`, or at shutdown.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use metamesh_protocol::record::{PatternBody, SignedRecord};
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_storage::{Batch, Outcomes, Store, StoreConfig, StoreError, Writer, WriterConfig};

fn pattern(i: u64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("p{i}"), "node_id": "n", "timestamp": 1_700_000_000.0 + i as f64,
            "platform": "test", "depth_used": Depth::Deep.as_str(), "mode": "m",
            "quality_achieved": 0.7, "success": true, "atp_before": 100.0, "atp_after": 90.0
        }),
        None,
    )
    .unwrap()
}

fn signed(k: &Keypair, seq: u64) -> (SignedRecord, PatternBody) {
    SignedRecord::sign_pattern_after(pattern(seq), seq, None, k)
}

fn open_at(path: &Path) -> Result<Store, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Store::open(path, &StoreConfig::default()) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r,
        }
    }
}

fn inserted(o: Outcomes) -> usize {
    match o {
        Outcomes::Inserted(v) => v.len(),
        o => panic!("{o:?}"),
    }
}

#[test]
fn relaxed_writes_share_a_flush_and_survive_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let peer = Keypair::ed25519_from_bytes([3; 32]).unwrap();
    let me = Keypair::ed25519_from_bytes([4; 32]).unwrap();
    {
        let s = open_at(&path).unwrap();
        let cfg = WriterConfig {
            // Longer than the test: only a durable job or the stop flushes.
            relaxed_flush: Duration::from_secs(600),
            ..WriterConfig::default()
        };
        let w = Writer::start(s.clone(), Some(me.clone()), cfg).unwrap();
        for seq in 1..=40 {
            assert_eq!(
                inserted(
                    w.submit_relaxed(Batch::Insert(vec![signed(&peer, seq)]))
                        .unwrap()
                ),
                1
            );
        }
        // Answered and readable before any flush.
        assert_eq!(s.pattern_count(), 40);
        assert_eq!(w.stats().flushes.load(Ordering::Relaxed), 0);
        assert_eq!(w.stats().groups.load(Ordering::Relaxed), 40);
        // A durable job flushes everything before it is answered.
        match w
            .submit(Batch::Append(vec![(pattern(1000), None)]))
            .unwrap()
        {
            Outcomes::Appended(v) => assert_eq!(v.len(), 1),
            o => panic!("{o:?}"),
        }
        assert_eq!(w.stats().flushes.load(Ordering::Relaxed), 1);
        for seq in 41..=50 {
            w.submit_relaxed(Batch::Insert(vec![signed(&peer, seq)]))
                .unwrap();
        }
        w.shutdown();
        s.close().unwrap();
    }
    let s = open_at(&path).unwrap();
    assert_eq!(
        s.pattern_count(),
        51,
        "the stop flushed the last relaxed writes"
    );
}

#[test]
fn an_idle_writer_flushes_relaxed_writes_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(&dir.path().join("store")).unwrap();
    let peer = Keypair::ed25519_from_bytes([5; 32]).unwrap();
    let cfg = WriterConfig {
        relaxed_flush: Duration::from_millis(50),
        ..WriterConfig::default()
    };
    let w = Writer::start(s.clone(), None, cfg).unwrap();
    for seq in 1..=5 {
        w.submit_relaxed(Batch::Insert(vec![signed(&peer, seq)]))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.stats().flushes.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no flush after the writer went idle"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // One flush covered all five (nothing else arrived meanwhile).
    assert_eq!(w.stats().flushes.load(Ordering::Relaxed), 1);
    w.shutdown();
}
