//! Plumtree push of records over a small, stable active view (HyParView
//! style), IO-less: [`Tree::handle`] takes a [`TreeIn`] and the time and
//! returns [`TreeOut`]s. The exchange core owns one and maps its outputs to
//! [`crate::Output::Tree`] (messages to peers), record verification and
//! [`crate::Timer::Tree`]; see `docs/notes/tree.md`.
//!
//! The rules (Leitão et al., "Epidemic broadcast trees", 2007; HyParView,
//! 2007; as in iroh-gossip's `proto/`):
//! - **Active view.** Of the connected peers, each node keeps a few tree
//!   neighbours (`active_target`, at most `active_max`), agreed by a
//!   `Join`/`Accept` handshake so that links are symmetric. A lost
//!   neighbour is replaced from the connected peers.
//! - **Eager and lazy.** A new neighbour is eager. A record goes in full to
//!   eager neighbours and as an id (batched for `ihave_delay_secs`) to lazy
//!   ones, never to the peer it came from, nor as an id to a peer that
//!   already announced it to us.
//! - **Prune.** A copy of a record we already hold, from an eager peer,
//!   makes that link lazy (`Prune`) — only the *later* copy's sender, and
//!   never our last eager link.
//! - **Graft.** An id announced to us whose record does not come within
//!   `graft_timeout_secs` is asked of its announcer (`Graft`), which becomes
//!   eager; the next announcer after `graft_retry_secs`.
//! - **Optimisation.** An id announced by a lazy peer at least
//!   `optimize_hops` hops closer to its origin than the copy we got: graft
//!   that peer (no record asked) and prune the eager one that sent it.
//!
//! Records are forwarded only after the core's verification says `Accept`
//! ([`TreeIn::Verdict`]); a rejected copy is forgotten so that a valid one
//! still gets through. Every table is bounded by [`TreeConfig`].

use std::collections::{BTreeMap, BTreeSet};

use libp2p_identity::PeerId;
use metamesh_protocol::record::ContentHash;
use metamesh_protocol::SignedRecord;
use rand::seq::IteratorRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bounded::BoundedMap;

mod config;
mod wire;

pub use config::TreeConfig;
pub use wire::{TreeError, TreeMsg, MAX_GRAFT_RECORDS, MAX_IDS_PER_MSG, MAX_TREE_MSG_BYTES};

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
        hops: u16,
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
    pub prunes_sent: u64,
    pub grafts_sent: u64,
    pub optimisations: u64,
    pub ihave_ids_sent: u64,
}

/// A neighbour: do we push records to it; does it push to us (we did not
/// prune it), and how useful its pushes were (see `prune_after`).
#[derive(Debug, Clone, Copy)]
struct Link {
    eager: bool,
    inbound: bool,
    score: i32,
}

/// Only one record in `n` (by its hash, so every node agrees) moves link
/// scores: fewer concurrent records shape the tree, so their first-arrival
/// trees are not intersected into a forest.
fn shapes(id: &ContentHash, n: u8) -> bool {
    n <= 1 || id.0[0] % n == 0
}

/// Bound of a link's score.
const SCORE_CAP: i32 = 8;

#[derive(Debug, Clone)]
struct Seen {
    hops: u16,
    from: Option<PeerId>,
}

#[derive(Debug, Clone)]
struct Cached {
    record: SignedRecord,
    hops: u16,
    at: f64,
    /// Verified and forwarded (only these answer a `Graft`).
    ok: bool,
}

#[derive(Debug, Clone)]
struct Missing {
    announcers: Vec<PeerId>,
    due: f64,
}

/// One node's tree (see the module docs).
pub struct Tree {
    cfg: TreeConfig,
    rng: ChaCha8Rng,
    connected: BTreeSet<PeerId>,
    /// Neighbours: peer → eager.
    active: BTreeMap<PeerId, Link>,
    /// `Join` sent, since.
    asking: BTreeMap<PeerId, f64>,
    backoff: BoundedMap<PeerId, f64>,
    seen: BoundedMap<ContentHash, Seen>,
    cache: BoundedMap<ContentHash, Cached>,
    missing: BoundedMap<ContentHash, Missing>,
    queue: BTreeMap<PeerId, Vec<(ContentHash, u16)>>,
    flush_at: Option<f64>,
    /// View maintenance due (fewer neighbours than the target).
    maintain_at: Option<f64>,
    armed: Option<f64>,
    stats: TreeStats,
    out: Vec<TreeOut>,
}

