//! Insights (protocol document, "Insight Storage: JSON"): per-depth
//! performance, learned preferences and a list of typed insights, computed
//! from sufficient statistics only (no rescan of patterns).
//!
//! When there is at least one pattern, [`compute`] always emits these seven
//! insight types, in this order (the union of the prototypes' types):
//!
//! | type | claim | `confidence` is |
//! |---|---|---|
//! | `optimal_quality_depth` | depth X has the highest mean quality | P(X is best), the posterior probability ([`crate::posterior`]) |
//! | `optimal_depth` | alias of the above (the prototypes' name) | the same |
//! | `optimal_success_depth` | depth X has the highest success rate | P(X is best) under Beta(1+s, 1+f) posteriors |
//! | `atp_efficiency` | X gives the most quality per ATP among depths that succeed at least half the time | P(X most efficient among those) · P(X's success rate ≥ 0.5) |
//! | `optimal_mode` | mode M has the highest mean quality (mode names case-folded: `Deep` and `deep` are one mode) | P(M is best) over the modes (0 when no per-mode statistics were given) |
//! | `depth_stability` | the best depth's quality sd is ≤ 0.2 ("stable") or > 0.2 ("unstable") | posterior probability of that claim (σ² scaled-inverse-χ², Jeffreys prior; 0 with < 2 samples) |
//! | `system_performance` | the overall mean quality is m | P(true overall mean within ±0.05 of m) |
//!
//! "X is best" picks X among the depths (modes) that have data, as the one
//! with the highest posterior probability of being best; that probability is
//! computed against *all* depths, untried ones keeping the prior, so a claim
//! made after trying one depth carries the doubt that an untried one is
//! better. Ties go to the cheaper depth (or the lexicographically first
//! mode). Everything is deterministic: the same statistics give bit-identical
//! output, and since statistics merge exactly, merging in any order gives the
//! same insights.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::posterior::{norm_cdf, prob_best, Belief, Evidence, Prior};
use crate::schema::{Depth, SchemaError};
use crate::stats::{DepthStats, DepthTable};

/// Version string of the insights JSON document.
pub const INSIGHTS_DOC_VERSION: &str = "1.0";
/// Most insights in one set (bounds broadcasts).
pub const MAX_INSIGHTS: usize = 32;
/// Longest insight text field, in bytes.
pub const MAX_INSIGHT_TEXT: usize = 512;

/// One typed insight, the seed's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    pub insight_type: String,
    pub description: String,
    pub evidence_count: u64,
    /// In [0, 1]. For "depth X is best" types, the posterior probability
    /// that X is best (see [`crate::posterior`]).
    pub confidence: f64,
    pub recommendation: String,
    pub learned_at: f64,
}

/// The seed's `depth_performance` entry, plus mean ATP cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DepthPerformance {
    pub avg_quality: f64,
    pub success_rate: f64,
    pub sample_count: u64,
    /// Mean ATP cost (our addition; absent from the seed's documents, so it
    /// defaults to 0 when reading them).
    #[serde(default)]
    pub avg_atp_cost: f64,
}

impl From<&DepthStats> for DepthPerformance {
    fn from(s: &DepthStats) -> Self {
        DepthPerformance {
            avg_quality: s.avg_quality(),
            success_rate: s.success_rate(),
            sample_count: s.n,
            avg_atp_cost: s.avg_atp_cost(),
        }
    }
}

/// The seed's `learned_preferences`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedPreferences {
    pub optimal_quality_depth: Option<Depth>,
    pub optimal_success_depth: Option<Depth>,
    pub optimal_atp_depth: Option<Depth>,
}

/// What a node believes: the body of insight broadcasts and of the JSON file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InsightSet {
    pub depth_performance: BTreeMap<Depth, DepthPerformance>,
    pub learned_preferences: LearnedPreferences,
    pub insights: Vec<Insight>,
}

