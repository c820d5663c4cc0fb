//! Two groups record separately; once connected, both hold the union.
#![allow(clippy::unwrap_used)]
use metamesh_protocol::Depth;
use metamesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healed_partition_converges() {
    let a1 = TestNode::start(test_config(&[])).await;
    let a2 = TestNode::start(test_config(&[a1.n()])).await;
    let b1 = TestNode::start(test_config(&[])).await;
    let b2 = TestNode::start(test_config(&[b1.n()])).await;
    for (i, n) in [&a1, &a2, &b1, &b2].iter().enumerate() {
        let ps = (0..5)
            .map(|k| {
                pattern(
                    &format!("g{i}-{k}"),
                    Depth::ALL[(i + k) % 5],
                    0.1 + 0.15 * k as f64,
                )
            })
            .collect();
        record(n, ps).await;
    }
    wait_until("each side converged internally", || async {
        a1.pattern_count() == 10
            && a2.pattern_count() == 10
            && b1.pattern_count() == 10
            && b2.pattern_count() == 10
    })
    .await;
    assert_ne!(
        a1.n().node.store().frontier(),
        b1.n().node.store().frontier()
    );

    // Heal: one link between the groups.
    a2.n().node.network().dial(b2.addr()).await.unwrap();
    wait_until("all four hold the union of 20", || async {
        [&a1, &a2, &b1, &b2].iter().all(|n| n.pattern_count() == 20)
    })
    .await;
    let f = a1.n().node.store().frontier();
    for n in [&a2, &b1, &b2] {
        assert_eq!(n.n().node.store().frontier(), f);
    }
}
