//! The tree's parameters.

use serde::{Deserialize, Serialize};

/// Parameters of the tree. `Default`: on (off: records go over gossipsub's records topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TreeConfig {
    /// Push records over the tree instead of gossipsub's records topic.
    pub enabled: bool,
    // ---- the spanning tree ---------------------------------------------------
    /// The root bumps its sequence number this often; the new number goes
    /// down the tree and to every tree peer (liveness and re-attachment).
    pub heartbeat_secs: f64,
    /// A root whose sequence number did not grow for this long is dropped.
    pub root_max_age_secs: f64,
    /// A newer root sequence number offered by a peer other than our parent
    /// is taken only if the parent does not relay it within this (keeps the
    /// tree from following each heartbeat's first arrival).
    pub hold_secs: f64,
    /// Distances at or beyond this count as detached (bounds count-to-infinity).
    pub max_dist: u8,
    /// A peer whose view of our link differs is sent our state at most this often.
    pub correct_secs: f64,
    // ---- records ---------------------------------------------------------------
    /// Non-tree peers we send ids of new records to (repair); peers that
    /// send us ids get ours too, up to `max_lazy` in all.
    pub lazy_peers: usize,
    pub max_lazy: usize,
    /// Ids are batched this long.
    pub ihave_delay_secs: f64,
    /// Wait this long after the first id of a missing record before `Graft`.
    pub graft_timeout_secs: f64,
    /// Then this long before asking the next announcer.
    pub graft_retry_secs: f64,
    /// A new tree edge is sent the ids of records verified in the last this
    /// many seconds (pushes it missed while the tree was changing; longer
    /// than a root change: `root_max_age_secs` + a few heartbeats).
    pub edge_ids_secs: f64,
    /// Records kept to answer `Graft`, and for how long.
    pub max_cache: usize,
    pub cache_secs: f64,
    /// Ids of records held or being verified (the duplicate filter).
    pub max_seen: usize,
    /// Announced-but-missing records tracked.
    pub max_missing: usize,
    /// Announcers remembered per missing record.
    pub max_announcers: usize,
    /// Connected peers tracked.
    pub max_connected: usize,
    /// Ids queued per peer.
    pub max_queued_ids: usize,
    /// Dropped roots remembered (with the last sequence number heard).
    pub max_dead_roots: usize,
    // ---- the core, while the tree is on ----------------------------------------------
    /// Seconds between digest announcements while the frontier changes (the
    /// tree pushes new records and repairs misses by ids; the announcement
    /// is the last resort, as is the idle one).
    pub announce_interval_secs: f64,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            enabled: true,
            heartbeat_secs: 3.0,
            root_max_age_secs: 8.0,
            hold_secs: 0.5,
            max_dist: 32,
            correct_secs: 1.0,
            lazy_peers: 2,
            max_lazy: 6,
            ihave_delay_secs: 0.1,
            graft_timeout_secs: 0.5,
            graft_retry_secs: 0.4,
            edge_ids_secs: 20.0,
            max_cache: 1024,
            cache_secs: 30.0,
            max_seen: 16_384,
            max_missing: 1024,
            max_announcers: 4,
            max_connected: 4096,
            max_queued_ids: 4096,
            max_dead_roots: 64,
            announce_interval_secs: 30.0,
        }
    }
}