impl InsightSet {
    /// Bounds and ranges of a received set.
    pub fn validate(&self) -> Result<(), SchemaError> {
        if self.insights.len() > MAX_INSIGHTS {
            return Err(SchemaError::new(
                "insights",
                format!(
                    "{} entries; the limit is {MAX_INSIGHTS}",
                    self.insights.len()
                ),
            ));
        }
        for (d, p) in &self.depth_performance {
            let unit = |v: f64| (0.0..=1.0).contains(&v);
            if !unit(p.avg_quality) || !unit(p.success_rate) || !p.avg_atp_cost.is_finite() {
                return Err(SchemaError::new(
                    "depth_performance",
                    format!("{d}: averages must be finite, quality and success rate in [0, 1]"),
                ));
            }
        }
        for i in &self.insights {
            for (f, v) in [
                ("insight_type", &i.insight_type),
                ("description", &i.description),
                ("recommendation", &i.recommendation),
            ] {
                if v.len() > MAX_INSIGHT_TEXT {
                    return Err(SchemaError::new(f, "is too long"));
                }
            }
            if !(0.0..=1.0).contains(&i.confidence) {
                return Err(SchemaError::new("confidence", "must be in [0, 1]"));
            }
            if !i.learned_at.is_finite() {
                return Err(SchemaError::new("learned_at", "must be finite"));
            }
        }
        Ok(())
    }

    /// The insight of a type, if present.
    pub fn get(&self, insight_type: &str) -> Option<&Insight> {
        self.insights
            .iter()
            .find(|i| i.insight_type == insight_type)
    }
}

/// The insights JSON document, exactly the seed's top-level schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightsDocument {
    pub version: String,
    pub node_id: String,
    pub platform: String,
    pub last_updated: f64,
    pub pattern_count: u64,
    pub insights: Vec<Insight>,
    pub depth_performance: BTreeMap<Depth, DepthPerformance>,
    pub learned_preferences: LearnedPreferences,
}

impl InsightsDocument {
    pub fn new(
        node_id: &str,
        platform: &str,
        pattern_count: u64,
        set: InsightSet,
        now: f64,
    ) -> Self {
        InsightsDocument {
            version: INSIGHTS_DOC_VERSION.into(),
            node_id: node_id.into(),
            platform: platform.into(),
            last_updated: now,
            pattern_count,
            insights: set.insights,
            depth_performance: set.depth_performance,
            learned_preferences: set.learned_preferences,
        }
    }
}

/// Insight type names (the union of the prototypes' types).
pub mod types {
    pub const OPTIMAL_QUALITY_DEPTH: &str = "optimal_quality_depth";
    pub const OPTIMAL_DEPTH: &str = "optimal_depth";
    pub const OPTIMAL_SUCCESS_DEPTH: &str = "optimal_success_depth";
    pub const ATP_EFFICIENCY: &str = "atp_efficiency";
    pub const OPTIMAL_MODE: &str = "optimal_mode";
    pub const DEPTH_STABILITY: &str = "depth_stability";
    pub const SYSTEM_PERFORMANCE: &str = "system_performance";
}

/// Standard deviation above which a depth's quality counts as unstable.
pub const STABILITY_SD_THRESHOLD: f64 = 0.2;
/// Half-width of the `system_performance` confidence interval.
pub const SYSTEM_PERFORMANCE_TOLERANCE: f64 = 0.05;
/// Most modes considered for `optimal_mode` (those with the most samples).
pub const MAX_MODES_CONSIDERED: usize = 64;

