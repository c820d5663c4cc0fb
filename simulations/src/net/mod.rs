//! Network simulator: N instances of the real exchange core
//! (`metamesh_exchange::State`) over in-memory stores, joined by a model of
//! the gossipsub router of rust-libp2p (`libp2p-gossipsub` 0.50, the one in
//! libp2p 0.57), with latency, loss, churn and partitions, on a seeded
//! discrete-event queue (reproducible per seed).
//!
//! What is modelled of gossipsub, with its defaults (see [`Gossipsub`]):
//! - the mesh, per node: built and kept by the heartbeat (every
//!   `heartbeat_ms`): below `mesh_n_low` GRAFT random connected peers up to
//!   `mesh_n`; at or above `mesh_n_high` PRUNE random peers down to `mesh_n`
//!   keeping `mesh_outbound_min` outbound ones; a GRAFT is refused (PRUNE
//!   back) at `mesh_n_high` unless the grafter is our outbound peer, or
//!   within the 60 s prune backoff; a PRUNE sets the backoff on both sides;
//!   disconnects leave the mesh. One mesh serves every topic (all nodes
//!   subscribe to all topics).
//! - publishing: `flood_publish` (default true, the node does not change
//!   it) sends own messages to every connected peer, else to the mesh.
//! - forwarding after validation `Accept` to mesh peers, never to the
//!   propagation source, the message's author (signed messages) or a peer
//!   that sent IDONTWANT for it; `Ignore`/`Reject` are not forwarded and
//!   not gossiped (removed from the message cache).
//! - a duplicate cache: copies after the first are dropped (their bytes are
//!   counted).
//! - IDONTWANT (v1.2): on first receipt of a message whose protobuf is
//!   larger than `idontwant_threshold` (default 1000 bytes), to every mesh
//!   peer but the source and author; `idontwant_on_publish` (default false).
//! - IHAVE at each heartbeat to `max(gossip_lazy, gossip_factor × non-mesh
//!   peers)` random connected non-mesh peers, listing the validated message
//!   ids of the last `history_gossip` heartbeats; answered by IWANT for
//!   ids neither seen nor promised (a promise lasts 3 s); at most 10 IHAVE
//!   per peer per heartbeat are handled.
//! - wire sizes: a message id is 32 bytes (the node's `message_id_fn` is
//!   blake3 of the data); protobuf framing is counted (see `wire_*` in
//!   `engine.rs`); a signed message (`signed`, the node's current
//!   `MessageAuthenticity::Signed`) carries `from`, `seqno` and a 64-byte
//!   signature (+116 bytes). Noise/yamux/TCP framing below gossipsub and the
//!   request-response framing of sync messages are not counted.
//!
//! Not modelled: peer scoring inside gossipsub, opportunistic grafting,
//! fanout expiry, PX, per-topic meshes, send-queue limits, CPU time.
//!
//! Signatures of records are real (records are signed by their origins'
//! keys in the cores) and verified once per record hash; every `Verify`
//! output is answered from that cache, so each core runs its real
//! decisions without paying ed25519 per delivery.
//!
//! The sync protocol (digest reconciliation and range pulls of the core)
//! runs over a request-response model with the same link latency; its
//! requests and responses are counted at their encoded size.

mod engine;

pub use engine::run;

use serde::Serialize;

/// Parameters of the gossipsub model; `Default` is rust-libp2p's
/// `gossipsub::Config::default()` (libp2p-gossipsub 0.50.1), plus the node's
/// own choices where it makes one (`signed`).
#[derive(Debug, Clone, Serialize)]
pub struct Gossipsub {
    /// D (default 6).
    pub mesh_n: usize,
    /// D_lo (default 5).
    pub mesh_n_low: usize,
    /// D_hi (default 12).
    pub mesh_n_high: usize,
    /// D_out (default 2).
    pub mesh_outbound_min: usize,
    /// D_lazy (default 6).
    pub gossip_lazy: usize,
    /// Fraction of non-mesh peers sent IHAVE, if more than `gossip_lazy` (default 0.25).
    pub gossip_factor: f64,
    /// Heartbeats whose message ids are advertised in IHAVE (default 3).
    pub history_gossip: usize,
    /// Heartbeats a message stays in the message cache for IWANT (default 5).
    pub history_length: usize,
    /// Heartbeat interval, milliseconds (default 1000; the node sets 700).
    pub heartbeat_ms: u64,
    /// IDONTWANT is sent for messages whose protobuf exceeds this (default 1000 bytes).
    pub idontwant_threshold: usize,
    /// Send IDONTWANT to the peers we publish to (default false).
    pub idontwant_on_publish: bool,
    /// Publish own messages to all connected peers, not only the mesh (default true).
    pub flood_publish: bool,
    /// Messages carry gossipsub's author signature (the node: `MessageAuthenticity::Signed`).
    pub signed: bool,
}

