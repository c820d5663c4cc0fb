//! Two real nodes on loopback: a pattern recorded on one is pulled by the other.
#![allow(clippy::unwrap_used)]
use metamesh_protocol::Depth;
use metamesh_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_recorded_on_one_node_reaches_the_other() {
    let a = TestNode::start(test_config(&[])).await;
    let b = TestNode::start(test_config(&[a.n()])).await;
    record(
        &a,
        vec![
            pattern("p1", Depth::Deep, 0.7),
            pattern("p2", Depth::Light, 0.4),
        ],
    )
    .await;
    wait_until("b holds a's two patterns", || async {
        b.pattern_count() == 2
    })
    .await;
    // And the other way round, after the connection exists.
    record(&b, vec![pattern("p3", Depth::Standard, 0.6)]).await;
    wait_until("a holds b's pattern", || async {
        a.pattern_count() == 2 + 1
    })
    .await;
    let fa = a.n().node.store().frontier();
    let fb = b.n().node.store().frontier();
    assert_eq!(fa, fb);
}