/// Compute insights from per-depth statistics (and, when known, per-mode
/// statistics for `optimal_mode`). Deterministic for the same input. See the
/// module docs for each type's claim and confidence.
pub fn compute(
    table: &DepthTable,
    modes: Option<&BTreeMap<String, DepthStats>>,
    prior: &Prior,
    now: f64,
) -> InsightSet {
    let depth_performance: BTreeMap<Depth, DepthPerformance> = table
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(d, s)| (d, DepthPerformance::from(s)))
        .collect();
    let total = table.total();
    let mut set = InsightSet {
        depth_performance,
        ..Default::default()
    };
    if total == 0 {
        return set;
    }
    let has_data: Vec<bool> = table.0.iter().map(|s| !s.is_empty()).collect();

    // Quality: P(best) over all depths, choice among depths with data.
    let p_quality = prob_best(&prior.beliefs(table));
    let best = argmax_where(&p_quality, &has_data).unwrap_or(0);
    let best_depth = Depth::ALL[best];
    let best_stats = table.0[best];

    // Success: Beta(1+s, 1+f) posteriors (Normal approximation).
    let p_success = prob_best(&success_beliefs(table));
    let success = argmax_where(&p_success, &has_data).unwrap_or(best);
    let success_depth = Depth::ALL[success];

    // ATP efficiency among depths with data that succeed at least half the time.
    let eligible: Vec<bool> = table
        .0
        .iter()
        .map(|s| !s.is_empty() && s.success_rate() >= 0.5)
        .collect();
    let atp = atp_efficiency(table, prior, &eligible);

    set.learned_preferences = LearnedPreferences {
        optimal_quality_depth: Some(best_depth),
        optimal_success_depth: Some(success_depth),
        optimal_atp_depth: atp.map(|(d, _)| d),
    };
    let mk = |t: &str, desc: String, n: u64, conf: f64, rec: String| Insight {
        insight_type: t.into(),
        description: desc,
        evidence_count: n,
        confidence: if conf.is_finite() {
            conf.clamp(0.0, 1.0)
        } else {
            0.0
        },
        recommendation: rec,
        learned_at: now,
    };

    let quality_desc = format!(
        "{best_depth} depth best for quality ({:.3} avg over {} samples)",
        best_stats.avg_quality(),
        best_stats.n
    );
    let quality_rec = format!("use {best_depth} when quality matters most");
    for t in [types::OPTIMAL_QUALITY_DEPTH, types::OPTIMAL_DEPTH] {
        set.insights.push(mk(
            t,
            quality_desc.clone(),
            total,
            p_quality[best],
            quality_rec.clone(),
        ));
    }

    let s = table.get(success_depth);
    set.insights.push(mk(
        types::OPTIMAL_SUCCESS_DEPTH,
        format!(
            "{success_depth} depth has the highest success rate ({:.3} over {} samples)",
            s.success_rate(),
            s.n
        ),
        total,
        p_success[success],
        format!("use {success_depth} when success matters most"),
    ));

    match atp {
        Some((d, conf)) => {
            let s = table.get(d);
            set.insights.push(mk(
                types::ATP_EFFICIENCY,
                format!(
                    "{d} depth gives the most quality per ATP among depths that usually succeed ({:.3} quality for {:.2} ATP)",
                    s.avg_quality(),
                    s.avg_atp_cost()
                ),
                eligible_count(table, &eligible),
                conf,
                format!("use {d} when ATP is scarce"),
            ));
        }
        None => set.insights.push(mk(
            types::ATP_EFFICIENCY,
            "no depth succeeds at least half the time yet".into(),
            total,
            0.0,
            "keep exploring before economising on ATP".into(),
        )),
    }

    set.insights.push(optimal_mode(modes, prior, &mk));

    // Stability of the best depth.
    let sd = best_stats.var_quality().sqrt();
    let p_stable = prob_sd_at_most(&best_stats, STABILITY_SD_THRESHOLD);
    let stable = sd <= STABILITY_SD_THRESHOLD;
    set.insights.push(mk(
        types::DEPTH_STABILITY,
        format!(
            "{best_depth} depth quality varies with standard deviation {sd:.3} ({})",
            if stable { "stable" } else { "unstable" }
        ),
        best_stats.n,
        match p_stable {
            Some(p) if stable => p,
            Some(p) => 1.0 - p,
            None => 0.0,
        },
        if stable {
            format!("{best_depth} is stable")
        } else {
            format!("{best_depth} is unstable: keep exploring")
        },
    ));

    let mut all = DepthStats::default();
    for s in table.0.iter() {
        all.merge(s);
    }
    let overall = prior.belief(&Evidence::from_stats(&all));
    let within = 2.0 * norm_cdf(SYSTEM_PERFORMANCE_TOLERANCE / overall.sd) - 1.0;
    set.insights.push(mk(
        types::SYSTEM_PERFORMANCE,
        format!(
            "overall: {:.3} average quality, {:.3} success rate over {} patterns",
            all.avg_quality(),
            all.success_rate(),
            all.n
        ),
        all.n,
        within,
        "keep recording outcomes".into(),
    ));
    set
}

/// Index of the largest value among the allowed ones (first on ties).
fn argmax_where(v: &[f64], allowed: &[bool]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, (&x, &ok)) in v.iter().zip(allowed).enumerate() {
        if ok && best.is_none_or(|b| x > v[b]) {
            best = Some(i);
        }
    }
    best
}

fn beta_belief(successes: u64, n: u64) -> Belief {
    let a = 1.0 + successes as f64;
    let b = 1.0 + n.saturating_sub(successes) as f64;
    Belief {
        mean: a / (a + b),
        sd: (a * b / ((a + b).powi(2) * (a + b + 1.0))).sqrt(),
    }
}