impl Default for Gossipsub {
    fn default() -> Self {
        Gossipsub {
            mesh_n: 6,
            mesh_n_low: 5,
            mesh_n_high: 12,
            mesh_outbound_min: 2,
            gossip_lazy: 6,
            gossip_factor: 0.25,
            history_gossip: 3,
            history_length: 5,
            heartbeat_ms: 1000,
            idontwant_threshold: 1000,
            idontwant_on_publish: false,
            flood_publish: true,
            signed: true,
        }
    }
}

/// What the record tree did (sums over all nodes; `records` says which push ran).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TreeReport {
    /// `"tree"`: records over the core's spanning tree (`core.tree.enabled`); `"gossipsub"`: the records topic.
    pub records: &'static str,
    pub config: Option<metamesh_exchange::tree::TreeConfig>,
    /// Mean tree edges (parent + children) per online node at the end (a spanning tree: 2 − 2/N).
    pub edges_mean: f64,
    /// Distinct roots among online nodes at the end (one tree: 1).
    pub roots: usize,
    /// Online nodes that are neither a root nor attached to one at the end.
    pub detached: usize,
    /// Largest and mean distance to the root at the end (attached nodes).
    pub max_dist: u8,
    pub mean_dist: f64,
    pub stats: metamesh_exchange::tree::TreeStats,
}

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
    /// gossipsub RPCs lost (each full message and control message
    /// independently). Sync requests/responses are not lost (reliable
    /// streams; a broken connection fails them).
    pub loss: f64,
    /// Fraction of nodes that leave during the publish window and rejoin.
    pub churn: f64,
    /// Split the mesh in two halves for a while (patterns published on both sides).
    pub partition: bool,
    pub seed: u64,
    /// Connections dialled per node (the connection graph the mesh lives on).
    pub dial: usize,
    /// Link latency: mean ± half-width, milliseconds (uniform).
    pub latency_ms: f64,
    pub jitter_ms: f64,
    /// The gossipsub router's parameters.
    pub gossipsub: Gossipsub,
    /// The exchange core's configuration (every node); `core.tree.enabled`
    /// pushes records over the core's spanning tree instead of gossipsub.
    pub core: metamesh_exchange::Config,
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
            dial: 8,
            latency_ms: 100.0,
            jitter_ms: 50.0,
            gossipsub: Gossipsub::default(),
            core: metamesh_exchange::Config::default(),
            bootstrap: true,
        }
    }
}

