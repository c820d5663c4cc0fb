//! Depth-selection strategies behind one trait.
//!
//! A strategy looks at a [`LearningView`] — the per-depth evidence a node
//! holds (its own table, or the collective evidence after
//! [`crate::aggregate`]), the number of patterns behind it and the prior —
//! plus the node's current ATP, and returns a [`Choice`]. Randomness comes
//! only from the caller's RNG, so a seeded caller gets reproducible choices.
//!
//! * [`Legion`] (Legion Session 160): once the view holds ≥ 5 patterns, the
//!   learned depth (highest average quality) with probability 0.7, otherwise
//!   the deepest depth the ATP affords.
//! * [`Thor`] (Thor Session 181): when the learning confidence
//!   `min(n/20, 1)` exceeds 0.5, the depth with the best score
//!   `0.7·avg_quality + 0.3·success_rate` among depths with ≥ 3 samples;
//!   otherwise explore (the least-sampled affordable depth until each has 3
//!   samples) and then the deepest affordable depth.
//! * [`Posterior`]: top-two Thompson sampling on the Normal posterior of
//!   [`crate::posterior`] — it spends its pulls where they resolve which depth
//!   is best, and keeps exploring a depth exactly as long as it might be best.
//!
//! **Affordability** (all strategies): a depth is affordable when the ATP is
//! at least its threshold — minimal 0, light 50, standard 75, deep 100,
//! thorough 125. No strategy returns an unaffordable depth; the prototypes'
//! "learned depth" is followed only when affordable (otherwise they fall back
//! to their ATP-based choice). The per-depth ATP *costs* 4/9/20/35/60
//! ([`ATP_COST`]) are what a pattern records as `atp_before − atp_after`.

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::posterior::{norm_cdf, prob_best, Belief, Evidence, Prior};
use crate::schema::Depth;
use crate::stats::DepthTable;

/// ATP needed to choose each depth (index = [`Depth::index`]).
pub const AFFORD_THRESHOLD: [f64; Depth::COUNT] = [0.0, 50.0, 75.0, 100.0, 125.0];
/// ATP spent by each depth (Thor's costs).
pub const ATP_COST: [f64; Depth::COUNT] = [4.0, 9.0, 20.0, 35.0, 60.0];

/// Whether `atp` affords `depth`. Non-finite ATP affords only `minimal`.
pub fn affordable(depth: Depth, atp: f64) -> bool {
    let t = AFFORD_THRESHOLD[depth.index()];
    t == 0.0 || (atp.is_finite() && atp >= t)
}

/// The deepest depth `atp` affords (at least `minimal`).
pub fn deepest_affordable(atp: f64) -> Depth {
    Depth::ALL
        .iter()
        .rev()
        .copied()
        .find(|d| affordable(*d, atp))
        .unwrap_or(Depth::Minimal)
}

/// The evidence a strategy decides from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LearningView {
    /// Per-depth quality evidence (index = [`Depth::index`]).
    pub evidence: [Evidence; Depth::COUNT],
    /// Per-depth success rate (0 where there is no evidence).
    pub success_rate: [f64; Depth::COUNT],
    /// Number of patterns behind the view (own, or collective).
    pub pattern_count: u64,
    pub prior: Prior,
}

impl LearningView {
    /// A view of one node's own statistics.
    pub fn from_table(table: &DepthTable, prior: Prior) -> LearningView {
        let mut evidence = [Evidence::default(); Depth::COUNT];
        let mut success_rate = [0.0; Depth::COUNT];
        for (i, s) in table.0.iter().enumerate() {
            evidence[i] = Evidence::from_stats(s);
            success_rate[i] = s.success_rate();
        }
        LearningView {
            evidence,
            success_rate,
            pattern_count: table.total(),
            prior,
        }
    }

    /// A view of aggregated evidence (e.g. [`crate::aggregate`] output).
    pub fn from_evidence(
        evidence: [Evidence; Depth::COUNT],
        success_rate: [f64; Depth::COUNT],
        pattern_count: u64,
        prior: Prior,
    ) -> LearningView {
        LearningView {
            evidence,
            success_rate,
            pattern_count,
            prior,
        }
    }

    fn n(&self, d: Depth) -> f64 {
        let n = self.evidence[d.index()].n;
        if n.is_finite() {
            n.max(0.0)
        } else {
            0.0
        }
    }

    fn mean(&self, d: Depth) -> f64 {
        let m = self.evidence[d.index()].mean;
        if m.is_finite() {
            m
        } else {
            0.0
        }
    }