impl Tree {
    pub fn new(cfg: TreeConfig, seed: u64) -> Tree {
        Tree {
            rng: ChaCha8Rng::seed_from_u64(seed),
            connected: BTreeSet::new(),
            active: BTreeMap::new(),
            asking: BTreeMap::new(),
            backoff: BoundedMap::new(cfg.max_connected),
            seen: BoundedMap::new(cfg.max_seen),
            cache: BoundedMap::new(cfg.max_cache),
            missing: BoundedMap::new(cfg.max_missing),
            queue: BTreeMap::new(),
            flush_at: None,
            maintain_at: None,
            armed: None,
            stats: TreeStats::default(),
            out: Vec::new(),
            cfg,
        }
    }

    pub fn set_config(&mut self, cfg: TreeConfig) {
        self.backoff.set_cap(cfg.max_connected);
        self.seen.set_cap(cfg.max_seen);
        self.cache.set_cap(cfg.max_cache);
        self.missing.set_cap(cfg.max_missing);
        self.cfg = cfg;
    }

    pub fn handle(&mut self, input: TreeIn, now: f64) -> Vec<TreeOut> {
        match input {
            TreeIn::Up(p) => self.on_up(p, now),
            TreeIn::Down(p) => self.on_down(p, now),
            TreeIn::Message { from, msg } => self.on_message(from, msg, now),
            TreeIn::Verdict { id, accept } => self.on_verdict(id, accept, now),
            TreeIn::Broadcast(r) => self.on_broadcast(r, now),
            TreeIn::Have(id) => self.on_have(id),
            TreeIn::Timer => self.on_timer(now),
        }
        std::mem::take(&mut self.out)
    }

    // ---- views -------------------------------------------------------------

    /// Neighbours and whether each is eager.
    pub fn active(&self) -> impl Iterator<Item = (&PeerId, bool)> {
        self.active.iter().map(|(p, l)| (p, l.eager))
    }

    pub fn stats(&self) -> &TreeStats {
        &self.stats
    }

