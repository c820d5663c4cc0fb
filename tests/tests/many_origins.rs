//! Exact catch-up at many origins (issue 8 part 3), with real nodes: A
//! holds one record from each of 5 000 origins (past the old 1 024-entry
//! cut of `have`); B joins with nothing, no gossip carries those records,
//! and B must end with exactly A's frontier, each record received once.
#![allow(clippy::unwrap_used)]

use libp2p::identity::Keypair;
use metamesh_protocol::record::BODY_VERSION;
use metamesh_protocol::{Depth, PatternBody, SignedRecord};
use metamesh_storage::{Store, StoreConfig};
use metamesh_tests::*;

const ORIGINS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_exactly_on_5000_origins() {
    // A's store, filled offline: one signed record per origin.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&dir.path().join("store"), &StoreConfig::default()).unwrap();
        let mut batch = Vec::with_capacity(ORIGINS);
        for i in 0..ORIGINS {
            let key = Keypair::generate_ed25519();
            let p = pattern(&format!("origin-{i}"), Depth::ALL[i % 5], 0.6);
            let rec = SignedRecord::sign_pattern(p.clone(), 1, &key);
            let body = PatternBody {
                v: BODY_VERSION,
                origin: key.public().to_peer_id(),
                seq: 1,
                prev_seq: None,
                pattern: p,
            };
            batch.push((rec, body));
        }
        store.insert_batch(&batch).unwrap();
        store.flush().unwrap();
        assert_eq!(store.frontier().len(), ORIGINS);
    }
    let a = TestNode::start_in(dir.path().to_path_buf(), test_config(&[])).await;
    let b = TestNode::start(test_config(&[&a])).await;
    wait_until("B holds all 5000 origins' records", || async {
        b.pattern_count() == ORIGINS as u64
    })
    .await;
    assert_eq!(b.n().node.store().frontier(), a.node.store().frontier());
    // Nothing pulled twice: reconciliation asked only for what B lacked.
    let c = b.n().node.counters().await.unwrap();
    assert_eq!(c.pulled_records_received, ORIGINS as u64, "{c:?}");
    assert_eq!(c.records_duplicate, 0, "{c:?}");
    a.shutdown().await.unwrap();
}
