//! `convergence`: run the standard experiment matrix of the learning
//! simulator, write CSV and PNG plots, and optionally print a JSON summary.
//!
//! ```text
//! cargo run --release -p metamesh-simulations --bin convergence -- --json
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use metamesh_simulations::matrix::{
    run_cell, standard_cells, summarize, Summary, ADVERSARY_CASES, OPEN_CASES,
};
use metamesh_simulations::plot;
use metamesh_simulations::SimConfig;

#[derive(Parser, Debug)]
#[command(about = "Collective-learning convergence experiments (deterministic simulator)")]
struct Args {
    /// Seeds per cell (half hard environments, half easy).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Output directory for CSV and PNG files.
    #[arg(long, default_value = "simulations/out")]
    out: PathBuf,
    /// Print one JSON object with the headline figures on stdout.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Rounds at which accuracy is measured (and over which regret is averaged).
    #[arg(long, default_value_t = 100)]
    budget: usize,
    /// Rounds after which an unconfident run is censored.
    #[arg(long, default_value_t = 600)]
    max_rounds: usize,
    /// Delivery delay in rounds.
    #[arg(long, default_value_t = 1)]
    delay: usize,
    /// Probability that a record is lost in gossip (repaired by sync later).
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// Extra rounds until a lost record is repaired by anti-entropy sync.
    #[arg(long, default_value_t = 5)]
    resync: usize,
    /// Only the posterior strategy in the members' matrix (the legion/thor
    /// comparison keys are then NaN) — about a third of the cells.
    #[arg(long)]
    quick: bool,
    /// Run only the cells whose label ("<mesh> N=<n> <adversary> <aggregation>
    /// <strategy>", e.g. "strangers N=10 camouflaged30 robust posterior")
    /// contains one of these strings (repeatable). Headline ratios need
    /// their baseline cells too (e.g. "N=1 none robust posterior").
    #[arg(long)]
    only: Vec<String>,
    /// Policy step 7 (the contested pair): Huber constant of the contrast
    /// weights; 0 turns the step off (the default is the policy's).
    #[arg(long)]
    contrast_huber: Option<f64>,
    /// Volume cap factor of the policy (a peer counts for at most
    /// `max(10, factor × median count)` samples at a depth).
    #[arg(long)]
    cap_factor: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!((0.0..1.0).contains(&args.loss), "--loss: must be in [0, 1)");
    anyhow::ensure!(args.seeds >= 1, "--seeds: must be at least 1");
    anyhow::ensure!(
        args.budget >= 1 && args.budget <= args.max_rounds,
        "--budget: must be in 1..=--max-rounds"
    );
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut base = SimConfig {
        budget: args.budget,
        max_rounds: args.max_rounds,
        delay: args.delay,
        loss: args.loss,
        resync: args.resync,
        ..SimConfig::default()
    };
    if let Some(c) = args.cap_factor {
        anyhow::ensure!(c.is_finite() && c > 0.0, "--cap-factor: must be positive");
        base.robust.cap_factor = c;
    }
    if let Some(k) = args.contrast_huber {
        base.robust.contrast_huber = k;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let started = Instant::now();
    let mut cells = standard_cells(args.quick);
    if !args.only.is_empty() {
        cells.retain(|c| {
            let label = format!(
                "{} N={} {} {} {}",
                if c.open { "strangers" } else { "members" },
                c.honest,
                c.adversary.label(),
                c.aggregation.name(),
                c.strategy.name()
            );
            args.only.iter().any(|o| label.contains(o.as_str()))
        });
        anyhow::ensure!(!cells.is_empty(), "--only: no cell matches {:?}", args.only);
    }
    let mut summaries = Vec::with_capacity(cells.len());
    let mut runs_csv = String::from(
        "mesh,honest,adversary,aggregation,strategy,seed,hard,first_confident,first_confident_correct,rounds_to_correct,correct_at_budget,confidence_at_budget,regret,rounds,signed_checked\n",
    );
    for (i, cell) in cells.iter().enumerate() {
        let results = run_cell(cell, &base, args.seeds, threads);
        let s = summarize(cell, &base, &results);
        eprintln!(
            "[{:>3}/{}] {:<9} N={:<2} {:<14} {:<14} {:<9} median rounds {:>6.1}  wrong {:.3}  accuracy {:.3}  regret {:.4}",
            i + 1,
            cells.len(),
            s.mesh,
            s.honest,
            s.adversary,
            s.aggregation,
            s.strategy,
            s.median_rounds,
            s.wrong_rate,
            s.accuracy,
            s.regret
        );
        for r in &results {
            let opt = |v: Option<usize>| v.map_or(String::new(), |x| x.to_string());
            runs_csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{},{}\n",
                s.mesh,
                s.honest,
                s.adversary,
                s.aggregation,
                s.strategy,
                r.seed,
                r.hard,
                opt(r.first_confident),
                r.first_confident_correct
                    .map_or(String::new(), |b| b.to_string()),
                opt(r.rounds_to_correct),
                r.correct_at_budget,
                r.confidence_at_budget,
                r.regret,
                r.rounds,
                r.signed_checked
            ));
        }
        summaries.push(s);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let mut csv = String::from(
        "mesh,honest,adversary,aggregation,strategy,runs,median_rounds,median_rounds_hard,median_rounds_easy,reached,wrong_rate,accuracy,regret\n",
    );
    for s in &summaries {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{:.4},{:.4},{:.4},{:.6}\n",
            s.mesh,
            s.honest,
            s.adversary,
            s.aggregation,
            s.strategy,
            s.runs,
            s.median_rounds,
            s.median_rounds_hard,
            s.median_rounds_easy,
            s.reached,
            s.wrong_rate,
            s.accuracy,
            s.regret
        ));
    }
    std::fs::write(args.out.join("summary.csv"), csv).context("writing summary.csv")?;
    std::fs::write(args.out.join("runs.csv"), runs_csv).context("writing runs.csv")?;
    plot::write_all(&summaries, &args.out)?;

    let get = |h: usize, adv: &str, agg: &str, st: &str| plot::find(&summaries, h, adv, agg, st);
    let metric = |h, adv, agg, st, f: fn(&Summary) -> f64| get(h, adv, agg, st).map_or(f64::NAN, f);
    let alone = metric(1, "none", "robust", "posterior", |s| s.median_rounds);
    let n10 = metric(10, "none", "robust", "posterior", |s| s.median_rounds);
    let regret = |st| metric(10, "none", "robust", st, |s| s.regret);
    let mut speedups = serde_json::Map::new();
    for n in [3usize, 5, 10, 20] {
        for agg in ["naive", "seed_weighting", "robust"] {
            let v = alone / metric(n, "none", agg, "posterior", |s| s.median_rounds);
            speedups.insert(format!("n{n}_{agg}"), serde_json::json!(v));
        }
    }
    let mut adversarial = serde_json::Map::new();
    for adv in ADVERSARY_CASES {
        for agg in ["naive", "seed_weighting", "robust"] {
            if let Some(s) = get(10, adv, agg, "posterior") {
                adversarial.insert(
                    format!("{adv}_{agg}"),
                    serde_json::json!({"accuracy": s.accuracy, "wrong_rate": s.wrong_rate, "median_rounds": s.median_rounds}),
                );
            }
        }
    }
    // The open mesh (strangers, default trust).
    let open = |h, adv, agg, f: fn(&Summary) -> f64| {
        plot::find_in(&summaries, "strangers", h, adv, agg, "posterior").map_or(f64::NAN, f)
    };
    let alone_open = open(1, "none", "robust", |s| s.median_rounds);
    let regret_alone = open(1, "none", "robust", |s| s.regret);
    let mut speedups_open = serde_json::Map::new();
    for n in [3usize, 5, 10, 20] {
        let v = alone_open / open(n, "none", "robust", |s| s.median_rounds);
        speedups_open.insert(format!("n{n}_robust"), serde_json::json!(v));
    }
    let mut open_cases = serde_json::Map::new();
    for adv in OPEN_CASES {
        for agg in ["naive", "seed_weighting", "robust"] {
            if let Some(s) = plot::find_in(&summaries, "strangers", 10, adv, agg, "posterior") {
                open_cases.insert(
                    format!("{adv}_{agg}"),
                    serde_json::json!({"accuracy": s.accuracy, "wrong_rate": s.wrong_rate,
                        "median_rounds": s.median_rounds, "regret": s.regret,
                        "regret_vs_alone": s.regret / regret_alone}),
                );
            }
        }
    }
    // Worst regret of any adversarial cell (robust mode, posterior, N = 10,
    // either mesh) relative to one node learning alone.
    let (worst_cell, worst_regret) = summaries
        .iter()
        .filter(|s| {
            s.honest == 10
                && s.adversary != "none"
                && s.aggregation == "robust"
                && s.strategy == "posterior"
        })
        .map(|s| (format!("{}_{}", s.adversary, s.mesh), s.regret))
        .fold((String::new(), f64::NAN), |a, b| {
            if a.1.is_nan() || b.1 > a.1 {
                b
            } else {
                a
            }
        });
    let out = serde_json::json!({
        "speedup_n10_strangers": alone_open / open(10, "none", "robust", |s| s.median_rounds),
        "wrong_rate_n10_strangers": open(10, "none", "robust", |s| s.wrong_rate),
        "median_rounds_alone_strangers": alone_open,
        "median_rounds_n10_strangers": open(10, "none", "robust", |s| s.median_rounds),
        "accuracy_liars30_strangers": open(10, "liars30", "robust", |s| s.accuracy),
        "accuracy_camouflaged30_strangers": open(10, "camouflaged30", "robust", |s| s.accuracy),
        "accuracy_sybil3x_strangers": open(10, "sybil30", "robust", |s| s.accuracy),
        "accuracy_flooders30_strangers": open(10, "flooders30", "robust", |s| s.accuracy),
        "accuracy_heavy30x_strangers": open(10, "heavy30x", "robust", |s| s.accuracy),
        "regret_ratio_worst_adversary_vs_alone": worst_regret / regret_alone,
        "worst_adversary_cell": worst_cell,
        "speedups_strangers_posterior": speedups_open,
        "open_mesh_n10_posterior": open_cases,
        "seeds_per_cell": args.seeds,
        "cells": summaries.len(),
        "elapsed_secs": elapsed,
        "threads": threads,
        "budget_rounds": args.budget,
        "median_rounds_alone": alone,
        "median_rounds_n10": n10,
        "speedup_n10": alone / n10,
        "wrong_rate_n10": metric(10, "none", "robust", "posterior", |s| s.wrong_rate),
        "wrong_rate_alone": metric(1, "none", "robust", "posterior", |s| s.wrong_rate),
        "accuracy_liars30_robust": metric(10, "liars30", "robust", "posterior", |s| s.accuracy),
        "accuracy_liars30_naive": metric(10, "liars30", "naive", "posterior", |s| s.accuracy),
        "accuracy_liars30_seed_weighting": metric(10, "liars30", "seed_weighting", "posterior", |s| s.accuracy),
        "accuracy_sybil_robust": metric(10, "sybil20", "robust", "posterior", |s| s.accuracy),
        "accuracy_sybil_naive": metric(10, "sybil20", "naive", "posterior", |s| s.accuracy),
        "accuracy_sybil_seed_weighting": metric(10, "sybil20", "seed_weighting", "posterior", |s| s.accuracy),
        "regret_posterior": regret("posterior"),
        "regret_legion": regret("legion"),
        "regret_thor": regret("thor"),
        "regret_posterior_vs_legion": regret("posterior") / regret("legion"),
        "regret_posterior_vs_thor": regret("posterior") / regret("thor"),
        "speedups_posterior": speedups,
        "adversarial_n10_posterior": adversarial,
    });
    let pretty = serde_json::to_string_pretty(&out)?;
    std::fs::write(args.out.join("summary.json"), &pretty).context("writing summary.json")?;
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{pretty}");
    }
    eprintln!("done in {elapsed:.1} s; wrote {}", args.out.display());
    Ok(())
}
