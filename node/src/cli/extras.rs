//! `metamesh version`, `metamesh completions SHELL`, and the startup lines
//! of `metamesh run` (text or `--json`).

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use serde::Serialize;

use super::*;

/// The git commit the binary was built from (`build.rs`), `unknown` outside
/// a git checkout.
pub const GIT_COMMIT: &str = env!("METAMESH_GIT_COMMIT");

/// `metamesh --version`'s long form: version and commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("METAMESH_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Serialize)]
pub struct VersionView {
    pub name: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
}

pub fn version_view() -> VersionView {
    VersionView {
        name: "metamesh",
        version: env!("CARGO_PKG_VERSION"),
        commit: GIT_COMMIT,
    }
}

/// `metamesh version [--json]`.
pub fn version(a: JsonArgs) -> Result<()> {
    let v = version_view();
    if a.json {
        return client::out_json(&v);
    }
    client::out(&format!("{} {} (commit {})", v.name, v.version, v.commit))
}

/// `metamesh completions SHELL`: the completion script on stdout.
pub fn completions(a: CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "metamesh", &mut buf);
    match std::io::stdout().lock().write_all(&buf) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// What `metamesh run` prints once the node listens.
#[derive(Debug, Serialize)]
pub struct StartedView {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub api: Option<String>,
}

/// Print the startup lines: `peer id:`, `listening on`, `api:` — or, with
/// `--json`, one JSON object on one line.
pub fn print_started(json: bool, v: &StartedView) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(v)?)?;
    } else {
        writeln!(out, "peer id: {}", v.peer_id)?;
        for addr in &v.listen_addrs {
            writeln!(out, "listening on {addr}")?;
        }
        if let Some(api) = &v.api {
            writeln!(out, "api: http://{api}")?;
        }
    }
    out.flush()?;
    Ok(())
}
