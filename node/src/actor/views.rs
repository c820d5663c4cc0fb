//! The collective view: origin weights snapshotted from the actor's
//! reputation book, the aggregation computed on the pool from the store.

use std::collections::HashMap;

use libp2p::PeerId;
use metamesh_protocol::aggregate::{robust_aggregate, RobustAggregate, RobustConfig};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::reputation::Trust;
use metamesh_protocol::{Depth, DepthTable};

use super::run::Actor;
use super::{now_secs, Shared};
use crate::learning::{self, OriginWeight};

/// How much say each origin has, as the actor's reputation book says now:
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
            return OriginWeight {
                weight: 1.0,
                anchor: true,
                newcomer: false,
            };
        }
        self.known.get(origin).copied().unwrap_or(self.unknown)
    }

    /// Blocking: every stored origin's evidence, aggregated robustly.
    pub fn collective(&self, store: &metamesh_storage::Store) -> RobustAggregate<PeerId> {
        let ev = learning::origin_evidence(store, &self.me, &|p| self.get(p));
        robust_aggregate(&ev, &RobustConfig::default())
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

impl Actor {
    fn weight_of(&self, origin: &PeerId, now: f64) -> OriginWeight {
        let is_parent = self.sh.parent.as_ref().is_some_and(|(p, _)| p == origin);
        let s = self.x.rep.standing(origin, now);
        OriginWeight {
            weight: s.weight,
            anchor: is_parent || self.x.rep.trust(origin) == Trust::Trusted,
            newcomer: s.newcomer && !is_parent,
        }
    }

    /// Snapshot the weights of every origin we hold or know.
    pub(crate) fn weights(&self) -> Weights {
        let now = now_secs();
        let mut known = HashMap::new();
        let origins = self
            .summary
            .frontier
            .keys()
            .copied()
            .chain(self.x.rep.peers())
            .chain(self.sh.parent.iter().map(|(p, _)| *p));
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

    /// Recompute the collective belief when the store changed (at most one
    /// computation at a time, on the pool) and report a change.
    pub(super) fn check_collective(&mut self, penalise_inconsistent: bool) {
        if self.x.collective_running || (!self.x.collective_stale && !penalise_inconsistent) {
            return;
        }
        self.x.collective_running = true;
        self.x.collective_stale = false;
        let w = self.weights();
        self.job(
            move |sh: &Shared| {
                let agg = w.collective(&sh.store);
                let bad: Vec<PeerId> = agg.inconsistent.iter().map(|i| i.key).collect();
                (belief(&agg), bad)
            },
            move |actor, r| {
                actor.x.collective_running = false;
                let Ok(((depth, conf), bad)) = r else { return };
                if penalise_inconsistent {
                    // Origins whose reports stay inconsistent with the robust
                    // consensus lose reputation (at most once a minute).
                    let now = now_secs();
                    let me = actor.sh.peer_id;
                    let mut bad = bad;
                    bad.sort();
                    bad.dedup();
                    for p in bad.into_iter().filter(|p| *p != me) {
                        actor.x.rep.apply(
                            p,
                            metamesh_protocol::reputation::ReputationEvent::InconsistentWithConsensus,
                            1,
                            now,
                        );
                    }
                }
                let changed = actor
                    .x
                    .last_collective
                    .is_none_or(|(d, c)| d != depth || (c - conf).abs() >= 0.01);
                if changed {
                    actor.x.last_collective = Some((depth, conf));
                    actor.sh.emit(crate::events::NodeEvent::InsightChanged {
                        scope: "collective".into(),
                        optimal_quality_depth: Some(depth),
                        confidence: conf,
                    });
                }
            },
        );
    }
}
