//! `metamesh swarm`: N real nodes on loopback in one process, each with its
//! own data directory, store and libp2p stack, learning a synthetic
//! environment together.
//!
//! Environment: each depth has a true mean quality (0.30, 0.45, 0.58, 0.66,
//! 0.62 for minimal … thorough) and Gaussian noise (sd 0.1, clamped to
//! [0, 1]); ATP costs are Thor's 4/9/20/35/60. Each round every honest node
//! asks its strategy for a depth using its *collective* view (robust,
//! reputation-weighted aggregation of everything it holds), draws an outcome
//! and records it through its own node; the mesh shares it. Byzantine nodes
//! record lies: the worst depth with high quality and the best depth with low
//! quality. After each round the command waits (bounded) until every node
//! holds every pattern, then reports what the honest nodes believe.
//!
//! Choices are deterministic given `--seed` (per-node ChaCha streams); only
//! network timing varies, and the per-round barrier removes its effect on
//! the views whenever propagation completes within the deadline.

mod measure;
mod mesh;
mod report;

pub use report::{RoundReport, SwarmSummary};

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::strategy::{self, DepthStrategy};
use metamesh_protocol::{Depth, Pattern};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::actor::{now_secs, start_node, NodeOptions, RunningNode};
use crate::api::NodeApi;
use crate::config::Config;
use crate::events::NodeEvent;
use measure::{Arrivals, LatencySummary};

/// True mean quality per depth (minimal … thorough).
pub const TRUE_MEANS: [f64; Depth::COUNT] = [0.30, 0.45, 0.58, 0.66, 0.62];
/// Outcome noise (standard deviation).
pub const NOISE_SD: f64 = 0.1;
/// ATP every node starts a decision with (affords every depth).
const ATP_BUDGET: f64 = 200.0;
/// Most time one round waits for propagation.
const ROUND_DEADLINE: Duration = Duration::from_secs(15);

fn gaussian(rng: &mut impl Rng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn outcome(depth: Depth, rng: &mut impl Rng) -> f64 {
    (TRUE_MEANS[depth.index()] + NOISE_SD * gaussian(rng)).clamp(0.0, 1.0)
}

fn make_pattern(
    id: String,
    node_id: &str,
    depth: Depth,
    quality: f64,
    mode: &str,
) -> Result<Pattern> {
    let cost = strategy::ATP_COST[depth.index()];
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": id,
            "node_id": node_id,
            "timestamp": now_secs() - 1.0,
            "platform": "swarm",
            "depth_used": depth.as_str(),
            "mode": mode,
            "quality_achieved": quality,
            "success": quality >= 0.5,
            "atp_before": ATP_BUDGET,
            "atp_after": ATP_BUDGET - cost,
        }),
        None,
    )
    .map_err(|e| anyhow::anyhow!("building a pattern: {e}"))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn true_best() -> Depth {
    Depth::ALL
        .into_iter()
        .max_by(|a, b| TRUE_MEANS[a.index()].total_cmp(&TRUE_MEANS[b.index()]))
        .unwrap_or(Depth::Standard)
}

fn true_worst() -> Depth {
    Depth::ALL
        .into_iter()
        .min_by(|a, b| TRUE_MEANS[a.index()].total_cmp(&TRUE_MEANS[b.index()]))
        .unwrap_or(Depth::Minimal)
}

/// A node's configuration: the defaults a real node has, then the
/// `METAMESH_*` environment variables a real node reads (so
/// `METAMESH_PEERS_TARGET=4 metamesh swarm …` measures another peer target
/// with no swarm-only knob), then loopback listening and node 0 as the
/// bootstrap peer.
fn node_config(bootstrap: Option<&RunningNode>, env: &[(String, String)]) -> Result<Config> {
    let mut cfg = Config::default();
    cfg.apply_env(env).context("METAMESH_* environment")?;
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    cfg.bootstrap = bootstrap
        .and_then(|n| n.tcp_addr())
        .map(|a| vec![a.to_string()])
        .unwrap_or_default();
    Ok(cfg)
}

