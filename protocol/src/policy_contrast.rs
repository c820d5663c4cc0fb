//! Step 7 of the open-mesh policy ([`super`]): the contested pair.
//!
//! A lie inside sampling noise at one depth is invisible, but a lie that
//! *swaps* the two leading depths moves their difference twice as far as
//! either mean, and the difference is what decides the node's answer. So
//! after pooling, the node looks at the contrast `mean_A − mean_B` of its two
//! leading depths in every origin that reported both, and weighs each peer's
//! say at A and B by how far its contrast sits from the robust centre, at the
//! peer's real precision: `min(1, (k/|z|)³)`. The centre is a redescending
//! M-estimate started at the vote-weighted median of the contrasts (the
//! median alone is pulled towards liars who all sit on one side), or the
//! anchors' own contrast where that centre disagrees with them beyond noise.
//! Nobody is excluded or charged and no other depth changes. The step runs
//! at every evaluation: an honest peer whose contrast is a fluke beyond `k`
//! standard errors loses part of its say at the pair, which costs an honest
//! mesh little (the fluke is one of many honest contrasts), while a gate
//! (Cochran's Q) missed a third of the meshes where camouflaged liars decided
//! the answer.

use crate::aggregate::weighted_median;

/// One origin's reports at the contested pair.
#[derive(Debug, Clone, Copy)]
pub(super) struct PairReport {
    /// Mean, real count at A and at B.
    pub a: (f64, f64),
    pub b: (f64, f64),
    /// Its vote in the robust centre (weight × confirmation discount).
    pub vote: f64,
    /// Anchors are the reference: never down-weighted.
    pub anchor: bool,
}

/// The anchors' own contrast at the pair: (A − B, its sampling variance).
pub(super) type AnchorContrast = Option<(f64, f64)>;

/// The say a contrast `|z|` standard errors from the centre keeps:
/// `min(1, (k/|z|)³)`, a redescending weight (its pull on the centre falls
/// as `1/z²`).
fn contrast_weight(z: f64, k: f64) -> f64 {
    let z = z.abs();
    if z > k {
        (k / z).powi(3)
    } else {
        1.0
    }
}

/// Iterations of the M-estimate of the centre ([`m_estimate`]).
const M_ITERATIONS: usize = 8;

/// A redescending M-estimate of the centre of the contrasts `(index,
/// contrast, variance)`, started at `start` (their vote-weighted median):
/// the vote- and precision-weighted mean, each contrast weighed by
/// [`contrast_weight`] of its distance from the current centre. With liars
/// all on one side the median sits a fraction of the honest spread towards
/// them; the M-estimate, which weighs them down, much less so.
fn m_estimate(
    items: &[(usize, f64, f64)],
    reports: &[PairReport],
    start: f64,
    ref_var: f64,
    k: f64,
) -> f64 {
    let mut centre = start;
    for _ in 0..M_ITERATIONS {
        let (mut sw, mut swc) = (0.0, 0.0);
        for &(i, c, v) in items {
            let z = (c - centre) / (v + ref_var).sqrt();
            let w = reports[i].vote.max(0.0) * contrast_weight(z, k) / v;
            sw += w;
            swc += w * c;
        }
        let next = swc / sw;
        if !(sw > 0.0 && next.is_finite()) {
            break;
        }
        centre = next;
    }
    centre
}