    /// Sizes of every table and their bounds: (name, len, cap).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize, usize)> {
        let queued = self.queue.values().map(Vec::len).max().unwrap_or(0);
        vec![
            (
                "tree_connected",
                self.connected.len(),
                self.cfg.max_connected,
            ),
            ("tree_active", self.active.len(), self.cfg.active_max.max(1)),
            (
                "tree_asking",
                self.asking.len(),
                self.cfg.active_target.max(1),
            ),
            ("tree_backoff", self.backoff.len(), self.backoff.cap()),
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

    fn set_eager(&mut self, p: &PeerId, eager: bool) {
        if let Some(l) = self.active.get_mut(p) {
            l.eager = eager;
        }
    }

    fn maintain_soon(&mut self, now: f64) {
        if self.active.len() < self.cfg.active_target && self.maintain_at.is_none() {
            self.maintain_at = Some(now);
            self.arm(now);
        }
    }

    // ---- peers ---------------------------------------------------------------

    fn on_up(&mut self, p: PeerId, now: f64) {
        if self.connected.len() >= self.cfg.max_connected && !self.connected.contains(&p) {
            return;
        }
        self.connected.insert(p);
        self.maintain_soon(now);
    }

    fn on_down(&mut self, p: PeerId, now: f64) {
        self.connected.remove(&p);
        self.drop_neighbour(&p);
        self.asking.remove(&p);
        self.maintain_soon(now);
    }

    fn drop_neighbour(&mut self, p: &PeerId) {
        self.active.remove(p);
        self.queue.remove(p);
    }

    fn add_neighbour(&mut self, p: PeerId) {
        self.asking.remove(&p);
        self.active.entry(p).or_insert(Link {
            eager: true,
            inbound: true,
            score: 0,
        });
    }

    /// Ask connected peers to become neighbours while below the target.
    fn maintain(&mut self, now: f64) {
        let timeout = self.cfg.join_timeout_secs;
        self.asking.retain(|_, since| now - *since < timeout);
        self.backoff.retain(|_, until| *until > now);
        let want = self
            .cfg
            .active_target
            .saturating_sub(self.active.len() + self.asking.len());
        if want == 0 {
            return;
        }
        let urgent = self.active.is_empty();
        let cands = self
            .connected
            .iter()
            .filter(|p| {
                !self.active.contains_key(p)
                    && !self.asking.contains_key(p)
                    && !self.backoff.contains_key(p)
            })
            .copied()
            .choose_multiple(&mut self.rng, want);
        for p in cands {
            self.asking.insert(p, now);
            self.send(p, TreeMsg::Join { urgent });
        }
        if self.active.len() < self.cfg.active_target {
            // retry when joins time out or backoffs end
            self.maintain_at = Some(now + 1.0);
        }
    }

    fn on_join(&mut self, p: PeerId, urgent: bool) {
        if !self.connected.contains(&p) {
            return;
        }
        if self.active.contains_key(&p) {
            return self.send(p, TreeMsg::Accept);
        }
        if self.active.len() >= self.cfg.active_max {
            if !urgent {
                return self.send(p, TreeMsg::Refuse);
            }
            // the asker has no neighbour: make room (HyParView's priority join)
            let victim = self.active.keys().copied().choose(&mut self.rng);
            if let Some(v) = victim {
                self.drop_neighbour(&v);
                self.send(v, TreeMsg::Leave);
            }
        }
        self.add_neighbour(p);
        self.send(p, TreeMsg::Accept);
    }

    // ---- records ---------------------------------------------------------------

    fn on_message(&mut self, from: PeerId, msg: TreeMsg, now: f64) {
        if !self.connected.contains(&from) {
            return;
        }
        match msg {
            TreeMsg::Push { record, hops } => self.on_push(from, record, hops, now),
            TreeMsg::IHave(ids) => self.on_ihave(from, ids, now),
            TreeMsg::Graft(ids) => self.on_graft(from, ids),
            TreeMsg::Prune => self.set_eager(&from, false),
            TreeMsg::Join { urgent } => self.on_join(from, urgent),
            TreeMsg::Accept => {
                if !self.asking.contains_key(&from) && !self.active.contains_key(&from) {
                    // we gave up asking: tell it
                    return self.send(from, TreeMsg::Leave);
                }
                if self.active.len() >= self.cfg.active_max && !self.active.contains_key(&from) {
                    self.asking.remove(&from);
                    return self.send(from, TreeMsg::Leave);
                }
                self.add_neighbour(from);
            }
            TreeMsg::Refuse => {
                self.asking.remove(&from);
                self.backoff
                    .insert(from, now + self.cfg.refuse_backoff_secs);
                self.maintain_soon(now);
            }
            TreeMsg::Leave => {
                self.drop_neighbour(&from);
                self.maintain_soon(now);
            }
        }
    }

    fn on_push(&mut self, from: PeerId, record: SignedRecord, hops: u16, now: f64) {
        self.stats.pushes_received += 1;
        let id = record.content_hash();
        if self.seen.contains_key(&id) {
            self.stats.duplicates += 1;
            // A copy after one from outside the tree (an origin's flood
            // publish) says nothing about the tree.
            let tree_first = self
                .seen
                .get(&id)
                .and_then(|s| s.from)
                .is_some_and(|f| self.active.contains_key(&f));
            let inbound = self.active.values().filter(|l| l.inbound).count();
            let after = self.cfg.prune_after.max(1);
            let Some(l) = self.active.get_mut(&from) else {
                return;
            };
            if !l.inbound {
                // pruned already (the Prune was lost or crossed a Graft)
                self.stats.prunes_sent += 1;
                return self.send(from, TreeMsg::Prune);
            }
            if !tree_first || !shapes(&id, self.cfg.shape_one_in) {
                return;
            }
            // Prune is directional (stop pushing *to me*) and needs a run
            // of duplicates: one duplicate means the link was not on this
            // record's first path, not that no origin needs it — pruning on
            // every duplicate cuts the tree to the intersection of the
            // concurrent records' trees, a forest.
            l.score = (l.score - 1).max(-SCORE_CAP);
            if l.score <= -after && inbound > 1 {
                l.inbound = false;
                l.score = 0;
                self.stats.prunes_sent += 1;
                self.send(from, TreeMsg::Prune);
            }
            return;
        }
        self.seen.insert(
            id,
            Seen {
                hops,
                from: Some(from),
            },
        );
        self.missing.remove(&id);
        let shaping = shapes(&id, self.cfg.shape_one_in);
        if let Some(l) = self.active.get_mut(&from) {
            if shaping {
                l.score = (l.score + 1).min(SCORE_CAP);
            }
            l.inbound = true;
        }
        self.cache.insert(
            id,
            Cached {
                record: record.clone(),
                hops,
                at: now,
                ok: false,
            },
        );
        self.out.push(TreeOut::Deliver {
            from,
            id,
            record,
            hops,
        });
    }

    fn on_verdict(&mut self, id: ContentHash, accept: bool, now: f64) {
        if !accept {
            // a bad copy must not hide a good one
            self.seen.remove(&id);
            self.cache.remove(&id);
            return;
        }
        let Some(c) = self.cache.get_mut(&id) else {
            return;
        };
        if c.ok {
            return;
        }
        c.ok = true;
        let (record, hops) = (c.record.clone(), c.hops);
        let from = self.seen.get(&id).and_then(|s| s.from);
        self.forward(id, record, hops, from, now);
    }

    fn on_broadcast(&mut self, record: SignedRecord, now: f64) {
        let id = record.content_hash();
        if self.seen.get(&id).is_some_and(|s| s.from.is_none()) {
            return;
        }
        self.seen.insert(
            id,
            Seen {
                hops: 0,
                from: None,
            },
        );
        self.missing.remove(&id);
        self.cache.insert(
            id,
            Cached {
                record: record.clone(),
                hops: 0,
                at: now,
                ok: true,
            },
        );
        self.forward(id, record.clone(), 0, None, now);
        let extra = self
            .connected
            .iter()
            .filter(|p| !self.active.contains_key(p))
            .copied()
            .choose_multiple(&mut self.rng, self.cfg.publish_extra);
        for p in extra {
            let msg = TreeMsg::Push {
                record: record.clone(),
                hops: 1,
            };
            self.send(p, msg);
        }
    }

    /// In full to eager neighbours, as an id to lazy ones; never back to `from`.
    fn forward(
        &mut self,
        id: ContentHash,
        record: SignedRecord,
        hops: u16,
        from: Option<PeerId>,
        now: f64,
    ) {
        let next = hops.saturating_add(1);
        let peers: Vec<(PeerId, bool)> = self.active.iter().map(|(p, l)| (*p, l.eager)).collect();
        let mut queued = false;
        for (p, eager) in peers {
            if Some(p) == from {
                continue;
            }
            if eager {
                self.send(
                    p,
                    TreeMsg::Push {
                        record: record.clone(),
                        hops: next,
                    },
                );
            } else {
                let q = self.queue.entry(p).or_default();
                if q.len() < self.cfg.max_queued_ids {
                    q.push((id, hops));
                    queued = true;
                }
            }
        }
        if queued && self.flush_at.is_none() {
            let at = now + self.cfg.ihave_delay_secs;
            self.flush_at = Some(at);
            self.arm(at);
        }
    }

    fn on_have(&mut self, id: ContentHash) {
        self.missing.remove(&id);
        if !self.seen.contains_key(&id) {
            self.seen.insert(
                id,
                Seen {
                    hops: u16::MAX,
                    from: None,
                },
            );
        }
    }

    fn on_ihave(&mut self, from: PeerId, ids: Vec<(ContentHash, u16)>, now: f64) {
        let mut swapped = false;
        for (id, hops) in ids.into_iter().take(MAX_IDS_PER_MSG) {
            // it has it: no need to tell it
            if let Some(q) = self.queue.get_mut(&from) {
                q.retain(|(i, _)| *i != id);
            }
            if let Some(s) = self.seen.get(&id) {
                let (mine, parent) = (s.hops, s.from);
                let k = self.cfg.optimize_hops;
                let far = mine != u16::MAX && mine >= hops.saturating_add(1).saturating_add(k);
                if k > 0 && !swapped && far && self.active.contains_key(&from) {
                    if let Some(parent) = parent.filter(|p| *p != from) {
                        // the announcer is much closer to the origin: it pushes to us, the parent stops
                        swapped = true;
                        self.stats.optimisations += 1;
                        self.send(from, TreeMsg::Graft(vec![]));
                        if let Some(l) = self.active.get_mut(&from) {
                            l.inbound = true;
                            l.score = 0;
                        }
                        if let Some(l) = self.active.get_mut(&parent) {
                            l.inbound = false;
                            l.score = 0;
                            self.stats.prunes_sent += 1;
                            self.send(parent, TreeMsg::Prune);
                        }
                    }
                }
                continue;
            }
            let (max, due) = (self.cfg.max_announcers, now + self.cfg.graft_timeout_secs);
            let m = self.missing.entry_or_insert_with(
                id,
                || Missing {
                    announcers: Vec::new(),
                    due,
                },
                |_| 0,
            );
            if m.announcers.len() < max && !m.announcers.contains(&from) {
                m.announcers.push(from);
            }
            let due = m.due;
            self.arm(due);
        }
    }

    fn on_graft(&mut self, from: PeerId, ids: Vec<ContentHash>) {
        if self.active.contains_key(&from) {
            self.set_eager(&from, true);
        }
        for id in ids.into_iter().take(MAX_GRAFT_RECORDS) {
            if let Some(c) = self.cache.get(&id).filter(|c| c.ok) {
                let msg = TreeMsg::Push {
                    record: c.record.clone(),
                    hops: c.hops.saturating_add(1),
                };
                self.send(from, msg);
            }
        }
    }

    fn on_timer(&mut self, now: f64) {
        self.armed = None;
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_at = None;
            for (p, ids) in std::mem::take(&mut self.queue) {
                for chunk in ids.chunks(MAX_IDS_PER_MSG) {
                    self.stats.ihave_ids_sent += chunk.len() as u64;
                    self.send(p, TreeMsg::IHave(chunk.to_vec()));
                }
            }
        }
        // missing records: graft the next announcer
        let mut due: Vec<ContentHash> = self
            .missing
            .iter()
            .filter(|(_, m)| m.due <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        let mut grafts: BTreeMap<PeerId, Vec<ContentHash>> = BTreeMap::new();
        for id in due {
            let Some(m) = self.missing.get_mut(&id) else {
                continue;
            };
            let mut next = None;
            while !m.announcers.is_empty() {
                let p = m.announcers.remove(0);
                if self.connected.contains(&p) {
                    next = Some(p);
                    break;
                }
            }
            match next {
                Some(p) => {
                    m.due = now + self.cfg.graft_retry_secs;
                    grafts.entry(p).or_default().push(id);
                }
                None => {
                    // nobody left to ask: digest repair will find it
                    self.missing.remove(&id);
                }
            }
        }
        for (p, ids) in grafts {
            if let Some(l) = self.active.get_mut(&p) {
                l.inbound = true;
                l.score = 0;
            }
            self.stats.grafts_sent += 1;
            for chunk in ids.chunks(MAX_IDS_PER_MSG) {
                self.send(p, TreeMsg::Graft(chunk.to_vec()));
            }
        }
        if self.maintain_at.is_some_and(|t| t <= now) {
            self.maintain_at = None;
            self.maintain(now);
        }
        let ttl = self.cfg.cache_secs;
        self.cache.retain(|_, c| now - c.at <= ttl);
        // next wake-up
        let mut next = [self.flush_at, self.maintain_at]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        for (_, m) in self.missing.iter() {
            next = next.min(m.due);
        }
        if next.is_finite() {
            self.arm(next.max(now + 1e-3));
        }
    }
}