/// Beta(1+s, 1+f) posterior of each depth's success rate, as Normals.
fn success_beliefs(table: &DepthTable) -> Vec<Belief> {
    table
        .0
        .iter()
        .map(|s| beta_belief(s.successes, s.n))
        .collect()
}

/// The most quality-per-ATP depth among `eligible`, with its confidence:
/// P(most efficient among the eligible), treating each depth's mean cost as
/// known (quality posterior scaled by 1/cost), times P(success rate ≥ 0.5).
fn atp_efficiency(table: &DepthTable, prior: &Prior, eligible: &[bool]) -> Option<(Depth, f64)> {
    let idx: Vec<usize> = (0..Depth::COUNT).filter(|&i| eligible[i]).collect();
    if idx.is_empty() {
        return None;
    }
    let beliefs: Vec<Belief> = idx
        .iter()
        .map(|&i| {
            let s = &table.0[i];
            let b = prior.belief(&Evidence::from_stats(s));
            let cost = s.avg_atp_cost().max(1e-6);
            Belief {
                mean: b.mean / cost,
                sd: (b.sd / cost).max(1e-12),
            }
        })
        .collect();
    let p = prob_best(&beliefs);
    let all = vec![true; p.len()];
    let k = argmax_where(&p, &all)?;
    let i = idx[k];
    let s = &table.0[i];
    let sb = beta_belief(s.successes, s.n);
    let p_eligible = 1.0 - norm_cdf((0.5 - sb.mean) / sb.sd);
    Some((Depth::ALL[i], p[k] * p_eligible))
}

fn eligible_count(table: &DepthTable, eligible: &[bool]) -> u64 {
    table
        .0
        .iter()
        .zip(eligible)
        .filter(|(_, e)| **e)
        .map(|(s, _)| s.n)
        .sum()
}

fn optimal_mode(
    modes: Option<&BTreeMap<String, DepthStats>>,
    prior: &Prior,
    mk: &dyn Fn(&str, String, u64, f64, String) -> Insight,
) -> Insight {
    // Mode names are case-folded: "Deep", "deep" and "DEEP" are one mode.
    let mut folded: BTreeMap<String, DepthStats> = BTreeMap::new();
    for (name, s) in modes.into_iter().flatten() {
        if !s.is_empty() {
            folded.entry(name.to_lowercase()).or_default().merge(s);
        }
    }
    let mut known: Vec<(&String, &DepthStats)> = folded.iter().collect();
    if known.is_empty() {
        return mk(
            types::OPTIMAL_MODE,
            "no per-mode statistics yet".into(),
            0,
            0.0,
            "record the mode with each outcome".into(),
        );
    }
    // Bound the work: keep the modes with the most samples (name breaks ties),
    // then restore name order so ties in P(best) go to the first name.
    known.sort_by(|a, b| b.1.n.cmp(&a.1.n).then(a.0.cmp(b.0)));
    known.truncate(MAX_MODES_CONSIDERED);
    known.sort_by(|a, b| a.0.cmp(b.0));
    let beliefs: Vec<Belief> = known
        .iter()
        .map(|(_, s)| prior.belief(&Evidence::from_stats(s)))
        .collect();
    let p = prob_best(&beliefs);
    let all = vec![true; p.len()];
    let k = argmax_where(&p, &all).unwrap_or(0);
    let (mode, s) = known[k];
    let evidence: u64 = known.iter().map(|(_, s)| s.n).sum();
    mk(
        types::OPTIMAL_MODE,
        format!(
            "{mode} mode reaches the best average quality ({:.3} over {} samples)",
            s.avg_quality(),
            s.n
        ),
        evidence,
        p[k],
        format!("prefer {mode} mode"),
    )
}

/// Posterior probability that the quality standard deviation is at most
/// `tau`, given the sample variance s² of n ≥ 2 observations: with a Jeffreys
/// prior, (n−1)s²/σ² ~ χ²(n−1), so P(σ ≤ τ) = 1 − F_χ²(n−1)((n−1)s²/τ²).
/// The χ² CDF uses the Wilson–Hilferty normal approximation. `None` with
/// fewer than two samples.
fn prob_sd_at_most(s: &DepthStats, tau: f64) -> Option<f64> {
    if s.n < 2 {
        return None;
    }
    let k = (s.n - 1) as f64;
    let x = k * s.var_quality() / (tau * tau);
    Some(1.0 - chi2_cdf(x, k))
}

