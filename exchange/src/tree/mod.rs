//! Record push over a spanning tree built independently of traffic,
//! IO-less: [`Tree::handle`] takes a [`TreeIn`] and the time and returns
//! [`TreeOut`]s. The exchange core owns one and maps its outputs to
//! [`crate::Output::Tree`] (messages to peers), record verification,
//! reconciliation and [`crate::Timer::Tree`]; see `docs/notes/tree2.md`.
//!
//! Two independent parts:
//! - **The spanning tree** (`span.rs`), a distance vector over every
//!   connected peer, as Ethernet's spanning tree protocol or Babel: each
//!   node advertises `(root, seq, dist)` ([`TreeMsg::State`]); the root is
//!   the smallest key heard, the parent the peer offering the shortest
//!   feasible distance (Babel's feasibility condition: strictly shorter than
//!   the shortest we advertised for this root sequence number, or a newer
//!   sequence number); children are the peers that name us their parent.
//!   The root bumps its sequence number every `heartbeat_secs`; a root not
//!   refreshed for `root_max_age_secs` is dropped. The tree depends only on
//!   who is connected, never on which record arrived first.
//! - **The push** (`push.rs`): a verified record goes in full along tree
//!   edges (parent and children) except back to its sender, and as a short
//!   id (batched) to a few non-tree peers; an id whose record does not
//!   come within `graft_timeout_secs` is asked of its announcer (`Graft`),
//!   then of the next; when none is left, the core reconciles with the
//!   last announcer (exact digest repair).
//!
//! Records are forwarded only after the core's verification says `Accept`
//! ([`TreeIn::Verdict`]); a rejected copy is forgotten so that a valid one
//! still gets through. Every table is bounded by [`TreeConfig`].

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use metamesh_protocol::record::ContentHash;
use metamesh_protocol::SignedRecord;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bounded::BoundedMap;

mod config;
mod push;
mod span;
mod wire;

pub use config::TreeConfig;
pub use wire::{
    short_id, TreeError, TreeMsg, INFINITE, MAX_GRAFT_RECORDS, MAX_IDS_PER_MSG, MAX_TREE_MSG_BYTES,
    REL_CHILD, REL_PARENT,
};

/// What happens to a tree.
#[derive(Debug, Clone, PartialEq)]
pub enum TreeIn {
    Up(PeerId),
    Down(PeerId),
    Message {
        from: PeerId,
        msg: TreeMsg,
    },
    /// The core's verdict on a delivered record: `true` = valid and admitted (forward it).
    Verdict {
        id: ContentHash,
        accept: bool,
    },
    /// Our own new record: push it.
    Broadcast(SignedRecord),
    /// A record obtained otherwise (pulled): no longer missing.
    Have(ContentHash),
    Timer,
}

/// What the tree asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum TreeOut {
    Send {
        to: PeerId,
        msg: TreeMsg,
    },
    /// A new record arrived: verify it and answer with [`TreeIn::Verdict`].
    Deliver {
        from: PeerId,
        id: ContentHash,
        record: SignedRecord,
    },
    /// No announcer answered for a missing record: reconcile digests with this peer.
    Repair {
        peer: PeerId,
    },
    /// Call back with [`TreeIn::Timer`] at `at` (replaces an earlier one).
    Schedule {
        at: f64,
    },
}

/// Counters (for metrics and the simulator).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TreeStats {
    pub pushes_received: u64,
    pub duplicates: u64,
    pub grafts_sent: u64,
    pub graft_records_sent: u64,
    pub repairs: u64,
    pub ihave_ids_sent: u64,
    pub states_sent: u64,
    pub parent_changes: u64,
    pub root_changes: u64,
    pub detached: u64,
    pub roots_expired: u64,
}

/// Where this node sits in the spanning tree (a view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Place {
    pub root: u64,
    pub seq: u32,
    pub dist: u8,
    pub is_root: bool,
    pub has_parent: bool,
    pub children: usize,
}

/// A connected peer, as the tree sees it.
#[derive(Debug, Clone)]
struct Peer {
    /// When it connected.
    up_at: f64,
    /// Its last `State` (none yet: `heard` false).
    heard: bool,
    root: u64,
    seq: u32,
    dist: u8,
    /// It names us its parent: it is our child.
    child: bool,
    /// It names us its child (it thinks it is our parent).
    names_us_child: bool,
    /// We chose it for ids of new records.
    lazy_out: bool,
    /// It sent us ids recently (until then it gets ours).
    lazy_in_until: f64,
    /// Ids queued for it.
    queue: Vec<u64>,
    /// Our `State` last sent to it.
    state_sent_at: f64,
}

