//! `metamesh run`: start the node and its HTTP API, print where it can be
//! reached, and run until SIGINT/SIGTERM.
//!
//! The first `run` in an empty data directory creates the identity (as
//! `metamesh init` would) and says so; later runs reuse identity and store,
//! re-dial the peers they knew and resync what they missed.

use anyhow::{Context, Result};

use super::*;
use crate::actor::{start_node, NodeOptions, RunningNode};
use crate::config::Config;
use crate::datadir::DataDir;

pub fn run(g: &GlobalArgs, a: RunArgs) -> Result<()> {
    let dd = DataDir::resolve(g.data_dir.clone());
    let cfg = Config::for_command(g, &dd, Some(&a))?;
    super::preflight::check_listen(&cfg)?;
    let fresh = !dd.identity_path().exists();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let mut signal = std::pin::pin!(wait_for_signal());
        let mut reopening = false;
        loop {
            let running = start(&dd, &cfg, reopening).await?;
            if !reopening {
                if fresh {
                    eprintln!("initialised a new identity in {}", dd.root.display());
                }
                super::extras::print_started(
                    a.json,
                    &super::extras::StartedView {
                        peer_id: running.peer_id().to_string(),
                        listen_addrs: running.listen_addrs.iter().map(|a| a.to_string()).collect(),
                        api: running.api_addr.map(|a| a.to_string()),
                    },
                )?;
            }
            write_addresses(&dd, &running)?;
            let broken = running.store_broken();
            tokio::select! {
                _ = &mut signal => {
                    eprintln!("shutting down: flushing the store");
                    let _ = std::fs::remove_file(dd.api_addr_path());
                    running.shutdown().await.context("shutting down")?;
                    return Ok(());
                }
                _ = broken => {
                    // The store's instance keeps its first I/O error: stop
                    // everything that holds it and open it afresh.
                    tracing::warn!("restarting the node in process to reopen its store");
                    if let Err(e) = running.shutdown().await {
                        tracing::warn!(error = %e, "stopping the node with a broken store");
                    }
                    reopening = true;
                }
            }
        }
    })
}

/// Start the node; after a stop for a reopen, retry for a while (the old
/// instance's last handles may still be letting go of sled's lock).
async fn start(dd: &DataDir, cfg: &Config, reopening: bool) -> Result<RunningNode> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let started = start_node(NodeOptions {
            data_dir: dd.root.clone(),
            config: cfg.clone(),
            auto_init: true,
            serve_api: true,
        })
        .await;
        match started {
            Ok(r) => {
                if reopening {
                    tracing::info!("store reopened: the node runs again");
                }
                return Ok(r);
            }
            Err(e) if reopening && std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "reopening the store: retrying in 1 s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("starting the node in {}", dd.root.display()))
            }
        }
    }
}

/// Where the API and the node listen, for clients and scripts.
fn write_addresses(dd: &DataDir, running: &RunningNode) -> Result<()> {
    if let Some(api) = running.api_addr {
        std::fs::write(dd.api_addr_path(), format!("{api}\n"))
            .with_context(|| format!("writing {}", dd.api_addr_path().display()))?;
    }
    let addrs: String = running
        .listen_addrs
        .iter()
        .map(|a| format!("{a}\n"))
        .collect();
    std::fs::write(dd.listen_addrs_path(), addrs)
        .with_context(|| format!("writing {}", dd.listen_addrs_path().display()))
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