/// χ² CDF with `k` degrees of freedom, Wilson–Hilferty approximation.
fn chi2_cdf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let v = 2.0 / (9.0 * k);
    norm_cdf(((x / k).cbrt() - (1.0 - v)) / v.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::sample;

    const NOW: f64 = 1_800_000_000.0;

    fn table(rows: &[(Depth, &[f64], f64)]) -> DepthTable {
        let mut t = DepthTable::default();
        for (d, qs, cost) in rows {
            for &q in *qs {
                t.get_mut(*d).add(q, q >= 0.5, *cost);
            }
        }
        t
    }

    fn conf(set: &InsightSet, ty: &str) -> f64 {
        set.get(ty).map(|i| i.confidence).unwrap_or(f64::NAN)
    }

    const ALL_TYPES: [&str; 7] = [
        types::OPTIMAL_QUALITY_DEPTH,
        types::OPTIMAL_DEPTH,
        types::OPTIMAL_SUCCESS_DEPTH,
        types::ATP_EFFICIENCY,
        types::OPTIMAL_MODE,
        types::DEPTH_STABILITY,
        types::SYSTEM_PERFORMANCE,
    ];

    #[test]
    fn empty_table_gives_no_insights() {
        let set = compute(&DepthTable::default(), None, &Prior::default(), NOW);
        assert!(set.insights.is_empty());
        assert!(set.depth_performance.is_empty());
        assert_eq!(set.learned_preferences, LearnedPreferences::default());
    }

    #[test]
    fn every_type_is_always_present_in_order() {
        let one = DepthTable::from_patterns([&sample("n", Depth::Light, 0.3)]);
        for t in [one, table(&[(Depth::Deep, &[0.7, 0.8, 0.75], 30.0)])] {
            let set = compute(&t, None, &Prior::default(), NOW);
            let got: Vec<&str> = set
                .insights
                .iter()
                .map(|i| i.insight_type.as_str())
                .collect();
            assert_eq!(got, ALL_TYPES);
            set.validate().unwrap();
            for i in &set.insights {
                assert!((0.0..=1.0).contains(&i.confidence), "{i:?}");
                assert_eq!(i.learned_at, NOW);
            }
        }
    }

    #[test]
    fn optimal_depth_alias_matches() {
        let t = table(&[
            (Depth::Standard, &[0.5, 0.55, 0.6], 10.0),
            (Depth::Deep, &[0.7, 0.72, 0.74], 20.0),
        ]);
        let set = compute(&t, None, &Prior::default(), NOW);
        let a = set.get(types::OPTIMAL_QUALITY_DEPTH).unwrap();
        let b = set.get(types::OPTIMAL_DEPTH).unwrap();
        assert_eq!(
            (&a.description, a.confidence),
            (&b.description, b.confidence)
        );
        assert!(a.description.starts_with("deep depth best for quality"));
        assert_eq!(
            set.learned_preferences.optimal_quality_depth,
            Some(Depth::Deep)
        );
    }

    #[test]
    fn quality_confidence_is_prob_best_and_grows_with_evidence() {
        let prior = Prior::default();
        let mut last = 0.0;
        for n in [2usize, 10, 50, 200] {
            let deep: Vec<f64> = (0..n).map(|i| 0.7 + (i % 5) as f64 * 0.01).collect();
            let std: Vec<f64> = (0..n).map(|i| 0.6 + (i % 5) as f64 * 0.01).collect();
            let low: Vec<f64> = (0..n).map(|i| 0.3 + (i % 5) as f64 * 0.01).collect();
            let t = table(&[
                (Depth::Deep, &deep, 20.0),
                (Depth::Standard, &std, 10.0),
                (Depth::Minimal, &low, 1.0),
                (Depth::Light, &low, 2.0),
                (Depth::Thorough, &std, 40.0),
            ]);
            let set = compute(&t, None, &prior, NOW);
            let p = prob_best(&prior.beliefs(&t));
            assert_eq!(
                conf(&set, types::OPTIMAL_QUALITY_DEPTH),
                p[Depth::Deep.index()]
            );
            let c = conf(&set, types::OPTIMAL_QUALITY_DEPTH);
            assert!(c > last, "n={n}: {c} <= {last}");
            last = c;
        }
        assert!(last > 0.95);
    }

    #[test]
    fn untried_depths_are_never_chosen_but_keep_doubt() {
        // Only minimal was tried, and it is poor: the claim is about minimal,
        // and its confidence is low because an untried depth may be better.
        let t = table(&[(Depth::Minimal, &[0.2; 50], 1.0)]);
        let set = compute(&t, None, &Prior::default(), NOW);
        assert_eq!(
            set.learned_preferences.optimal_quality_depth,
            Some(Depth::Minimal)
        );
        assert_eq!(
            set.learned_preferences.optimal_success_depth,
            Some(Depth::Minimal)
        );
        assert!(conf(&set, types::OPTIMAL_QUALITY_DEPTH) < 0.1);
        assert!(conf(&set, types::OPTIMAL_SUCCESS_DEPTH) < 0.2);
    }

    #[test]
    fn success_depth_uses_posterior_not_raw_rate() {
        // One lucky success does not beat 45/50.
        let mut t = DepthTable::default();
        t.get_mut(Depth::Light).add(0.9, true, 2.0);
        for i in 0..50 {
            t.get_mut(Depth::Deep).add(0.6, i < 45, 20.0);
        }
        let set = compute(&t, None, &Prior::default(), NOW);
        assert_eq!(
            set.learned_preferences.optimal_success_depth,
            Some(Depth::Deep)
        );
        let c = conf(&set, types::OPTIMAL_SUCCESS_DEPTH);
        assert!(c > 0.3 && c < 0.95, "{c}");
    }

    #[test]
    fn atp_efficiency_prefers_cheap_depth_that_succeeds() {
        let t = table(&[
            (Depth::Minimal, &[0.2; 40], 1.0), // cheap but fails
            (
                Depth::Standard,
                &[0.6, 0.62, 0.58, 0.6, 0.61, 0.59, 0.6, 0.6],
                10.0,
            ),
            (Depth::Thorough, &[0.7; 8], 60.0),
        ]);
        let set = compute(&t, None, &Prior::default(), NOW);
        assert_eq!(
            set.learned_preferences.optimal_atp_depth,
            Some(Depth::Standard)
        );
        let c = conf(&set, types::ATP_EFFICIENCY);
        assert!(c > 0.8, "{c}");
        // Nothing succeeds: no atp depth, zero confidence, still listed.
        let t = table(&[(Depth::Minimal, &[0.2; 10], 1.0)]);
        let set = compute(&t, None, &Prior::default(), NOW);
        assert_eq!(set.learned_preferences.optimal_atp_depth, None);
        assert_eq!(conf(&set, types::ATP_EFFICIENCY), 0.0);
    }

    #[test]
    fn optimal_mode_confidence() {
        let mut modes = BTreeMap::new();
        let mut a = DepthStats::default();
        let mut b = DepthStats::default();
        for i in 0..100 {
            a.add(0.8 + (i % 3) as f64 * 0.01, true, 1.0);
            b.add(0.5 + (i % 3) as f64 * 0.01, true, 1.0);
        }
        modes.insert("verifying".to_string(), a);
        modes.insert("exploring".to_string(), b);
        let t = table(&[(Depth::Deep, &[0.7; 5], 20.0)]);
        let set = compute(&t, Some(&modes), &Prior::default(), NOW);
        let m = set.get(types::OPTIMAL_MODE).unwrap();
        assert!(m.description.starts_with("verifying"));
        assert!(m.confidence > 0.99);
        assert_eq!(m.evidence_count, 200);
        // Equal modes: the first name wins, confidence one half.
        modes.insert("verifying".to_string(), b);
        let set = compute(&t, Some(&modes), &Prior::default(), NOW);
        let m = set.get(types::OPTIMAL_MODE).unwrap();
        assert!(m.description.starts_with("exploring"));
        assert!((m.confidence - 0.5).abs() < 1e-6);
        // No per-mode statistics: listed with confidence 0.
        let set = compute(&t, None, &Prior::default(), NOW);
        assert_eq!(conf(&set, types::OPTIMAL_MODE), 0.0);
    }

    #[test]
    fn mode_names_are_case_folded() {
        let mut good = DepthStats::default();
        let mut bad = DepthStats::default();
        for i in 0..30 {
            good.add(0.8 + (i % 3) as f64 * 0.01, true, 1.0);
            bad.add(0.4 + (i % 3) as f64 * 0.01, false, 1.0);
        }
        let mut modes = BTreeMap::new();
        modes.insert("Verifying".to_string(), good);
        modes.insert("VERIFYING".to_string(), good);
        modes.insert("verifying".to_string(), good);
        modes.insert("exploring".to_string(), bad);
        let t = table(&[(Depth::Deep, &[0.7; 5], 20.0)]);
        let set = compute(&t, Some(&modes), &Prior::default(), NOW);
        let m = set.get(types::OPTIMAL_MODE).unwrap();
        assert!(
            m.description.starts_with("verifying mode"),
            "{}",
            m.description
        );
        assert!(
            m.description.contains("over 90 samples"),
            "{}",
            m.description
        );
        assert_eq!(m.recommendation, "prefer verifying mode");
        assert_eq!(m.evidence_count, 120);
    }

    #[test]
    fn stability_confidence_follows_the_evidence() {
        let stable: Vec<f64> = (0..100).map(|i| 0.7 + (i % 5) as f64 * 0.01).collect();
        let set = compute(
            &table(&[(Depth::Deep, &stable, 20.0)]),
            None,
            &Prior::default(),
            NOW,
        );
        let s = set.get(types::DEPTH_STABILITY).unwrap();
        assert_eq!(s.recommendation, "deep is stable");
        assert!(s.confidence > 0.99);
        let wild: Vec<f64> = (0..100)
            .map(|i| if i % 2 == 0 { 0.05 } else { 0.95 })
            .collect();
        let set = compute(
            &table(&[(Depth::Deep, &wild, 20.0)]),
            None,
            &Prior::default(),
            NOW,
        );
        let s = set.get(types::DEPTH_STABILITY).unwrap();
        assert!(s.recommendation.contains("unstable"));
        assert!(s.confidence > 0.99);
        // Few samples: unsure either way.
        let set = compute(
            &table(&[(Depth::Deep, &[0.5, 0.8], 20.0)]),
            None,
            &Prior::default(),
            NOW,
        );
        let c = conf(&set, types::DEPTH_STABILITY);
        assert!(c < 0.9, "{c}");
        let set = compute(
            &table(&[(Depth::Deep, &[0.5], 20.0)]),
            None,
            &Prior::default(),
            NOW,
        );
        assert_eq!(conf(&set, types::DEPTH_STABILITY), 0.0);
    }

    #[test]
    fn system_performance_confidence_is_interval_probability() {
        let few = compute(
            &table(&[(Depth::Deep, &[0.4, 0.6], 1.0)]),
            None,
            &Prior::default(),
            NOW,
        );
        let many_q: Vec<f64> = (0..1000).map(|i| 0.4 + (i % 3) as f64 * 0.1).collect();
        let many = compute(
            &table(&[(Depth::Deep, &many_q, 1.0)]),
            None,
            &Prior::default(),
            NOW,
        );
        let (a, b) = (
            conf(&few, types::SYSTEM_PERFORMANCE),
            conf(&many, types::SYSTEM_PERFORMANCE),
        );
        assert!(a < 0.5, "{a}");
        assert!(b > 0.999, "{b}");
    }

    #[test]
    fn chi2_approximation_is_close() {
        // Reference values: F_χ²(k)(k) (the median is slightly below the mean).
        for (x, k, want) in [
            (1.0, 1.0, 0.6827),
            (10.0, 10.0, 0.5595),
            (100.0, 100.0, 0.5188),
        ] {
            assert!(
                (chi2_cdf(x, k) - want).abs() < 0.02,
                "k={k}: {}",
                chi2_cdf(x, k)
            );
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let ps: Vec<_> = (0..60)
            .map(|i| sample("n", Depth::ALL[i % 5], (i as f64 * 0.37) % 1.0))
            .collect();
        let whole = DepthTable::from_patterns(&ps);
        let mut merged = DepthTable::from_patterns(&ps[30..]);
        merged.merge(&DepthTable::from_patterns(&ps[..30]));
        let a = compute(&whole, None, &Prior::default(), NOW);
        let b = compute(&merged, None, &Prior::default(), NOW);
        assert_eq!(a, b);
    }
}
