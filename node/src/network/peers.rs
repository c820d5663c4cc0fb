//! The peer manager's decisions: how many connections a node keeps and
//! which ones (issue 8 part 5; the shape of lighthouse's peer manager).
//!
//! A node keeps between `target` and `max` connected peers. Below `target`
//! it dials peers it discovered (kad, identify) that are not cooling down;
//! above `max` it prunes down to `max`, never a peer connected for less than
//! `grace` (a newcomer that bootstrapped through us needs a moment to find
//! others) and never a protected one (the parent). Between the two it does
//! nothing: the dead band keeps a mesh built by discovery from churning
//! (pruning to exactly `target` would push the pruned peers below theirs,
//! and their dials would push others above). A peer we pruned is not let
//! back in while we hold `target` peers, and a peer that closed on us or
//! that we failed to reach is not re-dialled, for `cooldown`.
//!
//! Everything here is pure: [`PeerBook`] is plain state, every decision
//! takes `now` (unix seconds) and the facts the shell reads from the swarm
//! (mesh membership, scores), so the rule is tested without sockets.

use std::collections::{BTreeMap, HashMap};

use libp2p::PeerId;

/// Most peers the book remembers besides the connected ones (cooling down).
pub const MAX_REMEMBERED: usize = 4096;
/// A dial not answered within this many seconds no longer counts as pending.
pub const DIAL_TIMEOUT_SECS: f64 = 20.0;

/// How many peers to keep, and for how long decisions hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerLimits {
    /// Dial discovered peers while fewer are connected.
    pub target: usize,
    /// Prune (down to this) when more are connected; at least `target`.
    pub max: usize,
    /// Seconds a new connection is safe from pruning.
    pub grace_secs: f64,
    /// Seconds a pruned peer is refused (while we hold `target`) and a peer
    /// that closed on us is not re-dialled.
    pub cooldown_secs: f64,
}

impl PeerLimits {
    /// `max` raised to `target` if configured below it.
    pub fn new(target: usize, max: usize, grace_secs: f64, cooldown_secs: f64) -> PeerLimits {
        PeerLimits {
            target,
            max: max.max(target),
            grace_secs,
            cooldown_secs,
        }
    }
}

/// What the shell knows about one connected peer when it decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Connected {
    pub peer: PeerId,
    /// When its first connection was established (unix seconds).
    pub since: f64,
    /// We dialled it (outbound peers are kept before inbound ones).
    pub outbound: bool,
    /// It is in one of our gossipsub meshes.
    pub in_mesh: bool,
    /// Never pruned (the parent).
    pub protected: bool,
    /// Its standing: gossipsub score including our reputation of it.
    pub score: f64,
}

/// Which peers to disconnect so that at most `max` stay: nothing while
/// `max` or fewer are connected. Peers in grace and protected peers are
/// never chosen (so the result may leave more than `max`). The rest are
/// ranked, first to go first: not in a mesh before in a mesh, inbound
/// before outbound, lower score, newer, then by id (deterministic).
pub fn to_prune(peers: &[Connected], limits: &PeerLimits, now: f64) -> Vec<PeerId> {
    if peers.len() <= limits.max {
        return Vec::new();
    }
    let excess = peers.len() - limits.max;
    let mut candidates: Vec<&Connected> = peers
        .iter()
        .filter(|p| !p.protected && now - p.since >= limits.grace_secs)
        .collect();
    candidates.sort_by(|a, b| {
        a.in_mesh
            .cmp(&b.in_mesh)
            .then(a.outbound.cmp(&b.outbound))
            .then(a.score.total_cmp(&b.score))
            .then(b.since.total_cmp(&a.since))
            .then(a.peer.cmp(&b.peer))
    });
    candidates
        .into_iter()
        .take(excess)
        .map(|p| p.peer)
        .collect()
}

/// Why a peer is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cooling {
    /// We pruned it.
    Pruned,
    /// It closed on us (it may have pruned us).
    ClosedOnUs,
    /// Our dial to it failed.
    Unreachable,
}

/// The peer manager's state: connected peers and when they came, dials in
/// flight, peers cooling down. Bounded: at most [`MAX_REMEMBERED`]
/// cooling peers besides the connected ones.
#[derive(Debug, Default)]
pub struct PeerBook {
    /// Connected peer → (since, outbound).
    connected: HashMap<PeerId, (f64, bool)>,
    /// Dials in flight → when sent.
    dialling: HashMap<PeerId, f64>,
    /// Peer → (until, why).
    cooling: BTreeMap<PeerId, (f64, Cooling)>,
    /// Peers we are disconnecting (their close is ours, not theirs).
    closing: BTreeMap<PeerId, f64>,
}

