//! The `metamesh` binary: a thin clap front over `metamesh_node`.

use std::process::ExitCode;

use clap::Parser;
use metamesh_node::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The swarm runs many nodes in one process and prints its own report:
    // their per-node info logs would drown it.
    let default_filter = match cli.command {
        Command::Swarm(_) => "warn",
        _ => "info",
    };
    metamesh_node::logging::init(cli.log_json, default_filter);
    let result = match cli.command {
        Command::Init(a) => metamesh_node::cli::offline::init(&cli.global, a),
        Command::Id(a) => metamesh_node::cli::offline::id(&cli.global, a),
        Command::Import(a) => metamesh_node::cli::offline::import(&cli.global, a),
        Command::Export(a) => metamesh_node::cli::offline::export(&cli.global, a),
        Command::Insights(a) => metamesh_node::cli::client::insights(&cli.global, a),
        Command::Record(a) => metamesh_node::cli::client::record(&cli.global, a),
        Command::Recommend(a) => metamesh_node::cli::client::recommend(&cli.global, a),
        Command::Peers(a) => metamesh_node::cli::client::peers(&cli.global, a),
        Command::Stats(a) => metamesh_node::cli::client::stats(&cli.global, a),
        Command::Run(a) => metamesh_node::cli::run::run(&cli.global, a),
        Command::Swarm(a) => metamesh_node::cli::swarm::swarm(&cli.global, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
