//! An adversary holding a real key sends records whose signatures do not
#![allow(clippy::unwrap_used)]
//! verify: over sync (pattern records) and over gossip (an insight record).
use std::time::Duration;

use libp2p::identity::Keypair;
use metamesh_node::network::{self, NetEvent, NetworkConfig, TopicKind};
use metamesh_protocol::record::BODY_VERSION;
use metamesh_protocol::sync;
use metamesh_protocol::wire::{
    GossipMessage, InsightBroadcast, PatternAnnouncement, PatternResponse, WIRE_VERSION,
};
use metamesh_protocol::{Depth, DepthTable, InsightBody, SignedRecord};
use metamesh_tests::*;

fn forged(key: &Keypair, seq: u64) -> SignedRecord {
    let mut r = SignedRecord::sign_pattern(
        pattern(&format!("forged-{seq}"), Depth::Minimal, 1.0),
        seq,
        key,
    );
    r.signature[7] ^= 0x20;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_rejected_counted_not_stored_not_forwarded() {
    let v = TestNode::start(test_config(&[])).await;
    let rogue_key = Keypair::generate_ed25519();
    let rogue_id = rogue_key.public().to_peer_id();
    // T talks to the mesh only through V (it refuses the rogue directly),
    // so anything forged that reached T would have been forwarded by V.
    let mut t_cfg = test_config(&[v.n()]);
    t_cfg.trust.denied = vec![rogue_id.to_string()];
    let t = TestNode::start(t_cfg).await;

    // The rogue: our own network layer, driven by hand.
    let (rogue, mut events, _task) = network::start(
        rogue_key.clone(),
        NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: vec![v.addr()],
            target_peers: 1,
            ..NetworkConfig::default()
        },
    )
    .unwrap();
    let key = rogue_key.clone();
    tokio::spawn(async move {
        let mut published = false;
        while let Some(ev) = events.recv().await {
            match ev {
                // Serve forged records to every pull.
                NetEvent::Request { channel, .. } => {
                    let records = (1..=3).map(|s| forged(&key, s)).collect();
                    let resp = PatternResponse {
                        v: WIRE_VERSION,
                        records,
                        more: false,
                        next_cursor: None,
                        error: None,
                        insight: None,
                    };
                    let _ = rogue.respond(channel, resp).await;
                }
                NetEvent::PeerSubscribed { .. } if !published => {
                    published = true;
                    // Announce three records, and gossip a forged insight.
                    let frontier = [(key.public().to_peer_id(), 3u64)].into();
                    let (entries, truncated) = sync::frontier_entries(&frontier);
                    let ann = GossipMessage::PatternAnnouncement(PatternAnnouncement {
                        v: WIRE_VERSION,
                        from: key.public().to_peer_id(),
                        pattern_count: 3,
                        patterns_hash: sync::frontier_digest(&frontier),
                        depth_distribution: [(Depth::Minimal, 3)].into(),
                        frontier: entries,
                        frontier_truncated: truncated,
                    });
                    let body = InsightBody {
                        v: BODY_VERSION,
                        origin: key.public().to_peer_id(),
                        seq: 1,
                        prev_seq: None,
                        computed_at: 1_700_000_000.0,
                        stats: DepthTable::default(),
                        insights: Default::default(),
                    };
                    let mut rec = SignedRecord::sign_insight(&body, &key);
                    rec.signature[3] ^= 1;
                    let ins = GossipMessage::InsightBroadcast(InsightBroadcast {
                        v: WIRE_VERSION,
                        record: rec,
                    });
                    for _ in 0..50 {
                        let a = rogue.publish(TopicKind::Announce, ann.encode()).await;
                        let i = rogue.publish(TopicKind::Insights, ins.encode()).await;
                        if a.is_ok() && i.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                _ => {}
            }
        }
    });

    // V rejects: counted by reason, and the rogue's reputation drops.
    wait_until(
        "V counted the bad signatures (3 records + 1 insight)",
        || async {
            let s = get_json(&v.api(), "/v1/stats").await;
            s["metrics"]["rejected_by_reason"]["bad_signature"]
                .as_u64()
                .unwrap_or(0)
                >= 4
        },
    )
    .await;
    let metrics = http()
        .get(format!("{}/metrics", v.api()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("rejected") && l.contains("bad_signature") && !l.starts_with('#')),
        "{metrics}"
    );
    wait_until("V's reputation of the rogue is negative", || async {
        let rep = get_json(&v.api(), "/v1/reputation").await;
        rep.as_array().unwrap().iter().any(|r| {
            r["peer_id"] == rogue_id.to_string()
                && r["score"].as_f64().unwrap() < 0.0
                && r["counters"]["bad_signature"].as_u64().unwrap_or(0) >= 1
        })
    })
    .await;

    // Barrier: a genuine pattern recorded on V afterwards reaches T.
    record(&v, vec![pattern("genuine", Depth::Deep, 0.7)]).await;
    wait_until("T holds V's genuine pattern", || async {
        t.pattern_count() == 1
    })
    .await;

    // Nothing forged was stored anywhere, nor forwarded to T.
    for n in [&v, &t] {
        let store = n.n().node.store();
        assert!(!store.frontier().contains_key(&rogue_id));
        assert!(store
            .latest_insights()
            .iter()
            .all(|(_, b)| b.origin != rogue_id));
    }
    assert_eq!(v.pattern_count(), 1);
    let t_stats = get_json(&t.api(), "/v1/stats").await;
    assert!(
        t_stats["metrics"]["rejected_by_reason"]["bad_signature"].is_null(),
        "{t_stats}"
    );
}
