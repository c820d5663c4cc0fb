//! The synthetic environment: each depth has a true mean quality; one use of
//! a depth yields a quality drawn around its mean (a normal with sd
//! [`QUALITY_SD`], truncated to [0, 1]) and costs its ATP.

use metamesh_protocol::strategy::{affordable, ATP_COST};
use metamesh_protocol::Depth;
use rand::Rng;
use serde::Serialize;

/// Per-use quality noise.
pub const QUALITY_SD: f64 = 0.12;
/// A node's ATP at each decision is uniform on [0, ATP_MAX).
pub const ATP_MAX: f64 = 250.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Environment {
    /// True mean quality per depth (index = `Depth::index`).
    pub means: [f64; Depth::COUNT],
    /// Hard case: the best two depths differ by 0.02–0.03.
    pub hard: bool,
}

/// A standard normal draw (Box–Muller).
pub fn std_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Environment {
    /// A random environment: the best mean in [0.65, 0.75]; the runner-up
    /// 0.02–0.03 below (hard) or 0.07–0.09 below (easy); the other three
    /// spread below; the means assigned to depths in random order.
    pub fn sample(hard: bool, rng: &mut impl Rng) -> Environment {
        let best = rng.gen_range(0.65..0.75);
        let gap = if hard {
            rng.gen_range(0.02..0.03)
        } else {
            rng.gen_range(0.07..0.09)
        };
        let second = best - gap;
        let mut values = [
            best,
            second,
            second - rng.gen_range(0.06..0.12),
            second - rng.gen_range(0.15..0.25),
            second - rng.gen_range(0.25..0.35),
        ];
        // Fisher–Yates on the depth assignment.
        for i in (1..values.len()).rev() {
            let j = rng.gen_range(0..=i);
            values.swap(i, j);
        }
        Environment {
            means: values,
            hard,
        }
    }

    pub fn best(&self) -> Depth {
        self.ranked()[0]
    }

    pub fn second(&self) -> Depth {
        self.ranked()[1]
    }

    pub fn worst(&self) -> Depth {
        self.ranked()[Depth::COUNT - 1]
    }

    /// Depths from best to worst.
    pub fn ranked(&self) -> [Depth; Depth::COUNT] {
        let mut d = Depth::ALL;
        d.sort_by(|a, b| self.means[b.index()].total_cmp(&self.means[a.index()]));
        d
    }

    pub fn mean(&self, d: Depth) -> f64 {
        self.means[d.index()]
    }

    /// The best mean among depths `atp` affords.
    pub fn best_affordable_mean(&self, atp: f64) -> f64 {
        Depth::ALL
            .iter()
            .filter(|d| affordable(**d, atp))
            .map(|d| self.mean(*d))
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// One outcome of using `d`: (quality, success, atp cost).
    pub fn draw(&self, d: Depth, rng: &mut impl Rng) -> (f64, bool, f64) {
        let q = quality_around(self.mean(d), QUALITY_SD, rng);
        (q, q >= 0.5, ATP_COST[d.index()])
    }
}

/// A quality around `mean` with noise `sd`, truncated to [0, 1].
pub fn quality_around(mean: f64, sd: f64, rng: &mut impl Rng) -> f64 {
    (mean + sd * std_normal(rng)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn environments_have_the_promised_gaps() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for i in 0..200 {
            let hard = i % 2 == 0;
            let e = Environment::sample(hard, &mut rng);
            let gap = e.mean(e.best()) - e.mean(e.second());
            if hard {
                assert!((0.02..0.03).contains(&gap), "{gap}");
            } else {
                assert!((0.07..0.09).contains(&gap), "{gap}");
            }
            assert!(e.means.iter().all(|m| (0.0..1.0).contains(m)));
        }
    }
}
