//! The experiment matrix: cells (configuration × many seeds), run on all
//! cores, and their summaries.

use serde::Serialize;

use crate::sim::{run, Adversary, Aggregation, RunResult, SimConfig, StrategyKind};

/// One cell of the matrix.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cell {
    pub honest: usize,
    pub adversary: Adversary,
    pub aggregation: Aggregation,
    pub strategy: StrategyKind,
    /// Open mesh: every peer a stranger, nobody trusted (`SimConfig::open`).
    pub open: bool,
}

impl Cell {
    pub fn config(&self, base: &SimConfig) -> SimConfig {
        SimConfig {
            honest: self.honest,
            adversary: self.adversary,
            aggregation: self.aggregation,
            strategy: self.strategy,
            open: self.open,
            ..*base
        }
    }
}

/// `Summary::mesh` of a cell: `strangers` (open mesh) or `members`.
pub fn mesh_name(open: bool) -> &'static str {
    if open {
        "strangers"
    } else {
        "members"
    }
}

/// Summary of one cell over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub honest: usize,
    pub adversary: String,
    pub aggregation: &'static str,
    pub strategy: &'static str,
    /// `strangers` (open mesh, default trust) or `members` (established).
    pub mesh: &'static str,
    pub runs: usize,
    /// Median rounds until node 0 named the true best with P ≥ target
    /// (censored runs count as `max_rounds`).
    pub median_rounds: f64,
    /// Fraction of runs that reached the target at all.
    pub reached: f64,
    /// Among runs that became confident: the fraction whose first confident
    /// answer was wrong.
    pub wrong_rate: f64,
    /// Fraction of runs naming the true best at the budget round.
    pub accuracy: f64,
    /// Mean per-decision regret over the budget.
    pub regret: f64,
    pub median_rounds_hard: f64,
    pub median_rounds_easy: f64,
}

/// The adversary cases of the members' matrix, in report order (names as
/// in `Summary::adversary`).
pub const ADVERSARY_CASES: [&str; 7] = [
    "liars10",
    "liars30",
    "camouflaged10",
    "camouflaged30",
    "flooders10",
    "flooders30",
    "sybil20",
];

/// The cases of the open-mesh (strangers) matrix at N = 10, in report order.
pub const OPEN_CASES: [&str; 9] = [
    "none",
    "liars10",
    "liars30",
    "camouflaged10",
    "camouflaged30",
    "sybil30",
    "flooders10",
    "flooders30",
    "heavy30x",
];

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Seeds of a cell: the same seeds (hence the same environments) in every
/// cell; even seeds are hard environments, odd ones easy.
pub fn run_cell(cell: &Cell, base: &SimConfig, seeds: u64, threads: usize) -> Vec<RunResult> {
    let cfg = cell.config(base);
    let threads = threads.max(1);
    let mut out: Vec<RunResult> = Vec::with_capacity(seeds as usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..seeds)
                        .filter(|seed| (*seed as usize) % threads == t)
                        .map(|seed| {
                            let c = SimConfig {
                                hard: seed % 2 == 0,
                                ..cfg
                            };
                            run(&c, seed)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(v) = h.join() {
                out.extend(v);
            }
        }
    });
    out.sort_by_key(|r| r.seed);
    out
}

pub fn summarize(cell: &Cell, base: &SimConfig, results: &[RunResult]) -> Summary {
    let cap = base.max_rounds as f64;
    let rounds = |f: &dyn Fn(&RunResult) -> bool| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| f(r))
            .map(|r| r.rounds_to_correct.map_or(cap, |x| x as f64))
            .collect();
        median(&mut v)
    };
    let confident: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.first_confident.is_some())
        .collect();
    let wrong = confident
        .iter()
        .filter(|r| r.first_confident_correct == Some(false))
        .count();
    let n = results.len().max(1) as f64;
    Summary {
        honest: cell.honest,
        adversary: cell.adversary.label(),
        aggregation: cell.aggregation.name(),
        strategy: cell.strategy.name(),
        mesh: mesh_name(cell.open),
        runs: results.len(),
        median_rounds: rounds(&|_| true),
        reached: results
            .iter()
            .filter(|r| r.rounds_to_correct.is_some())
            .count() as f64
            / n,
        wrong_rate: if confident.is_empty() {
            0.0
        } else {
            wrong as f64 / confident.len() as f64
        },
        accuracy: results.iter().filter(|r| r.correct_at_budget).count() as f64 / n,
        regret: results.iter().map(|r| r.regret).sum::<f64>() / n,
        median_rounds_hard: rounds(&|r| r.hard),
        median_rounds_easy: rounds(&|r| !r.hard),
    }
}

