//! The learning policy for open meshes: who gets how much say in a node's
//! collective view, and the robust estimator that pools their evidence.
//! The running node (`node/src/learning.rs`) and the simulator
//! (`simulations/src/sim.rs`) both call these functions; there is no second
//! copy of the weighting anywhere.
//!
//! # The model (after Vial, Shakkottai & Srikant, "Robust Multi-Agent
//! Multi-Armed Bandits", 2021)
//!
//! A node always observes its own outcomes, so its own evidence is the
//! ground truth it judges everyone else by. Strangers are heard from the
//! first minute, but their say grows only as far as the node's own outcomes
//! *confirm* their reports, and they lose it as soon as those outcomes
//! *contradict* them:
//!
//! 1. **Roles** ([`Role`], [`origin_evidence`]): the node itself and
//!    operator-trusted peers (and a parent) are **anchors** — their evidence
//!    is the reference and is never screened out. Everyone else is a peer
//!    whose learning weight comes from the Session 162 table through
//!    [`crate::reputation::standing`] (0.5–2.0, 0 for hostile or denied
//!    peers): the reputation **floor**. Operator trust accelerates (an
//!    anchor counts in full at once); it is not required.
//! 2. **Volume cap**: at each depth a peer counts for at most
//!    `max(cap_floor, cap_factor × median count)` samples. Volume never
//!    excludes an origin — an honest peer with 1000× the records of everyone
//!    else is simply counted as one typical origin — and a flooder cannot
//!    buy weight with volume. The cap limits an origin's *say*, not what its
//!    data tells: the consistency tests (3, and the weighing in 6) take an
//!    origin at its real precision (its real count), so a flooder's many
//!    precise records that sit away from the others lose weight faster than
//!    a typical origin's, while an honest high-volume peer, whose mean is
//!    right, keeps its say.
//! 3. **Contradiction** (per depth, against the node's own evidence): where
//!    the anchors have data at depth `d`, a peer whose mean differs from the
//!    anchors' pooled mean by more than `z·(1 + bonus)` standard errors of
//!    the difference, `σ_d·√(1/n_peer + 1/n_anchor)` (`n_peer` its real
//!    count: the anchors' own noise dominates that error), is contradicted and
//!    excluded at every depth ([`InconsistencyKind::Anchor`]); the
//!    reputation bonus (±0.2) widens or narrows the benefit of the doubt.
//!    `σ_d` is the larger of the weighted median of the origins' sample sds
//!    at `d` and the anchors' own pooled noise, so neither a minority nor a
//!    majority of strangers can shrink the noise level the test uses.
//!    The node charges [`crate::reputation::ReputationEvent::InconsistentWithConsensus`]
//!    for these ([`charged`]).
//! 4. **Confirmation**: every depth where the anchors have data and the peer
//!    is *not* contradicted confirms `min(n_peer, n_anchor)` of its samples.
//!    A newcomer's evidence is discounted by `c = min(1, (unconfirmed +
//!    confirmed) / confirm_samples)` — each of its samples counts `c` of a
//!    sample, so unconfirmed strangers can never make a posterior tight on
//!    their own. With the defaults (1 and 4) a stranger counts a quarter
//!    until the node has seen three of its own outcomes where the stranger
//!    also reported, and fully after that. An established peer (older than
//!    the newcomer period, with enough valid records) counts fully.
//! 5. **Majority screen** (per depth, two passes): the robust centre is the
//!    weighted median of the remaining origins' means, each voting with
//!    `weight × c`; an origin further than `z·(1 + bonus)·√(σ²/n + se_c²)`
//!    (`n` its capped, discounted count — with few origins the median is a
//!    noisy reference, so a drop needs more than one origin's precision) from it is
//!    left out *at that depth only* ([`InconsistencyKind::Majority`]), never
//!    elsewhere, and costs no reputation: a majority of fresh identities can
//!    drop an honest peer's report where the node has no evidence of its own,
//!    but cannot make it an outcast. Where the anchors have data and the
//!    centre disagrees with them beyond noise, the anchors' mean is the centre.
//! 6. **Pooling**: survivors are pooled with weights `w·n_eff·min(1,
//!    (huber/|z|)²)` (`n_eff` = capped, discounted count; `z` the distance
//!    from the centre at the origin's real precision, `√(σ²/n_real + se_c²)`;
//!    the squared tail makes a far origin's pull on the mean fall as `1/|z|`)
//!    and a random-effects
//!    variance (DerSimonian–Laird τ², only when Cochran's Q exceeds its 95%
//!    point) plus a calibration guard: residual disagreement widens the
//!    posterior instead of being believed.
//! 7. **Contested pair** (`policy_contrast.rs`): the node's answer is decided
//!    by the contrast `mean_A − mean_B` of its two leading pooled depths, and
//!    a lie that swaps them moves that contrast twice as far as either mean.
//!    At every evaluation A and B are re-pooled with each peer's say
//!    multiplied by `min(1, (k/|z|)³)`, `z` its contrast's distance (at its
//!    real precision) from a redescending M-estimate of the contrasts'
//!    centre started at their vote-weighted median (the anchors' own
//!    contrast where that centre disagrees with them beyond noise), `k` =
//!    [`RobustConfig::contrast_huber`]. Nobody is excluded or charged; other
//!    depths are untouched.
//!
//! Exploration does the rest: a top-two Thompson node *tries* what the
//! pooled evidence recommends, so a lie that makes a bad depth look good is
//! tested by the node's own outcomes within a few rounds, and the liar is
//! contradicted at that depth and excluded everywhere.
//!
//! # Assumptions and breakdown point
//!
//! * Honest nodes face the same task distribution (the same true mean per
//!   depth) and report their outcomes; the node's own outcomes are honest.
//! * A liar can only be *detected* where it contradicts the node's own
//!   evidence beyond sampling noise. Lies inside the noise (camouflage) are
//!   not detected; their influence is bounded by their capped count and the
//!   Huber weight, and shrinks as the node's own evidence grows (the
//!   contradiction test tightens as `1/√n`). A lie that swaps the leading
//!   pair is weighed down by step 7 as far as its contrast sits outside the
//!   others' (a liar at contrast `z` ≈ 2–3 keeps ⅛–½ of its say there); the
//!   contrast centre breaks like the majority screen, at 50% of the vote,
//!   and honest peers whose contrasts differ beyond noise (a heterogeneous
//!   task) lose say at the pair too.
//! * Any number of liars, and any number of identities, is tolerated at a
//!   depth where the node has enough evidence of its own: the contradiction
//!   test does not vote. Where the node has no evidence, the majority screen
//!   is a weighted median: it breaks when adversaries hold ≥ 50% of the
//!   confirmation-scaled vote. A Sybil swarm of unconfirmed identities votes
//!   at `unconfirmed/confirm_samples` (¼) per identity, so it must outnumber
//!   the confirmed honest peers 4:1 to hold that median, and even then it
//!   only decides what the node explores next — which is how it gets
//!   contradicted.
//! * Calibration: with honest established origins the pooled evidence equals
//!   the evidence of their merged samples; discounts only ever remove
//!   evidence, so the posterior is never tighter than the data warrant.

