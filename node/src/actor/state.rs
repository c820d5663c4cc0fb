//! The exchange state the actor owns (no lock: one task touches it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use libp2p::PeerId;
use metamesh_protocol::sync::Frontier;
use metamesh_protocol::wire::FrontierEntry;
use metamesh_protocol::{Depth, InsightBody, SignedRecord};

use crate::config::Config;
use crate::pipeline::{Limiter, ReputationBook};

/// Inbound sync requests a peer may make per second (burst 4×).
pub const REQUESTS_PER_SEC_PER_PEER: f64 = 10.0;

/// How a pull session decides what to ask for.
#[derive(Debug, Clone)]
pub enum Pull {
    /// Exactly the ranges we lack relative to an announced frontier.
    Ranges(Vec<FrontierEntry>),
    /// "Here is my frontier; send what I lack."
    Have,
}

/// One running pull session with a peer (at most one per peer).
#[derive(Debug)]
pub struct PullSession {
    pub mode: Pull,
    pub page: usize,
    /// Run again when done (something new was announced meanwhile).
    pub again: bool,
}

/// Why we sent a request (to route its response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Pull(PeerId),
    Promotion(PeerId, u64),
}

pub struct Exchange {
    pub rep: ReputationBook,
    pub gossip_rate: Limiter,
    pub request_rate: Limiter,
    pub serve_bytes: Limiter,
    pub pull_rate: Limiter,
    pub origin_quota: Limiter,
    pub pulls: HashMap<PeerId, PullSession>,
    /// Announced frontiers that running pull sessions are fetching, by peer.
    pub pull_targets: HashMap<PeerId, Frontier>,
    pub connected: HashSet<PeerId>,
    /// Connected peers whose catch-up is still undecided: the frontier
    /// digest they announced (if any) decides whether a pull is needed.
    pub new_peers: HashMap<PeerId, Instant>,
    pub insight_seq: u64,
    pub last_insight_at: f64,
    pub last_insight_own_count: u64,
    pub last_announce: Option<Instant>,
    /// Digest and time of the last published announcement.
    pub last_announced: Option<([u8; 32], Instant)>,
    pub announce_requested: bool,
    pub last_collective: Option<(Depth, f64)>,
    /// The store changed since the collective view was last checked.
    pub collective_stale: bool,
    pub collective_running: bool,
    /// Our current signed insight record (re-signed when our stats change).
    pub own_insight: Option<(SignedRecord, InsightBody)>,
    pub signing_insight: bool,
    /// Child side: seq and time of the last promotion attempt to the parent.
    pub last_promotion: Option<(u64, f64)>,
    pub promoting: bool,
    /// Parent side: children that promoted their insights, with the seq.
    pub promoted_by: BTreeMap<PeerId, u64>,
}

impl Exchange {
    pub fn new(cfg: &Config, now: f64) -> Exchange {
        let lim = &cfg.limits;
        let per_hour = f64::from(lim.records_per_origin_per_hour);
        Exchange {
            rep: ReputationBook::new(cfg),
            gossip_rate: Limiter::new(
                f64::from(lim.records_per_sec_per_peer),
                f64::from(lim.record_burst_per_peer),
            ),
            request_rate: Limiter::new(REQUESTS_PER_SEC_PER_PEER, REQUESTS_PER_SEC_PER_PEER * 4.0),
            serve_bytes: Limiter::new(
                lim.bytes_per_sec_per_peer as f64,
                (lim.bytes_per_sec_per_peer as f64).max(lim.max_response_bytes as f64),
            ),
            pull_rate: Limiter::new(
                f64::from(lim.records_per_sec_per_peer),
                f64::from(lim.record_burst_per_peer),
            ),
            origin_quota: Limiter::new(per_hour / 3600.0, per_hour),
            pulls: HashMap::new(),
            pull_targets: HashMap::new(),
            connected: HashSet::new(),
            new_peers: HashMap::new(),
            insight_seq: (now * 1000.0) as u64,
            last_insight_at: 0.0,
            last_insight_own_count: 0,
            last_announce: None,
            last_announced: None,
            announce_requested: false,
            last_collective: None,
            collective_stale: true,
            collective_running: false,
            own_insight: None,
            signing_insight: false,
            last_promotion: None,
            promoting: false,
            promoted_by: BTreeMap::new(),
        }
    }
}
