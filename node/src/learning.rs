//! Learning from a store: local and collective insights, and depth
//! recommendations. Shared by the client CLI (which opens the store directly
//! when no node runs) and by the running node.
//!
//! **For the node (NET):** call
//! - [`local_insights`]`(store, self_id, now)` for `GET /v1/insights?scope=local`;
//! - [`collective_insights`]`(store, self_id, &weigh, now)` for `scope=collective`,
//!   where `weigh(peer) -> OriginWeight` gives each origin's reputation
//!   learning weight, whether it is an anchor (this node, operator-trusted
//!   peers) and whether it is a newcomer (from `reputation::standing`);
//! - [`collective_view`] + [`recommend`] for `GET /v1/recommendation`;
//! - [`record_adoption`]`(&view_before, &pattern, &metrics)` when a local
//!   pattern is recorded (adoption rate and effectiveness metrics).
//!
//! This module is a thin adapter: it reads the store and calls the protocol's
//! learning policy (`metamesh_protocol::policy`: reputation-weighted,
//! volume-capped per-origin statistics, strangers discounted until the node's
//! own outcomes confirm them and excluded when they contradict them, screened
//! per depth, pooled robustly), the same functions the simulator runs. The insights
//! document is computed from the merged statistics of the origins the robust
//! aggregation *kept*; the headline claim (`optimal_quality_depth` /
//! `optimal_depth`) and its confidence are the robust aggregate's own P(best).

use std::collections::BTreeMap;

use libp2p::PeerId;
use metamesh_protocol::aggregate::{OriginEvidence, RobustAggregate, RobustConfig};
use metamesh_protocol::insights::{self, types, InsightsDocument};
use metamesh_protocol::policy;
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::reputation::{self, ReputationPolicy, ReputationState, Trust};
use metamesh_protocol::strategy::{self, LearningView};
use metamesh_protocol::{Depth, DepthStats, DepthTable, Pattern};
use metamesh_storage::Store;
use rand::RngCore;

use crate::api::{ApiError, Recommendation};
pub use crate::api::{Contributor, ExcludedOrigin, HeldInsight, KnowledgeTransfer};

/// `platform` of the insights documents this node writes.
pub const PLATFORM: &str = "metamesh";

/// How much say an origin gets in collective learning (the protocol's
/// [`policy::Say`]: weight, anchor, newcomer, bonus). Build it with
/// [`policy::say`] from a role and a reputation standing.
pub use metamesh_protocol::policy::{Role, Say as OriginWeight};

/// The node's own patterns only.
pub fn local_insights(store: &Store, self_id: &PeerId, now: f64) -> InsightsDocument {
    let table = store.stats_of(self_id);
    let modes = store.origin_mode_stats(self_id);
    let set = insights::compute(&table, Some(&modes), &Prior::default(), now);
    InsightsDocument::new(&self_id.to_string(), PLATFORM, table.total(), set, now)
}

/// Robust collective aggregation over every stored origin.
pub struct Collective {
    pub aggregate: RobustAggregate<PeerId>,
    /// Merged statistics of the origins the aggregation kept.
    pub kept_table: DepthTable,
    /// Merged per-mode statistics of the kept origins.
    pub kept_modes: BTreeMap<String, DepthStats>,
    /// Per kept origin: weight and pattern count (the knowledge-transfer report).
    pub contributors: Vec<Contributor>,
}

/// Every stored origin's statistics with the say `weigh` gives it: the
/// input of robust aggregation. The node itself is always included — even
/// before it has patterns of its own (it is the reference strangers are
/// judged by) — as an anchor with weight ≥ 1, whatever
/// `weigh` says. Other origins without patterns are left out. The running
/// node and the offline CLI both build their collective view with this.
pub fn origin_evidence(
    store: &Store,
    self_id: &PeerId,
    weigh: &dyn Fn(&PeerId) -> OriginWeight,
) -> Vec<OriginEvidence<PeerId>> {
    let mut per_origin = store.origin_stats();
    per_origin.entry(*self_id).or_default();
    per_origin
        .into_iter()
        .filter(|(peer, t)| t.total() > 0 || peer == self_id)
        .map(|(peer, table)| {
            let say = if peer == *self_id {
                policy::self_say(weigh(&peer).weight)
            } else {
                weigh(&peer)
            };
            policy::origin_evidence(peer, table, say)
        })
        .collect()
}

