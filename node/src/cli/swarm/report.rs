//! What `metamesh swarm --json` prints: one summary with a report per round.

use metamesh_protocol::Depth;
use serde::Serialize;

use super::mesh;

#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: usize,
    /// Depth most honest nodes name as best.
    pub majority_depth: Depth,
    /// Fraction of honest nodes naming the true best depth.
    pub fraction_correct: f64,
    /// Median over honest nodes of P(true best depth is best).
    pub median_confidence_true_best: f64,
    /// Median over honest nodes of their confidence in their own answer.
    pub median_confidence: f64,
    /// Every node held every pattern when the round ended.
    pub propagated: bool,
    pub round_ms: u64,
    /// This round's patterns: p50/p99 time to reach every other node (ms).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwarmSummary {
    pub nodes: usize,
    pub byzantine: usize,
    pub rounds: usize,
    pub seed: u64,
    pub strategy: String,
    pub trust: String,
    pub true_best_depth: Depth,
    pub final_majority_depth: Depth,
    pub final_fraction_correct: f64,
    pub final_median_confidence: f64,
    /// First round after which the median honest node gives the true best
    /// depth P(best) ≥ 0.9 (null if never).
    pub rounds_to_90: Option<usize>,
    pub patterns_total: u64,
    /// Patterns received from peers and accepted, summed over nodes.
    pub patterns_exchanged: u64,
    /// Patterns sent in sync responses, summed over nodes (≥ exchanged: the
    /// excess is records fetched from more than one peer at once).
    pub patterns_served: u64,
    pub bytes_sent: u64,
    pub rounds_fully_propagated: usize,
    /// Time from a pattern's recording until every other node stored it:
    /// p50/p99/max over all patterns of the run (milliseconds).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Patterns that did not reach every node before their round ended.
    pub undelivered: usize,
    /// Application bytes sent (announcements, insight broadcasts, sync
    /// responses; not gossipsub forwarding or transport framing), summed
    /// over nodes, per delivered copy (pattern × receiving node).
    pub bytes_per_pattern: f64,
    /// Mean size of one signed pattern record (body + signer + signature).
    pub record_bytes: f64,
    /// Process CPU time (all nodes, user + system) during the rounds, per
    /// delivered copy (pattern × receiving node).
    pub cpu_ms_per_pattern: Option<f64>,
    /// Median honest P(true best) per round in the mesh …
    pub p_best_by_round: Vec<f64>,
    /// … and for one node learning alone (same workload, strategy, seed).
    pub alone_p_best_by_round: Vec<f64>,
    pub alone_rounds_to_90: Option<usize>,
    pub wall_secs: f64,
    /// Connections per node and the peer manager's work.
    #[serde(flatten)]
    pub mesh: mesh::MeshReport,
    /// The machine's load average (1, 5, 15 min) when the rounds ended.
    pub load_average: Option<[f64; 3]>,
    /// The record tree's repair work over the whole run, summed over nodes:
    /// records asked for by id after a push did not come (`grafts_sent`),
    /// digest repairs when no announcer answered, and copies that arrived
    /// twice.
    pub tree_grafts: u64,
    pub tree_repairs: u64,
    pub tree_duplicates: u64,
    pub per_round: Vec<RoundReport>,
}