    fn success(&self, d: Depth) -> f64 {
        let s = self.success_rate[d.index()];
        if s.is_finite() {
            s
        } else {
            0.0
        }
    }

    /// Posterior beliefs for every depth.
    pub fn beliefs(&self) -> [Belief; Depth::COUNT] {
        let mut b = [Belief { mean: 0.0, sd: 1.0 }; Depth::COUNT];
        for (i, e) in self.evidence.iter().enumerate() {
            b[i] = self.prior.belief(e);
        }
        b
    }

    /// The affordable depth with the highest average quality among depths
    /// with evidence (ties to the cheaper depth).
    fn best_avg_quality(&self, atp: f64) -> Option<Depth> {
        argmax_by(atp, |d| (self.n(d) > 0.0).then(|| self.mean(d)))
    }
}

/// The argmax of `score` over affordable depths where it is `Some`; ties go
/// to the cheaper depth.
fn argmax_by(atp: f64, score: impl Fn(Depth) -> Option<f64>) -> Option<Depth> {
    let mut best: Option<(Depth, f64)> = None;
    for d in Depth::ALL {
        if !affordable(d, atp) {
            continue;
        }
        if let Some(s) = score(d) {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((d, s));
            }
        }
    }
    best.map(|(d, _)| d)
}

/// What a strategy chose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub depth: Depth,
    /// True when the choice follows what the evidence says is best (as
    /// opposed to an ATP-based or exploratory choice).
    pub followed_learning: bool,
    /// The strategy's own confidence in its learned depth, in [0, 1].
    pub confidence: f64,
}

/// A depth-selection strategy.
pub trait DepthStrategy: Send + Sync {
    fn name(&self) -> &'static str;
    fn choose(&self, view: &LearningView, atp: f64, rng: &mut dyn RngCore) -> Choice;
}

/// Legion Session 160: 70% learned depth once ≥ 5 patterns, else ATP-based.
#[derive(Debug, Clone, Copy)]
pub struct Legion {
    pub follow_probability: f64,
    pub min_patterns: u64,
}

impl Default for Legion {
    fn default() -> Self {
        Legion {
            follow_probability: 0.7,
            min_patterns: 5,
        }
    }
}

impl DepthStrategy for Legion {
    fn name(&self) -> &'static str {
        "legion"
    }

    fn choose(&self, view: &LearningView, atp: f64, rng: &mut dyn RngCore) -> Choice {
        // The prototype's confidence: min(n/10, 1).
        let confidence = (view.pattern_count as f64 / 10.0).min(1.0);
        if view.pattern_count >= self.min_patterns && rng.gen::<f64>() < self.follow_probability {
            if let Some(d) = view.best_avg_quality(atp) {
                return Choice {
                    depth: d,
                    followed_learning: true,
                    confidence,
                };
            }
        }
        Choice {
            depth: deepest_affordable(atp),
            followed_learning: false,
            confidence,
        }
    }
}

/// Thor Session 181: learned depth when `min(n/20, 1) > 0.5`.
#[derive(Debug, Clone, Copy)]
pub struct Thor {
    pub confidence_threshold: f64,
    pub min_samples: f64,
}

impl Default for Thor {
    fn default() -> Self {
        Thor {
            confidence_threshold: 0.5,
            min_samples: 3.0,
        }
    }
}

impl DepthStrategy for Thor {
    fn name(&self) -> &'static str {
        "thor"
    }

    fn choose(&self, view: &LearningView, atp: f64, _rng: &mut dyn RngCore) -> Choice {
        let confidence = (view.pattern_count as f64 / 20.0).min(1.0);
        if confidence > self.confidence_threshold {
            let scored = argmax_by(atp, |d| {
                (view.n(d) >= self.min_samples).then(|| 0.7 * view.mean(d) + 0.3 * view.success(d))
            });
            if let Some(d) = scored {
                return Choice {
                    depth: d,
                    followed_learning: true,
                    confidence,
                };
            }
        }
        // Exploration: the least-sampled affordable depth until each has
        // `min_samples`, then the deepest affordable one.
        let under: Option<Depth> = Depth::ALL
            .iter()
            .copied()
            .filter(|d| affordable(*d, atp) && view.n(*d) < self.min_samples)
            .fold(None, |acc: Option<Depth>, d| match acc {
                Some(a) if view.n(a) <= view.n(d) => Some(a),
                _ => Some(d),
            });
        Choice {
            depth: under.unwrap_or_else(|| deepest_affordable(atp)),
            followed_learning: false,
            confidence,
        }
    }
}