use crate::aggregate::{
    weighted_median, Inconsistency, InconsistencyKind, OriginEvidence, RobustAggregate,
    RobustConfig,
};
use crate::posterior::Evidence;
use crate::reputation::{ReputationEvent, Standing};
use crate::schema::Depth;
use crate::stats::{DepthStats, DepthTable};
use pool::{leading_pair, pool_depth};

/// What an origin is to the node building its collective view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node itself: an anchor with weight ≥ 1, whatever its reputation.
    SelfNode,
    /// An operator-trusted peer or the parent: an anchor (never a newcomer).
    Anchor,
    /// Anyone else: weight, bonus and newcomer flag from its reputation.
    Peer,
}

fn finite_or(x: f64, or: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        or
    }
}

/// How much say an origin gets: the part of [`OriginEvidence`] that is not
/// its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Say {
    /// Reputation learning weight (0.5 … 2.0; 0 = ignore).
    pub weight: f64,
    /// This node, an operator-trusted peer or the parent: the reference.
    pub anchor: bool,
    /// Discounted until the node's own outcomes confirm it.
    pub newcomer: bool,
    /// Reputation confidence bonus (−0.2 … +0.2).
    pub bonus: f64,
}

/// The say of an origin in `role` with reputation `standing` (see the module
/// docs). Hostile or denied origins get weight 0 in every role but
/// `SelfNode`; the node itself always has weight ≥ 1, no bonus.
pub fn say(role: Role, standing: &Standing) -> Say {
    let weight = finite_or(standing.weight, 0.0).max(0.0);
    let bonus = finite_or(standing.bonus, 0.0).clamp(-0.2, 0.2);
    match role {
        Role::SelfNode => self_say(weight),
        Role::Anchor => Say {
            weight,
            anchor: weight > 0.0,
            newcomer: false,
            bonus,
        },
        Role::Peer => Say {
            weight,
            anchor: false,
            newcomer: standing.newcomer,
            bonus,
        },
    }
}