/// The collective aggregate of the origins: the protocol's learning policy
/// ([`policy::robust_aggregate`]) with its default parameters.
pub fn aggregate(origins: &[OriginEvidence<PeerId>]) -> RobustAggregate<PeerId> {
    policy::robust_aggregate(origins, &RobustConfig::default())
}

/// The origins to charge `InconsistentWithConsensus` after an aggregation
/// (those the node's own evidence contradicts; [`policy::charged`]).
pub fn charged(agg: &RobustAggregate<PeerId>) -> Vec<PeerId> {
    policy::charged(agg).into_iter().map(|(p, _)| p).collect()
}

/// Aggregate all stored origins ([`origin_evidence`]).
pub fn collective(
    store: &Store,
    self_id: &PeerId,
    weigh: &dyn Fn(&PeerId) -> OriginWeight,
) -> Collective {
    let origins = origin_evidence(store, self_id, weigh);
    let aggregate = aggregate(&origins);
    let mut kept_table = DepthTable::default();
    let mut kept_modes: BTreeMap<String, DepthStats> = BTreeMap::new();
    let mut contributors = Vec::new();
    for o in &origins {
        if !aggregate.used.contains(&o.key) {
            continue;
        }
        kept_table.merge(&o.table);
        for (mode, s) in store.origin_mode_stats(&o.key) {
            kept_modes.entry(mode).or_default().merge(&s);
        }
        contributors.push(Contributor {
            peer_id: o.key.to_string(),
            weight: o.weight,
            patterns: o.table.total(),
            anchor: o.anchor,
            share: 0.0,
        });
    }
    // Share of the pooled say: weight × patterns, normalised.
    let total: f64 = contributors
        .iter()
        .map(|c| c.weight * c.patterns as f64)
        .sum();
    if total > 0.0 {
        for c in contributors.iter_mut() {
            c.share = c.weight * c.patterns as f64 / total;
        }
    }
    Collective {
        aggregate,
        kept_table,
        kept_modes,
        contributors,
    }
}

