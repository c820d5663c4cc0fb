//! What `metamesh swarm` reports of the mesh itself: waiting until it
//! formed and settled, and the peer manager's work during the rounds.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::actor::RunningNode;
use crate::api::NodeApi;
use crate::network::PeerCounters;

/// Most time the mesh gets to form, then to settle, before the rounds.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Settled: every node within its peer bounds and no connection opened or
/// closed by the peer manager for this long.
const QUIET: Duration = Duration::from_secs(3);

/// Connections and the peer manager's work (fields of the JSON summary).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeshReport {
    /// Connected peers per node when the rounds ended: min, mean, max.
    pub connections_min: usize,
    pub connections_mean: f64,
    pub connections_max: usize,
    /// During the rounds, summed over nodes: connections established, peers
    /// pruned (above `peers.max`) and connections the peer manager refused.
    pub connections_opened: u64,
    pub peers_pruned: u64,
    pub peers_refused: u64,
    /// Time from the last node's start until the mesh settled (every node
    /// within 1..=`peers.max` peers, no connection churn for 3 s) and the
    /// rounds began.
    pub settle_ms: u64,
}

async fn connections(n: &RunningNode) -> u64 {
    n.node.stats().await.map(|s| s.connected_peers).unwrap_or(0)
}

/// Wait until every node is connected to someone and node 0 (everyone's
/// bootstrap) to everyone, then until the peer manager settled: every node
/// within its bounds and no churn for [`QUIET`] (the steady state a running
/// mesh is in). Returns how long settling took (ms).
pub async fn settle(nodes: &[RunningNode], most: u64) -> u64 {
    let deadline = Instant::now() + FORM_DEADLINE;
    loop {
        let mut ok = true;
        for (i, n) in nodes.iter().enumerate() {
            let c = connections(n).await;
            if (i == 0 && c + 1 < nodes.len() as u64) || (i > 0 && c == 0) {
                ok = false;
            }
        }
        if ok || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    let deadline = start + SETTLE_DEADLINE;
    let mut last_churn = (u64::MAX, Instant::now());
    loop {
        let mut within = true;
        let mut churn = 0;
        for n in nodes {
            let c = connections(n).await;
            within &= (1..=most).contains(&c) || nodes.len() == 1;
            let k = n.peer_counters();
            churn += k.connected + k.pruned + k.refused;
        }
        if churn != last_churn.0 {
            last_churn = (churn, Instant::now());
        }
        if (within && last_churn.1.elapsed() >= QUIET) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed().as_millis() as u64
}

/// The peer manager's counters of every node (before the rounds).
pub fn counters(nodes: &[RunningNode]) -> Vec<PeerCounters> {
    nodes.iter().map(|n| n.peer_counters()).collect()
}

/// Connections now and the peer manager's work since `before`.
pub async fn report(nodes: &[RunningNode], before: &[PeerCounters], settle_ms: u64) -> MeshReport {
    let mut conns = Vec::with_capacity(nodes.len());
    for n in nodes {
        conns.push(connections(n).await as usize);
    }
    let mut r = MeshReport {
        connections_min: conns.iter().copied().min().unwrap_or(0),
        connections_mean: conns.iter().sum::<usize>() as f64 / conns.len().max(1) as f64,
        connections_max: conns.iter().copied().max().unwrap_or(0),
        settle_ms,
        ..MeshReport::default()
    };
    for (n, b) in nodes.iter().zip(before) {
        let k = n.peer_counters();
        r.connections_opened += k.connected.saturating_sub(b.connected);
        r.peers_pruned += k.pruned.saturating_sub(b.pruned);
        r.peers_refused += k.refused.saturating_sub(b.refused);
    }
    r
}

impl std::fmt::Display for MeshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connections per node: {}-{} (mean {:.1}); during the rounds {} opened, {} pruned, {} refused; settled in {} ms",
            self.connections_min,
            self.connections_max,
            self.connections_mean,
            self.connections_opened,
            self.peers_pruned,
            self.peers_refused,
            self.settle_ms
        )
    }
}
