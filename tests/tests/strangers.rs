//! Learning among strangers (issue 9), on real nodes with the default
//! configuration (nobody operator-trusted): two honest nodes with 1 and 1000
//! patterns both use each other's evidence, and a collective view never
//! names a depth it has no evidence for.
#![allow(clippy::unwrap_used)]
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::Depth;
use metamesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_a_thousand_patterns_use_each_other() {
    let big = TestNode::start(test_config(&[])).await;
    let small = TestNode::start(test_config(&[big.n()])).await;
    assert!(big.n().node.config().trust.trusted.is_empty());
    // The big node: 1000 honest outcomes over every depth (deep best).
    let means = [0.3, 0.45, 0.6, 0.7, 0.66];
    for batch in 0..10 {
        let ps = (0..100)
            .map(|k| {
                let i = batch * 100 + k;
                let d = Depth::ALL[i % Depth::COUNT];
                let q = means[d.index()] + ((i / Depth::COUNT) % 5) as f64 * 0.02 - 0.04;
                pattern(&format!("big-{i}"), d, q)
            })
            .collect();
        record(&big, ps).await;
    }
    // The small node: one outcome at deep.
    record(&small, vec![pattern("small-0", Depth::Deep, 0.7)]).await;
    wait_until("both hold all 1001 patterns", || async {
        big.pattern_count() == 1001 && small.pattern_count() == 1001
    })
    .await;

    let (big_id, small_id) = (big.n().peer_id(), small.n().peer_id());
    let view_small = small.n().node.collective().await.unwrap();
    assert!(
        view_small.used.contains(&big_id),
        "{:?}",
        view_small.inconsistent
    );
    assert!(view_small.used.contains(&small_id));
    for d in Depth::ALL {
        assert!(
            view_small.evidence[d.index()].n
                > small
                    .n()
                    .node
                    .store()
                    .stats_of(&small.n().peer_id())
                    .get(d)
                    .n as f64,
            "{d}: the small node's collective evidence exceeds its own"
        );
    }
    let view_big = big.n().node.collective().await.unwrap();
    assert!(
        view_big.used.contains(&small_id),
        "{:?}",
        view_big.inconsistent
    );
    let own_deep = big
        .n()
        .node
        .store()
        .stats_of(&big.n().peer_id())
        .get(Depth::Deep)
        .n as f64;
    assert!(view_big.evidence[Depth::Deep.index()].n > own_deep);
    // And the knowledge report says so, with nobody excluded.
    let k = get_json(&small.api(), "/v1/knowledge").await;
    let contributors = k["contributors"].as_array().unwrap();
    assert!(
        contributors
            .iter()
            .any(|c| c["peer_id"] == big_id.to_string()),
        "{k}"
    );
    assert!(k["excluded"].as_array().unwrap().is_empty(), "{k}");
    assert_eq!(
        view_small.best_named(&Prior::default()).map(|b| b.0),
        Some(Depth::Deep)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collective_insights_name_only_sampled_depths() {
    let a = TestNode::start(test_config(&[])).await;
    // Only deep, and mediocre: an untried depth's prior mean (0.5) is higher.
    let ps = (0..6)
        .map(|i| pattern(&format!("d{i}"), Depth::Deep, 0.3 + (i % 2) as f64 * 0.05))
        .collect();
    record(&a, ps).await;
    for scope in ["local", "collective"] {
        let ins = get_json(&a.api(), &format!("/v1/insights?scope={scope}")).await;
        assert_eq!(
            ins["learned_preferences"]["optimal_quality_depth"], "deep",
            "{scope}: {ins}"
        );
        let q = ins["insights"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["insight_type"] == "optimal_quality_depth")
            .unwrap();
        assert!(
            q["description"].as_str().unwrap().starts_with("deep"),
            "{scope}: {q}"
        );
    }
}
