//! Step 6 of the open-mesh policy ([`super`]): pooling the surviving cells
//! of one depth, and the leading pair step 7 ([`super::contrast`]) examines.

use super::Cell;
use crate::aggregate::{RobustConfig, MIN_EVIDENCE_TO_NAME};
use crate::posterior::Evidence;
use crate::schema::Depth;

/// The two depths with the highest pooled means (with at least
/// [`MIN_EVIDENCE_TO_NAME`] effective samples each), leader first.
pub(super) fn leading_pair(
    pooled: &[Option<(Evidence, f64)>; Depth::COUNT],
) -> Option<(usize, usize)> {
    let mut ranked: Vec<(usize, f64)> = pooled
        .iter()
        .enumerate()
        .filter_map(|(d, p)| p.map(|(e, _)| (d, e)))
        .filter(|(_, e)| e.n.is_finite() && e.n >= MIN_EVIDENCE_TO_NAME && e.mean.is_finite())
        .map(|(d, e)| (d, e.mean))
        .collect();
    ranked.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    match ranked.as_slice() {
        [first, second, ..] => Some((first.0, second.0)),
        _ => None,
    }
}

/// Pool the surviving cells at depth `d` (see the module docs, step 6).
pub(super) fn pool_depth(
    d: usize,
    cells: &[[Option<Cell>; Depth::COUNT]],
    weight: &[f64],
    z_of: &[[f64; Depth::COUNT]],
    sigma: f64,
    (centre, centre_var): (f64, f64),
    cfg: &RobustConfig,
) -> Option<(Evidence, f64)> {
    let s2 = sigma * sigma;
    let (mut sw, mut swm, mut sws) = (0.0, 0.0, 0.0);
    let (mut fe_w, mut fe_wm, mut fe_w2) = (0.0, 0.0, 0.0);
    let (mut within_ss, mut within_df) = (0.0, 0.0);
    let mut items: Vec<(f64, f64, f64)> = Vec::new(); // (ω, n, mean)
    for (i, row) in cells.iter().enumerate() {
        let Some(c) = row[d] else { continue };
        // Redescending Huber: a survivor |z| > huber from the centre (at its
        // real precision) keeps (huber/|z|)² of its weight, so its pull on
        // the mean falls as 1/|z|.
        let z = z_of[i][d].abs();
        let huber = if z > cfg.huber {
            (cfg.huber / z).powi(2)
        } else {
            1.0
        };
        let omega = weight[i] * c.n * huber;
        if omega <= 0.0 {
            continue;
        }
        sw += omega;
        swm += omega * c.mean;
        sws += omega * c.success;
        let f = c.n / s2;
        fe_w += f;
        fe_wm += f * c.mean;
        fe_w2 += f * f;
        if c.n > 1.0 {
            within_ss += c.sd * c.sd * (c.n - 1.0);
            within_df += c.n - 1.0;
        }
        items.push((omega, c.n, c.mean));
    }
    if sw <= 0.0 {
        return None;
    }
    let mean = swm / sw;
    // Sampling noise of the survivors: their pooled within-origin variance
    // once there is enough of it.
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
        let df = items.len() as f64 - 1.0;
        let denom = (fe_w - fe_w2 / fe_w) * rescale;
        // Only significant heterogeneity (Q above its 95% point,
        // Wilson–Hilferty) widens the posterior.
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
    // Calibration guard: a pooled-mean vs robust-centre gap beyond 3× what
    // noise explains (the pooled mean's and the centre's own sampling
    // variance) is added to the uncertainty instead of being believed.
    let gap = mean - centre;
    let noise_gap = (0.5708 * var + centre_var).sqrt();
    let var = if cfg.guard && gap.is_finite() && gap.abs() > 3.0 * noise_gap {
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
    Some((
        Evidence {
            n: n_eff,
            mean,
            ss: within * (n_eff - 1.0).max(0.0),
        },
        sws / sw,
    ))
}