/// Which origins' evidence shapes the collective answer, and which were
/// excluded as inconsistent with the consensus (DESIGN §7).
pub fn knowledge_transfer(c: &Collective) -> KnowledgeTransfer {
    KnowledgeTransfer {
        pattern_count: c.kept_table.total(),
        contributors: c.contributors.clone(),
        excluded: c
            .aggregate
            .inconsistent
            .iter()
            .map(|i| ExcludedOrigin {
                peer_id: i.key.to_string(),
                depth: i.depth,
                z: i.z,
                // anchor, majority or volume (serde's name, robust to new kinds)
                reason: serde_json::to_value(i.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            })
            .collect(),
        parent: None,
        promoted_children: Vec::new(),
    }
}

/// Insights from every stored origin, weighted and combined robustly.
pub fn collective_insights(
    store: &Store,
    self_id: &PeerId,
    weigh: &dyn Fn(&PeerId) -> OriginWeight,
    now: f64,
) -> InsightsDocument {
    collective_document(&collective(store, self_id, weigh), self_id, now)
}

/// The insights document of a [`Collective`].
pub fn collective_document(c: &Collective, self_id: &PeerId, now: f64) -> InsightsDocument {
    let prior = Prior::default();
    let mut set = insights::compute(&c.kept_table, Some(&c.kept_modes), &prior, now);
    // The headline claim comes from the robust aggregate's evidence, and
    // only a depth with evidence may be named (the minimum-evidence rule,
    // `RobustAggregate::best_named`); otherwise the merged statistics'
    // claim (which also names only depths with data) stands.
    if let Some((best, p)) = c.aggregate.best_named(&prior) {
        set.learned_preferences.optimal_quality_depth = Some(best);
        for i in set.insights.iter_mut() {
            if i.insight_type == types::OPTIMAL_QUALITY_DEPTH
                || i.insight_type == types::OPTIMAL_DEPTH
            {
                let e = c.aggregate.evidence[best.index()];
                i.description = format!(
                    "{best} depth best for quality (robust collective mean {:.3}, effective {:.0} samples from {} origins)",
                    e.mean,
                    e.n,
                    c.contributors.len()
                );
                i.recommendation = format!("use {best} depth");
                i.confidence = if p.is_finite() {
                    p.clamp(0.0, 1.0)
                } else {
                    0.0
                };
            }
        }
    }
    InsightsDocument::new(
        &self_id.to_string(),
        PLATFORM,
        c.kept_table.total(),
        set,
        now,
    )
}

/// The evidence a strategy decides from: the node's own statistics.
pub fn local_view(store: &Store, self_id: &PeerId) -> LearningView {
    LearningView::from_table(&store.stats_of(self_id), Prior::default())
}

/// The evidence a strategy decides from: the robust collective aggregate.
pub fn collective_view(c: &Collective) -> LearningView {
    c.aggregate.view(Prior::default())
}

/// Ask the named strategy (`legion`, `thor`, `posterior`) for a depth.
pub fn recommend(
    view: &LearningView,
    atp: f64,
    strategy_name: &str,
    rng: &mut dyn RngCore,
) -> Result<Recommendation, ApiError> {
    if !atp.is_finite() || atp < 0.0 {
        return Err(ApiError::bad_request(
            "atp must be a finite number ≥ 0",
            "atp",
        ));
    }
    let s = strategy::strategy_by_name(strategy_name).ok_or_else(|| {
        ApiError::bad_request(
            format!(
                "unknown strategy {:?}; use one of {}",
                strategy_name.chars().take(32).collect::<String>(),
                strategy::STRATEGY_NAMES.join(", ")
            ),
            "strategy",
        )
    })?;
    let choice = s.choose(view, atp, rng);
    let reason = if view.pattern_count == 0 {
        "no evidence yet: chosen by ATP budget".to_string()
    } else if choice.followed_learning {
        format!(
            "evidence from {} patterns favours this depth",
            view.pattern_count
        )
    } else {
        "exploring, or limited by the ATP budget".to_string()
    };
    Ok(Recommendation {
        depth: choice.depth,
        strategy: s.name().to_string(),
        confidence: if choice.confidence.is_finite() {
            choice.confidence.clamp(0.0, 1.0)
        } else {
            0.0
        },
        atp,
        reason,
    })
}

/// The depth the evidence says is best among those affordable with `atp`
/// (highest posterior P(best); ties to the cheaper depth). `None` without
/// any evidence.
pub fn believed_best(view: &LearningView, atp: f64) -> Option<Depth> {
    if view.pattern_count == 0 {
        return None;
    }
    let p = metamesh_protocol::posterior::prob_best(&view.beliefs());
    let mut best: Option<(Depth, f64)> = None;
    for d in Depth::ALL {
        if !strategy::affordable(d, atp) {
            continue;
        }
        let pd = p.get(d.index()).copied().unwrap_or(0.0);
        if best.is_none_or(|(_, b)| pd > b) {
            best = Some((d, pd));
        }
    }
    best.map(|(d, _)| d)
}

/// Adoption and effectiveness bookkeeping for one recorded outcome: did the
/// pattern use the depth the node's evidence (`view`, taken *before* the
/// pattern is stored) recommended for its ATP budget? Counts
/// `recommendation_followed` and `outcome_quality` in `metrics` and returns
/// the verdict; a pattern recorded before any evidence counts as exploring.
pub fn record_adoption(
    view: &LearningView,
    pattern: &Pattern,
    metrics: &crate::metrics::Metrics,
) -> bool {
    let followed = believed_best(view, pattern.atp_before) == Some(pattern.depth_used);
    metrics.recommendation_followed(followed);
    metrics.outcome_quality(followed, pattern.quality_achieved);
    followed
}

/// Origin weights from the reputation states a node persisted in the store
/// (for offline use; a running node has them in memory). Peers without a
/// stored state are newcomers of neutral weight.
pub fn stored_weights(store: &Store, now: f64) -> impl Fn(&PeerId) -> OriginWeight {
    let rep_policy = ReputationPolicy::default();
    let states: BTreeMap<PeerId, ReputationState> = store
        .reputation_entries()
        .into_iter()
        .filter_map(|(p, bytes)| Some((p, ReputationState::from_bytes(&bytes).ok()?)))
        .collect();
    move |peer: &PeerId| {
        let fresh;
        let state = match states.get(peer) {
            Some(s) => s,
            None => {
                fresh = ReputationState::new(now);
                &fresh
            }
        };
        policy::say(
            Role::Peer,
            &reputation::standing(state, Trust::Default, now, &rep_policy),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use metamesh_protocol::SignedRecord;
    use rand::SeedableRng;

    fn pattern(node: &PeerId, i: u64, depth: Depth, q: f64) -> Pattern {
        Pattern::from_json_value(
            serde_json::json!({
                "pattern_id": format!("p{i}"),
                "node_id": node.to_string(),
                "timestamp": 1.7e9 + i as f64,
                "depth_used": depth.as_str(),
                "quality_achieved": q,
                "success": q > 0.5,
                "atp_before": 100.0,
                "atp_after": 80.0,
            }),
            None,
        )
        .unwrap()
    }

    fn insert_from(store: &Store, key: &Keypair, n: u64, depth: Depth, q: f64, seq0: u64) {
        let origin = key.public().to_peer_id();
        for i in 0..n {
            let rec =
                SignedRecord::sign_pattern(pattern(&origin, seq0 + i, depth, q), seq0 + i, key);
            let body = rec.open_pattern(1.8e9).unwrap();
            store.insert(&rec, &body).unwrap();
        }
    }

    #[test]
    fn the_node_is_an_anchor_even_without_patterns_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let peer = Keypair::generate_ed25519();
        insert_from(&store, &peer, 5, Depth::Deep, 0.8, 1);
        let weigh = |_: &PeerId| OriginWeight {
            weight: 0.5,
            anchor: false,
            newcomer: true,
            bonus: -0.2,
        };
        let ev = origin_evidence(&store, &me, &weigh);
        let mine = ev.iter().find(|o| o.key == me).unwrap();
        assert!(mine.anchor && !mine.newcomer);
        assert_eq!(mine.weight, 1.0);
        assert_eq!(mine.table.total(), 0);
        let theirs = ev.iter().find(|o| o.key != me).unwrap();
        assert_eq!(theirs.table.total(), 5);
        assert!(theirs.newcomer && !theirs.anchor);
        // With self present, a lone newcomer's say is capped by the budget
        // measured against the node itself (as in the running node).
        let c = collective(&store, &me, &weigh);
        assert_eq!(c.aggregate.pattern_count, aggregate(&ev).pattern_count);
    }

    #[test]
    fn local_and_collective_insights() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let me = Keypair::generate_ed25519();
        let me_id = me.public().to_peer_id();
        for i in 0..20 {
            let d = if i % 2 == 0 {
                Depth::Standard
            } else {
                Depth::Light
            };
            let q = if d == Depth::Standard { 0.9 } else { 0.5 };
            store.append_local(&me, pattern(&me_id, i, d, q)).unwrap();
        }
        // Honest peer agrees; a liar claims light is perfect.
        let honest = Keypair::generate_ed25519();
        insert_from(&store, &honest, 30, Depth::Standard, 0.88, 1);
        let liar = Keypair::generate_ed25519();
        insert_from(&store, &liar, 40, Depth::Light, 1.0, 1);

        let local = local_insights(&store, &me_id, 1.8e9);
        assert_eq!(local.pattern_count, 20);
        assert_eq!(
            local.learned_preferences.optimal_quality_depth,
            Some(Depth::Standard)
        );

        let neutral = |_: &PeerId| OriginWeight {
            weight: 1.0,
            anchor: false,
            newcomer: false,
            bonus: 0.0,
        };
        let c = collective(&store, &me_id, &neutral);
        let doc = collective_document(&c, &me_id, 1.8e9);
        assert_eq!(
            doc.learned_preferences.optimal_quality_depth,
            Some(Depth::Standard)
        );
        let liar_id = liar.public().to_peer_id().to_string();
        assert!(
            c.contributors.iter().all(|x| x.peer_id != liar_id),
            "liar screened out"
        );
        assert!(c
            .contributors
            .iter()
            .any(|x| x.peer_id == me_id.to_string() && x.anchor));
        assert_eq!(doc.pattern_count, 50);
        let q = doc
            .insights
            .iter()
            .find(|i| i.insight_type == types::OPTIMAL_QUALITY_DEPTH)
            .unwrap();
        // The headline confidence is the robust aggregate's P(best) (untried
        // depths keep the prior, so it is well below 1 here).
        let (best, p) = c.aggregate.best(&Prior::default());
        assert_eq!(best, Depth::Standard);
        assert_eq!(q.confidence, p);
        assert!(q.confidence > 1.0 / Depth::COUNT as f64 && q.confidence <= 1.0);

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let r = recommend(&collective_view(&c), 200.0, "thor", &mut rng).unwrap();
        assert_eq!(r.depth, Depth::Standard);
        assert_eq!(r.strategy, "thor");
        let e = recommend(&collective_view(&c), 200.0, "nope", &mut rng).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("strategy"));
        let e = recommend(&local_view(&store, &me_id), f64::NAN, "thor", &mut rng).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("atp"));

        // Adoption: the local evidence favours standard for a 200-ATP budget.
        let metrics = crate::metrics::Metrics::new();
        let view = local_view(&store, &me_id);
        assert_eq!(believed_best(&view, 200.0), Some(Depth::Standard));
        assert_eq!(
            believed_best(&view, 10.0),
            Some(Depth::Minimal),
            "only minimal affordable"
        );
        assert!(record_adoption(
            &view,
            &pattern(&me_id, 99, Depth::Standard, 0.9),
            &metrics
        ));
        assert!(!record_adoption(
            &view,
            &pattern(&me_id, 100, Depth::Light, 0.3),
            &metrics
        ));
        let snap = metrics.snapshot();
        assert_eq!(
            (snap.recommendations_followed, snap.recommendations_explored),
            (1, 1)
        );
        assert_eq!(snap.effectiveness_followed, Some(0.9));
        assert_eq!(snap.effectiveness_explored, Some(0.3));
        let empty = LearningView::from_table(&DepthTable::default(), Prior::default());
        assert_eq!(believed_best(&empty, 200.0), None);

        // Weights from the store: no stored reputation → neutral newcomers.
        let w = stored_weights(&store, 1.8e9);
        let ow = w(&honest.public().to_peer_id());
        assert!(ow.newcomer && ow.weight > 0.0);
    }

    #[test]
    fn empty_store_gives_empty_documents() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let me = PeerId::random();
        let w = stored_weights(&store, 0.0);
        assert_eq!(local_insights(&store, &me, 1.0).pattern_count, 0);
        let doc = collective_insights(&store, &me, &w, 1.0);
        assert_eq!(doc.pattern_count, 0);
        assert!(doc.insights.is_empty());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let r = recommend(&local_view(&store, &me), 10.0, "posterior", &mut rng).unwrap();
        assert_eq!(r.depth, Depth::Minimal, "10 ATP affords only minimal");
    }
}
