//! The tree's parameters.

use serde::{Deserialize, Serialize};

/// Parameters of the tree. `Default`: off (records go over gossipsub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TreeConfig {
    /// Push records over the tree instead of gossipsub's records topic.
    pub enabled: bool,
    /// Ask connected peers to become neighbours while fewer than this.
    pub active_target: usize,
    /// Refuse neighbours beyond this (unless the asker has none).
    pub active_max: usize,
    /// Ids to lazy neighbours are batched this long.
    pub ihave_delay_secs: f64,
    /// Wait this long after the first announcement of a missing record before `Graft`.
    pub graft_timeout_secs: f64,
    /// Then this long before asking the next announcer.
    pub graft_retry_secs: f64,
    /// Swap an eager link for a lazy one announcing this many hops earlier (0: off).
    pub optimize_hops: u16,
    /// A neighbour's score: +1 for a record it gave us first, −1 for a
    /// duplicate; at −`prune_after` we prune it (stop pushing to us),
    /// unless it is the last neighbour still pushing to us.
    pub prune_after: i32,
    /// Only records whose hash's first byte is a multiple of this move scores (1: all).
    pub shape_one_in: u8,
    /// Our own records also go in full to this many connected peers outside
    /// the tree (gossipsub's flood publish: more starting points, lower depth).
    pub publish_extra: usize,
    /// Records kept to answer `Graft`, and for how long.
    pub max_cache: usize,
    pub cache_secs: f64,
    /// Ids of records held or being verified (the duplicate filter).
    pub max_seen: usize,
    /// Announced-but-missing records tracked.
    pub max_missing: usize,
    /// Announcers remembered per missing record.
    pub max_announcers: usize,
    /// Connected peers tracked (candidates for the active view).
    pub max_connected: usize,
    /// Ids queued per lazy neighbour.
    pub max_queued_ids: usize,
    /// An unanswered `Join` is given up after this; a refusing peer is not asked again for this.
    pub join_timeout_secs: f64,
    pub refuse_backoff_secs: f64,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            enabled: false,
            active_target: 4,
            active_max: 6,
            ihave_delay_secs: 0.1,
            graft_timeout_secs: 0.6,
            graft_retry_secs: 0.4,
            optimize_hops: 0,
            prune_after: 1,
            shape_one_in: 4,
            publish_extra: 8,
            max_cache: 1024,
            cache_secs: 30.0,
            max_seen: 16_384,
            max_missing: 1024,
            max_announcers: 4,
            max_connected: 4096,
            max_queued_ids: 4096,
            join_timeout_secs: 5.0,
            refuse_backoff_secs: 10.0,
        }
    }
}
