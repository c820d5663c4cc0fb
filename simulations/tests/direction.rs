//! Fast versions of the convergence experiments (few seeds, small meshes)
//! that assert the *direction* of each headline result, so a change that
//! breaks collective learning or its defences fails CI. The full matrix is
//! `cargo run --release -p metamesh-simulations --bin convergence`.

use metamesh_simulations::matrix::{run_cell, summarize, Cell, Summary};
use metamesh_simulations::{Adversary, Aggregation, SimConfig, StrategyKind};

fn base() -> SimConfig {
    SimConfig {
        budget: 100,
        max_rounds: 300,
        ..SimConfig::default()
    }
}

fn cell(
    honest: usize,
    adversary: Adversary,
    aggregation: Aggregation,
    strategy: StrategyKind,
    seeds: u64,
) -> Summary {
    let c = Cell {
        honest,
        adversary,
        aggregation,
        strategy,
        open: false,
    };
    let b = base();
    let r = run_cell(&c, &b, seeds, 2);
    summarize(&c, &b, &r)
}

#[test]
fn collective_learns_faster_than_alone_and_stays_calibrated() {
    let alone = cell(
        1,
        Adversary::None,
        Aggregation::Robust,
        StrategyKind::Posterior,
        12,
    );
    let five = cell(
        5,
        Adversary::None,
        Aggregation::Robust,
        StrategyKind::Posterior,
        12,
    );
    assert!(
        five.median_rounds * 2.0 < alone.median_rounds,
        "5 nodes {} rounds vs alone {}",
        five.median_rounds,
        alone.median_rounds
    );
    assert!(five.wrong_rate <= 0.2, "wrong rate {}", five.wrong_rate);
    assert!(five.accuracy >= alone.accuracy);
}

#[test]
fn robust_beats_naive_and_seed_weighting_with_30pct_liars() {
    let liars = Adversary::Liars { fraction: 0.3 };
    let robust = cell(5, liars, Aggregation::Robust, StrategyKind::Posterior, 10);
    let naive = cell(5, liars, Aggregation::Naive, StrategyKind::Posterior, 10);
    let seed = cell(
        5,
        liars,
        Aggregation::SeedWeighting,
        StrategyKind::Posterior,
        10,
    );
    assert!(robust.accuracy >= 0.9, "robust {}", robust.accuracy);
    assert!(naive.accuracy <= 0.5, "naive {}", naive.accuracy);
    assert!(seed.accuracy <= 0.5, "seed {}", seed.accuracy);
}

#[test]
fn sybil_swarm_does_not_flip_robust() {
    let sybil = Adversary::Sybil { identities: 12 };
    let robust = cell(6, sybil, Aggregation::Robust, StrategyKind::Posterior, 20);
    let naive = cell(6, sybil, Aggregation::Naive, StrategyKind::Posterior, 20);
    assert!(robust.accuracy >= 0.9, "robust {}", robust.accuracy);
    assert!(naive.accuracy < robust.accuracy);
}

#[test]
fn flooders_are_capped() {
    let flood = Adversary::Flooders {
        fraction: 0.3,
        per_round: 20,
    };
    let robust = cell(4, flood, Aggregation::Robust, StrategyKind::Posterior, 10);
    let naive = cell(4, flood, Aggregation::Naive, StrategyKind::Posterior, 10);
    assert!(robust.accuracy >= 0.9, "robust {}", robust.accuracy);
    assert!(naive.accuracy < robust.accuracy);
}

#[test]
fn posterior_regret_below_legion_and_thor() {
    let p = cell(
        3,
        Adversary::None,
        Aggregation::Robust,
        StrategyKind::Posterior,
        10,
    );
    let l = cell(
        3,
        Adversary::None,
        Aggregation::Robust,
        StrategyKind::Legion,
        10,
    );
    let t = cell(
        3,
        Adversary::None,
        Aggregation::Robust,
        StrategyKind::Thor,
        10,
    );
    assert!(
        p.regret < l.regret,
        "posterior {} legion {}",
        p.regret,
        l.regret
    );
    assert!(
        p.regret < t.regret,
        "posterior {} thor {}",
        p.regret,
        t.regret
    );
}
