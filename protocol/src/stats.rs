//! Per-depth sufficient statistics.
//!
//! Sums are kept in fixed point integers (quality in units of 1e-12, ATP cost
//! in units of 1e-9), so adding patterns and merging tables is exact,
//! associative and commutative: merging in any order gives bit-identical
//! statistics, and therefore identical insights. Each update is O(1).

use serde::{Deserialize, Serialize};

use crate::schema::{Depth, Pattern, SchemaError};

/// Fixed-point scale of quality sums.
pub const Q_SCALE: f64 = 1e12;
/// Fixed-point scale of ATP cost sums.
pub const COST_SCALE: f64 = 1e9;
/// Largest sample count a received table may claim.
pub const MAX_SAMPLES: u64 = 1 << 40;

/// Sufficient statistics of the patterns recorded at one depth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DepthStats {
    /// Number of patterns.
    pub n: u64,
    /// Number that succeeded.
    pub successes: u64,
    /// Σ quality, in units of 1e-12.
    pub q_sum: u128,
    /// Σ quality², in units of 1e-24.
    pub q_sq_sum: u128,
    /// Σ (atp_before − atp_after), in units of 1e-9.
    pub cost_sum: i128,
}

fn q_fixed(q: f64) -> u128 {
    // Quality is validated to [0, 1]; clamp defends against unvalidated input.
    (q.clamp(0.0, 1.0) * Q_SCALE).round() as u128
}

fn cost_fixed(c: f64) -> i128 {
    (c * COST_SCALE).round() as i128
}

impl DepthStats {
    /// Add one observation.
    pub fn add(&mut self, quality: f64, success: bool, atp_cost: f64) {
        let q = q_fixed(quality);
        self.n += 1;
        self.successes += success as u64;
        self.q_sum += q;
        self.q_sq_sum += q * q;
        self.cost_sum += cost_fixed(atp_cost);
    }

    /// Remove one observation previously added with the same values.
    pub fn remove(&mut self, quality: f64, success: bool, atp_cost: f64) {
        let q = q_fixed(quality);
        self.n = self.n.saturating_sub(1);
        self.successes = self.successes.saturating_sub(success as u64);
        self.q_sum = self.q_sum.saturating_sub(q);
        self.q_sq_sum = self.q_sq_sum.saturating_sub(q * q);
        self.cost_sum -= cost_fixed(atp_cost);
    }

    pub fn merge(&mut self, other: &DepthStats) {
        self.n += other.n;
        self.successes += other.successes;
        self.q_sum += other.q_sum;
        self.q_sq_sum += other.q_sq_sum;
        self.cost_sum += other.cost_sum;
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Mean quality; 0 when empty.
    pub fn avg_quality(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        self.q_sum as f64 / Q_SCALE / self.n as f64
    }

    /// Unbiased sample variance of quality; 0 with fewer than two samples.
    pub fn var_quality(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        let mean = self.q_sum as f64 / Q_SCALE / n;
        let ex2 = self.q_sq_sum as f64 / (Q_SCALE * Q_SCALE) / n;
        ((ex2 - mean * mean) * n / (n - 1.0)).max(0.0)
    }

    /// Fraction that succeeded; 0 when empty.
    pub fn success_rate(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        self.successes as f64 / self.n as f64
    }

    /// Mean ATP cost; 0 when empty.
    pub fn avg_atp_cost(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        self.cost_sum as f64 / COST_SCALE / self.n as f64
    }

    /// Check that a received table is internally consistent.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let n = self.n as u128;
        let one = Q_SCALE as u128;
        if self.n > MAX_SAMPLES {
            return Err(SchemaError::new("stats.n", "is implausibly large"));
        }
        if self.successes > self.n {
            return Err(SchemaError::new(
                "stats.successes",
                "exceeds the sample count",
            ));
        }
        if self.q_sum > n * one {
            return Err(SchemaError::new(
                "stats.q_sum",
                "implies a mean quality above 1",
            ));
        }
        if self.q_sq_sum > self.q_sum.saturating_mul(one) {
            return Err(SchemaError::new(
                "stats.q_sq_sum",
                "is inconsistent with q_sum",
            ));
        }
        // Cauchy–Schwarz: (Σq)² ≤ n·Σq²  (exact in integers; saturating is conservative)
        if self.n > 0 && self.q_sum.saturating_mul(self.q_sum) > n.saturating_mul(self.q_sq_sum) {
            return Err(SchemaError::new(
                "stats.q_sq_sum",
                "is smaller than the mean allows",
            ));
        }
        let max_cost = (crate::schema::MAX_ATP * 2.0 * COST_SCALE) as i128 * n as i128;
        if self.cost_sum.abs() > max_cost {
            return Err(SchemaError::new("stats.cost_sum", "is out of range"));
        }
        Ok(())
    }
}

/// Statistics for every depth, indexed by [`Depth::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DepthTable(pub [DepthStats; Depth::COUNT]);

impl DepthTable {
    pub fn add_pattern(&mut self, p: &Pattern) {
        self.0[p.depth_used.index()].add(p.quality_achieved, p.success, p.atp_cost());
    }

    pub fn remove_pattern(&mut self, p: &Pattern) {
        self.0[p.depth_used.index()].remove(p.quality_achieved, p.success, p.atp_cost());
    }

    pub fn merge(&mut self, other: &DepthTable) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            a.merge(b);
        }
    }

    pub fn get(&self, d: Depth) -> &DepthStats {
        &self.0[d.index()]
    }

    pub fn get_mut(&mut self, d: Depth) -> &mut DepthStats {
        &mut self.0[d.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|s| s.n).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Depth, &DepthStats)> {
        Depth::ALL.into_iter().zip(self.0.iter())
    }

    pub fn validate(&self) -> Result<(), SchemaError> {
        self.0.iter().try_for_each(DepthStats::validate)
    }

    pub fn from_patterns<'a>(ps: impl IntoIterator<Item = &'a Pattern>) -> DepthTable {
        let mut t = DepthTable::default();
        for p in ps {
            t.add_pattern(p);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::sample;

    #[test]
    fn averages_and_variance() {
        let mut s = DepthStats::default();
        for q in [0.2, 0.4, 0.6] {
            s.add(q, q > 0.3, 5.0);
        }
        assert!((s.avg_quality() - 0.4).abs() < 1e-12);
        assert!((s.var_quality() - 0.04).abs() < 1e-12);
        assert!((s.success_rate() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.avg_atp_cost() - 5.0).abs() < 1e-9);
        s.validate().unwrap();
    }

    #[test]
    fn add_then_remove_is_identity() {
        let mut t = DepthTable::default();
        let p = sample("n", Depth::Deep, 0.123456789);
        let before = t;
        t.add_pattern(&p);
        t.remove_pattern(&p);
        assert_eq!(t, before);
    }

    #[test]
    fn inconsistent_tables_are_rejected() {
        let mut s = DepthStats::default();
        s.add(0.5, true, 1.0);
        let mut bad = s;
        bad.successes = 2;
        assert!(bad.validate().is_err());
        let mut bad = s;
        bad.q_sum = 2 * Q_SCALE as u128;
        assert!(bad.validate().is_err());
        let mut bad = s;
        bad.q_sq_sum = 0;
        assert!(bad.validate().is_err());
    }
}
