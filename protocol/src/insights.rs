//! Insights (protocol document, "Insight Storage: JSON"): per-depth
//! performance, learned preferences and a list of typed insights, computed
//! from sufficient statistics only (no rescan of patterns).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::posterior::{prob_best, Prior};
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
                format!("{} entries; the limit is {MAX_INSIGHTS}", self.insights.len()),
            ));
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
        self.insights.iter().find(|i| i.insight_type == insight_type)
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
    pub fn new(node_id: &str, platform: &str, pattern_count: u64, set: InsightSet, now: f64) -> Self {
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

/// Compute insights from per-depth statistics (and, when known, per-mode
/// statistics for `optimal_mode`). Deterministic for the same input.
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
    let beliefs = prior.beliefs(table);
    let p_best = prob_best(&beliefs);
    let best = argmax(&p_best);
    let best_depth = Depth::ALL[best];
    let best_stats = table.0[best];
    let by = |f: &dyn Fn(&DepthStats) -> f64| -> Option<Depth> {
        table
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .fold(None::<(Depth, f64)>, |acc, (d, s)| {
                let v = f(s);
                match acc {
                    Some((_, bv)) if bv >= v => acc,
                    _ => Some((d, v)),
                }
            })
            .map(|(d, _)| d)
    };
    let success_depth = by(&|s: &DepthStats| s.success_rate());
    // Quality per unit ATP among depths that succeed at least half the time.
    let atp_depth = by(&|s: &DepthStats| {
        if s.success_rate() < 0.5 {
            return f64::NEG_INFINITY;
        }
        s.avg_quality() / s.avg_atp_cost().max(1e-6)
    });
    set.learned_preferences = LearnedPreferences {
        optimal_quality_depth: Some(best_depth),
        optimal_success_depth: success_depth,
        optimal_atp_depth: atp_depth,
    };
    let mk = |t: &str, desc: String, n: u64, conf: f64, rec: String| Insight {
        insight_type: t.into(),
        description: desc,
        evidence_count: n,
        confidence: conf.clamp(0.0, 1.0),
        recommendation: rec,
        learned_at: now,
    };
    set.insights.push(mk(
        types::OPTIMAL_QUALITY_DEPTH,
        format!(
            "{best_depth} depth best for quality ({:.3} avg over {} samples)",
            best_stats.avg_quality(),
            best_stats.n
        ),
        total,
        p_best[best],
        format!("use {best_depth} when quality matters most"),
    ));
    if let Some(d) = success_depth {
        let s = table.get(d);
        set.insights.push(mk(
            types::OPTIMAL_SUCCESS_DEPTH,
            format!("{d} depth has the highest success rate ({:.3})", s.success_rate()),
            total,
            success_confidence(table, d),
            format!("use {d} when success matters most"),
        ));
    }
    if let Some(d) = atp_depth {
        let s = table.get(d);
        set.insights.push(mk(
            types::ATP_EFFICIENCY,
            format!(
                "{d} depth gives the most quality per ATP ({:.3} quality for {:.2} ATP)",
                s.avg_quality(),
                s.avg_atp_cost()
            ),
            s.n,
            1.0 - 1.0 / (1.0 + s.n as f64 / 10.0),
            format!("use {d} when ATP is scarce"),
        ));
    }
    if let Some(modes) = modes {
        if let Some((mode, s)) = modes
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .max_by(|a, b| a.1.avg_quality().total_cmp(&b.1.avg_quality()).then(b.0.cmp(a.0)))
        {
            set.insights.push(mk(
                types::OPTIMAL_MODE,
                format!("{mode} mode reaches the best average quality ({:.3})", s.avg_quality()),
                s.n,
                1.0 - 1.0 / (1.0 + s.n as f64 / 10.0),
                format!("prefer {mode} mode"),
            ));
        }
    }
    // Stability: how spread the best depth's outcomes are.
    let sd = best_stats.var_quality().sqrt();
    set.insights.push(mk(
        types::DEPTH_STABILITY,
        format!("{best_depth} depth quality varies with standard deviation {sd:.3}"),
        best_stats.n,
        (1.0 - 2.0 * sd).clamp(0.0, 1.0),
        if sd > 0.2 {
            format!("{best_depth} is unstable: keep exploring")
        } else {
            format!("{best_depth} is stable")
        },
    ));
    let mut all = DepthStats::default();
    for s in table.0.iter() {
        all.merge(s);
    }
    set.insights.push(mk(
        types::SYSTEM_PERFORMANCE,
        format!(
            "overall: {:.3} average quality, {:.3} success rate over {} patterns",
            all.avg_quality(),
            all.success_rate(),
            all.n
        ),
        all.n,
        1.0 - 1.0 / (1.0 + all.n as f64 / 10.0),
        "keep recording outcomes".into(),
    ));
    set
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

/// P(depth d has the highest success rate), Beta(1+s, 1+f) posteriors.
fn success_confidence(table: &DepthTable, d: Depth) -> f64 {
    let beliefs: Vec<_> = table
        .0
        .iter()
        .map(|s| {
            let a = 1.0 + s.successes as f64;
            let b = 1.0 + (s.n - s.successes) as f64;
            let mean = a / (a + b);
            crate::posterior::Belief {
                mean,
                sd: (a * b / ((a + b).powi(2) * (a + b + 1.0))).sqrt(),
            }
        })
        .collect();
    prob_best(&beliefs)[d.index()]
}