pub fn swarm(_g: &GlobalArgs, a: SwarmArgs) -> Result<()> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if a.byzantine >= a.nodes {
        bail!("--byzantine must be less than --nodes (at least one honest node)");
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if a.nodes > 64 {
        bail!("--nodes is limited to 64 in one process");
    }
    let strat = strategy::strategy_by_name(&a.strategy).with_context(|| {
        format!(
            "--strategy {:?}: use one of {:?}",
            a.strategy,
            strategy::STRATEGY_NAMES
        )
    })?;
    if !["fleet", "anchor", "none"].contains(&a.trust.as_str()) {
        bail!("--trust {:?}: use fleet, anchor or none", a.trust);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = rt.block_on(run_swarm(&a, strat))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        writeln!(
            out,
            "summary: true best depth {}; {:.0}% of honest nodes name it (majority: {}), median confidence {:.3}",
            summary.true_best_depth,
            summary.final_fraction_correct * 100.0,
            summary.final_majority_depth,
            summary.final_median_confidence
        )?;
        match summary.rounds_to_90 {
            Some(r) => writeln!(out, "rounds to 90% confidence on the true best depth: {r}")?,
            None => writeln!(
                out,
                "rounds to 90% confidence on the true best depth: not reached in {} rounds",
                summary.rounds
            )?,
        }
        match summary.alone_rounds_to_90 {
            Some(r) => writeln!(
                out,
                "alone (one node, same workload and seed): 90% after {r} rounds"
            )?,
            None => writeln!(
                out,
                "alone (one node, same workload and seed): 90% not reached"
            )?,
        }
        writeln!(
            out,
            "P(true best) by round  mesh  {}\n                      alone {}",
            measure::sparkline(&summary.p_best_by_round),
            measure::sparkline(&summary.alone_p_best_by_round)
        )?;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        writeln!(
            out,
            "a pattern reaches every node: p50 {}, p99 {}, max {} ({} undelivered); {:.0} B and {} of CPU per delivered copy (record {:.0} B)",
            ms(summary.p50_ms),
            ms(summary.p99_ms),
            ms(summary.max_ms),
            summary.undelivered,
            summary.bytes_per_pattern,
            summary.cpu_ms_per_pattern.map_or("-".to_string(), |v| format!("{v:.2} ms")),
            summary.record_bytes
        )?;
        writeln!(
            out,
            "patterns: {} recorded, {} exchanged between nodes ({} served), {} bytes sent; {} of {} rounds fully propagated; wall time {:.1} s",
            summary.patterns_total,
            summary.patterns_exchanged,
            summary.patterns_served,
            summary.bytes_sent,
            summary.rounds_fully_propagated,
            summary.rounds,
            summary.wall_secs
        )?;
        writeln!(out, "{}", summary.mesh)?;
    }
    Ok(())
}

