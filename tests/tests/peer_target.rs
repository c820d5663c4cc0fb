//! The peer manager on real nodes: a mesh built through one bootstrap node
//! and kad discovery is not all-to-all — every node ends within its peer
//! bounds — and still delivers every pattern to every node.
#![allow(clippy::unwrap_used)]
use metamesh_node::api::NodeApi;
use metamesh_node::config::PeersConfig;
use metamesh_protocol::Depth;
use metamesh_tests::*;

const NODES: usize = 6;
const TARGET: usize = 3;
const MAX: usize = 4;

fn config(bootstrap: &[&metamesh_node::actor::RunningNode]) -> metamesh_node::config::Config {
    let mut cfg = test_config(bootstrap);
    cfg.peers = PeersConfig {
        target: TARGET,
        max: MAX,
        grace_secs: 1,
        reconnect_cooldown_secs: 60,
    };
    cfg
}

/// Every node holds at least one peer and at most `MAX`.
async fn all_within_bounds(nodes: &[TestNode]) -> bool {
    for n in nodes {
        let c = connections(n).await;
        if c == 0 || c > MAX {
            return false;
        }
    }
    true
}

async fn connections(n: &TestNode) -> usize {
    n.n().node.stats().await.unwrap().connected_peers as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_with_target_three_stay_within_bounds_and_deliver_everything() {
    // Everyone bootstraps through node 0, which so holds all five others
    // at first: more than its max.
    let first = TestNode::start(config(&[])).await;
    let mut nodes = vec![first];
    for _ in 1..NODES {
        let cfg = config(&[nodes[0].n()]);
        nodes.push(TestNode::start(cfg).await);
    }
    wait_until("node 0 held more than its max at once", || async {
        nodes[0].n().peer_counters().connected as usize > MAX
    })
    .await;

    // Once the grace is over the excess is pruned: every node within its
    // bounds, and none left alone.
    wait_until("every node within 1..=max peers", || {
        all_within_bounds(&nodes)
    })
    .await;
    let pruned: u64 = nodes.iter().map(|n| n.n().peer_counters().pruned).sum();
    assert!(
        pruned >= 1,
        "node 0 had {} peers and pruned none",
        NODES - 1
    );

    // Every node records a pattern; every node ends holding all of them.
    for (i, n) in nodes.iter().enumerate() {
        record(
            n,
            vec![pattern(&format!("peer-target-{i}"), Depth::Deep, 0.7)],
        )
        .await;
    }
    wait_until("every node holds every pattern", || async {
        nodes.iter().all(|n| n.pattern_count() == NODES as u64)
    })
    .await;
    // A newcomer may sit above max during its grace; never for long.
    wait_until("every node still within 1..=max peers", || {
        all_within_bounds(&nodes)
    })
    .await;
    for mut n in nodes {
        n.stop().await;
    }
}
