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
//! Input: per origin, its sufficient statistics ([`DepthTable`]), its learning
//! weight (from [`crate::reputation::standing`] — 0.5…2.0, 0 for hostile or
//! denied), whether it is an **anchor** (this node itself, or an
//! operator-trusted peer) and whether it is a **newcomer**. Output: per-depth
//! pooled [`Evidence`] (so beliefs and P(best) follow from
//! [`crate::posterior`]) and the origins whose reports were inconsistent.
//!
//! Per depth `d`, over origins with data at `d`:
//! 1. **Scale** σ_d: the weighted median of the origins' sample standard
//!    deviations (floored at `min_sd`), so no minority can shrink or inflate
//!    the noise level used in the tests below.
//! 2. **Volume cap**: an origin counts for at most
//!    `max(cap_floor, cap_factor × median n)` samples, so a flooder (or one
//!    identity of a Sybil) cannot buy weight with volume; one with more than
//!    `flood_factor` × the median count is flooding and is excluded
//!    ([`InconsistencyKind::Volume`]).
//! 3. **Newcomer budget**: the newcomers' total weight is scaled down to at
//!    most `newcomer_share` × the established origins' weight (anchors
//!    included), so any number of fresh identities is, as a class, a
//!    minority.
//! 4. **Anchor screen**: with anchor data at `d`, an origin whose mean differs
//!    from the anchors' pooled mean by more than `z` standard errors of the
//!    difference (`σ_d·√(1/n_i + 1/n_A)`) is inconsistent.
//! 5. **Majority screen** (two passes, the second re-centred on the first's
//!    survivors): the robust centre is the weight-median of the remaining
//!    origins' means (one origin one vote, scaled by weight); an origin
//!    further than `z·√(σ²/n_i + se_c²)` from it is inconsistent.
//!    Anchors are never screened out (they are the reference; if the centre
//!    disagrees with the anchors beyond noise, the anchors' mean is used as
//!    the centre instead).
//!
//! An origin inconsistent at any depth is excluded at every depth (it lied
//! somewhere) and listed, so the node can apply
//! [`crate::reputation::ReputationEvent::InconsistentWithConsensus`].
//! The survivors are pooled with weights `w_i·n_i·min(1, huber/|z_i|)`; the
//! evidence count is the **effective** sample size of that weighted mean
//! under a random-effects model (DerSimonian–Laird τ² for between-origin
//! heterogeneity, counted only when Cochran's Q exceeds its 95% point; the
//! noise is the survivors' pooled within-origin variance): with consistent
//! honest origins τ² = 0 and N origins pool to N× the evidence; residual
//! disagreement that the screens did not remove widens the posterior instead
//! of being believed. A **calibration guard** adds the gap between the pooled
//! mean and the robust centre to the variance when it exceeds three times
//! what noise explains (≈ 0.3% of honest evaluations).
//!
//! **Breakdown point.** The centre is a weighted median: it cannot be moved
//! outside the range of honest means unless the adversaries hold ≥ 50% of
//! the (weight-scaled, newcomer-budgeted) vote; with the default newcomer
//! share (0.25) fresh identities hold at most one fifth of it however many
//! there are. The anchor screen holds with any number of liars as long as an
//! anchor has data. Liars within `z` standard errors of the truth are not
//! excluded, but each one's influence on the pooled mean is bounded by its
//! capped weight times that distance, which shrinks as `1/√n`.
//!
//! **Calibration.** With honest origins the pooled evidence equals the
//! evidence of their merged samples (weights equal), so the posterior is the
//! same one a node would compute from all the samples itself.
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

// ---------------------------------------------------------------- baseline

