//! The `metamesh` binary: a thin clap front over `metamesh_node`.
//! Exit codes: see [`metamesh_node::cli::exit`].

use std::process::ExitCode;

use clap::Parser;
use metamesh_node::cli::{client, exit, extras, offline, run, swarm, Cli, Command};

// sled allocates a node per insert and libp2p a buffer per frame; mimalloc
// cuts the CPU of an import by about a sixth (docs/storage.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The swarm runs many nodes in one process and prints its own report:
    // their per-node info logs would drown it.
    // kad tries a bootstrap whenever a listen address appears while no peer
    // is connected and warns "Failed to trigger bootstrap: No known peers"
    // on every lone node; that is a normal state here, so kad's behaviour
    // logs only errors by default (RUST_LOG overrides).
    let default_filter = match cli.command {
        Command::Swarm(_) => "warn,libp2p_kad::behaviour=error",
        _ => "info,libp2p_kad::behaviour=error",
    };
    metamesh_node::logging::init(cli.log_json, default_filter);
    let g = &cli.global;
    let result = match cli.command {
        Command::Init(a) => offline::init(g, a),
        Command::Id(a) => offline::id(g, a),
        Command::Import(a) => offline::import(g, a),
        Command::Export(a) => offline::export(g, a),
        Command::Insights(a) => client::insights(g, a),
        Command::Record(a) => client::record(g, a),
        Command::Recommend(a) => client::recommend(g, a),
        Command::Peers(a) => client::peers(g, a),
        Command::Stats(a) => client::stats(g, a),
        Command::Run(a) => run::run(g, a),
        Command::Swarm(a) => swarm::swarm(g, a),
        Command::Version(a) => extras::version(a),
        Command::Completions(a) => extras::completions(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", exit::render(&e));
            ExitCode::from(exit::code_of(&e))
        }
    }
}