impl PeerBook {
    pub fn connected_len(&self) -> usize {
        self.connected.len()
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer)
    }

    /// Connected peers with when they came and whether we dialled them.
    pub fn connected(&self) -> impl Iterator<Item = (&PeerId, f64, bool)> {
        self.connected.iter().map(|(p, (s, o))| (p, *s, *o))
    }

    /// A first connection to `peer` was established.
    pub fn on_connected(&mut self, peer: PeerId, outbound: bool, now: f64) {
        self.dialling.remove(&peer);
        self.connected.insert(peer, (now, outbound));
    }

    /// Whether to let an inbound connection from `peer` in: not when we
    /// pruned it within the cooldown and already hold `target` peers.
    pub fn allows_inbound(&self, peer: &PeerId, limits: &PeerLimits, now: f64) -> bool {
        let pruned =
            matches!(self.cooling.get(peer), Some((until, Cooling::Pruned)) if *until > now);
        !(pruned && self.connected.len() >= limits.target)
    }

    /// Whether to let an outbound connection attempt to `peer` go: ours
    /// (recorded by [`PeerBook::want_dial`] or [`PeerBook::note_dial`]) and
    /// further connections to a connected peer always; anyone else's (a kad
    /// walk's) only while we hold fewer than `target` peers counting dials
    /// in flight, and never to a peer cooling down. A `true` for a new peer
    /// records the dial.
    pub fn allows_outbound(&mut self, peer: PeerId, limits: &PeerLimits, now: f64) -> bool {
        if self.dialling.contains_key(&peer) || self.connected.contains_key(&peer) {
            return true;
        }
        self.want_dial(peer, limits, now)
    }

    /// A dial the node asked for by address (bootstrap, the parent): let
    /// it through whatever the count.
    pub fn note_dial(&mut self, peer: PeerId, now: f64) {
        if !self.connected.contains_key(&peer) {
            self.dialling.insert(peer, now);
        }
    }

    /// The last connection to `peer` closed. A close we did not ask for
    /// puts the peer in cooldown (it may have pruned us).
    pub fn on_disconnected(&mut self, peer: PeerId, limits: &PeerLimits, now: f64) {
        self.connected.remove(&peer);
        self.dialling.remove(&peer);
        if self.closing.remove(&peer).is_none() {
            self.cool(peer, Cooling::ClosedOnUs, limits, now);
        }
    }

    /// A dial to `peer` failed. One we made or admitted puts the peer in
    /// cooldown (an unreachable peer is not re-dialled every beat); a dial
    /// the gate refused was never recorded and changes nothing.
    pub fn on_dial_failed(&mut self, peer: &PeerId, limits: &PeerLimits, now: f64) {
        if self.dialling.remove(peer).is_some() && !self.connected.contains_key(peer) {
            self.cool(*peer, Cooling::Unreachable, limits, now);
        }
    }

    /// We are pruning `peer` (the shell closes its connections).
    pub fn on_pruned(&mut self, peer: PeerId, limits: &PeerLimits, now: f64) {
        self.closing.insert(peer, now);
        self.cool(peer, Cooling::Pruned, limits, now);
    }

    /// We are closing `peer` for a reason of our own (a ban, a refusal):
    /// its close does not put it in cooldown.
    pub fn on_closing(&mut self, peer: PeerId, now: f64) {
        self.closing.insert(peer, now);
    }

    fn cool(&mut self, peer: PeerId, why: Cooling, limits: &PeerLimits, now: f64) {
        if limits.cooldown_secs <= 0.0 {
            return;
        }
        if !self.cooling.contains_key(&peer) && self.cooling.len() >= MAX_REMEMBERED {
            self.expire(now);
            if self.cooling.len() >= MAX_REMEMBERED {
                return;
            }
        }
        self.cooling.insert(peer, (now + limits.cooldown_secs, why));
    }

    /// Forget ended cooldowns, stale dials and closes.
    pub fn expire(&mut self, now: f64) {
        self.cooling.retain(|_, (until, _)| *until > now);
        self.dialling
            .retain(|_, sent| now - *sent < DIAL_TIMEOUT_SECS);
        self.closing.retain(|_, at| now - *at < DIAL_TIMEOUT_SECS);
    }

    /// Whether to dial `peer`, just discovered, now: we hold fewer than
    /// `target` peers counting dials in flight, and it is neither connected,
    /// being dialled nor cooling down. A `true` records the dial.
    pub fn want_dial(&mut self, peer: PeerId, limits: &PeerLimits, now: f64) -> bool {
        if self.connected.len() + self.dialling.len() >= limits.target
            || self.connected.contains_key(&peer)
            || self.dialling.contains_key(&peer)
            || self.is_cooling(&peer, now)
        {
            return false;
        }
        self.dialling.insert(peer, now);
        true
    }

    /// Below target: which of `known` (discovered peers, in the shell's
    /// order of preference) to dial now. Records the dials.
    pub fn dials(&mut self, known: &[PeerId], limits: &PeerLimits, now: f64) -> Vec<PeerId> {
        let mut out = Vec::new();
        for p in known {
            if self.want_dial(*p, limits, now) {
                out.push(*p);
            }
        }
        out
    }

    pub fn is_cooling(&self, peer: &PeerId, now: f64) -> bool {
        self.cooling
            .get(peer)
            .is_some_and(|(until, _)| *until > now)
    }

    /// Below target (counting dials in flight): discovery should look for more.
    pub fn below_target(&self, limits: &PeerLimits) -> bool {
        self.connected.len() + self.dialling.len() < limits.target
    }
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
