//! The exchange core's record tree run by real nodes over `/metamesh/tree/1`
//! (issue 8): records pushed over the tree reach every node; a node with
//! the tree off still gets everything (gossipsub and digest repair); a peer
//! sending garbage on the protocol is charged and nobody crashes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::prelude::*;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, PeerId};
use metamesh_node::actor::RunningNode;
use metamesh_node::config::Config;
use metamesh_node::network::tree::{TreeView, TREE_PROTOCOL};
use metamesh_protocol::Depth;
use metamesh_tests::*;

fn tree_config(bootstrap: &[&RunningNode], tree: bool) -> Config {
    let mut c = test_config(bootstrap);
    c.tree.enabled = tree;
    c
}

async fn tree(n: &TestNode) -> TreeView {
    n.n().node.tree_stats().await.unwrap()
}

/// Start `n` nodes, each bootstrapping from the first; `tree[i]` says
/// whether node `i` runs the tree.
async fn mesh(tree: &[bool]) -> Vec<TestNode> {
    let first = TestNode::start(tree_config(&[], tree[0])).await;
    let mut nodes = vec![first];
    for &t in &tree[1..] {
        let n = TestNode::start(tree_config(&[nodes[0].n()], t)).await;
        nodes.push(n);
    }
    nodes
}

/// Every node records one pattern; then every node must hold all of them.
async fn record_everywhere_and_wait(nodes: &[TestNode], tag: &str) {
    let before: Vec<u64> = nodes.iter().map(TestNode::pattern_count).collect();
    for (i, n) in nodes.iter().enumerate() {
        record(n, vec![pattern(&format!("{tag}-{i}"), Depth::Deep, 0.7)]).await;
    }
    let k = nodes.len() as u64;
    wait_until("every node holds every node's pattern", || async {
        nodes
            .iter()
            .zip(&before)
            .all(|(n, b)| n.pattern_count() >= b + k)
    })
    .await;
    let f0 = nodes[0].n().node.store().frontier();
    for n in &nodes[1..] {
        assert_eq!(n.n().node.store().frontier(), f0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_push_records_over_the_tree() {
    let nodes = mesh(&[true; 5]).await;
    // The tree forms over the connections (Join/Accept on /metamesh/tree/1).
    for (i, n) in nodes.iter().enumerate() {
        wait_until(&format!("node {i} has a tree neighbour"), || async {
            tree(n).await.neighbours >= 1
        })
        .await;
    }
    for round in 0..3 {
        record_everywhere_and_wait(&nodes, &format!("r{round}")).await;
    }
    // The records arrived by the tree: each node got some first by a push
    // (not only by a pull or gossipsub), and frames crossed the protocol.
    let mut first_by_tree = 0;
    for (i, n) in nodes.iter().enumerate() {
        let t = tree(n).await;
        assert!(t.enabled);
        let first = t.core.pushes_received - t.core.duplicates;
        assert!(
            first >= 1,
            "node {i} got no record first by the tree: {t:?}"
        );
        assert!(t.transport.frames_received >= first, "{t:?}");
        assert!(t.transport.frames_sent >= 1, "{t:?}");
        assert_eq!(t.transport.frames_too_large, 0);
        first_by_tree += first;
    }
    // 3 rounds × 5 origins × 4 receivers = 60 deliveries; most by the tree.
    assert!(
        first_by_tree >= 30,
        "only {first_by_tree} of 60 deliveries came first by the tree"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_tree_still_gets_everything() {
    // Node 4 runs records over gossipsub only (and refuses /metamesh/tree/1).
    let nodes = mesh(&[true, true, true, true, false]).await;
    wait_until("the off node is connected", || async {
        get_json(&nodes[4].api(), "/v1/stats").await["connected_peers"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    for round in 0..2 {
        record_everywhere_and_wait(&nodes, &format!("m{round}")).await;
    }
    let off = tree(&nodes[4]).await;
    assert!(!off.enabled);
    assert_eq!(off.transport.frames_received, 0, "{off:?}");
    assert_eq!(off.core.pushes_received, 0, "{off:?}");
    // The others found out that it does not speak the tree.
    let mut unsupported = 0;
    for n in &nodes[..4] {
        unsupported += tree(n).await.transport.unsupported;
    }
    assert!(
        unsupported >= 1,
        "no node noticed the peer without the tree"
    );
}

/// A bare swarm speaking only `/metamesh/tree/1`, writing what it likes.
async fn rogue_sends(to: &TestNode, frames: Vec<Vec<u8>>) -> PeerId {
    let mut rogue = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    let id = *rogue.local_peer_id();
    let mut control = rogue.behaviour().new_control();
    let target = to.n().peer_id();
    rogue.dial(to.addr()).unwrap();
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut up = Some(up_tx);
        while let Some(ev) = rogue.next().await {
            if let SwarmEvent::ConnectionEstablished { .. } = ev {
                if let Some(tx) = up.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    up_rx.await.unwrap();
    tokio::spawn(async move {
        for f in frames {
            // each frame on a stream of its own: an oversized one ends its stream
            let Ok(mut s) = control.open_stream(target, TREE_PROTOCOL).await else {
                return;
            };
            let _ = s.write_all(&f).await;
            let _ = s.flush().await;
            // keep the stream open a little so the frame is read
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        futures::future::pending::<()>().await;
    });
    id
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_on_the_tree_is_charged() {
    let nodes = mesh(&[true, true]).await;
    let (v, h) = (&nodes[0], &nodes[1]);
    let garbage = vec![
        // a frame that is not CBOR
        framed(&[0xff, 0x13, 0x37, 0x00]),
        // CBOR of the wrong shape
        framed(&metamesh_protocol::codec::to_cbor(&"not a tree message")),
        // a length far past MAX_TREE_MSG_BYTES (refused before reading on)
        u32::MAX.to_be_bytes().to_vec(),
    ];
    let rogue = rogue_sends(v, garbage).await;
    wait_until("V charged the rogue for three bad tree frames", || async {
        let rep = get_json(&v.api(), "/v1/reputation").await;
        rep.as_array().unwrap().iter().any(|r| {
            r["peer_id"] == rogue.to_string()
                && r["counters"]["decode_error"].as_u64().unwrap_or(0) >= 3
        })
    })
    .await;
    assert_eq!(tree(v).await.transport.frames_too_large, 1);
    // V still works: a record from H reaches it, and one of V's reaches H.
    record_everywhere_and_wait(&nodes, "after-garbage").await;
    assert!(tree(h).await.transport.frames_received >= 1);
    assert_eq!(v.pattern_count(), 2);
}