/// The node's own say: an anchor with weight `max(weight, 1)`.
pub fn self_say(weight: f64) -> Say {
    Say {
        weight: finite_or(weight, 1.0).max(1.0),
        anchor: true,
        newcomer: false,
        bonus: 0.0,
    }
}

/// One origin's input to [`robust_aggregate`].
pub fn origin_evidence<K>(key: K, table: DepthTable, say: Say) -> OriginEvidence<K> {
    OriginEvidence {
        key,
        table,
        weight: finite_or(say.weight, 0.0).max(0.0),
        anchor: say.anchor,
        newcomer: say.newcomer,
        bonus: finite_or(say.bonus, 0.0).clamp(-0.2, 0.2),
    }
}

/// The origins a node charges
/// [`ReputationEvent::InconsistentWithConsensus`] after an aggregation:
/// those contradicted by the anchors' own evidence (each once, sorted).
/// Majority-screen drops cost nothing (see the module docs).
pub fn charged<K: Clone + Ord>(agg: &RobustAggregate<K>) -> Vec<(K, ReputationEvent)> {
    let mut keys: Vec<K> = agg
        .inconsistent
        .iter()
        .filter(|i| i.kind == InconsistencyKind::Anchor)
        .map(|i| i.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| (k, ReputationEvent::InconsistentWithConsensus))
        .collect()
}

/// The seed's confidence bonus applied to a reported confidence:
/// `confidence × (1 + bonus)`, clamped to [0, 1] (Session 162: ±20%).
pub fn apply_bonus(confidence: f64, bonus: f64) -> f64 {
    let c = finite_or(confidence, 0.0);
    let b = finite_or(bonus, 0.0).clamp(-0.2, 0.2);
    (c * (1.0 + b)).clamp(0.0, 1.0)
}

/// Per-origin, per-depth summary used by the estimator.
#[derive(Clone, Copy)]
struct Cell {
    /// Effective sample count: capped (non-anchors) and discounted.
    n: f64,
    /// Real sample count (its precision).
    n_real: f64,
    mean: f64,
    sd: f64,
    success: f64,
}

/// Pooled within-depth sd of a table (None below 3 degrees of freedom).
fn pooled_sd(t: &DepthTable) -> Option<f64> {
    let (mut ss, mut df) = (0.0, 0.0);
    for s in t.0.iter().filter(|s| s.n >= 2) {
        ss += s.var_quality().max(0.0) * (s.n - 1) as f64;
        df += (s.n - 1) as f64;
    }
    (df >= 3.0).then(|| (ss / df).sqrt())
}