/// Per-report multipliers of the say at A and B (all 1 when fewer than three
/// origins reported both, or when `k` is not a positive finite number). A
/// peer that reported only one of the pair gets the vote-weighted average
/// multiplier of the assessed peers. `s2a`, `s2b` are the noise variances at
/// A and B; `z_anchor` the threshold beyond which the anchors' contrast
/// replaces the M-estimate as the centre.
pub(super) fn contested_weights(
    reports: &[PairReport],
    (s2a, s2b): (f64, f64),
    anchor: AnchorContrast,
    z_anchor: f64,
    k: f64,
) -> Vec<f64> {
    let mut mult = vec![1.0; reports.len()];
    if !(k.is_finite() && k > 0.0) {
        return mult;
    }
    // (index, contrast, variance at its real precision)
    let items: Vec<(usize, f64, f64)> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.a.1 >= 1.0 && r.b.1 >= 1.0)
        .map(|(i, r)| (i, r.a.0 - r.b.0, s2a / r.a.1 + s2b / r.b.1))
        .filter(|(_, c, v)| c.is_finite() && v.is_finite() && *v > 0.0)
        .collect();
    if items.len() < 3 {
        return mult;
    }
    let sw: f64 = items.iter().map(|x| 1.0 / x.2).sum();
    let mut votes: Vec<(f64, f64)> = items
        .iter()
        .map(|&(i, c, _)| (c, reports[i].vote.max(0.0)))
        .collect();
    let Some(median) = weighted_median(&mut votes) else {
        return mult;
    };
    // The median's own sampling variance: (π/2)/Σ(1/v), and no less than a
    // typical origin's variance spread over the voters.
    let mut vs: Vec<(f64, f64)> = items.iter().map(|x| (x.2, 1.0)).collect();
    let typical = weighted_median(&mut vs).unwrap_or(0.0);
    let mut ref_var = (std::f64::consts::FRAC_PI_2 / sw).max(typical / items.len() as f64);
    let mut centre = m_estimate(&items, reports, median, ref_var, k);
    if let Some((ac, av)) = anchor.filter(|(c, v)| c.is_finite() && v.is_finite()) {
        if (centre - ac).abs() > z_anchor * (av + ref_var).sqrt() {
            centre = ac;
            ref_var = av;
        }
    }
    let mut assessed = vec![false; reports.len()];
    let (mut kept, mut votes_in) = (0.0, 0.0);
    for &(i, c, v) in &items {
        assessed[i] = true;
        if reports[i].anchor {
            continue;
        }
        mult[i] = contrast_weight((c - centre) / (v + ref_var).sqrt(), k);
        let vote = reports[i].vote.max(0.0);
        kept += vote * mult[i];
        votes_in += vote;
    }
    // A peer the test cannot assess (it reported only one of the pair) keeps
    // the average say the assessed peers kept: skipping one depth of the
    // pair buys no say, and honest down-weighting does not raise its share.
    let average = if votes_in > 0.0 { kept / votes_in } else { 1.0 };
    for (i, r) in reports.iter().enumerate() {
        if !assessed[i] && !r.anchor {
            mult[i] = average;
        }
    }
    mult
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(a: f64, b: f64, n: f64) -> PairReport {
        PairReport {
            a: (a, n),
            b: (b, n),
            vote: 1.0,
            anchor: false,
        }
    }

    #[test]
    fn agreeing_contrasts_keep_full_weight() {
        let r: Vec<PairReport> = (0..10)
            .map(|i| rep(0.7 + 0.005 * (i % 3) as f64, 0.68, 40.0))
            .collect();
        let m = contested_weights(&r, (0.0144, 0.0144), None, 4.0, 1.5);
        assert!(m.iter().all(|x| *x == 1.0), "{m:?}");
    }

    #[test]
    fn swapped_contrasts_lose_weight_honest_keep_it() {
        let mut r: Vec<PairReport> = (0..10).map(|_| rep(0.70, 0.675, 40.0)).collect();
        r.extend((0..4).map(|_| rep(0.645, 0.73, 20.0)));
        let m = contested_weights(&r, (0.0144, 0.0144), None, 4.0, 1.5);
        assert!(m[..10].iter().all(|x| *x == 1.0), "{m:?}");
        assert!(m[10..].iter().all(|x| *x < 0.5), "{m:?}");
    }

    #[test]
    fn skipping_one_depth_of_the_pair_buys_no_say() {
        let mut r: Vec<PairReport> = (0..10).map(|_| rep(0.70, 0.675, 40.0)).collect();
        r.extend((0..4).map(|_| rep(0.645, 0.73, 20.0)));
        r.push(PairReport {
            b: (0.0, 0.0),
            ..rep(0.645, 0.0, 200.0)
        });
        let m = contested_weights(&r, (0.0144, 0.0144), None, 4.0, 1.5);
        let assessed_mean = m[..14].iter().sum::<f64>() / 14.0;
        assert!(
            m[14] < 1.0 && (m[14] - assessed_mean).abs() < 1e-12,
            "{m:?}"
        );
    }

    #[test]
    fn anchors_are_never_down_weighted_and_odd_input_is_safe() {
        let mut r = vec![rep(0.2, 0.9, 50.0), rep(f64::NAN, 0.5, 3.0)];
        r[0].anchor = true;
        r.extend((0..5).map(|_| rep(0.7, 0.6, 50.0)));
        let m = contested_weights(&r, (0.0144, 0.0144), None, 4.0, 1.5);
        assert_eq!(m[0], 1.0);
        assert_eq!(m[1], 1.0);
        assert!(contested_weights(&r, (0.0, 0.0), None, 4.0, 1.5)
            .iter()
            .all(|x| x.is_finite()));
        assert!(contested_weights(&r, (0.01, 0.01), None, 4.0, f64::NAN)
            .iter()
            .all(|x| *x == 1.0));
    }
}