/// What one run measured. Every `*_per_pattern` figure is: bytes sent over
/// all links while patterns were being spread (from the first publish until
/// the bootstrap phase starts, or the end) / (patterns × receiving nodes),
/// receiving nodes = `nodes − 1` (all but the pattern's origin).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetReport {
    pub nodes: usize,
    pub origins: usize,
    pub patterns: usize,
    pub seed: u64,
    pub loss: f64,
    pub churn: f64,
    pub partition: bool,
    /// gossipsub D (`gossipsub.mesh_n`).
    pub mesh_d: usize,
    /// Mean mesh size over online nodes at the end.
    pub mesh_mean: f64,
    /// Records held / records that should be held, over nodes online at the end.
    pub delivered_fraction: f64,
    /// Over nodes that never left: time for a pattern to reach all of them.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Patterns that did not reach every always-online node before the end.
    pub undelivered_patterns: usize,
    /// Wire bytes of everything (record gossip, announcements, gossipsub
    /// control, sync) per pattern per receiving node.
    pub bytes_per_pattern: f64,
    /// Of which: record pushes (full gossip messages, duplicate copies included).
    pub gossip_bytes_per_pattern: f64,
    /// Of which: digest announcements (and other non-record gossip).
    pub announce_bytes_per_pattern: f64,
    /// Of which: IHAVE / IWANT / IDONTWANT / GRAFT / PRUNE.
    pub control_bytes_per_pattern: f64,
    /// Of which: sync requests and responses.
    pub sync_bytes_per_pattern: f64,
    /// Mean encoded size of one record push (the gossip message's data).
    pub record_bytes: f64,
    /// bytes_per_pattern / record_bytes (the target is ≤ 1.5).
    pub bytes_ratio: f64,
    /// Records handed to cores (gossip deliveries + pulled) per record accepted.
    pub duplication: f64,
    /// Full record-push copies sent per pattern per receiving node (1.0 = no duplicates).
    pub wire_copies_per_record: f64,
    /// Time from healing the partition until every node holds everything (0: no partition).
    pub heal_converge_ms: f64,
    /// Time for a fresh node to hold the whole history (0: not run).
    pub bootstrap_ms: f64,
    pub simulated_s: f64,
    pub events: u64,
    pub wall_s: f64,
    /// The gossipsub parameters of the run.
    pub gossipsub: Gossipsub,
    /// The record push: gossipsub or the core's tree, and the tree's figures.
    pub tree: TreeReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> NetConfig {
        NetConfig {
            nodes: 40,
            origins: 4,
            patterns_per_origin: 2,
            publish_window_secs: 3.0,
            seed,
            ..NetConfig::default()
        }
    }

    #[test]
    fn everything_reaches_everyone_and_runs_are_reproducible() {
        let a = run(small(3));
        assert_eq!(a.patterns, 8);
        assert_eq!(a.delivered_fraction, 1.0);
        assert_eq!(a.undelivered_patterns, 0);
        assert!(a.p99_ms > 0.0 && a.p99_ms < 2000.0, "{a:?}");
        assert!(a.bootstrap_ms.is_finite() && a.bootstrap_ms > 0.0);
        assert!(a.wire_copies_per_record >= 1.0, "{a:?}");
        let b = run(small(3));
        assert_eq!(
            (a.p50_ms, a.p99_ms, a.bytes_per_pattern, a.events),
            (b.p50_ms, b.p99_ms, b.bytes_per_pattern, b.events)
        );
    }

    /// Runs `core` without and then with 5 % loss + 10 % churn (seeds
    /// `seed`, `seed + 1`); both must deliver everything. Returns the clean run.
    fn delivers_also_with_loss_and_churn(core: metamesh_exchange::Config, seed: u64) -> NetReport {
        let clean = run(NetConfig {
            core: core.clone(),
            bootstrap: false,
            ..small(seed)
        });
        assert_eq!(clean.delivered_fraction, 1.0, "{clean:?}");
        let c = run(NetConfig {
            core,
            loss: 0.05,
            churn: 0.1,
            bootstrap: false,
            ..small(seed + 1)
        });
        assert_eq!(c.delivered_fraction, 1.0, "{c:?}");
        clean
    }

    #[test]
    fn records_over_gossipsub_reach_everyone_also_with_loss_and_churn() {
        // `[tree] enabled = false`: the records topic carries records
        let mut core = metamesh_exchange::Config::default();
        core.tree.enabled = false;
        let g = delivers_also_with_loss_and_churn(core, 8);
        assert_eq!(g.tree.records, "gossipsub");
    }

    #[test]
    fn records_over_the_core_tree_reach_everyone_also_with_loss_and_churn() {
        // the default, as in the node
        let core = metamesh_exchange::Config::default();
        assert!(core.tree.enabled);
        let t = delivers_also_with_loss_and_churn(core, 6);
        assert_eq!(t.tree.records, "tree");
        assert!(t.tree.stats.pushes_received > 0, "{t:?}");
        assert_eq!(t.tree.roots, 1, "{t:?}");
        assert_eq!(t.tree.detached, 0, "{t:?}");
    }

    #[test]
    fn a_healed_partition_converges_and_churn_loses_nothing() {
        let p = run(NetConfig {
            partition: true,
            bootstrap: false,
            ..small(4)
        });
        assert_eq!(p.delivered_fraction, 1.0);
        assert!(
            p.heal_converge_ms.is_finite() && p.heal_converge_ms > 0.0,
            "{p:?}"
        );
        let c = run(NetConfig {
            loss: 0.05,
            churn: 0.1,
            bootstrap: false,
            ..small(5)
        });
        assert_eq!(c.delivered_fraction, 1.0, "{c:?}");
    }
}
