//! Network simulator: N instances of the real exchange core
//! (`metamesh_exchange::State`) over in-memory stores, joined by a model of
//! gossipsub mesh delivery, with latency, loss, churn and partitions, on a
//! seeded discrete-event queue (reproducible per seed).
//!
//! What is modelled of gossipsub (libp2p 0.57 defaults unless noted): a
//! mesh of degree D = 6 (D_lo 4, D_hi 12) per topic over the connection
//! graph; full messages forwarded to mesh peers after validation
//! (Accept), never back to the propagation source; a seen-cache that drops
//! duplicates (they still cost their bytes on the wire); IDONTWANT (v1.2)
//! sent to mesh peers on first receipt; IHAVE every 1 s heartbeat to
//! D_lazy = 6 non-mesh peers for messages of the last `history_gossip`
//! heartbeats, answered by IWANT; publishing to mesh peers only
//! (`flood_publish = false`, which the node configures). Not modelled:
//! scoring inside gossipsub, PRUNE/GRAFT churn of the mesh, fanout.
//!
//! Signatures are real (records are signed once up front by their
//! origins' keys) and verified once per record hash; every `Verify`
//! output is answered from that cache, so each core runs its real
//! decisions without paying ed25519 per delivery.

mod engine;

pub use engine::run;

use serde::Serialize;

/// Simulation parameters (the `propagation` binary's flags).
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub nodes: usize,
    /// Nodes that publish patterns.
    pub origins: usize,
    /// Patterns each origin publishes.
    pub patterns_per_origin: usize,
    /// Seconds over which patterns are published.
    pub publish_window_secs: f64,
    /// Gossip transmissions lost (each independently).
    pub loss: f64,
    /// Fraction of nodes that leave during the publish window and rejoin.
    pub churn: f64,
    /// Split the mesh in two halves for a while (patterns published on both sides).
    pub partition: bool,
    pub seed: u64,
    /// Mesh degree D (gossipsub default 6).
    pub mesh_d: usize,
    /// Connections dialled per node (the connection graph the mesh lives on).
    pub dial: usize,
    /// Link latency: mean ± half-width, milliseconds (uniform).
    pub latency_ms: f64,
    pub jitter_ms: f64,
    /// Heartbeats whose messages are advertised in IHAVE (gossipsub default 3).
    pub history_gossip: usize,
    /// Send IDONTWANT on first receipt (gossipsub v1.2).
    pub idontwant: bool,
    /// Bytes of a message id on the wire.
    pub msg_id_bytes: usize,
    /// Join a fresh node at the end and time its bootstrap.
    pub bootstrap: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            nodes: 1000,
            origins: 20,
            patterns_per_origin: 5,
            publish_window_secs: 10.0,
            loss: 0.0,
            churn: 0.0,
            partition: false,
            seed: 1,
            mesh_d: 6,
            dial: 8,
            latency_ms: 100.0,
            jitter_ms: 50.0,
            history_gossip: 3,
            idontwant: true,
            msg_id_bytes: 20,
            bootstrap: true,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetReport {
    pub nodes: usize,
    pub origins: usize,
    pub patterns: usize,
    pub seed: u64,
    pub loss: f64,
    pub churn: f64,
    pub partition: bool,
    pub mesh_d: usize,
    /// Records held / records that should be held, over nodes online at the end.
    pub delivered_fraction: f64,
    /// Over nodes that never left: time for a pattern to reach all of them.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Patterns that did not reach every always-online node before the end.
    pub undelivered_patterns: usize,
    /// Wire bytes of everything (gossip, control, sync) per pattern per node.
    pub bytes_per_pattern: f64,
    /// Of which: full gossip messages (including duplicate copies).
    pub gossip_bytes_per_pattern: f64,
    /// Of which: IHAVE / IWANT / IDONTWANT.
    pub control_bytes_per_pattern: f64,
    /// Of which: sync requests and responses.
    pub sync_bytes_per_pattern: f64,
    /// Mean encoded size of one record push.
    pub record_bytes: f64,
    /// bytes_per_pattern / record_bytes.
    pub bytes_ratio: f64,
    /// Records handed to cores (gossip deliveries + pulled) per record accepted.
    pub duplication: f64,
    /// Full gossip copies on the wire per record accepted (gossipsub duplicates).
    pub wire_copies_per_record: f64,
    /// Time from healing the partition until every node holds everything (0: no partition).
    pub heal_converge_ms: f64,
    /// Time for a fresh node to hold the whole history (0: not run).
    pub bootstrap_ms: f64,
    pub simulated_s: f64,
    pub events: u64,
    pub wall_s: f64,
}
