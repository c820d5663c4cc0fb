//! Command-line interface (DESIGN §5). Argument definitions live here; each
//! group of commands has its own module.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

pub mod client;
pub mod exit;
pub mod extras;
pub mod offline;
pub mod online;
pub mod preflight;
pub mod run;
pub mod swarm;
pub mod trust;

#[derive(Debug, Parser)]
#[command(
    name = "metamesh",
    version,
    long_version = extras::LONG_VERSION,
    about = "A peer-to-peer gossip node for federated meta-learning",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 nothing imported, 4 node unreachable \
                  (see docs/install.md)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Log as JSON lines (filter with RUST_LOG).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Data directory (identity key, store, API address file).
    /// Defaults to the per-user data directory.
    #[arg(long, global = true, env = "METAMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (default: DIR/config.toml when it exists).
    /// Offline commands read it too, so they weigh peers as the node does.
    #[arg(long, global = true, env = "METAMESH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the identity and the store; print the PeerId.
    Init(InitArgs),
    /// Print the PeerId and the addresses the node listens on.
    Id(IdArgs),
    /// Run the node.
    Run(RunArgs),
    /// Record one local pattern.
    Record(RecordArgs),
    /// Import pattern files (unified JSONL, Legion JSON, Thor JSONL).
    Import(ImportArgs),
    /// Export patterns (unified JSONL) and insights (JSON).
    Export(ExportArgs),
    /// Show insights.
    Insights(InsightsArgs),
    /// Recommend a depth for the given ATP budget.
    Recommend(RecommendArgs),
    /// List known peers.
    Peers(JsonArgs),
    /// Show counters.
    Stats(JsonArgs),
    /// Run a local mesh of real nodes on loopback on a synthetic workload.
    Swarm(SwarmArgs),
    /// Print the version and the git commit it was built from.
    Version(JsonArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Listen address (repeatable). Default: /ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Bootstrap peer multiaddr with /p2p/<PeerId> (repeatable).
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// HTTP API address. Default 127.0.0.1:0 (any free port).
    #[arg(long)]
    pub api: Option<String>,
    /// Mesh name (topics are metamesh/<mesh>/...).
    #[arg(long)]
    pub mesh: Option<String>,
    /// Parent node multiaddr: inherit its insights and patterns, promote ours to it.
    #[arg(long)]
    pub parent: Option<String>,
    /// Print the startup information (peer id, addresses, API) as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// `metamesh record`. Numbers are read as text and checked by
/// [`client::record_pattern`], so NaN, infinities and out-of-range values
/// get a message naming the flag; negative values parse (`--atp-before -10`).
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// minimal, light, standard, deep or thorough.
    #[arg(long)]
    pub depth: String,
    /// Quality achieved, 0 to 1.
    #[arg(long, allow_negative_numbers = true)]
    pub quality: f64,
    /// The task succeeded: `--success`, `--success true` or `--success false`.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true",
          action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub success: bool,
    /// ATP before the task (a finite number; negative allowed).
    #[arg(long, allow_negative_numbers = true)]
    pub atp_before: f64,
    /// ATP after the task (a finite number; negative allowed).
    #[arg(long, allow_negative_numbers = true)]
    pub atp_after: f64,
    #[arg(long)]
    pub mode: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    Auto,
    Unified,
    Legion,
    Thor,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub format: ImportFormat,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Unified JSONL output file (or directory with --per-node).
    #[arg(long)]
    pub patterns: Option<PathBuf>,
    /// Insights JSON output file.
    #[arg(long)]
    pub insights: Option<PathBuf>,
    /// Write one `{node_id}_patterns.jsonl` per node into the --patterns directory.
    #[arg(long)]
    pub per_node: bool,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    Local,
    Collective,
}

#[derive(Debug, Clone, Args)]
pub struct InsightsArgs {
    #[arg(long, value_enum, default_value = "collective")]
    pub scope: Scope,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RecommendArgs {
    #[arg(long, allow_negative_numbers = true)]
    pub atp: f64,
    /// legion, thor or posterior.
    #[arg(long, default_value = "posterior")]
    pub strategy: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct JsonArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SwarmArgs {
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    #[arg(long, default_value_t = 0)]
    pub byzantine: usize,
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Strategy the honest nodes use: legion, thor or posterior.
    #[arg(long, default_value = "posterior")]
    pub strategy: String,
    /// Print one JSON summary object instead of the per-round table.
    #[arg(long)]
    pub json: bool,
    /// Operator trust between the nodes: `fleet` (honest nodes list each other as trusted), `anchor` (everyone trusts node 0), `none`.
    #[arg(long, default_value = "fleet")]
    pub trust: String,
}