impl Peer {
    fn new(up_at: f64) -> Peer {
        Peer {
            up_at,
            heard: false,
            root: 0,
            seq: 0,
            dist: INFINITE,
            child: false,
            names_us_child: false,
            lazy_out: false,
            lazy_in_until: f64::NEG_INFINITY,
            queue: Vec::new(),
            state_sent_at: f64::NEG_INFINITY,
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    from: Option<PeerId>,
    /// Peers known to hold it (sent it or its id): no id goes back to them.
    told: Vec<PeerId>,
}

/// Peers remembered per record as already holding it.
const MAX_TOLD: usize = 4;
/// A peer that sent us ids is sent ours for this long after.
const LAZY_IN_SECS: f64 = 30.0;

#[derive(Debug, Clone)]
struct Cached {
    record: SignedRecord,
    at: f64,
    /// Verified and forwarded (only these answer a `Graft`).
    ok: bool,
}

#[derive(Debug, Clone)]
struct Missing {
    announcers: Vec<PeerId>,
    due: f64,
    /// Asked already (a push that answers is not a link mismatch).
    grafted: bool,
    last: Option<PeerId>,
}

/// One node's tree (see the module docs).
pub struct Tree {
    cfg: TreeConfig,
    rng: ChaCha8Rng,
    /// Our key as a root candidate.
    key: u64,
    peers: BTreeMap<PeerId, Peer>,
    // ---- the spanning tree (span.rs) ----
    root: u64,
    seq: u32,
    dist: u8,
    parent: Option<PeerId>,
    /// Feasibility distance: the shortest distance advertised for (root, seq).
    fd: (u32, u8),
    /// Our own sequence number as a root (only grows).
    own_seq: u32,
    /// When the root's sequence number last grew.
    root_heard_at: f64,
    next_beat: f64,
    /// A newer sequence number was offered by a peer other than our parent: take it from whoever at this time.
    hold_until: Option<f64>,
    /// Our parent has not yet confirmed us as its child: resend our `State` to it at this time.
    confirm_at: Option<f64>,
    /// Dropped roots → the last sequence number heard (older offers of them are ignored).
    dead: BoundedMap<u64, u32>,
    // ---- the push (push.rs) ----
    seen: BoundedMap<u64, Seen>,
    cache: BoundedMap<u64, Cached>,
    missing: BoundedMap<u64, Missing>,
    flush_at: Option<f64>,
    armed: Option<f64>,
    started: bool,
    stats: TreeStats,
    out: Vec<TreeOut>,
}

/// A peer's key as a root candidate: the first 8 bytes of blake3 of its id.
pub fn root_key(p: &PeerId) -> u64 {
    let h = blake3::hash(&p.to_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

impl Tree {
    pub fn new(cfg: TreeConfig, me: PeerId, seed: u64) -> Tree {
        let key = root_key(&me);
        Tree {
            rng: ChaCha8Rng::seed_from_u64(seed),
            key,
            peers: BTreeMap::new(),
            root: key,
            seq: 0,
            dist: 0,
            parent: None,
            fd: (0, 0),
            own_seq: 0,
            root_heard_at: f64::NEG_INFINITY,
            next_beat: f64::NEG_INFINITY,
            hold_until: None,
            confirm_at: None,
            dead: BoundedMap::new(cfg.max_dead_roots),
            seen: BoundedMap::new(cfg.max_seen),
            cache: BoundedMap::new(cfg.max_cache),
            missing: BoundedMap::new(cfg.max_missing),
            flush_at: None,
            armed: None,
            started: false,
            stats: TreeStats::default(),
            out: Vec::new(),
            cfg,
        }
    }

    pub fn set_config(&mut self, cfg: TreeConfig) {
        self.dead.set_cap(cfg.max_dead_roots);
        self.seen.set_cap(cfg.max_seen);
        self.cache.set_cap(cfg.max_cache);
        self.missing.set_cap(cfg.max_missing);
        self.cfg = cfg;
    }

    pub fn handle(&mut self, input: TreeIn, now: f64) -> Vec<TreeOut> {
        if !self.started {
            self.started = true;
            self.root_heard_at = now;
            self.next_beat = now + self.cfg.heartbeat_secs;
            self.arm(self.next_beat);
        }
        match input {
            TreeIn::Up(p) => self.on_up(p, now),
            TreeIn::Down(p) => self.on_down(p, now),
            TreeIn::Message { from, msg } => self.on_message(from, msg, now),
            TreeIn::Verdict { id, accept } => self.on_verdict(id, accept, now),
            TreeIn::Broadcast(r) => self.on_broadcast(r, now),
            TreeIn::Have(id) => self.on_have(id, now),
            TreeIn::Timer => self.on_timer(now),
        }
        std::mem::take(&mut self.out)
    }

    // ---- views -------------------------------------------------------------

    /// Connected peers and whether each is a tree edge (our parent or child).
    pub fn active(&self) -> impl Iterator<Item = (&PeerId, bool)> {
        self.peers.keys().map(|p| (p, self.is_edge(p)))
    }

    /// Connected peers that sent no `State` within `after` seconds of
    /// connecting: they do not speak the tree, or keep out of it (sharing
    /// off), so no push reaches them and only our announcements bring them
    /// new records.
    pub fn silent_peers(&self, now: f64, after: f64) -> usize {
        self.peers
            .values()
            .filter(|p| !p.heard && now - p.up_at >= after)
            .count()
    }

    /// Our parent, if any.
    pub fn parent(&self) -> Option<&PeerId> {
        self.parent.as_ref()
    }

    pub fn place(&self) -> Place {
        Place {
            root: self.root,
            seq: self.seq,
            dist: self.dist,
            is_root: self.root == self.key,
            has_parent: self.parent.is_some(),
            children: self.peers.values().filter(|p| p.child).count(),
        }
    }

    pub fn stats(&self) -> &TreeStats {
        &self.stats
    }

    /// Sizes of every table and their bounds: (name, len, cap).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize, usize)> {
        let queued = self
            .peers
            .values()
            .map(|p| p.queue.len())
            .max()
            .unwrap_or(0);
        vec![
            ("tree_connected", self.peers.len(), self.cfg.max_connected),
            ("tree_dead_roots", self.dead.len(), self.dead.cap()),
            ("tree_seen", self.seen.len(), self.seen.cap()),
            ("tree_cache", self.cache.len(), self.cache.cap()),
            ("tree_missing", self.missing.len(), self.missing.cap()),
            ("tree_queue", queued, self.cfg.max_queued_ids),
        ]
    }

    // ---- helpers -----------------------------------------------------------

    fn send(&mut self, to: PeerId, msg: TreeMsg) {
        self.out.push(TreeOut::Send { to, msg });
    }

    fn arm(&mut self, at: f64) {
        if self.armed.is_none_or(|a| at < a) {
            self.armed = Some(at);
            self.out.push(TreeOut::Schedule { at });
        }
    }

    /// Our parent or one of our children.
    fn is_edge(&self, p: &PeerId) -> bool {
        self.parent.as_ref() == Some(p) || self.peers.get(p).is_some_and(|x| x.child)
    }

    fn edges(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(p, x)| x.child || self.parent.as_ref() == Some(*p))
            .map(|(p, _)| *p)
            .collect()
    }

    // ---- peers ---------------------------------------------------------------

    fn on_up(&mut self, p: PeerId, now: f64) {
        if self.peers.contains_key(&p) {
            // a new connection to a known peer: start over with it
            self.on_down(p, now);
        }
        if self.peers.len() >= self.cfg.max_connected {
            return;
        }
        self.peers.insert(p, Peer::new(now));
        self.send_state(p, now);
        self.refresh_lazy();
    }

    fn on_down(&mut self, p: PeerId, now: f64) {
        if self.peers.remove(&p).is_none() {
            return;
        }
        if self.parent == Some(p) {
            self.reselect(now);
        }
        self.refresh_lazy();
    }

    fn on_message(&mut self, from: PeerId, msg: TreeMsg, now: f64) {
        if !self.peers.contains_key(&from) {
            return;
        }
        match msg {
            TreeMsg::State {
                root,
                seq,
                dist,
                rel,
            } => self.on_state(from, root, seq, dist, rel, now),
            TreeMsg::Push { record } => self.on_push(from, record, now),
            TreeMsg::IHave(ids) => self.on_ihave(from, ids, now),
            TreeMsg::Graft(ids) => self.on_graft(from, ids),
        }
    }

    fn on_timer(&mut self, now: f64) {
        self.armed = None;
        self.span_timer(now);
        self.push_timer(now);
        let ttl = self.cfg.cache_secs;
        self.cache.retain(|_, c| now - c.at <= ttl);
        // next wake-up
        let mut next = if self.root == self.key {
            self.next_beat
        } else {
            self.root_heard_at + self.cfg.root_max_age_secs
        };
        for t in [self.flush_at, self.hold_until, self.confirm_at]
            .into_iter()
            .flatten()
        {
            next = next.min(t);
        }
        for (_, m) in self.missing.iter() {
            next = next.min(m.due);
        }
        if next.is_finite() {
            self.arm(next.max(now + 1e-3));
        }
    }
}
