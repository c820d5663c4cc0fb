//! What `metamesh swarm` measures besides learning: how long a pattern takes
//! to reach every node, process CPU time, and the alone baseline (one node
//! learning by itself on the same workload and seed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metamesh_protocol::aggregate::{robust_aggregate, OriginEvidence, RobustConfig};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::strategy::DepthStrategy;
use metamesh_protocol::{Depth, DepthTable};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Process CPU time (user + system) so far, from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks of `USER_HZ` = 100 on Linux). `None`
/// where there is no procfs.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces: count after its ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so fields 14/15 are at 11/12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The load average (1, 5, 15 minutes) from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Arrival times of patterns at nodes, keyed by (origin, seq).
#[derive(Default)]
pub struct Arrivals {
    /// (origin, seq) → (time it was recorded, nodes that hold it, last arrival).
    patterns: HashMap<(String, u64), Pattern1>,
}

struct Pattern1 {
    recorded: Option<Instant>,
    holders: usize,
    last: Option<Instant>,
}

impl Arrivals {
    /// The origin finished recording (origin, seq) at `at`.
    pub fn recorded(&mut self, origin: String, seq: u64, at: Instant) {
        let e = self.patterns.entry((origin, seq)).or_insert(Pattern1 {
            recorded: None,
            holders: 0,
            last: None,
        });
        e.recorded = Some(at);
    }

    /// Another node stored (origin, seq) at `at`.
    pub fn arrived(&mut self, origin: String, seq: u64, at: Instant) {
        let e = self.patterns.entry((origin, seq)).or_insert(Pattern1 {
            recorded: None,
            holders: 0,
            last: None,
        });
        e.holders += 1;
        e.last = Some(e.last.map_or(at, |l| l.max(at)));
    }

    /// For each recorded pattern: the time until the last of the other
    /// `nodes - 1` nodes stored it (`None`: not every node did).
    pub fn latencies(&self, nodes: usize) -> Vec<Option<Duration>> {
        self.patterns
            .values()
            .filter_map(|p| p.latency(nodes))
            .collect()
    }

    /// [`Arrivals::latencies`] of the patterns `keys` (one round's).
    pub fn latencies_of(&self, keys: &[(String, u64)], nodes: usize) -> Vec<Option<Duration>> {
        keys.iter()
            .filter_map(|k| self.patterns.get(k)?.latency(nodes))
            .collect()
    }
}

impl Pattern1 {
    /// `None`: not recorded; `Some(None)`: not every other node stored it.
    fn latency(&self, nodes: usize) -> Option<Option<Duration>> {
        let rec = self.recorded?;
        Some(if self.holders + 1 >= nodes {
            Some(
                self.last
                    .map_or(Duration::ZERO, |l| l.saturating_duration_since(rec)),
            )
        } else {
            None
        })
    }
}

/// Percentiles (nearest rank) of the latencies of delivered patterns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    /// Patterns that reached every node.
    pub delivered: usize,
    /// Patterns that did not reach every node before the run ended.
    pub undelivered: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

pub fn summarise(latencies: &[Option<Duration>]) -> LatencySummary {
    let mut ms: Vec<f64> = latencies
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| -> Option<f64> {
        if ms.is_empty() {
            return None;
        }
        let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
        ms.get(i).copied()
    };
    LatencySummary {
        delivered: ms.len(),
        undelivered: latencies.len() - ms.len(),
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: ms.last().copied(),
    }
}

/// A terminal sparkline of values in [0, 1].
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values
        .iter()
        .map(|v| {
            let i = (v.clamp(0.0, 1.0) * (BARS.len() - 1) as f64).round() as usize;
            BARS.get(i).copied().unwrap_or('?')
        })
        .collect()
}

/// One node learning alone: the same strategy, the same random stream as
/// the mesh's node 0 (same seed), only its own outcomes as evidence.
/// Returns P(true best depth is best) after each round.
pub fn alone_baseline(
    strat: &dyn DepthStrategy,
    rng: &mut ChaCha8Rng,
    rounds: usize,
    budget: f64,
    best: Depth,
    mut outcome: impl FnMut(Depth, &mut ChaCha8Rng) -> f64,
) -> Vec<f64> {
    let mut table = DepthTable::default();
    let mut out = Vec::with_capacity(rounds);
    let config = RobustConfig::default();
    for _ in 0..rounds {
        let agg = robust_aggregate(&[evidence(&table)], &config);
        let choice = strat.choose(&agg.view(Prior::default()), budget, rng);
        let q = outcome(choice.depth, rng);
        let s = table.get_mut(choice.depth);
        s.add(
            q,
            q >= 0.5,
            metamesh_protocol::strategy::ATP_COST[choice.depth.index()],
        );
        let agg = robust_aggregate(&[evidence(&table)], &config);
        let p = agg.prob_best(&Prior::default());
        out.push(p.get(best.index()).copied().unwrap_or(0.0));
    }
    out
}

fn evidence(table: &DepthTable) -> OriginEvidence<u32> {
    OriginEvidence {
        key: 0,
        table: *table,
        weight: 1.0,
        anchor: true,
        newcomer: false,
        bonus: 0.0,
    }
}

/// First round (1-based) at which `p` reaches 0.9.
pub fn rounds_to_90(p: &[f64]) -> Option<usize> {
    p.iter().position(|v| *v >= 0.9).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let l: Vec<Option<Duration>> = (1..=100)
            .map(|i| Some(Duration::from_millis(i)))
            .chain([None])
            .collect();
        let s = summarise(&l);
        assert_eq!(s.delivered, 100);
        assert_eq!(s.undelivered, 1);
        assert_eq!(s.p50_ms, Some(50.0));
        assert_eq!(s.p99_ms, Some(99.0));
        assert_eq!(s.max_ms, Some(100.0));
        assert_eq!(summarise(&[None]).p99_ms, None);
    }

    #[test]
    fn a_pattern_counts_once_every_other_node_holds_it() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        a.recorded("x".into(), 1, t0);
        a.arrived("x".into(), 1, t0 + Duration::from_millis(5));
        assert_eq!(a.latencies(3), vec![None]);
        a.arrived("x".into(), 1, t0 + Duration::from_millis(9));
        assert_eq!(a.latencies(3), vec![Some(Duration::from_millis(9))]);
        let keys = vec![("x".to_string(), 1), ("y".to_string(), 1)];
        assert_eq!(
            a.latencies_of(&keys, 3),
            vec![Some(Duration::from_millis(9))]
        );
    }

    #[test]
    fn sparkline_maps_zero_to_one() {
        assert_eq!(sparkline(&[0.0, 0.5, 1.0, 2.0]), "▁▅██");
    }

    #[test]
    fn cpu_time_is_read_and_grows() {
        let a = process_cpu().unwrap();
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(process_cpu().unwrap() >= a);
    }
}