/// Robust aggregation of per-origin statistics under the open-mesh policy
/// (see the module docs). Deterministic and independent of input order.
pub fn robust_aggregate<K: Clone + Ord>(
    origins: &[OriginEvidence<K>],
    cfg: &RobustConfig,
) -> RobustAggregate<K> {
    let mut idx: Vec<usize> = (0..origins.len()).collect();
    idx.sort_by(|a, b| origins[*a].key.cmp(&origins[*b].key));
    let origins: Vec<&OriginEvidence<K>> = idx.iter().map(|i| &origins[*i]).collect();
    let m = origins.len();
    let weight: Vec<f64> = origins
        .iter()
        .map(|o| finite_or(o.weight, 0.0).max(0.0))
        .collect();
    let is_anchor: Vec<bool> = origins
        .iter()
        .zip(&weight)
        .map(|(o, w)| o.anchor && *w > 0.0)
        .collect();

    // The anchors' pooled evidence: the reference.
    let mut anchor_table = DepthTable::default();
    for (i, o) in origins.iter().enumerate() {
        if is_anchor[i] {
            anchor_table.merge(&o.table);
        }
    }
    let anchor_sd = pooled_sd(&anchor_table);

    // Noise scale and volume cap per depth.
    let mut sigma = [cfg.default_sd; Depth::COUNT];
    let mut cap = [f64::INFINITY; Depth::COUNT];
    for d in 0..Depth::COUNT {
        let mut sds: Vec<(f64, f64)> = Vec::new();
        let mut ns: Vec<(f64, f64)> = Vec::new();
        for (i, o) in origins.iter().enumerate() {
            let s = &o.table.0[d];
            if s.n == 0 || weight[i] <= 0.0 {
                continue;
            }
            ns.push((s.n as f64, 1.0));
            if s.n >= 3 {
                sds.push((s.var_quality().max(0.0).sqrt(), weight[i]));
            }
        }
        let median_sd = weighted_median(&mut sds).unwrap_or(cfg.default_sd);
        sigma[d] = median_sd.max(anchor_sd.unwrap_or(0.0)).max(cfg.min_sd);
        if let Some(median_n) = weighted_median(&mut ns) {
            cap[d] = (cfg.cap_factor * median_n).max(cfg.cap_floor);
        }
    }
    let capped = |i: usize, s: &DepthStats, d: usize| {
        let n = s.n as f64;
        if is_anchor[i] {
            n
        } else {
            n.min(cap[d])
        }
    };

    // Per-origin consistency threshold: z × (1 + bonus).
    let threshold: Vec<f64> = origins
        .iter()
        .map(|o| cfg.z * (1.0 + finite_or(o.bonus, 0.0).clamp(-0.2, 0.2)))
        .collect();

    // Contradiction and confirmation against the anchors' own evidence.
    let mut excluded = vec![false; m];
    let mut inconsistent: Vec<Inconsistency<K>> = Vec::new();
    let mut confirmed = vec![0.0; m];
    for (i, o) in origins.iter().enumerate() {
        if is_anchor[i] || weight[i] <= 0.0 {
            continue;
        }
        let threshold = threshold[i];
        for (d, (s, a)) in o.table.0.iter().zip(&anchor_table.0).enumerate() {
            if s.n == 0 || a.n == 0 {
                continue;
            }
            let (n, a_n) = (capped(i, s, d), a.n as f64);
            // Tested at its real precision (its count, not its capped say).
            let se = sigma[d] * (1.0 / s.n as f64 + 1.0 / a_n).sqrt();
            let z = (s.avg_quality() - a.avg_quality()) / se;
            if z.abs() > threshold {
                excluded[i] = true;
                inconsistent.push(Inconsistency {
                    key: o.key.clone(),
                    depth: Depth::ALL[d],
                    z,
                    kind: InconsistencyKind::Anchor,
                });
            } else {
                confirmed[i] += n.min(a_n);
            }
        }
    }
    let discount: Vec<f64> = origins
        .iter()
        .enumerate()
        .map(|(i, o)| {
            if is_anchor[i] || !o.newcomer {
                1.0
            } else {
                ((cfg.unconfirmed_samples + confirmed[i]) / cfg.confirm_samples.max(1e-9))
                    .clamp(0.0, 1.0)
            }
        })
        .collect();

    let mut cells: Vec<[Option<Cell>; Depth::COUNT]> = vec![[None; Depth::COUNT]; m];
    for (i, o) in origins.iter().enumerate() {
        if excluded[i] || weight[i] <= 0.0 || discount[i] <= 0.0 {
            continue;
        }
        for (d, s) in o.table.0.iter().enumerate() {
            if s.n == 0 {
                continue;
            }
            cells[i][d] = Some(Cell {
                n: capped(i, s, d) * discount[i],
                n_real: s.n as f64,
                mean: s.avg_quality(),
                sd: s.var_quality().max(0.0).sqrt(),
                success: s.success_rate(),
            });
        }
    }

    // Majority screen per depth (drops a cell, never an origin).
    let mut centre_of = [f64::NAN; Depth::COUNT];
    // Sampling variance of the centre itself (σ² / n of the origin whose
    // mean it is, or of the anchors when they override it).
    let mut centre_var = [f64::INFINITY; Depth::COUNT];
    let mut z_of: Vec<[f64; Depth::COUNT]> = vec![[0.0; Depth::COUNT]; m];
    for d in 0..Depth::COUNT {
        let s2 = sigma[d] * sigma[d];
        let a = &anchor_table.0[d];
        let anchor_mean = (a.n > 0).then(|| a.avg_quality());
        let a_n = a.n as f64;
        let mut screened = vec![false; m];
        let mut found: Vec<(usize, f64)> = Vec::new();
        for _pass in 0..2 {
            let mut votes: Vec<(f64, f64)> = Vec::new();
            let mut vote_n = 0.0;
            for i in 0..m {
                if let (false, Some(c)) = (screened[i], cells[i][d]) {
                    votes.push((c.mean, weight[i] * discount[i]));
                    vote_n += c.n;
                }
            }
            let k_votes = votes.len() as f64;
            let Some(mut centre) = weighted_median(&mut votes) else {
                break;
            };
            // Standard error of a median ≈ 1.2533 × that of the mean.
            let mut se_c2 = 1.2533f64.powi(2) * s2 / f64::max(vote_n, 1.0);
            let centre_n = (0..m)
                .filter_map(|i| cells[i][d].filter(|c| !screened[i] && c.mean == centre))
                .map(|c| c.n)
                .fold(0.0, f64::max);
            let mut c_var = s2 / centre_n.max(1e-9);
            if let Some(am) = anchor_mean {
                if (centre - am).abs() > cfg.z * (s2 / a_n + se_c2).sqrt() {
                    centre = am;
                    se_c2 = s2 / a_n;
                    c_var = se_c2;
                }
            }
            // The centre as a reference for a test at an origin's real
            // precision: a median of few origins is no more precise than its
            // own origin's mean averaged over them.
            let ref_var = se_c2.max(c_var / k_votes.max(1.0));
            found.clear();
            screened = vec![false; m];
            centre_of[d] = centre;
            centre_var[d] = c_var;
            for i in 0..m {
                if is_anchor[i] {
                    continue;
                }
                if let Some(c) = cells[i][d] {
                    // Dropped only beyond noise at its capped say (the
                    // median is a noisy reference with few origins); weighed
                    // (step 6) by its distance at its real precision.
                    let z = (c.mean - centre) / (s2 / c.n + se_c2).sqrt();
                    z_of[i][d] = (c.mean - centre) / (s2 / c.n_real + ref_var).sqrt();
                    if z.abs() > threshold[i] {
                        screened[i] = true;
                        found.push((i, z));
                    }
                }
            }
        }
        for (i, z) in found.drain(..) {
            cells[i][d] = None;
            inconsistent.push(Inconsistency {
                key: origins[i].key.clone(),
                depth: Depth::ALL[d],
                z,
                kind: InconsistencyKind::Majority,
            });
        }
    }

    // Pool the survivors.
    let mut pooled: [Option<(Evidence, f64)>; Depth::COUNT] = [None; Depth::COUNT];
    for (d, p) in pooled.iter_mut().enumerate() {
        let centre = (centre_of[d], centre_var[d]);
        *p = pool_depth(d, &cells, &weight, &z_of, sigma[d], centre, cfg);
    }
    // Step 7: the contested pair — the two leading depths are re-pooled with
    // each peer's say weighed by how far its contrast sits from the others'.
    if let Some((a, b)) = leading_pair(&pooled) {
        let reports: Vec<contrast::PairReport> = (0..m)
            .map(|i| {
                let at = |d: usize| cells[i][d].map_or((0.0, 0.0), |c| (c.mean, c.n_real));
                contrast::PairReport {
                    a: at(a),
                    b: at(b),
                    vote: weight[i] * discount[i],
                    anchor: is_anchor[i],
                }
            })
            .collect();
        let (aa, ab) = (&anchor_table.0[a], &anchor_table.0[b]);
        let (s2a, s2b) = (sigma[a] * sigma[a], sigma[b] * sigma[b]);
        let anchor_c = (aa.n > 0 && ab.n > 0).then(|| {
            (
                aa.avg_quality() - ab.avg_quality(),
                s2a / aa.n as f64 + s2b / ab.n as f64,
            )
        });
        let mult =
            contrast::contested_weights(&reports, (s2a, s2b), anchor_c, cfg.z, cfg.contrast_huber);
        if mult.iter().any(|x| *x < 1.0) {
            let w: Vec<f64> = weight.iter().zip(&mult).map(|(w, k)| w * k).collect();
            for d in [a, b] {
                let centre = (centre_of[d], centre_var[d]);
                pooled[d] = pool_depth(d, &cells, &w, &z_of, sigma[d], centre, cfg);
            }
        }
    }
    let mut evidence = [Evidence::default(); Depth::COUNT];
    let mut success_rate = [0.0; Depth::COUNT];
    let mut total_n = 0.0;
    for (d, p) in pooled.iter().enumerate() {
        if let Some((e, succ)) = p {
            evidence[d] = *e;
            success_rate[d] = *succ;
            total_n += e.n;
        }
    }
    let used = origins
        .iter()
        .enumerate()
        .filter(|(i, _)| cells[*i].iter().any(Option::is_some))
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

#[path = "policy_contrast.rs"]
mod contrast;
#[path = "policy_pool.rs"]
mod pool;

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
