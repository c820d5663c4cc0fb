//! Helpers for the multi-node integration tests in `tests/tests/`: real
//! nodes on loopback in one process, each with its own temporary data dir.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use metamesh_node::actor::{start_node, NodeOptions, RunningNode};
use metamesh_node::config::Config;
use metamesh_protocol::{Depth, Pattern};

/// Generous: a loaded 2-core machine is slow.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A node's configuration for a loopback test mesh.
pub fn test_config(bootstrap: &[&RunningNode]) -> Config {
    let mut cfg = Config::default();
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    cfg.api = "127.0.0.1:0".into();
    cfg.bootstrap = bootstrap
        .iter()
        .filter_map(|n| n.tcp_addr())
        .map(|a| a.to_string())
        .collect();
    cfg.sharing.announce_interval_secs = 2;
    cfg.sharing.announce_debounce_ms = 100;
    cfg.sharing.insight_min_interval_secs = 1;
    cfg
}

/// A test node and the data dir it lives in.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub running: Option<RunningNode>,
}

impl TestNode {
    pub async fn start(cfg: Config) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let running = Self::start_in(dir.path().to_path_buf(), cfg).await;
        TestNode {
            dir,
            running: Some(running),
        }
    }

    pub async fn start_in(path: PathBuf, cfg: Config) -> RunningNode {
        start_node(NodeOptions {
            data_dir: path,
            config: cfg,
            auto_init: true,
            serve_api: true,
        })
        .await
        .unwrap()
    }

    pub fn n(&self) -> &RunningNode {
        self.running.as_ref().unwrap()
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.n().api_addr.unwrap())
    }

    pub fn addr(&self) -> Multiaddr {
        self.n().tcp_addr().unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
    }

    /// Restart in the same data dir with `cfg`.
    pub async fn restart(&mut self, cfg: Config) {
        self.stop().await;
        self.running = Some(Self::start_in(self.dir.path().to_path_buf(), cfg).await);
    }

    pub fn pattern_count(&self) -> u64 {
        self.n().node.store().pattern_count()
    }
}

/// Poll `cond` every 50 ms until it holds or [`DEADLINE`] passes.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {DEADLINE:?} waiting for: {what}");
}

/// A schema-valid pattern (timestamps in the recent past).
pub fn pattern(id: &str, depth: Depth, quality: f64) -> Pattern {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": id,
            "node_id": "test",
            "timestamp": now - 10.0,
            "platform": "test",
            "depth_used": depth.as_str(),
            "mode": "general",
            "quality_achieved": quality,
            "success": quality > 0.5,
            "atp_before": 100.0,
            "atp_after": 80.0
        }),
        None,
    )
    .unwrap()
}

/// The same pattern as JSON for `POST /v1/patterns`.
pub fn pattern_json(id: &str, depth: Depth, quality: f64) -> serde_json::Value {
    serde_json::to_value(pattern(id, depth, quality)).unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `GET {api}{path}` as JSON.
pub async fn get_json(api: &str, path: &str) -> serde_json::Value {
    http()
        .get(format!("{api}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Submit patterns through the node's API trait (in process).
pub async fn record(node: &TestNode, patterns: Vec<Pattern>) {
    use metamesh_node::api::NodeApi;
    node.n().node.submit_patterns(patterns).await.unwrap();
}