/// Top-two Thompson sampling on the posterior (Russo 2016).
#[derive(Debug, Clone, Copy)]
pub struct Posterior {
    /// Probability of playing the Thompson leader (β); otherwise a
    /// challenger — the leader of a fresh sample that differs. β = 1 is plain
    /// Thompson sampling.
    pub leader_probability: f64,
    /// Compute `confidence` as the exact P(best) (tens of µs). When false
    /// (simulations), the pairwise P(chosen beats the runner-up) is used.
    pub exact_confidence: bool,
}

impl Default for Posterior {
    fn default() -> Self {
        Posterior {
            leader_probability: 0.5,
            exact_confidence: true,
        }
    }
}

/// One standard normal draw (Box–Muller; the caller's RNG).
fn std_normal(rng: &mut dyn RngCore) -> f64 {
    let u1: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn thompson_leader(beliefs: &[Belief; Depth::COUNT], atp: f64, rng: &mut dyn RngCore) -> Depth {
    let mut best = (Depth::Minimal, f64::NEG_INFINITY);
    for d in Depth::ALL {
        if !affordable(d, atp) {
            continue;
        }
        let b = beliefs[d.index()];
        let theta = b.mean + b.sd * std_normal(rng);
        if theta > best.1 {
            best = (d, theta);
        }
    }
    best.0
}

impl DepthStrategy for Posterior {
    fn name(&self) -> &'static str {
        "posterior"
    }

    fn choose(&self, view: &LearningView, atp: f64, rng: &mut dyn RngCore) -> Choice {
        let beliefs = view.beliefs();
        let options: Vec<Depth> = Depth::ALL
            .iter()
            .copied()
            .filter(|d| affordable(*d, atp))
            .collect();
        // The depth the posterior currently believes best (highest mean).
        let believed_best =
            argmax_by(atp, |d| Some(beliefs[d.index()].mean)).unwrap_or(Depth::Minimal);
        let leader = thompson_leader(&beliefs, atp, rng);
        let mut depth = leader;
        if options.len() > 1 && rng.gen::<f64>() >= self.leader_probability {
            // Challenger: resample until another depth leads (bounded).
            for _ in 0..32 {
                let c = thompson_leader(&beliefs, atp, rng);
                if c != leader {
                    depth = c;
                    break;
                }
            }
        }
        let confidence = if self.exact_confidence {
            let bs: Vec<Belief> = options.iter().map(|d| beliefs[d.index()]).collect();
            let p = prob_best(&bs);
            options
                .iter()
                .position(|d| *d == believed_best)
                .and_then(|i| p.get(i).copied())
                .unwrap_or(0.0)
        } else {
            // Pairwise: P(believed best beats the strongest other option).
            let b = beliefs[believed_best.index()];
            options
                .iter()
                .filter(|d| **d != believed_best)
                .map(|d| {
                    let o = beliefs[d.index()];
                    norm_cdf((b.mean - o.mean) / (b.sd * b.sd + o.sd * o.sd).sqrt().max(1e-12))
                })
                .fold(1.0, f64::min)
        };
        Choice {
            depth,
            followed_learning: depth == believed_best,
            confidence,
        }
    }
}

/// The strategy named `legion`, `thor` or `posterior` (case-insensitive).
pub fn strategy_by_name(name: &str) -> Option<Box<dyn DepthStrategy>> {
    match name.to_ascii_lowercase().as_str() {
        "legion" => Some(Box::new(Legion::default())),
        "thor" => Some(Box::new(Thor::default())),
        "posterior" => Some(Box::new(Posterior::default())),
        _ => None,
    }
}

