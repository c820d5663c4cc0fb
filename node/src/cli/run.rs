//! `metamesh run`: start the node and its HTTP API, print where it can be
//! reached, and run until SIGINT/SIGTERM.
//!
//! The first `run` in an empty data directory creates the identity (as
//! `metamesh init` would) and says so; later runs reuse identity and store,
//! re-dial the peers they knew and resync what they missed.

use anyhow::{Context, Result};

use super::*;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::service::{start_node, NodeOptions};

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
        let running = start_node(NodeOptions {
            data_dir: dd.root.clone(),
            config: cfg,
            auto_init: true,
            serve_api: true,
        })
        .await
        .with_context(|| format!("starting the node in {}", dd.root.display()))?;
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
            .with_context(|| format!("writing {}", dd.listen_addrs_path().display()))?;

        wait_for_signal().await;
        eprintln!("shutting down: flushing the store");
        let _ = std::fs::remove_file(dd.api_addr_path());
        running.shutdown().await.context("shutting down")?;
        Ok(())
    })
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