async fn run_swarm(a: &SwarmArgs, strat: Box<dyn DepthStrategy>) -> Result<SwarmSummary> {
    let started = Instant::now();
    let base = tempfile::Builder::new()
        .prefix("metamesh-swarm-")
        .tempdir()
        .context("creating a temporary directory")?;
    let honest_n = a.nodes - a.byzantine;
    // Keys first, so trust can name peers before the nodes start.
    let mut keys = Vec::with_capacity(a.nodes);
    for i in 0..a.nodes {
        let dd = crate::datadir::DataDir {
            root: base.path().join(format!("node{i}")),
        };
        keys.push(
            dd.init()
                .with_context(|| format!("creating node {i}'s identity"))?,
        );
    }
    let ids: Vec<libp2p::PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    // Node 0 … honest_n-1 are honest; the rest lie.
    let mut nodes: Vec<RunningNode> = Vec::with_capacity(a.nodes);
    for i in 0..a.nodes {
        let mut cfg = node_config(nodes.first(), &env)?;
        let honest = i < honest_n;
        match a.trust.as_str() {
            "fleet" if honest => {
                cfg.trust.trusted = (0..honest_n)
                    .filter(|j| *j != i)
                    .map(|j| ids[j].to_string())
                    .collect();
            }
            "anchor" if i != 0 => cfg.trust.trusted = vec![ids[0].to_string()],
            _ => {}
        }
        let n = start_node(NodeOptions {
            data_dir: base.path().join(format!("node{i}")),
            config: cfg,
            auto_init: true,
            serve_api: false,
        })
        .await
        .with_context(|| format!("starting node {i}"))?;
        nodes.push(n);
    }
    let most = node_config(None, &env)?.peers.max as u64;
    let settle_ms = mesh::settle(&nodes, most).await;
    let counters_start = mesh::counters(&nodes);

    // Every node reports each pattern it stores from a peer: when did the
    // last node get it?
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let mut watchers = Vec::with_capacity(nodes.len());
    for n in &nodes {
        let mut rx = n.node.subscribe();
        let arrivals = arrivals.clone();
        watchers.push(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(NodeEvent::PatternAccepted {
                        origin,
                        seq,
                        local: false,
                        ..
                    }) => {
                        let at = Instant::now();
                        lock(&arrivals).arrived(origin, seq, at);
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        }));
    }
    let cpu_start = measure::process_cpu();

    let best = true_best();
    let worst = true_worst();
    let mut rngs: Vec<ChaCha8Rng> = (0..a.nodes)
        .map(|i| ChaCha8Rng::seed_from_u64(a.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)))
        .collect();
    let mut total: u64 = 0;
    let mut per_round = Vec::with_capacity(a.rounds);
    let mut rounds_to_90 = None;
    let mut round_keys: Vec<Vec<(String, u64)>> = Vec::with_capacity(a.rounds);
    if !a.json {
        println!(
            "swarm: {} nodes ({} byzantine), strategy {}, trust {}, seed {}; true best depth {best}",
            a.nodes, a.byzantine, strat.name(), a.trust, a.seed
        );
        println!("round  majority    correct  P(true best)  confidence  propagated");
    }
    for round in 1..=a.rounds {
        let round_start = Instant::now();
        // Decide (from each node's collective view), then record.
        let mut submissions = Vec::with_capacity(a.nodes);
        for (i, n) in nodes.iter().enumerate() {
            let node_id = n.peer_id().to_string();
            let mut ps = Vec::new();
            if i < honest_n {
                let view = n
                    .node
                    .collective()
                    .await
                    .map_err(|e| anyhow::anyhow!("collective view: {e}"))?
                    .view(Prior::default());
                let choice = strat.choose(&view, ATP_BUDGET, &mut rngs[i]);
                let q = outcome(choice.depth, &mut rngs[i]);
                let mode = if choice.followed_learning {
                    "followed"
                } else {
                    "explored"
                };
                ps.push(make_pattern(
                    format!("r{round}-n{i}"),
                    &node_id,
                    choice.depth,
                    q,
                    mode,
                )?);
            } else {
                // The lie: the worst depth looks excellent, the best looks bad.
                let jitter = 0.02 * gaussian(&mut rngs[i]);
                ps.push(make_pattern(
                    format!("r{round}-n{i}-a"),
                    &node_id,
                    worst,
                    (0.95 + jitter).clamp(0.0, 1.0),
                    "general",
                )?);
                ps.push(make_pattern(
                    format!("r{round}-n{i}-b"),
                    &node_id,
                    best,
                    (0.05 + jitter).clamp(0.0, 1.0),
                    "general",
                )?);
            }
            total += ps.len() as u64;
            let node = n.node.clone();
            submissions.push(tokio::spawn(async move {
                let r = node.submit_patterns(ps).await;
                (r, Instant::now())
            }));
        }
        let mut recorded = Vec::with_capacity(submissions.len());
        for s in submissions {
            let (r, at) = s.await.context("a node's recording task failed")?;
            let submitted = r.map_err(|e| anyhow::anyhow!("recording: {e}"))?;
            let mut arr = lock(&arrivals);
            for p in submitted {
                recorded.push((p.origin.clone(), p.seq));
                arr.recorded(p.origin, p.seq, at);
            }
        }
        // Barrier: wait until every node holds every pattern (bounded).
        let deadline = Instant::now() + ROUND_DEADLINE;
        let propagated = loop {
            if nodes
                .iter()
                .all(|n| n.node.store().pattern_count() >= total)
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // What do the honest nodes believe?
        let mut votes = [0usize; Depth::COUNT];
        let mut conf_true = Vec::with_capacity(honest_n);
        let mut conf_own = Vec::with_capacity(honest_n);
        for n in nodes.iter().take(honest_n) {
            let agg = n
                .node
                .collective()
                .await
                .map_err(|e| anyhow::anyhow!("collective view: {e}"))?;
            let p = agg.prob_best(&Prior::default());
            let (d, c) = agg.best(&Prior::default());
            votes[d.index()] += 1;
            conf_own.push(c);
            conf_true.push(p.get(best.index()).copied().unwrap_or(0.0));
        }
        let majority = (0..Depth::COUNT)
            .max_by_key(|i| (votes[*i], std::cmp::Reverse(*i)))
            .unwrap_or(0);
        round_keys.push(recorded);
        let report = RoundReport {
            round,
            majority_depth: Depth::ALL[majority],
            fraction_correct: votes[best.index()] as f64 / honest_n as f64,
            median_confidence_true_best: median(&mut conf_true),
            median_confidence: median(&mut conf_own),
            propagated,
            round_ms: round_start.elapsed().as_millis() as u64,
            // (filled in once the last arrivals are in)
            p50_ms: None,
            p99_ms: None,
        };
        if rounds_to_90.is_none() && report.median_confidence_true_best >= 0.9 {
            rounds_to_90 = Some(round);
        }
        if !a.json {
            println!(
                "{:>5}  {:<10}  {:>6.0}%  {:>12.3}  {:>10.3}  {}",
                round,
                report.majority_depth.as_str(),
                report.fraction_correct * 100.0,
                report.median_confidence_true_best,
                report.median_confidence,
                if propagated { "yes" } else { "partial" }
            );
        }
        per_round.push(report);
    }
    let cpu = match (cpu_start, measure::process_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // Let the last arrivals be reported, then read them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for w in &watchers {
        w.abort();
    }
    let load_average = measure::load_average();
    let mesh_report = mesh::report(&nodes, &counters_start, settle_ms).await;
    let latency: LatencySummary = measure::summarise(&lock(&arrivals).latencies(a.nodes));
    for (r, keys) in per_round.iter_mut().zip(&round_keys) {
        let l = measure::summarise(&lock(&arrivals).latencies_of(keys, a.nodes));
        (r.p50_ms, r.p99_ms) = (l.p50_ms, l.p99_ms);
    }
    let record_bytes = mean_record_bytes(&nodes[0]);
    let mut exchanged = 0;
    let mut served = 0;
    let mut bytes_sent = 0;
    for n in &nodes {
        let m = n.node.metrics().snapshot();
        exchanged += m.patterns_accepted;
        served += m.patterns_shared;
        bytes_sent += m.bytes_sent;
    }
    let (mut tree_grafts, mut tree_repairs, mut tree_duplicates) = (0, 0, 0);
    for n in &nodes {
        if let Ok(t) = n.node.tree_stats().await {
            tree_grafts += t.core.grafts_sent;
            tree_repairs += t.core.repairs;
            tree_duplicates += t.core.duplicates;
        }
    }
    let last = per_round.last().cloned();
    for n in nodes {
        let _ = n.shutdown().await;
    }
    let last = last.context("no rounds ran")?;
    let copies = (total as f64 * (a.nodes as f64 - 1.0)).max(1.0);
    let alone_rng = &mut ChaCha8Rng::seed_from_u64(a.seed.wrapping_mul(1_000_003));
    let alone = measure::alone_baseline(
        strat.as_ref(),
        alone_rng,
        a.rounds,
        ATP_BUDGET,
        best,
        |d, r| outcome(d, r),
    );
    Ok(SwarmSummary {
        nodes: a.nodes,
        byzantine: a.byzantine,
        rounds: a.rounds,
        seed: a.seed,
        strategy: strat.name().to_string(),
        trust: a.trust.clone(),
        true_best_depth: best,
        final_majority_depth: last.majority_depth,
        final_fraction_correct: last.fraction_correct,
        final_median_confidence: last.median_confidence,
        rounds_to_90,
        patterns_total: total,
        patterns_exchanged: exchanged,
        patterns_served: served,
        bytes_sent,
        rounds_fully_propagated: per_round.iter().filter(|r| r.propagated).count(),
        p50_ms: latency.p50_ms,
        p99_ms: latency.p99_ms,
        max_ms: latency.max_ms,
        undelivered: latency.undelivered,
        bytes_per_pattern: bytes_sent as f64 / copies,
        record_bytes,
        cpu_ms_per_pattern: cpu.map(|c| c.as_secs_f64() * 1000.0 / copies),
        p_best_by_round: per_round
            .iter()
            .map(|r| r.median_confidence_true_best)
            .collect(),
        alone_rounds_to_90: measure::rounds_to_90(&alone),
        alone_p_best_by_round: alone,
        wall_secs: started.elapsed().as_secs_f64(),
        mesh: mesh_report,
        load_average,
        tree_grafts,
        tree_repairs,
        tree_duplicates,
        per_round,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mean wire size of node 0's own records (what one pattern costs to send).
fn mean_record_bytes(n: &RunningNode) -> f64 {
    let recs = n
        .node
        .store()
        .records_in_range(n.peer_id(), 1, u64::MAX, 64, 1 << 20)
        .unwrap_or_default();
    if recs.is_empty() {
        return 0.0;
    }
    let sum: usize = recs
        .iter()
        .map(|r| r.body.len() + r.signer.len() + r.signature.len() + 16)
        .sum();
    sum as f64 / recs.len() as f64
}