/// Names accepted by [`strategy_by_name`].
pub const STRATEGY_NAMES: [&str; 3] = ["legion", "thor", "posterior"];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn table(means: [f64; 5], n: u64) -> DepthTable {
        let mut t = DepthTable::default();
        for (i, m) in means.iter().enumerate() {
            for k in 0..n {
                let q = (m + ((k % 5) as f64 - 2.0) * 0.02).clamp(0.0, 1.0);
                t.0[i].add(q, q > 0.5, ATP_COST[i]);
            }
        }
        t
    }

    fn counts(s: &dyn DepthStrategy, view: &LearningView, atp: f64, trials: usize) -> [usize; 5] {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut c = [0; 5];
        for _ in 0..trials {
            c[s.choose(view, atp, &mut rng).depth.index()] += 1;
        }
        c
    }

    #[test]
    fn affordability_thresholds() {
        assert_eq!(deepest_affordable(0.0), Depth::Minimal);
        assert_eq!(deepest_affordable(49.9), Depth::Minimal);
        assert_eq!(deepest_affordable(50.0), Depth::Light);
        assert_eq!(deepest_affordable(75.0), Depth::Standard);
        assert_eq!(deepest_affordable(100.0), Depth::Deep);
        assert_eq!(deepest_affordable(1e9), Depth::Thorough);
        assert_eq!(deepest_affordable(f64::NAN), Depth::Minimal);
        assert!(!affordable(Depth::Deep, 99.0));
    }

    #[test]
    fn legion_follows_learning_about_seventy_percent() {
        let view = LearningView::from_table(&table([0.2, 0.3, 0.8, 0.5, 0.4], 4), Prior::default());
        let c = counts(&Legion::default(), &view, 200.0, 4000);
        let frac = c[Depth::Standard.index()] as f64 / 4000.0;
        assert!((frac - 0.7).abs() < 0.03, "{frac}");
        assert_eq!(
            c[Depth::Thorough.index()],
            4000 - c[Depth::Standard.index()]
        );
    }

    #[test]
    fn legion_without_patterns_is_atp_based() {
        let view = LearningView::from_table(&table([0.2, 0.3, 0.8, 0.5, 0.4], 0), Prior::default());
        let c = counts(&Legion::default(), &view, 80.0, 100);
        assert_eq!(c[Depth::Standard.index()], 100);
    }

    #[test]
    fn thor_explores_then_exploits() {
        let s = Thor::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let empty = LearningView::from_table(&DepthTable::default(), Prior::default());
        let c = s.choose(&empty, 200.0, &mut rng);
        assert!(!c.followed_learning);
        assert_eq!(c.depth, Depth::Minimal); // least sampled, cheapest first
        let view = LearningView::from_table(&table([0.2, 0.3, 0.5, 0.8, 0.4], 3), Prior::default());
        let c = s.choose(&view, 200.0, &mut rng);
        assert!(c.followed_learning);
        assert_eq!(c.depth, Depth::Deep);
        assert!((c.confidence - 0.75).abs() < 1e-12);
        // Deep is not affordable at 90 ATP: the best affordable depth.
        assert_eq!(s.choose(&view, 90.0, &mut rng).depth, Depth::Standard);
    }

    #[test]
    fn posterior_never_chooses_unaffordable() {
        let view =
            LearningView::from_table(&table([0.2, 0.3, 0.4, 0.5, 0.9], 30), Prior::default());
        for atp in [0.0, 49.0, 60.0, 80.0, 110.0] {
            let c = counts(&Posterior::default(), &view, atp, 300);
            for d in Depth::ALL {
                if !affordable(d, atp) {
                    assert_eq!(c[d.index()], 0, "{d} at {atp}");
                }
            }
        }
    }

    #[test]
    fn posterior_concentrates_on_top_two_and_is_confident() {
        let view =
            LearningView::from_table(&table([0.2, 0.3, 0.6, 0.75, 0.7], 40), Prior::default());
        let c = counts(&Posterior::default(), &view, 200.0, 2000);
        let top_two = c[Depth::Deep.index()] + c[Depth::Thorough.index()];
        assert!(top_two > 1900, "{c:?}");
        assert!(c[Depth::Deep.index()] > c[Depth::Thorough.index()]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let ch = Posterior::default().choose(&view, 200.0, &mut rng);
        assert!(ch.confidence > 0.9, "{}", ch.confidence);
        let approx = Posterior {
            exact_confidence: false,
            ..Default::default()
        }
        .choose(&view, 200.0, &mut rng);
        assert!(approx.confidence > 0.9);
    }

    #[test]
    fn posterior_explores_untried_depths() {
        let view = LearningView::from_table(&DepthTable::default(), Prior::default());
        let c = counts(&Posterior::default(), &view, 200.0, 1000);
        assert!(c.iter().all(|&k| k > 100), "{c:?}");
    }

    #[test]
    fn same_seed_same_choices() {
        let view =
            LearningView::from_table(&table([0.2, 0.3, 0.6, 0.62, 0.61], 5), Prior::default());
        for name in STRATEGY_NAMES {
            let s = strategy_by_name(name).unwrap();
            assert_eq!(s.name(), name);
            let a = counts(s.as_ref(), &view, 150.0, 200);
            let b = counts(s.as_ref(), &view, 150.0, 200);
            assert_eq!(a, b);
        }
        assert!(strategy_by_name("POSTERIOR").is_some());
        assert!(strategy_by_name("nope").is_none());
    }
}