/// One origin's insights for [`seed_aggregate_federated_insights`].
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInsights {
    /// `node_id` of the source (the seed's dict key).
    pub source: String,
    /// Its reputation learning weight (0.5 … 2.0).
    pub weight: f64,
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
/// confidence, summed evidence, listed sources. A type whose total weight is
/// 0 (the seed would divide by zero) gets confidence 0.
pub fn seed_aggregate_federated_insights(
    local_insights: &[Insight],
    local_weight: f64,
    peer_insights: &[PeerInsights],
) -> Vec<CollectiveInsight> {
    struct Entry<'a> {
        insight: &'a Insight,
        weight: f64,
        source: &'a str,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    let all = local_insights
        .iter()
        .map(|i| (i, local_weight, "local"))
        .chain(peer_insights.iter().flat_map(|p| {
            p.insights
                .iter()
                .map(move |i| (i, p.weight, p.source.as_str()))
        }));
    for (insight, weight, source) in all {
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
                    .map(|e| finite_or_zero(e.insight.confidence) * e.weight)
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

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
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
    /// A newcomer (weight capped, subject to the newcomer budget).
    pub newcomer: bool,
}

/// Parameters of [`robust_aggregate`] (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RobustConfig {
    /// Consistency threshold in standard errors.
    pub z: f64,
    /// Floor of the per-depth noise scale.
    pub min_sd: f64,
    /// Noise scale assumed before any origin has ≥ 3 samples at a depth.
    pub default_sd: f64,
    pub cap_floor: f64,
    pub cap_factor: f64,
    /// An origin with more than this × the median sample count at a depth
    /// is flooding: excluded and reported.
    pub flood_factor: f64,
    /// Huber constant: a surviving origin `|z|` standard errors from the
    /// centre keeps `min(1, huber/|z|)` of its weight.
    pub huber: f64,
    /// Newcomers' total weight ≤ this × established weight.
    pub newcomer_share: f64,
    /// Widen the pooled posterior by the between-origin heterogeneity.
    pub random_effects: bool,
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
            flood_factor: 10.0,
            huber: 2.0,
            newcomer_share: 0.25,
            random_effects: true,
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
    /// Its volume (`z` holds its count ÷ the median count): flooding.
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

    pub fn view(&self, prior: Prior) -> LearningView {
        LearningView::from_evidence(self.evidence, self.success_rate, self.pattern_count, prior)
    }
}

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

/// Per-origin, per-depth summary used by the estimator.
#[derive(Clone, Copy)]
struct Cell {
    n: f64,
    n_capped: f64,
    mean: f64,
    sd: f64,
    success: f64,
}

/// Robust aggregation of per-origin statistics (see the module docs).
pub fn robust_aggregate<K: Clone + Ord>(
    origins: &[OriginEvidence<K>],
    cfg: &RobustConfig,
) -> RobustAggregate<K> {
    // Deterministic regardless of input order.
    let mut idx: Vec<usize> = (0..origins.len()).collect();
    idx.sort_by(|a, b| origins[*a].key.cmp(&origins[*b].key));
    let origins: Vec<&OriginEvidence<K>> = idx.iter().map(|i| &origins[*i]).collect();
    let m = origins.len();

    // Newcomer budget: scale newcomers' weights as a class.
    let clean_w = |o: &OriginEvidence<K>| {
        if o.weight.is_finite() {
            o.weight.max(0.0)
        } else {
            0.0
        }
    };
    let established: f64 = origins
        .iter()
        .filter(|o| !o.newcomer || o.anchor)
        .map(|o| clean_w(o))
        .sum();
    let newcomers: f64 = origins
        .iter()
        .filter(|o| o.newcomer && !o.anchor)
        .map(|o| clean_w(o))
        .sum();
    let newcomer_scale = if newcomers > 0.0 {
        (cfg.newcomer_share * established / newcomers).min(1.0)
    } else {
        1.0
    };
    let weight: Vec<f64> = origins
        .iter()
        .map(|o| {
            let w = clean_w(o);
            if o.newcomer && !o.anchor {
                w * newcomer_scale
            } else {
                w
            }
        })
        .collect();

    let mut cells: Vec<[Option<Cell>; Depth::COUNT]> = vec![[None; Depth::COUNT]; m];
    let mut sigma = [cfg.default_sd; Depth::COUNT];
    let mut excluded = vec![false; m];
    let mut inconsistent: Vec<Inconsistency<K>> = Vec::new();
    let mut centre_of = [f64::NAN; Depth::COUNT];
    let mut z_of: Vec<[f64; Depth::COUNT]> = vec![[0.0; Depth::COUNT]; m];

    for d in 0..Depth::COUNT {
        // Cells with data at d from origins with weight.
        let mut ns: Vec<f64> = Vec::new();
        let mut sds: Vec<(f64, f64)> = Vec::new();
        for (i, o) in origins.iter().enumerate() {
            let s = &o.table.0[d];
            if s.n == 0 || weight[i] <= 0.0 {
                continue;
            }
            let n = s.n as f64;
            ns.push(n);
            let sd = s.var_quality().max(0.0).sqrt();
            if s.n >= 3 {
                sds.push((sd, weight[i]));
            }
            cells[i][d] = Some(Cell {
                n,
                n_capped: n,
                mean: s.avg_quality(),
                sd,
                success: s.success_rate(),
            });
        }
        if ns.is_empty() {
            continue;
        }
        sigma[d] = weighted_median(&mut sds)
            .unwrap_or(cfg.default_sd)
            .max(cfg.min_sd);
        let mut ns_w: Vec<(f64, f64)> = ns.iter().map(|n| (*n, 1.0)).collect();
        let median_n = weighted_median(&mut ns_w).unwrap_or(1.0);
        let cap = (cfg.cap_factor * median_n).max(cfg.cap_floor);
        for (i, o) in origins.iter().enumerate() {
            if let Some(c) = cells[i][d].as_mut() {
                if !o.anchor {
                    c.n_capped = c.n.min(cap);
                }
            }
        }
        let s2 = sigma[d] * sigma[d];
        let mut flagged_here = vec![false; m];
        for (i, o) in origins.iter().enumerate() {
            if let (false, Some(c)) = (o.anchor, cells[i][d]) {
                if c.n > cfg.cap_floor && c.n > cfg.flood_factor * median_n {
                    flagged_here[i] = true;
                    inconsistent.push(Inconsistency {
                        key: o.key.clone(),
                        depth: Depth::ALL[d],
                        z: c.n / median_n.max(1.0),
                        kind: InconsistencyKind::Volume,
                    });
                }
            }
        }

        // Anchor screen.
        let (mut a_n, mut a_sum) = (0.0, 0.0);
        for (i, o) in origins.iter().enumerate() {
            if let (true, Some(c)) = (o.anchor, cells[i][d]) {
                a_n += c.n;
                a_sum += c.n * c.mean;
            }
        }
        let anchor_mean = (a_n > 0.0).then(|| a_sum / a_n);
        if let Some(am) = anchor_mean {
            for (i, o) in origins.iter().enumerate() {
                if o.anchor || flagged_here[i] {
                    continue;
                }
                if let Some(c) = cells[i][d] {
                    let se = (s2 * (1.0 / c.n_capped + 1.0 / a_n)).sqrt();
                    let z = (c.mean - am) / se;
                    if z.abs() > cfg.z {
                        flagged_here[i] = true;
                        inconsistent.push(Inconsistency {
                            key: o.key.clone(),
                            depth: Depth::ALL[d],
                            z,
                            kind: InconsistencyKind::Anchor,
                        });
                    }
                }
            }
        }

        // Majority screen around the weighted median of the rest, twice:
        // the second pass re-centres on the first pass's survivors, so gross
        // liars cannot drag the centre far enough to flag an honest origin.
        let anchor_flags = flagged_here.clone();
        let mut screened = anchor_flags.clone();
        let mut found: Vec<(usize, f64)> = Vec::new();
        for _pass in 0..2 {
            let mut votes: Vec<(f64, f64)> = Vec::new();
            let mut vote_n = 0.0;
            for i in 0..m {
                if let (false, Some(c)) = (screened[i], cells[i][d]) {
                    votes.push((c.mean, weight[i]));
                    vote_n += c.n_capped;
                }
            }
            let Some(mut centre) = weighted_median(&mut votes) else {
                break;
            };
            // Standard error of a median ≈ 1.2533 × that of the mean.
            let mut se_c2 = 1.2533f64.powi(2) * s2 / f64::max(vote_n, 1.0);
            if let Some(am) = anchor_mean {
                if (centre - am).abs() > cfg.z * (s2 / a_n + se_c2).sqrt() {
                    centre = am;
                    se_c2 = s2 / a_n;
                }
            }
            found.clear();
            screened = anchor_flags.clone();
            centre_of[d] = centre;
            for (i, o) in origins.iter().enumerate() {
                if o.anchor || anchor_flags[i] {
                    continue;
                }
                if let Some(c) = cells[i][d] {
                    let z = (c.mean - centre) / (s2 / c.n_capped + se_c2).sqrt();
                    z_of[i][d] = z;
                    if z.abs() > cfg.z {
                        screened[i] = true;
                        found.push((i, z));
                    }
                }
            }
        }
        for (i, z) in found.drain(..) {
            flagged_here[i] = true;
            inconsistent.push(Inconsistency {
                key: origins[i].key.clone(),
                depth: Depth::ALL[d],
                z,
                kind: InconsistencyKind::Majority,
            });
        }
        for i in 0..m {
            excluded[i] |= flagged_here[i];
        }
    }

    // Pool the survivors.
    let mut evidence = [Evidence::default(); Depth::COUNT];
    let mut success_rate = [0.0; Depth::COUNT];
    let mut total_n = 0.0;
    for d in 0..Depth::COUNT {
        let s2 = sigma[d] * sigma[d];
        let mut sw = 0.0; // Σ ω_i, ω_i = w_i·n_i
        let mut swm = 0.0;
        let mut sws = 0.0;
        let mut fe_w = 0.0; // inverse-variance weights n_i/σ²
        let mut fe_wm = 0.0;
        let mut fe_w2 = 0.0;
        let mut within_ss = 0.0;
        let mut within_df = 0.0;
        let mut items: Vec<(f64, f64, f64)> = Vec::new(); // (ω, n, mean)
        for i in 0..m {
            if excluded[i] {
                continue;
            }
            let Some(c) = cells[i][d] else { continue };
            // Huber: survivors far from the centre keep less weight, which
            // bounds what liars just inside the threshold can do.
            let z = z_of[i][d].abs();
            let huber = if z > cfg.huber { cfg.huber / z } else { 1.0 };
            let omega = weight[i] * c.n_capped * huber;
            sw += omega;
            swm += omega * c.mean;
            sws += omega * c.success;
            let f = c.n_capped / s2;
            fe_w += f;
            fe_wm += f * c.mean;
            fe_w2 += f * f;
            if c.n >= 2.0 {
                within_ss += c.sd * c.sd * (c.n_capped - 1.0).max(0.0);
                within_df += (c.n_capped - 1.0).max(0.0);
            }
            items.push((omega, c.n_capped, c.mean));
        }
        if sw <= 0.0 {
            continue;
        }
        let mean = swm / sw;
        // Sampling noise of the survivors: their pooled within-origin
        // variance once there is enough of it (the median-of-sds scale used
        // for screening is biased low for small samples, which would make
        // honest origins look heterogeneous).
        let noise2 = if within_df >= 5.0 {
            (within_ss / within_df).max(cfg.min_sd * cfg.min_sd)
        } else {
            s2
        };
        let rescale = s2 / noise2;
        let tau2 = if cfg.random_effects && items.len() >= 2 {
            let fe_mean = fe_wm / fe_w;
            let q: f64 = items
                .iter()
                .map(|(_, n, mu)| n / noise2 * (mu - fe_mean).powi(2))
                .sum();
            let k = items.len() as f64;
            let denom = (fe_w - fe_w2 / fe_w) * rescale;
            // Only heterogeneity that is significant (Q above its 95% point,
            // Wilson–Hilferty) widens the posterior: honest noise alone must
            // not cost the collective its pooled evidence.
            let df = k - 1.0;
            let h = 2.0 / (9.0 * df);
            let q_crit = df * (1.0 - h + 1.645 * h.sqrt()).powi(3);
            if denom > 0.0 && q > q_crit {
                ((q - df) / denom).max(0.0)
            } else {
                0.0
            }
        } else {
            0.0
        };
        // Variance of the weighted mean: Σ ω²(σ²/n + τ²) / (Σ ω)².
        let var: f64 = items
            .iter()
            .map(|(omega, n, _)| omega * omega * (noise2 / n + tau2))
            .sum::<f64>()
            / (sw * sw);
        // Calibration guard: the efficient pooled mean and the robust centre
        // differ by noise alone by more than 3·√(π/2−1)·sd only ~0.3% of
        // the time; a larger gap means undetected contamination may be pulling the mean, so the gap is
        // added to the uncertainty instead of being believed.
        let gap = mean - centre_of[d];
        let var = if cfg.guard && gap.is_finite() && gap.abs() > 3.0 * (0.5708 * var).sqrt() {
            var + gap * gap
        } else {
            var
        };
        let n_eff = if var > 0.0 { noise2 / var } else { 0.0 };
        let within = if within_df > 0.0 {
            within_ss / within_df
        } else {
            s2
        };
        evidence[d] = Evidence {
            n: n_eff,
            mean,
            ss: within * (n_eff - 1.0).max(0.0),
        };
        success_rate[d] = sws / sw;
        total_n += n_eff;
    }

    let used = origins
        .iter()
        .enumerate()
        .filter(|(i, o)| !excluded[*i] && weight[*i] > 0.0 && o.table.total() > 0)
        .map(|(_, o)| o.key.clone())
        .collect();
    RobustAggregate {
        evidence,
        success_rate,
        pattern_count: total_n.round().max(0.0) as u64,
        inconsistent,
        used,
    }
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const MEANS: [f64; 5] = [0.3, 0.45, 0.6, 0.7, 0.66];

    fn insight(t: &str, d: &str, c: f64, n: u64) -> Insight {
        Insight {
            insight_type: t.into(),
            description: d.into(),
            evidence_count: n,
            confidence: c,
            recommendation: String::new(),
            learned_at: 0.0,
        }
    }

    /// An origin drawing `n` samples per depth around `means` (sd ≈ 0.1).
    fn honest(key: u32, means: [f64; 5], n: u64, rng: &mut ChaCha8Rng) -> OriginEvidence<u32> {
        let mut t = DepthTable::default();
        for (d, m) in means.iter().enumerate() {
            for _ in 0..n {
                let q: f64 = (m + (rng.gen::<f64>() - 0.5) * 0.35).clamp(0.0, 1.0);
                t.0[d].add(q, q > 0.5, 1.0);
            }
        }
        OriginEvidence {
            key,
            table: t,
            weight: 1.0,
            anchor: false,
            newcomer: false,
        }
    }

    /// A liar: the worst depth reported as excellent, the best as poor.
    fn liar(key: u32, n: u64, rng: &mut ChaCha8Rng) -> OriginEvidence<u32> {
        let mut lie = MEANS;
        lie[0] = 0.9;
        lie[3] = 0.2;
        honest(key, lie, n, rng)
    }

    #[test]
    fn seed_baseline_matches_the_document() {
        let local = vec![insight("optimal_depth", "Use deep", 0.8, 10)];
        let peers = vec![
            PeerInsights {
                source: "thor".into(),
                weight: 2.0,
                insights: vec![
                    insight("optimal_depth", "Use standard", 0.5, 20),
                    insight("atp", "x", 1.0, 3),
                ],
            },
            PeerInsights {
                source: "sprout".into(),
                weight: 0.5,
                insights: vec![insight("optimal_depth", "Use light", 0.2, 5)],
            },
        ];
        let out = seed_aggregate_federated_insights(&local, 1.0, &peers);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].insight_type, "optimal_depth");
        let expected = (0.8 * 1.0 + 0.5 * 2.0 + 0.2 * 0.5) / 3.5;
        assert!((out[0].confidence - expected).abs() < 1e-12);
        assert_eq!(out[0].evidence_count, 35);
        assert_eq!(out[0].description, "Collective: Use deep (+ 2 peers)");
        assert_eq!(out[0].sources, vec!["local", "thor", "sprout"]);
        assert_eq!(out[1].insight_type, "atp");
        assert_eq!(out[1].sources, vec!["thor"]);
        assert_eq!(out[1].description, "Collective: x (+ 0 peers)");
        // Zero total weight does not divide by zero.
        let z = seed_aggregate_federated_insights(&local, 0.0, &[]);
        assert_eq!(z[0].confidence, 0.0);
    }

    #[test]
    fn weighted_median_basics() {
        assert_eq!(
            weighted_median(&mut [(1.0, 1.0), (5.0, 1.0), (3.0, 1.0)]),
            Some(3.0)
        );
        assert_eq!(
            weighted_median(&mut [(1.0, 3.0), (5.0, 1.0), (3.0, 1.0)]),
            Some(1.0)
        );
        assert_eq!(weighted_median(&mut [(1.0, 0.0)]), None);
        assert_eq!(weighted_median(&mut []), None);
    }

    #[test]
    fn honest_origins_pool_their_evidence() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let origins: Vec<_> = (0..10).map(|k| honest(k, MEANS, 20, &mut rng)).collect();
        let agg = robust_aggregate(&origins, &RobustConfig::default());
        assert!(agg.inconsistent.is_empty(), "{:?}", agg.inconsistent);
        let merged = naive_pool(&origins);
        let prior = Prior::default();
        for d in 0..5 {
            let e = agg.evidence[d];
            let m = Evidence::from_stats(&merged.0[d]);
            // Huber down-weighting of the rare |z| > 2 origin moves it a little.
            assert!((e.mean - m.mean).abs() < 0.01);
            // Random effects may shave a little off, never add.
            assert!(e.n <= m.n + 1e-6 && e.n > 0.6 * m.n, "{} vs {}", e.n, m.n);
            let (bm, bn) = (prior.belief(&e), prior.belief(&m));
            assert!((bm.mean - bn.mean).abs() < 0.01);
            assert!(bm.sd < 1.4 * bn.sd);
        }
        assert_eq!(agg.best(&prior).0, Depth::Deep);
        assert_eq!(agg.used.len(), 10);
    }

    #[test]
    fn random_effects_rarely_widens_honest_pools() {
        let mut widened = 0;
        let mut total = 0;
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let origins: Vec<_> = (0..6).map(|k| honest(k, MEANS, 10, &mut rng)).collect();
            let agg = robust_aggregate(&origins, &RobustConfig::default());
            for d in 0..5 {
                total += 1;
                if agg.evidence[d].n < 0.95 * 60.0 {
                    widened += 1;
                }
            }
        }
        // Q beyond its 95% point (and rare false exclusions): ~5%.
        assert!(widened as f64 / (total as f64) < 0.1, "{widened}/{total}");
    }

    #[test]
    fn minority_liars_are_excluded_and_reported() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut origins: Vec<_> = (0..7).map(|k| honest(k, MEANS, 15, &mut rng)).collect();
        origins.extend((100..103).map(|k| liar(k, 200, &mut rng)));
        let prior = Prior::default();
        let naive = naive_pool(&origins);
        assert_eq!(
            crate::posterior::best_depth(&naive, &prior).0,
            Depth::Minimal
        );
        let agg = robust_aggregate(&origins, &RobustConfig::default());
        let (best, conf) = agg.best(&prior);
        assert_eq!(best, Depth::Deep);
        assert!(conf > 0.8, "{conf}");
        let mut bad: Vec<u32> = agg.inconsistent.iter().map(|x| x.key).collect();
        bad.sort();
        bad.dedup();
        assert_eq!(bad, vec![100, 101, 102]);
    }

    #[test]
    fn sybil_newcomers_cannot_outvote_established_peers_and_anchor() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut origins: Vec<_> = (0..5).map(|k| honest(k, MEANS, 10, &mut rng)).collect();
        origins[0].anchor = true;
        origins[0].weight = 2.0;
        for k in 0..20 {
            let mut s = liar(1000 + k, 10, &mut rng);
            s.newcomer = true;
            origins.push(s);
        }
        let agg = robust_aggregate(&origins, &RobustConfig::default());
        assert_eq!(agg.best(&Prior::default()).0, Depth::Deep);
        assert!(agg.used.iter().all(|k| *k < 1000));
    }

    #[test]
    fn flooder_volume_is_capped() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut origins: Vec<_> = (0..5).map(|k| honest(k, MEANS, 10, &mut rng)).collect();
        // Plausible but mediocre data for deep, 100× the honest volume.
        let mut flood = DepthTable::default();
        for i in 0..5000 {
            let q = 0.62 + ((i % 11) as f64 - 5.0) * 0.02;
            flood.0[Depth::Deep.index()].add(q, true, 35.0);
        }
        origins.push(OriginEvidence {
            key: 99,
            table: flood,
            weight: 1.0,
            anchor: false,
            newcomer: false,
        });
        let agg = robust_aggregate(&origins, &RobustConfig::default());
        // Without the cap the flood would own the deep estimate.
        let honest_mean: f64 = origins[..5]
            .iter()
            .map(|o| o.table.0[3].avg_quality())
            .sum::<f64>()
            / 5.0;
        assert!(
            (agg.evidence[3].mean - honest_mean).abs() < 0.03,
            "{}",
            agg.evidence[3].mean
        );
        assert!(agg.evidence[3].n < 100.0);
    }

    #[test]
    fn conflicts_resolve_from_evidence_not_claims() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut reports: Vec<InsightReport<u32>> = (0..6)
            .map(|k| InsightReport {
                origin: honest(k, MEANS, 12, &mut rng),
                claimed_best: Some(Depth::Deep),
                claimed_confidence: 0.6,
            })
            .collect();
        // Two very confident, very loud dissenters with real (liar) data.
        for k in 50..52 {
            reports.push(InsightReport {
                origin: liar(k, 100, &mut rng),
                claimed_best: Some(Depth::Minimal),
                claimed_confidence: 1.0,
            });
        }
        let prior = Prior::default();
        let cfg = RobustConfig::default();
        let r = resolve_conflicts(&reports, &cfg, &prior).unwrap();
        assert_eq!(r.depth, Depth::Deep);
        assert_eq!(r.disagreeing, vec![50, 51]);
        assert_eq!(r.inconsistent, vec![50, 51]);
        // The seed's averaging of claimed confidences is pulled by the loud ones.
        reports.reverse();
        let r2 = resolve_conflicts(&reports, &cfg, &prior).unwrap();
        assert_eq!(r, r2);
    }

    #[test]
    fn insight_bodies_latest_seq_wins() {
        use crate::insights::InsightSet;
        use crate::record::InsightBody;
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let key = libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        let origin = key.public().to_peer_id();
        let body = |seq: u64, t: DepthTable| InsightBody {
            v: 1,
            origin,
            seq,
            prev_seq: None,
            computed_at: 0.0,
            stats: t,
            insights: InsightSet::default(),
        };
        let old = body(1, liar(0, 30, &mut rng).table);
        let new = body(2, honest(0, MEANS, 30, &mut rng).table);
        let a = resolve_insight_bodies(
            &[
                (old.clone(), 1.0, true, false),
                (new.clone(), 1.0, true, false),
            ],
            &RobustConfig::default(),
            &Prior::default(),
        )
        .unwrap();
        let b = resolve_insight_bodies(
            &[(new, 1.0, true, false), (old, 1.0, true, false)],
            &RobustConfig::default(),
            &Prior::default(),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.depth, Depth::Deep);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn order_independent(seed in any::<u64>(), rot in 0usize..13) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut origins: Vec<_> = (0..9).map(|k| honest(k, MEANS, rng.gen_range(1..15), &mut rng)).collect();
            origins.extend((20..24).map(|k| liar(k, rng.gen_range(1..40), &mut rng)));
            origins[3].anchor = true;
            let cfg = RobustConfig::default();
            let a = robust_aggregate(&origins, &cfg);
            origins.rotate_left(rot);
            origins.swap(0, 5);
            let b = robust_aggregate(&origins, &cfg);
            prop_assert_eq!(a.evidence, b.evidence);
            prop_assert_eq!(a.inconsistent, b.inconsistent);
        }

        #[test]
        fn minority_of_liars_cannot_flip(seed in any::<u64>(), liars in 1u32..4, volume in 10u64..2000) {
            // 8 honest origins with 25 samples per depth (gap 0.1 between the
            // best two); up to 3 liars with any volume.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let means = [0.3, 0.45, 0.6, 0.75, 0.65];
            let mut origins: Vec<_> = (0..8).map(|k| honest(k, means, 25, &mut rng)).collect();
            for k in 0..liars {
                let mut lie = means;
                lie[0] = 0.95;
                lie[3] = 0.1;
                lie[4] = 0.9;
                origins.push(honest(100 + k, lie, volume, &mut rng));
            }
            let agg = robust_aggregate(&origins, &RobustConfig::default());
            prop_assert_eq!(agg.best(&Prior::default()).0, Depth::Deep);
        }

        #[test]
        fn honest_pool_matches_pooled_posterior(seed in any::<u64>(), k in 2u32..12) {
            // Without the random-effects widening, consistent honest origins
            // pool to exactly the posterior of their merged samples.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let origins: Vec<_> = (0..k).map(|i| honest(i, MEANS, 15, &mut rng)).collect();
            let cfg = RobustConfig { random_effects: false, guard: false, huber: f64::INFINITY, ..Default::default() };
            let agg = robust_aggregate(&origins, &cfg);
            prop_assume!(agg.inconsistent.is_empty());
            let merged = naive_pool(&origins);
            let prior = Prior::default();
            let pm = prior.beliefs(&merged);
            let pr = agg.beliefs(&prior);
            for d in 0..5 {
                prop_assert!((pm[d].mean - pr[d].mean).abs() < 1e-9);
                prop_assert!((agg.evidence[d].n - merged.0[d].n as f64).abs() < 1e-6);
                prop_assert!((pr[d].sd / pm[d].sd - 1.0).abs() < 0.15, "{} {}", pr[d].sd, pm[d].sd);
            }
        }
    }
}
