//! Federated aggregation: the protocol document's baseline, our robust
//! aggregation of per-origin statistics, and conflict resolution.
//!
//! # Baseline
//! [`seed_aggregate_federated_insights`] is the protocol document's
//! `aggregate_federated_insights`, faithfully: per insight type, the
//! reputation-weighted average of the reported confidences, evidence counts
//! summed, sources listed, description `"Collective: <first> (+ N peers)"`.
//! It averages *opinions*: a liar's confident claim moves the answer as much
//! as an honest one of the same weight, and a claim's confidence is never
//! checked against data.
//!
//! # Robust aggregation ([`robust_aggregate`])
//! The open-mesh learning policy and its estimator live in
//! [`crate::policy`] (re-exported here): per-origin statistics, weighted by
//! reputation, volume-capped, discounted until the node's own outcomes
//! confirm them, excluded when they contradict them, screened per depth
//! against a weighted median, pooled with a random-effects variance. See
//! that module for the model, its assumptions and its breakdown point.
//!
//! # Conflict resolution ([`resolve_conflicts`])
//! When origins' insights disagree (each claims a different best depth), the
//! answer and its confidence are recomputed from the robust pooled *evidence*
//! of their statistics — not from the claims, their confidences, or who spoke
//! last. Inputs are sorted by origin key first, so the result does not depend
//! on arrival order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::insights::Insight;
use crate::posterior::{prob_best, Belief, Evidence, Prior};
use crate::schema::Depth;
use crate::stats::DepthTable;
use crate::strategy::LearningView;

pub use crate::policy::robust_aggregate;

// ---------------------------------------------------------------- baseline

/// One origin's insights for [`seed_aggregate_federated_insights`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInsights {
    /// `node_id` of the source (the seed's dict key).
    pub source: String,
    /// Its reputation learning weight (0.5 … 2.0).
    pub weight: f64,
    /// Its reputation confidence bonus (−0.2 … +0.2, Session 162): each of
    /// its confidences counts as `confidence × (1 + bonus)`.
    pub bonus: f64,
    pub insights: Vec<Insight>,
}

/// The seed's aggregated insight (its `Insight` plus `sources`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveInsight {
    pub insight_type: String,
    pub description: String,
    pub confidence: f64,
    pub evidence_count: u64,
    pub sources: Vec<String>,
}