/// The standard matrix. Members (established peers): honest meshes N = 1,
/// 3, 5, 10, 20 (every mode and strategy), and at N = 10 every adversary at
/// 10% and 30% plus a Sybil swarm (2N fresh identities, one trusted honest
/// peer), every mode and strategy. Strangers (the open mesh, default trust):
/// honest meshes N = 1, 3, 5, 10, 20 and, at N = 10, liars, camouflaged
/// liars and flooders at 10% and 30%, a Sybil swarm of 3N identities and
/// honest nodes with 30× the volume ([`OPEN_CASES`]), robust mode and the
/// posterior strategy, plus the naive and seed modes under liars and Sybils.
/// `quick` keeps only the posterior strategy in the members' matrix.
pub fn standard_cells(quick: bool) -> Vec<Cell> {
    let strategies: &[StrategyKind] = if quick {
        &[StrategyKind::Posterior]
    } else {
        &StrategyKind::ALL
    };
    let mut cells = Vec::new();
    let cell = |honest, adversary, aggregation, strategy, open| Cell {
        honest,
        adversary,
        aggregation,
        strategy,
        open,
    };
    for honest in [1, 3, 5, 10, 20] {
        for aggregation in Aggregation::ALL {
            for strategy in strategies {
                cells.push(cell(honest, Adversary::None, aggregation, *strategy, false));
            }
        }
    }
    let advs = [
        Adversary::Liars { fraction: 0.1 },
        Adversary::Liars { fraction: 0.3 },
        Adversary::Camouflaged { fraction: 0.1 },
        Adversary::Camouflaged { fraction: 0.3 },
        Adversary::Flooders {
            fraction: 0.1,
            per_round: 20,
        },
        Adversary::Flooders {
            fraction: 0.3,
            per_round: 20,
        },
        Adversary::Sybil { identities: 20 },
    ];
    for adversary in advs {
        for aggregation in Aggregation::ALL {
            for strategy in strategies {
                cells.push(cell(10, adversary, aggregation, *strategy, false));
            }
        }
    }
    // The open mesh.
    let post = StrategyKind::Posterior;
    for honest in [1, 3, 5, 10, 20] {
        cells.push(cell(
            honest,
            Adversary::None,
            Aggregation::Robust,
            post,
            true,
        ));
    }
    let open_advs = [
        Adversary::Liars { fraction: 0.1 },
        Adversary::Liars { fraction: 0.3 },
        Adversary::Camouflaged { fraction: 0.1 },
        Adversary::Camouflaged { fraction: 0.3 },
        Adversary::Sybil { identities: 30 },
        Adversary::Flooders {
            fraction: 0.1,
            per_round: 20,
        },
        Adversary::Flooders {
            fraction: 0.3,
            per_round: 20,
        },
        Adversary::Heavy {
            fraction: 0.3,
            factor: 30,
        },
    ];
    for adversary in open_advs {
        cells.push(cell(10, adversary, Aggregation::Robust, post, true));
    }
    for adversary in [
        Adversary::Liars { fraction: 0.3 },
        Adversary::Sybil { identities: 30 },
    ] {
        for aggregation in [Aggregation::Naive, Aggregation::SeedWeighting] {
            cells.push(cell(10, adversary, aggregation, post, true));
        }
    }
    cells
}
