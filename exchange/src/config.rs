//! Every bound, rate and policy constant of the core, in one place.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use metamesh_protocol::reputation::{ReputationPolicy, Trust};
use serde::{Deserialize, Serialize};

/// Configuration of the exchange core. `Default` gives the documented values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Share records with peers (serve requests, push, announce).
    pub sharing: bool,
    // ---- bounds of every table -------------------------------------------
    /// Reputation states held in memory (evicts the least recently touched
    /// low-value entry; hostile and penalised peers are kept longest).
    pub max_reputation_entries: usize,
    /// Connected peers tracked.
    pub max_peers: usize,
    /// Per-origin token buckets (quota).
    pub max_origin_buckets: usize,
    /// Per-peer request buckets (serving).
    pub max_peer_buckets: usize,
    /// Origins whose records are deferred (declined for a passable reason).
    pub max_deferred_origins: usize,
    /// Gossip messages waiting for signature verification.
    pub max_pending_verify: usize,
    /// Writes in flight.
    pub max_pending_writes: usize,
    /// Outbound requests in flight (all peers).
    pub max_outbound_requests: usize,
    /// Per-origin ranges being pulled (dedup of running pulls).
    pub max_inflight_ranges: usize,
    /// Insight (origin, seq) → hash entries kept for equivocation checks.
    pub max_insight_seqs: usize,
    /// Origins in the frontier (one entry each).
    pub max_origins: usize,
    // ---- pulls -------------------------------------------------------------
    /// Records asked for per page.
    pub page_records: u32,
    /// Record bytes accepted per page.
    pub page_bytes: u64,
    /// Seconds before an outbound request with no answer is forgotten.
    pub request_timeout_secs: f64,
    /// Seconds between reconciliations with one peer.
    pub recon_min_interval_secs: f64,
    /// Seconds between finding a gap and pulling it (records in flight by
    /// gossip arrive meanwhile and are not pulled).
    pub repair_delay_secs: f64,
    /// Seconds before the first reconciliation with a new connection.
    pub connect_delay_secs: f64,
    // ---- announce ------------------------------------------------------------
    /// Seconds between digest announcements when the frontier changed.
    pub announce_interval_secs: f64,
    /// Seconds between digest announcements when nothing changed (jittered).
    pub announce_idle_secs: f64,
    /// Seconds between own insight broadcasts.
    pub insight_interval_secs: f64,
    /// Seconds between housekeeping ticks.
    pub tick_secs: f64,
    // ---- quotas and serving ----------------------------------------------------
    /// Records accepted per origin per hour (the writer's own quota too).
    pub records_per_origin_per_hour: u32,
    /// Inbound requests per peer per second (burst 4×).
    pub requests_per_sec: f64,
    /// Record bytes served per peer per second (burst 4×).
    pub serve_bytes_per_sec: f64,
    /// Patterns in one local submission.
    pub max_submit: usize,
    /// Seconds a deferred origin waits before its records are fetched again
    /// (a reputation threshold; quota deferrals wait for the bucket).
    pub defer_secs: f64,
    // ---- acceptance policy ---------------------------------------------------------
    /// Patterns below this quality are declined for good (slot marked declined).
    pub min_quality: f64,
    /// Origins below this score are declined for now (passable).
    pub min_reputation_patterns: f64,
    /// Origins below this score: their insights are ignored.
    pub min_reputation_insights: f64,
    // ---- reputation transitions --------------------------------------------------
    pub reputation: ReputationPolicy,
    /// Disconnect a connected peer whose score falls below this.
    pub disconnect_below: f64,
    /// Ban (refuse connections) below this, for `ban_secs`.
    pub ban_below: f64,
    pub ban_secs: f64,
    /// Operator trust per peer.
    pub trust: BTreeMap<PeerId, Trust>,
    /// Parent (promotion target; its insights count as inherited).
    pub parent: Option<PeerId>,
    /// Seconds between reconciliations with the parent (it may be in
    /// another mesh, whose announcements never reach us).
    pub parent_resync_secs: f64,
    /// Confidence (P(best)) of our `optimal_quality_depth` insight needed
    /// before it is promoted to the parent.
    pub promote_min_confidence: f64,
    /// Records over a spanning-tree push (`exchange/src/tree/`) instead of gossipsub (on by default).
    pub tree: crate::tree::TreeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sharing: true,
            max_reputation_entries: 8192,
            max_peers: 1024,
            max_origin_buckets: 8192,
            max_peer_buckets: 4096,
            max_deferred_origins: 4096,
            max_pending_verify: 512,
            max_pending_writes: 256,
            max_outbound_requests: 256,
            max_inflight_ranges: 4096,
            max_insight_seqs: 8192,
            max_origins: 1_000_000,
            page_records: 512,
            page_bytes: 2 * 1024 * 1024,
            request_timeout_secs: 20.0,
            recon_min_interval_secs: 2.0,
            repair_delay_secs: 1.0,
            connect_delay_secs: 0.2,
            announce_interval_secs: 5.0,
            announce_idle_secs: 60.0,
            insight_interval_secs: 10.0,
            tick_secs: 1.0,
            records_per_origin_per_hour: 20_000,
            requests_per_sec: 10.0,
            serve_bytes_per_sec: 4.0 * 1024.0 * 1024.0,
            max_submit: 1000,
            defer_secs: 600.0,
            min_quality: 0.0,
            min_reputation_patterns: -20.0,
            min_reputation_insights: -20.0,
            reputation: ReputationPolicy::default(),
            disconnect_below: -50.0,
            ban_below: -80.0,
            ban_secs: 3600.0,
            trust: BTreeMap::new(),
            parent: None,
            parent_resync_secs: 30.0,
            promote_min_confidence: 0.9,
            tree: crate::tree::TreeConfig::default(),
        }
    }
}

impl Config {
    /// Whether this node runs the record tree: `tree.enabled` and sharing
    /// on. A sharing-off node serves and forwards nothing, so it stays out
    /// of the tree (its peers see no tree on it) and learns by pull.
    pub fn tree_active(&self) -> bool {
        self.sharing && self.tree.enabled
    }

    pub fn trust(&self, peer: &PeerId) -> Trust {
        self.trust.get(peer).copied().unwrap_or_default()
    }
}
