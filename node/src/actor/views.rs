//! Views the actor computes on the pool: the collective view (origin
//! weights snapshotted from the core's reputation book, the aggregation
//! from the store) and our own insights (handed to the core to sign and
//! broadcast).

use std::collections::HashMap;

use libp2p::PeerId;
use metamesh_exchange::io::Input;
use metamesh_protocol::aggregate::RobustAggregate;
use metamesh_protocol::policy::{self, Role};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::reputation::{ReputationEvent, Trust};
use metamesh_protocol::{insights, Depth, DepthTable};

use super::run::Actor;
use super::{now_secs, Shared};
use crate::learning::{self, OriginWeight};

/// How much say each origin has, as the core's reputation book says now:
/// this node and the parent are anchors (the parent is never a newcomer),
/// operator-trusted peers are anchors, everyone's weight comes from
/// reputation. Origins not listed get `unknown` (a neutral newcomer).
#[derive(Debug, Clone)]
pub struct Weights {
    pub me: PeerId,
    known: HashMap<PeerId, OriginWeight>,
    unknown: OriginWeight,
}

impl Weights {
    pub fn get(&self, origin: &PeerId) -> OriginWeight {
        if *origin == self.me {
            return policy::self_say(1.0);
        }
        self.known.get(origin).copied().unwrap_or(self.unknown)
    }

    /// Blocking: every stored origin's evidence, aggregated robustly.
    pub fn collective(&self, store: &metamesh_storage::Store) -> RobustAggregate<PeerId> {
        let ev = learning::origin_evidence(store, &self.me, &|p| self.get(p));
        learning::aggregate(&ev)
    }

    /// Blocking: the aggregation with what the API reports about it.
    pub fn collective_report(&self, store: &metamesh_storage::Store) -> learning::Collective {
        learning::collective(store, &self.me, &|p| self.get(p))
    }
}

/// The collective view's best depth and its confidence (P(best)).
pub fn belief(agg: &RobustAggregate<PeerId>) -> (Depth, f64) {
    if agg.pattern_count == 0 {
        return metamesh_protocol::posterior::best_depth(&DepthTable::default(), &Prior::default());
    }
    agg.best(&Prior::default())
}

/// Shell ticks between charges of origins the collective view excluded as
/// inconsistent (at most one charge per origin per period).
const CONSISTENCY_TICKS: u64 = 120;

impl Actor {
    fn weight_of(&self, origin: &PeerId, now: f64) -> OriginWeight {
        let is_parent = self.sh.parent.as_ref().is_some_and(|(p, _)| p == origin);
        let s = self.core.standing(origin, now);
        let role = if is_parent || self.core.config().trust(origin) == Trust::Trusted {
            Role::Anchor
        } else {
            Role::Peer
        };
        policy::say(role, &s)
    }

    /// Snapshot the weights of every origin we hold or know.
    pub(crate) fn weights(&self) -> Weights {
        let now = now_secs();
        let mut known = HashMap::new();
        let origins: Vec<PeerId> = self
            .core
            .frontier()
            .keys()
            .copied()
            .chain(self.core.reputation().map(|(p, _)| *p))
            .chain(self.sh.parent.iter().map(|(p, _)| *p))
            .collect();
        for o in origins {
            known.entry(o).or_insert_with(|| self.weight_of(&o, now));
        }
        // A fresh identity stands for every origin the book has never seen.
        let stranger = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        Weights {
            me: self.sh.peer_id,
            known,
            unknown: self.weight_of(&stranger, now),
        }
    }

    /// Recompute the collective belief when the store changed (one
    /// computation at a time, on the pool) and report a change; every
    /// [`CONSISTENCY_TICKS`], charge the origins our own evidence contradicts.
    pub(super) fn check_collective(&mut self, tick: u64) {
        let penalise = tick.is_multiple_of(CONSISTENCY_TICKS);
        if self.collective.running || (!self.collective.stale && !penalise) {
            return;
        }
        self.collective.running = true;
        self.collective.stale = false;
        let w = self.weights();
        self.job(
            move |sh: &Shared| {
                let agg = w.collective(&sh.store);
                // Only origins the node's own evidence contradicts are charged.
                let bad = learning::charged(&agg);
                let p = agg.prob_best(&Prior::default());
                sh.metrics
                    .set_prob_best(&Depth::ALL.iter().copied().zip(p).collect::<Vec<_>>());
                sh.metrics.set_patterns_stored(sh.store.pattern_count());
                (belief(&agg), bad)
            },
            move |a, r| {
                a.collective.running = false;
                let Ok(((depth, conf), mut bad)) = r else {
                    return;
                };
                if penalise {
                    bad.sort();
                    bad.dedup();
                    let me = a.sh.peer_id;
                    for peer in bad.into_iter().filter(|p| *p != me) {
                        a.input(Input::Charge {
                            peer,
                            event: ReputationEvent::InconsistentWithConsensus,
                        });
                    }
                }
                let changed = a
                    .collective
                    .last
                    .is_none_or(|(d, c)| d != depth || (c - conf).abs() >= 0.01);
                if changed {
                    a.collective.last = Some((depth, conf));
                    a.sh.emit(crate::events::NodeEvent::InsightChanged {
                        scope: "collective".into(),
                        optimal_quality_depth: Some(depth),
                        confidence: conf,
                    });
                }
            },
        );
    }

    /// When our own statistics changed: compute our insights on the pool
    /// and hand them to the core (which signs and broadcasts, rate-limited).
    pub(super) fn refresh_own_insights(&mut self) {
        if !self.own_dirty || self.own_running {
            return;
        }
        self.own_dirty = false;
        self.own_running = true;
        self.job(
            |sh: &Shared| {
                let stats = sh.store.stats_of(&sh.peer_id);
                if stats.total() == 0 {
                    return None;
                }
                let modes = sh.store.origin_mode_stats(&sh.peer_id);
                let set = insights::compute(&stats, Some(&modes), &Prior::default(), now_secs());
                Some((stats, set))
            },
            |a, r| {
                a.own_running = false;
                if let Ok(Some((stats, insights))) = r {
                    a.input(Input::OwnInsights { stats, insights });
                }
            },
        );
    }
}
