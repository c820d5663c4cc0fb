//! Crash consistency of a running node: the real `metamesh` binary under
//! concurrent POST load, killed with SIGKILL at random moments (a third of
//! them during start-up), restarted each time; at the end every pattern
//! acknowledged with 201 is in the store. The short version of
//! `cargo run --release -p metamesh-tests --example kill_cycles -- --cycles 100`
//! (the same code). Needs the binary: `cargo build -p metamesh-node --bin metamesh`
//! (the workspace test build does it).
#![allow(clippy::unwrap_used)]

#[path = "../examples/kill_cycles.rs"]
#[allow(dead_code)]
mod kill_cycles;

#[test]
fn sigkilled_node_restarts_and_keeps_every_acknowledged_pattern() {
    let mut opts = kill_cycles::Options::new(5);
    opts.max_load_ms = 800;
    if let Ok(s) = std::env::var("KILL_NODE_SEED") {
        opts.seed = s.parse().unwrap();
    }
    assert!(
        opts.bin.exists(),
        "{} not found: cargo build -p metamesh-node --bin metamesh (or set METAMESH_BIN)",
        opts.bin.display()
    );
    eprintln!("seed {} (KILL_NODE_SEED reruns it)", opts.seed);
    let o = kill_cycles::run(&opts);
    eprintln!("{o:?}");
    assert_eq!(o.cycles, 5);
    assert_eq!(o.startup_kills + o.load_kills, 5);
    assert!(o.load_kills >= 1 && o.acknowledged > 0, "no load: {o:?}");
    assert!(o.held >= o.acknowledged as u64);
}