/// The protocol document's `aggregate_federated_insights`: local insights
/// (source `"local"`, the node's own weight) first, then each peer's in the
/// given order; per insight type (in first-seen order) the weighted average
/// of the confidences after the reputation bonus (`confidence × (1 +
/// bonus)`, clamped to [0, 1]; the local node's bonus is 0), summed
/// evidence, listed sources. A type whose total weight is 0 (the seed would
/// divide by zero) gets confidence 0.
pub fn seed_aggregate_federated_insights(
    local_insights: &[Insight],
    local_weight: f64,
    peer_insights: &[PeerInsights],
) -> Vec<CollectiveInsight> {
    struct Entry<'a> {
        insight: &'a Insight,
        weight: f64,
        bonus: f64,
        source: &'a str,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    let all = local_insights
        .iter()
        .map(|i| (i, local_weight, 0.0, "local"))
        .chain(peer_insights.iter().flat_map(|p| {
            p.insights
                .iter()
                .map(move |i| (i, p.weight, p.bonus, p.source.as_str()))
        }));
    for (insight, weight, bonus, source) in all {
        let key = insight.insight_type.as_str();
        let group = groups.entry(key).or_default();
        if group.is_empty() {
            order.push(key);
        }
        let weight = if weight.is_finite() {
            weight.max(0.0)
        } else {
            0.0
        };
        group.push(Entry {
            insight,
            weight,
            bonus,
            source,
        });
    }
    order
        .into_iter()
        .filter_map(|key| {
            let group = groups.get(key)?;
            let first = group.first()?;
            let total: f64 = group.iter().map(|e| e.weight).sum();
            let confidence = if total > 0.0 {
                group
                    .iter()
                    .map(|e| crate::policy::apply_bonus(e.insight.confidence, e.bonus) * e.weight)
                    .sum::<f64>()
                    / total
            } else {
                0.0
            };
            Some(CollectiveInsight {
                insight_type: key.to_string(),
                description: format!(
                    "Collective: {} (+ {} peers)",
                    first.insight.description,
                    group.len() - 1
                ),
                confidence,
                evidence_count: group
                    .iter()
                    .fold(0u64, |a, e| a.saturating_add(e.insight.evidence_count)),
                sources: group.iter().map(|e| e.source.to_string()).collect(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- robust

/// One origin's statistics and standing, input to [`robust_aggregate`].
#[derive(Debug, Clone, PartialEq)]
pub struct OriginEvidence<K> {
    pub key: K,
    pub table: DepthTable,
    /// Reputation learning weight (0 = ignore).
    pub weight: f64,
    /// This node itself or an operator-trusted peer.
    pub anchor: bool,
    /// A newcomer: its evidence is discounted until the node's own outcomes
    /// confirm it ([`crate::policy`]).
    pub newcomer: bool,
    /// Reputation confidence bonus (−0.2 … +0.2): widens (narrows) the
    /// contradiction threshold by that fraction.
    pub bonus: f64,
}

/// Parameters of [`robust_aggregate`] (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RobustConfig {
    /// Consistency threshold in standard errors.
    pub z: f64,
    /// Floor of the per-depth noise scale.
    pub min_sd: f64,
    /// Noise scale assumed before any origin has ≥ 3 samples at a depth.
    pub default_sd: f64,
    /// A peer counts for at most `max(cap_floor, cap_factor × median
    /// count)` samples at a depth (volume never excludes).
    pub cap_floor: f64,
    pub cap_factor: f64,
    /// Huber constant: a surviving origin `|z|` standard errors from the
    /// centre (at its real precision) keeps `min(1, (huber/|z|)²)` of its
    /// weight.
    pub huber: f64,
    /// Samples a newcomer is credited before any confirmation.
    pub unconfirmed_samples: f64,
    /// Credited + confirmed samples at which a newcomer counts in full.
    pub confirm_samples: f64,
    /// Widen the pooled posterior by the between-origin heterogeneity.
    pub random_effects: bool,
    /// Contested pair (policy step 7): a peer whose contrast between the
    /// two leading depths is `|z|` from the robust (M-estimate) centre keeps
    /// `min(1, (k/|z|)³)` of its say at those two depths. Infinite = off.
    pub contrast_huber: f64,
    /// Widen it by a pooled-mean vs robust-centre gap beyond noise.
    pub guard: bool,
}

impl Default for RobustConfig {
    fn default() -> Self {
        RobustConfig {
            z: 4.0,
            min_sd: 0.02,
            default_sd: (1.0f64 / 12.0).sqrt(),
            cap_floor: 10.0,
            cap_factor: 1.0,
            huber: 2.0,
            unconfirmed_samples: 1.0,
            confirm_samples: 4.0,
            random_effects: true,
            contrast_huber: 1.5,
            guard: true,
        }
    }
}

/// An origin found inconsistent with the consensus at a depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inconsistency<K> {
    pub key: K,
    pub depth: Depth,
    /// Its distance from the reference in standard errors.
    pub z: f64,
    pub kind: InconsistencyKind,
}

/// What an inconsistent origin was inconsistent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InconsistencyKind {
    /// The anchors' (this node's and trusted peers') own evidence.
    Anchor,
    /// The weighted median of the other origins.
    Majority,
    /// Its volume (`z` holds its count ÷ the median count). No longer
    /// produced — volume is capped, never excluded — kept so reports that
    /// name it still decode.
    Volume,
}

/// Result of [`robust_aggregate`].
#[derive(Debug, Clone, PartialEq)]
pub struct RobustAggregate<K> {
    /// Pooled evidence per depth (index = [`Depth::index`]).
    pub evidence: [Evidence; Depth::COUNT],
    /// Pooled success rate per depth (weighted like the means).
    pub success_rate: [f64; Depth::COUNT],
    /// Effective pattern count behind the evidence (rounded sum).
    pub pattern_count: u64,
    /// Inconsistent origins (each origin at most once per depth), excluded.
    pub inconsistent: Vec<Inconsistency<K>>,
    /// Origins whose evidence was used.
    pub used: Vec<K>,
}

impl<K> RobustAggregate<K> {
    pub fn beliefs(&self, prior: &Prior) -> [Belief; Depth::COUNT] {
        let mut b = [Belief { mean: 0.0, sd: 1.0 }; Depth::COUNT];
        for (i, e) in self.evidence.iter().enumerate() {
            b[i] = prior.belief(e);
        }
        b
    }

    /// P(best) per depth.
    pub fn prob_best(&self, prior: &Prior) -> Vec<f64> {
        prob_best(&self.beliefs(prior))
    }

    /// The most probably best depth and its probability (ties → cheaper).
    pub fn best(&self, prior: &Prior) -> (Depth, f64) {
        best_of(&self.prob_best(prior))
    }

    /// The depth the collective view may *name* best, with its P(best):
    /// the most probably best depth among those with at least
    /// [`MIN_EVIDENCE_TO_NAME`] effective samples (P(best) itself is
    /// computed over every depth, untried ones keeping the prior). `None`
    /// when no depth has that much evidence. This is the minimum-evidence
    /// rule: an unsampled depth is never named best with a made-up mean.
    pub fn best_named(&self, prior: &Prior) -> Option<(Depth, f64)> {
        let p = self.prob_best(prior);
        let mut best: Option<(Depth, f64)> = None;
        for d in Depth::ALL {
            let n = self.evidence[d.index()].n;
            if !(n.is_finite() && n >= MIN_EVIDENCE_TO_NAME) {
                continue;
            }
            let pd = p.get(d.index()).copied().unwrap_or(0.0);
            if best.is_none_or(|(_, b)| pd > b) {
                best = Some((d, pd));
            }
        }
        best
    }

    pub fn view(&self, prior: Prior) -> LearningView {
        LearningView::from_evidence(self.evidence, self.success_rate, self.pattern_count, prior)
    }
}

/// Least effective sample count at which a depth can be named best
/// ([`RobustAggregate::best_named`]).
pub const MIN_EVIDENCE_TO_NAME: f64 = 1.0;

/// Argmax of a P(best) vector (ties to the cheaper depth).
pub fn best_of(p: &[f64]) -> (Depth, f64) {
    let mut best = 0;
    for i in 1..p.len().min(Depth::COUNT) {
        if p[i] > p[best] {
            best = i;
        }
    }
    (Depth::ALL[best], p.get(best).copied().unwrap_or(0.0))
}

/// Weighted median of `(value, weight)` (lower median; weight ≤ 0 ignored).
pub fn weighted_median(items: &mut [(f64, f64)]) -> Option<f64> {
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = items.iter().filter(|x| x.1 > 0.0).map(|x| x.1).sum();
    if total <= 0.0 {
        return None;
    }
    let mut acc = 0.0;
    for &(v, w) in items.iter() {
        if w <= 0.0 {
            continue;
        }
        acc += w;
        if acc >= total / 2.0 {
            return Some(v);
        }
    }
    items.last().map(|x| x.0)
}

/// Naive pooling: every origin's samples merged with equal weight.
pub fn naive_pool<K>(origins: &[OriginEvidence<K>]) -> DepthTable {
    let mut t = DepthTable::default();
    for o in origins {
        t.merge(&o.table);
    }
    t
}

/// The seed's weighting applied to pooled records: each origin's samples
/// count `weight` times (the 0.5–2.0 learning weight), no screening.
pub fn seed_weighted_pool<K>(origins: &[OriginEvidence<K>]) -> RobustAggregate<K> {
    let mut evidence = [Evidence::default(); Depth::COUNT];
    let mut success_rate = [0.0; Depth::COUNT];
    let mut total = 0.0;
    for d in 0..Depth::COUNT {
        let (mut wn, mut wm, mut wsq, mut wsucc) = (0.0, 0.0, 0.0, 0.0);
        for o in origins {
            let s = &o.table.0[d];
            let w = if o.weight.is_finite() {
                o.weight.max(0.0)
            } else {
                0.0
            };
            if s.n == 0 || w == 0.0 {
                continue;
            }
            let n = s.n as f64;
            let mean = s.avg_quality();
            wn += w * n;
            wm += w * n * mean;
            // Σ w·q² = w·(var·(n−1) + n·mean²)
            wsq += w * (s.var_quality() * (n - 1.0).max(0.0) + n * mean * mean);
            wsucc += w * s.successes as f64;
        }
        if wn <= 0.0 {
            continue;
        }
        let mean = wm / wn;
        evidence[d] = Evidence {
            n: wn,
            mean,
            ss: (wsq - wn * mean * mean).max(0.0),
        };
        success_rate[d] = wsucc / wn;
        total += wn;
    }
    RobustAggregate {
        evidence,
        success_rate,
        pattern_count: total.round().max(0.0) as u64,
        inconsistent: Vec::new(),
        used: Vec::new(),
    }
}

// ---------------------------------------------------------------- conflicts

/// One origin's insight report for [`resolve_conflicts`]: its statistics
/// (as in [`crate::InsightBody::stats`]) and what it claims is best.
#[derive(Debug, Clone, PartialEq)]
pub struct InsightReport<K> {
    pub origin: OriginEvidence<K>,
    /// Its `learned_preferences.optimal_quality_depth`.
    pub claimed_best: Option<Depth>,
    /// Its claimed confidence (reported, never used for the answer).
    pub claimed_confidence: f64,
}

/// The resolved collective answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<K> {
    pub depth: Depth,
    /// P(depth is best) under the robust pooled evidence.
    pub confidence: f64,
    pub p_best: Vec<f64>,
    /// Origins whose claim matches the resolved depth.
    pub agreeing: Vec<K>,
    /// Origins claiming another depth.
    pub disagreeing: Vec<K>,
    /// Origins excluded as inconsistent with the consensus.
    pub inconsistent: Vec<K>,
}

/// Resolve disagreeing insights from the weighted evidence behind them
/// (see the module docs). Independent of the order of `reports`.
pub fn resolve_conflicts<K: Clone + Ord>(
    reports: &[InsightReport<K>],
    cfg: &RobustConfig,
    prior: &Prior,
) -> Option<Resolution<K>> {
    if reports.iter().all(|r| r.origin.table.total() == 0) {
        return None;
    }
    let origins: Vec<OriginEvidence<K>> = reports.iter().map(|r| r.origin.clone()).collect();
    let agg = robust_aggregate(&origins, cfg);
    let p_best = agg.prob_best(prior);
    let (depth, confidence) = best_of(&p_best);
    let mut inconsistent: Vec<K> = agg.inconsistent.iter().map(|x| x.key.clone()).collect();
    inconsistent.sort();
    inconsistent.dedup();
    let mut agreeing = Vec::new();
    let mut disagreeing = Vec::new();
    for r in reports {
        match r.claimed_best {
            Some(d) if d == depth => agreeing.push(r.origin.key.clone()),
            Some(_) => disagreeing.push(r.origin.key.clone()),
            None => {}
        }
    }
    agreeing.sort();
    disagreeing.sort();
    Some(Resolution {
        depth,
        confidence,
        p_best,
        agreeing,
        disagreeing,
        inconsistent,
    })
}

/// Conflict resolution over received insight bodies: `(body, weight, anchor,
/// newcomer)` per origin; a newer body from the same origin replaces an older
/// one (highest `seq` wins, whatever the arrival order).
pub fn resolve_insight_bodies(
    bodies: &[(crate::record::InsightBody, f64, bool, bool)],
    cfg: &RobustConfig,
    prior: &Prior,
) -> Option<Resolution<libp2p_identity::PeerId>> {
    let mut latest: BTreeMap<
        libp2p_identity::PeerId,
        &(crate::record::InsightBody, f64, bool, bool),
    > = BTreeMap::new();
    for b in bodies {
        match latest.get(&b.0.origin) {
            Some(cur) if cur.0.seq >= b.0.seq => {}
            _ => {
                latest.insert(b.0.origin, b);
            }
        }
    }
    let reports: Vec<InsightReport<libp2p_identity::PeerId>> = latest
        .values()
        .map(|(body, weight, anchor, newcomer)| InsightReport {
            origin: OriginEvidence {
                key: body.origin,
                table: body.stats,
                weight: *weight,
                anchor: *anchor,
                newcomer: *newcomer,
                bonus: 0.0,
            },
            claimed_best: body.insights.learned_preferences.optimal_quality_depth,
            claimed_confidence: body
                .insights
                .get(crate::insights::types::OPTIMAL_QUALITY_DEPTH)
                .map(|i| i.confidence)
                .unwrap_or(0.0),
        })
        .collect();
    resolve_conflicts(&reports, cfg, prior)
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
