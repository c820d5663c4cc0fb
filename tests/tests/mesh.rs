//! A mesh of real nodes on loopback: propagation over the HTTP API,
#![allow(clippy::unwrap_used)]
//! insight broadcasts, bootstrap of a newcomer, catch-up after a restart.
use metamesh_protocol::Depth;
use metamesh_tests::*;

fn has_pattern(list: &serde_json::Value, id: &str) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|p| p["pattern"]["pattern_id"] == id))
}

/// (seq, sample count) of the latest insight `holder` stores from `origin`.
fn insight_from(holder: &TestNode, origin: &TestNode) -> Option<(u64, u64)> {
    let o = origin.n().peer_id();
    holder
        .n()
        .node
        .store()
        .latest_insights()
        .into_iter()
        .find(|(_, b)| b.origin == o)
        .map(|(_, b)| (b.seq, b.stats.total()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_pattern_and_insights_propagate() {
    let a = TestNode::start(test_config(&[])).await;
    let b = TestNode::start(test_config(&[a.n()])).await;
    let c = TestNode::start(test_config(&[b.n()])).await;

    let resp = http()
        .post(format!("{}/v1/patterns", a.api()))
        .json(&pattern_json("from-a-1", Depth::Deep, 0.72))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    wait_until("C's API lists A's pattern", || async {
        has_pattern(&get_json(&c.api(), "/v1/patterns").await, "from-a-1")
    })
    .await;
    let on_c = get_json(&c.api(), "/v1/patterns").await;
    let p = on_c
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pattern"]["pattern_id"] == "from-a-1")
        .unwrap();
    assert_eq!(p["origin"], a.n().peer_id().to_string());
    // Own seqs are `epoch << 32 | n` (DESIGN change: epochs): A's first.
    assert_eq!(p["seq"].as_u64().unwrap() & 0xffff_ffff, 1);

    // A's insight broadcast reaches B and C ...
    wait_until("B and C hold A's insight", || async {
        insight_from(&b, &a).is_some_and(|(_, n)| n == 1)
            && insight_from(&c, &a).is_some_and(|(_, n)| n == 1)
    })
    .await;
    let (seq_before, _) = insight_from(&c, &a).unwrap();
    // ... and so does a change of A's insights.
    let more: Vec<_> = (0..5)
        .map(|i| pattern_json(&format!("from-a-more-{i}"), Depth::Standard, 0.5))
        .collect();
    let resp = http()
        .post(format!("{}/v1/patterns", a.api()))
        .json(&more)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    wait_until("B and C hold A's updated insight", || async {
        insight_from(&b, &a).is_some_and(|(_, n)| n == 6)
            && insight_from(&c, &a).is_some_and(|(s, n)| n == 6 && s > seq_before)
    })
    .await;
    // The collective view on C now counts A's six patterns.
    let ins = get_json(&c.api(), "/v1/insights?scope=collective").await;
    assert_eq!(ins["pattern_count"], 6, "{ins}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_bootstraps_history_and_restarted_node_catches_up() {
    let a = TestNode::start(test_config(&[])).await;
    let b = TestNode::start(test_config(&[a.n()])).await;
    let c = TestNode::start(test_config(&[b.n()])).await;
    for (i, n) in [&a, &b, &c].iter().enumerate() {
        let ps = (0..4)
            .map(|k| {
                pattern(
                    &format!("n{i}-{k}"),
                    Depth::ALL[k % 5],
                    0.1 * (k + i) as f64,
                )
            })
            .collect();
        record(n, ps).await;
    }
    wait_until("A, B, C hold all 12 patterns", || async {
        a.pattern_count() == 12 && b.pattern_count() == 12 && c.pattern_count() == 12
    })
    .await;

    // A fourth node with only --bootstrap to C gets the whole history.
    let mut d = TestNode::start(test_config(&[c.n()])).await;
    wait_until("D holds all 12", || async { d.pattern_count() == 12 }).await;
    assert_eq!(d.n().node.store().frontier(), a.n().node.store().frontier());

    // D stops; the mesh records more; D restarts in the same data dir (no
    // bootstrap flag: it re-dials the peers it knew) and catches up.
    let d_peer = d.n().peer_id();
    d.stop().await;
    record(&a, vec![pattern("while-d-away-1", Depth::Deep, 0.8)]).await;
    record(&b, vec![pattern("while-d-away-2", Depth::Light, 0.3)]).await;
    wait_until("C holds 14", || async { c.pattern_count() == 14 }).await;
    d.restart(test_config(&[])).await;
    assert_eq!(d.n().peer_id(), d_peer, "restart keeps the identity");
    wait_until("restarted D holds 14", || async { d.pattern_count() == 14 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_lost_its_store_never_reuses_a_seq() {
    use metamesh_node::api::NodeApi;
    let mut a = TestNode::start(test_config(&[])).await;
    let b = TestNode::start(test_config(&[a.n()])).await;
    record(
        &a,
        (0..3)
            .map(|k| pattern(&format!("old-{k}"), Depth::Deep, 0.6))
            .collect(),
    )
    .await;
    wait_until("B holds A's three", || async { b.pattern_count() == 3 }).await;
    let a_id = a.n().peer_id();
    let signed_before = b.n().node.store().frontier_of(&a_id);

    // A loses its store but keeps its key, and comes back.
    a.stop().await;
    std::fs::remove_dir_all(a.dir.path().join("store")).unwrap();
    a.restart(test_config(&[b.n()])).await;
    assert_eq!(a.n().peer_id(), a_id);
    let out = a
        .n()
        .node
        .submit_patterns(vec![pattern("new", Depth::Light, 0.4)])
        .await
        .unwrap();
    assert!(
        out[0].seq > signed_before,
        "the first record after the loss ({}) is above every seq signed before ({signed_before})",
        out[0].seq
    );
    wait_until("B holds the new record without equivocation", || async {
        b.pattern_count() == 4
    })
    .await;
    let s = b.n().node.stats().await.unwrap().metrics;
    assert!(!s.rejected_by_reason.contains_key("equivocation"), "{s:?}");
}
