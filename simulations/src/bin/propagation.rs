//! Network propagation on the real exchange core: N cores, a gossipsub-like
//! mesh, latency, loss, churn, partitions. Prints one JSON object (or a
//! readable summary).
//!
//! `cargo run --release -p metamesh-simulations --bin propagation -- --nodes 1000 --json`

use clap::Parser;
use metamesh_simulations::net::{run, NetConfig};

#[derive(Parser, Debug)]
#[command(about = "Simulate record propagation over N exchange cores")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Nodes that publish.
    #[arg(long, default_value_t = 20)]
    origins: usize,
    /// Patterns per publishing node.
    #[arg(long, default_value_t = 5)]
    patterns: usize,
    /// Seconds over which patterns are published.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    /// Fraction of gossip transmissions lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Fraction of nodes that leave for a few seconds and come back.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Split the network in two halves during publishing, then heal.
    #[arg(long)]
    partition: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Gossipsub mesh degree D.
    #[arg(long, default_value_t = 6)]
    mesh_d: usize,
    /// Heartbeats advertised in IHAVE (gossipsub history_gossip).
    #[arg(long, default_value_t = 3)]
    history_gossip: usize,
    /// Disable IDONTWANT (gossipsub v1.2).
    #[arg(long)]
    no_idontwant: bool,
    /// Skip the fresh-node bootstrap phase.
    #[arg(long)]
    no_bootstrap: bool,
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!((0.0..1.0).contains(&a.loss), "--loss must be in [0, 1)");
    anyhow::ensure!(
        (0.0..=0.9).contains(&a.churn),
        "--churn must be in [0, 0.9]"
    );
    anyhow::ensure!(
        a.window > 0.0 && a.window.is_finite(),
        "--window must be positive"
    );
    let cfg = NetConfig {
        nodes: a.nodes,
        origins: a.origins.clamp(1, a.nodes),
        patterns_per_origin: a.patterns.max(1),
        publish_window_secs: a.window,
        loss: a.loss,
        churn: a.churn,
        partition: a.partition,
        seed: a.seed,
        mesh_d: a.mesh_d.max(1),
        history_gossip: a.history_gossip,
        idontwant: !a.no_idontwant,
        bootstrap: !a.no_bootstrap,
        ..NetConfig::default()
    };
    let r = run(cfg);
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}
