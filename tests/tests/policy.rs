//! Local policy on real nodes: sharing off, denied peers, acceptance threshold.
#![allow(clippy::unwrap_used)]
use metamesh_node::api::NodeApi;
use metamesh_protocol::Depth;
use metamesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_off_nothing_leaves_the_node() {
    let a = TestNode::start(test_config(&[])).await;
    record(&a, vec![pattern("a-1", Depth::Deep, 0.7)]).await;
    let mut cfg = test_config(&[a.n()]);
    cfg.sharing.enabled = false;
    let s = TestNode::start(cfg).await;
    // The private node still learns from the mesh ...
    wait_until("S pulled A's pattern", || async { s.pattern_count() == 1 }).await;
    record(
        &s,
        (0..3)
            .map(|i| pattern(&format!("s-{i}"), Depth::Light, 0.4))
            .collect(),
    )
    .await;
    // ... but a node connecting to both gets only A's patterns.
    let b = TestNode::start(test_config(&[a.n(), s.n()])).await;
    record(&a, vec![pattern("a-2", Depth::Standard, 0.6)]).await;
    wait_until("B holds A's two patterns", || async {
        b.pattern_count() == 2
    })
    .await;
    // (S may also have pulled A's second from B, depending on timing: a
    // sharing-off node still pulls.)
    wait_until("S holds its own three and A's first", || async {
        s.pattern_count() >= 4
    })
    .await;
    // Give announcements a few intervals to do harm, then check the barrier again.
    let b_conn = || async { b.n().node.stats().await.unwrap().connected_peers >= 2 };
    wait_until("B connected to A and S", b_conn).await;
    record(&a, vec![pattern("a-3", Depth::Standard, 0.6)]).await;
    wait_until("B holds A's three patterns", || async {
        b.pattern_count() == 3
    })
    .await;
    let s_id = s.n().peer_id();
    for n in [&a, &b] {
        let f = n.n().node.store().frontier();
        assert!(
            !f.contains_key(&s_id),
            "S's records reached another node: {f:?}"
        );
        assert_eq!(n.pattern_count(), 3);
    }
    let m = s.n().node.stats().await.unwrap().metrics;
    assert_eq!(m.patterns_shared, 0, "{m:?}");
    assert_eq!(m.requests_served, 0, "{m:?}");
    assert_eq!(
        m.bytes_sent, 0,
        "no announcements or insights published: {m:?}"
    );
    for n in [&a, &b] {
        assert!(
            n.n()
                .node
                .store()
                .latest_insights()
                .iter()
                .all(|(_, i)| i.origin != s_id),
            "S's insights left the node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_peer_patterns_are_not_stored() {
    let d = TestNode::start(test_config(&[])).await;
    record(
        &d,
        vec![
            pattern("d-1", Depth::Deep, 0.9),
            pattern("d-2", Depth::Deep, 0.9),
        ],
    )
    .await;
    let b = TestNode::start(test_config(&[d.n()])).await;
    record(&b, vec![pattern("b-1", Depth::Light, 0.5)]).await;
    wait_until("B holds D's patterns", || async { b.pattern_count() == 3 }).await;

    let mut cfg = test_config(&[b.n(), d.n()]);
    cfg.trust.denied = vec![d.n().peer_id().to_string()];
    let a = TestNode::start(cfg).await;
    let d_id = d.n().peer_id();
    // Own seqs are epoch-stamped: D's last is what D's own frontier says.
    let d_last = d.n().node.store().frontier().get(&d_id).copied();
    assert!(d_last.is_some());
    // A gets B's pattern; D's records reach it through B but are declined:
    // not stored, yet the frontier advances so they are not pulled forever.
    wait_until("A holds B's pattern and skipped D's", || async {
        a.pattern_count() == 1 && a.n().node.store().frontier().get(&d_id).copied() == d_last
    })
    .await;
    assert!(!a.n().node.store().origin_stats().contains_key(&d_id));
    // and A never keeps a connection to D.
    let peers = a.n().node.peers().await.unwrap();
    assert!(
        peers
            .iter()
            .all(|p| p.peer_id != d_id.to_string() || !p.connected),
        "{peers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_below_the_acceptance_threshold_are_not_stored() {
    let b = TestNode::start(test_config(&[])).await;
    let mut cfg = test_config(&[b.n()]);
    cfg.acceptance.min_quality = 0.5;
    let a = TestNode::start(cfg).await;
    record(
        &b,
        vec![
            pattern("low", Depth::Deep, 0.3),
            pattern("high", Depth::Deep, 0.8),
        ],
    )
    .await;
    let b_id = b.n().peer_id();
    let b_last = b.n().node.store().frontier().get(&b_id).copied();
    assert!(b_last.is_some());
    wait_until("A's frontier for B reaches B's last seq", || async {
        a.n().node.store().frontier().get(&b_id).copied() == b_last
    })
    .await;
    assert_eq!(a.pattern_count(), 1);
    let held = a
        .n()
        .node
        .query_patterns(Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].pattern.pattern_id, "high");
    let m = a.n().node.stats().await.unwrap().metrics;
    assert_eq!(
        m.rejected_by_reason.get("below_min_quality"),
        Some(&1),
        "{m:?}"
    );
}
