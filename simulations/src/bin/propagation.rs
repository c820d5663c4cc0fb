//! Network propagation on the real exchange core: N cores, a gossipsub-like
//! mesh, latency, loss, churn, partitions. Prints one JSON object (or a
//! readable summary).
//!
//! `cargo run --release -p metamesh-simulations --bin propagation -- --nodes 1000 --json`

use clap::Parser;
use metamesh_exchange::tree::TreeConfig;
use metamesh_simulations::net::{run, Gossipsub, NetConfig};

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
    /// Fraction of gossipsub RPCs lost.
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
    /// gossipsub mesh_n (D).
    #[arg(long, default_value_t = 6)]
    mesh_n: usize,
    /// gossipsub mesh_n_low (D_lo).
    #[arg(long, default_value_t = 5)]
    mesh_n_low: usize,
    /// gossipsub mesh_n_high (D_hi).
    #[arg(long, default_value_t = 12)]
    mesh_n_high: usize,
    /// gossipsub mesh_outbound_min (D_out).
    #[arg(long, default_value_t = 2)]
    mesh_outbound_min: usize,
    /// gossipsub gossip_lazy (D_lazy).
    #[arg(long, default_value_t = 6)]
    gossip_lazy: usize,
    /// gossipsub gossip_factor.
    #[arg(long, default_value_t = 0.25)]
    gossip_factor: f64,
    /// gossipsub history_gossip: heartbeats advertised in IHAVE.
    #[arg(long, default_value_t = 3)]
    history_gossip: usize,
    /// gossipsub heartbeat interval, ms.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// gossipsub idontwant_message_size_threshold, bytes.
    #[arg(long, default_value_t = 1000)]
    idontwant_threshold: usize,
    /// gossipsub idontwant_on_publish.
    #[arg(long)]
    idontwant_on_publish: bool,
    /// Publish to the mesh only (gossipsub flood_publish = false).
    #[arg(long)]
    no_flood_publish: bool,
    /// Messages without gossipsub's author signature (MessageAuthenticity::Anonymous).
    #[arg(long)]
    unsigned: bool,
    /// Core: minimum seconds between digest announcements while the digest changes.
    #[arg(long, default_value_t = 5.0)]
    announce_interval: f64,
    /// Records over gossipsub's records topic instead of the core's
    /// spanning-tree push (exchange/src/tree/), which is the default, as in the node.
    #[arg(long)]
    no_tree: bool,
    /// Accepted for older scripts: the tree is the default.
    #[arg(long, hide = true, conflicts_with = "no_tree")]
    tree: bool,
    /// Tree: the root bumps its sequence number this often, ms.
    #[arg(long, default_value_t = 1000.0 * TreeConfig::default().heartbeat_secs)]
    tree_heartbeat_ms: f64,
    /// Tree: a root silent this long is dropped, ms.
    #[arg(long, default_value_t = 1000.0 * TreeConfig::default().root_max_age_secs)]
    tree_max_age_ms: f64,
    /// Tree: wait this long for the parent to relay a newer root number, ms.
    #[arg(long, default_value_t = 1000.0 * TreeConfig::default().hold_secs)]
    tree_hold_ms: f64,
    /// Tree: non-tree peers chosen for ids of new records.
    #[arg(long, default_value_t = TreeConfig::default().lazy_peers)]
    tree_lazy: usize,
    /// Tree: most peers sent ids (chosen + reciprocated).
    #[arg(long, default_value_t = TreeConfig::default().max_lazy)]
    tree_max_lazy: usize,
    /// Tree: ids are batched this long, ms.
    #[arg(long, default_value_t = 1000.0 * TreeConfig::default().ihave_delay_secs)]
    tree_ihave_ms: f64,
    /// Tree: wait this long after an id before GRAFT, ms.
    #[arg(long, default_value_t = 1000.0 * TreeConfig::default().graft_timeout_secs)]
    tree_graft_ms: f64,
    /// Tree: seconds between digest announcements while the frontier changes (tree on).
    #[arg(long, default_value_t = TreeConfig::default().announce_interval_secs)]
    tree_announce_s: f64,
    /// Connections each node dials.
    #[arg(long, default_value_t = 8)]
    dial: usize,
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
    anyhow::ensure!(
        a.mesh_n_low <= a.mesh_n
            && a.mesh_n <= a.mesh_n_high
            && a.mesh_outbound_min <= a.mesh_n_low,
        "need mesh_outbound_min <= mesh_n_low <= mesh_n <= mesh_n_high (as gossipsub does)"
    );
    anyhow::ensure!(
        a.mesh_outbound_min * 2 <= a.mesh_n,
        "need mesh_outbound_min * 2 <= mesh_n (as gossipsub does)"
    );
    anyhow::ensure!(
        a.history_gossip <= 5,
        "need history_gossip <= history_length (5)"
    );
    let gossipsub = Gossipsub {
        mesh_n: a.mesh_n,
        mesh_n_low: a.mesh_n_low,
        mesh_n_high: a.mesh_n_high,
        mesh_outbound_min: a.mesh_outbound_min,
        gossip_lazy: a.gossip_lazy,
        gossip_factor: a.gossip_factor,
        history_gossip: a.history_gossip,
        heartbeat_ms: a.heartbeat_ms.max(1),
        idontwant_threshold: a.idontwant_threshold,
        idontwant_on_publish: a.idontwant_on_publish,
        flood_publish: !a.no_flood_publish,
        signed: !a.unsigned,
        ..Gossipsub::default()
    };
    let cfg = NetConfig {
        nodes: a.nodes,
        origins: a.origins.clamp(1, a.nodes),
        patterns_per_origin: a.patterns.max(1),
        publish_window_secs: a.window,
        loss: a.loss,
        churn: a.churn,
        partition: a.partition,
        seed: a.seed,
        dial: a.dial.max(1),
        gossipsub,
        core: metamesh_exchange::Config {
            announce_interval_secs: a.announce_interval.max(0.1),
            tree: TreeConfig {
                enabled: a.tree || !a.no_tree,
                heartbeat_secs: a.tree_heartbeat_ms.max(10.0) / 1000.0,
                root_max_age_secs: a.tree_max_age_ms.max(20.0) / 1000.0,
                hold_secs: a.tree_hold_ms.max(0.0) / 1000.0,
                lazy_peers: a.tree_lazy,
                max_lazy: a.tree_max_lazy.max(a.tree_lazy),
                ihave_delay_secs: a.tree_ihave_ms.max(0.0) / 1000.0,
                graft_timeout_secs: a.tree_graft_ms.max(1.0) / 1000.0,
                announce_interval_secs: a.tree_announce_s.max(0.1),
                ..TreeConfig::default()
            },
            ..metamesh_exchange::Config::default()
        },
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
