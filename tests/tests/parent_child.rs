//! Parent and child in different meshes (DESIGN §6): the child inherits the
//! parent's patterns and signed insight record over direct sync, and
//! promotes its own confident insight record to the parent, which pulls the
//! child's patterns. A promotion with a broken signature (or someone else's
//! record) is rejected and counted.
#![allow(clippy::unwrap_used)]
use libp2p::identity::Keypair;
use metamesh_node::network::{self, NetEvent, NetworkConfig};
use metamesh_protocol::record::BODY_VERSION;
use metamesh_protocol::wire::{PatternRequest, PatternResponse, WIRE_VERSION};
use metamesh_protocol::{Depth, DepthTable, InsightBody, SignedRecord};
use metamesh_tests::*;

fn holds_insight_of(node: &TestNode, origin: libp2p::PeerId) -> bool {
    node.n()
        .node
        .store()
        .latest_insights()
        .iter()
        .any(|(_, b)| b.origin == origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_in_another_mesh_inherits_and_promotes() {
    // Parent P in mesh "default" with some patterns of its own.
    let p = TestNode::start(test_config(&[])).await;
    record(
        &p,
        (0..6)
            .map(|i| pattern(&format!("parent-{i}"), Depth::Standard, 0.7))
            .collect(),
    )
    .await;
    let p_id = p.n().peer_id();

    // Child C in mesh "team-a", started with `parent` = P.
    let mut c_cfg = test_config(&[]);
    c_cfg.mesh = "team-a".into();
    c_cfg.parent = Some(p.addr().to_string());
    c_cfg.promotion.min_interval_secs = 1;
    let c = TestNode::start(c_cfg).await;
    let c_id = c.n().peer_id();

    // Inheritance: P's patterns and P's signed insight record.
    wait_until("C holds P's 6 patterns", || async {
        c.pattern_count() == 6
    })
    .await;
    wait_until("C holds P's insight record", || async {
        holds_insight_of(&c, p_id)
    })
    .await;
    // P is an anchor of C's collective view.
    let k = get_json(&c.api(), "/v1/knowledge").await;
    assert!(
        k["contributors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["peer_id"] == p_id.to_string() && x["anchor"] == true),
        "{k}"
    );
    assert_eq!(k["parent"]["peer_id"], p_id.to_string(), "{k}");
    assert_eq!(k["parent"]["patterns"], 6, "{k}");
    // Not confident yet (no patterns of its own): nothing promoted.
    let s = get_json(&p.api(), "/v1/stats").await;
    assert_eq!(s["metrics"]["promotions_received"], 0, "{s}");

    // C learns with confidence: deep is clearly best.
    let mut mine = Vec::new();
    for (d, q) in [
        (Depth::Minimal, 0.2),
        (Depth::Light, 0.3),
        (Depth::Standard, 0.4),
        (Depth::Deep, 0.95),
        (Depth::Thorough, 0.35),
    ] {
        for i in 0..10 {
            mine.push(pattern(&format!("child-{d:?}-{i}"), d, q));
        }
    }
    record(&c, mine).await;
    let local = get_json(&c.api(), "/v1/insights?scope=local").await;
    assert_eq!(
        local["learned_preferences"]["optimal_quality_depth"], "deep",
        "{local}"
    );

    // Promotion: P counts it, keeps C's insight record, pulls C's patterns.
    wait_until("P received C's promotion", || async {
        let s = get_json(&p.api(), "/v1/stats").await;
        s["metrics"]["promotions_received"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(holds_insight_of(&p, c_id));
    wait_until("P holds C's 50 patterns", || async {
        p.pattern_count() == 6 + 50
    })
    .await;
    let s = get_json(&c.api(), "/v1/stats").await;
    assert!(
        s["metrics"]["promotions_sent"].as_u64().unwrap() >= 1,
        "{s}"
    );
    let k = get_json(&p.api(), "/v1/knowledge").await;
    assert!(
        k["promoted_children"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["peer_id"] == c_id.to_string() && x["optimal_quality_depth"] == "deep"),
        "{k}"
    );
    let rejected = get_json(&p.api(), "/v1/stats").await;
    assert_eq!(rejected["metrics"]["promotions_rejected"], 0, "{rejected}");
}

fn insight_of(key: &Keypair) -> SignedRecord {
    let mut stats = DepthTable::default();
    stats.get_mut(Depth::Minimal).add(0.99, true, 5.0);
    let body = InsightBody {
        v: BODY_VERSION,
        origin: key.public().to_peer_id(),
        seq: 1,
        prev_seq: None,
        computed_at: 1_700_000_000.0,
        stats,
        insights: Default::default(),
    };
    SignedRecord::sign_insight(&body, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_promotion_is_rejected_and_counted() {
    let p = TestNode::start(test_config(&[])).await;
    let p_id = p.n().peer_id();
    let rogue_key = Keypair::generate_ed25519();
    let rogue_id = rogue_key.public().to_peer_id();
    let (rogue, mut events, _task) = network::start(
        rogue_key.clone(),
        NetworkConfig {
            mesh: "elsewhere".into(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: vec![p.addr()],
            target_peers: 1,
            ..NetworkConfig::default()
        },
    )
    .unwrap();
    let responder = rogue.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let NetEvent::Request { channel, .. } = ev {
                let empty = PatternResponse {
                    v: WIRE_VERSION,
                    records: vec![],
                    more: false,
                    next_cursor: None,
                    error: None,
                    insight: None,
                };
                let _ = responder.respond(channel, empty).await;
            }
        }
    });
    let promote = |record: SignedRecord| PatternRequest {
        v: WIRE_VERSION,
        ranges: vec![],
        have: None,
        filters: None,
        cursor: None,
        max_count: 1,
        promote: Some(record),
    };

    // 1. The rogue's own record with a broken signature.
    let mut broken = insight_of(&rogue_key);
    broken.signature[5] ^= 0x40;
    wait_until("P answered the forged promotion", || async {
        rogue.request(p_id, promote(broken.clone())).await.is_ok()
    })
    .await;
    wait_until("P counted the rejected promotion", || async {
        let s = get_json(&p.api(), "/v1/stats").await;
        s["metrics"]["promotions_rejected"].as_u64().unwrap_or(0) >= 1
            && s["metrics"]["rejected_by_reason"]["bad_signature"]
                .as_u64()
                .unwrap_or(0)
                >= 1
    })
    .await;

    // 2. A validly signed record of someone else, passed off as a promotion.
    let other = Keypair::generate_ed25519();
    rogue
        .request(p_id, promote(insight_of(&other)))
        .await
        .unwrap();
    wait_until("P counted the wrong-origin promotion", || async {
        let s = get_json(&p.api(), "/v1/stats").await;
        s["metrics"]["promotions_rejected"].as_u64().unwrap_or(0) >= 2
            && s["metrics"]["rejected_by_reason"]["origin_mismatch"]
                .as_u64()
                .unwrap_or(0)
                >= 1
    })
    .await;

    let s = get_json(&p.api(), "/v1/stats").await;
    assert_eq!(s["metrics"]["promotions_received"], 0, "{s}");
    let store = p.n().node.store();
    assert!(store
        .latest_insights()
        .iter()
        .all(|(_, b)| b.origin != rogue_id && b.origin != other.public().to_peer_id()));
    // The rogue paid for it.
    wait_until("P's reputation of the rogue is negative", || async {
        let rep = get_json(&p.api(), "/v1/reputation").await;
        rep.as_array()
            .unwrap()
            .iter()
            .any(|r| r["peer_id"] == rogue_id.to_string() && r["score"].as_f64().unwrap() < 0.0)
    })
    .await;
}
