#![allow(clippy::unwrap_used)]
//! The client commands (`record`, `insights`, `recommend`, `peers`, `stats`)
//! through the real binary: on the store directly, through a node's API
//! (a fake node serving the real router), and the failure modes.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metamesh_node::api::*;
use metamesh_node::events::NodeEvent;
use metamesh_node::metrics::Metrics;
use metamesh_protocol::insights::InsightSet;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, InsightsDocument, Pattern};
use serde_json::Value;
use tokio::sync::broadcast;

fn metamesh(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("METAMESH_DATA_DIR")
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = metamesh(dir, args);
    assert!(
        o.status.success(),
        "metamesh {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

fn record(dir: &Path, depth: &str, q: &str) {
    let out = ok(
        dir,
        &[
            "record",
            "--depth",
            depth,
            "--quality",
            q,
            "--success",
            "--atp-before",
            "200",
            "--atp-after",
            "170",
        ],
    );
    assert!(out.starts_with("recorded cli-"), "{out}");
}

/// A port nothing listens on (bound then released).
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}

#[test]
fn commands_work_on_the_store_without_a_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let peer = ok(dir, &["init"]).trim().to_string();
    for _ in 0..6 {
        record(dir, "standard", "0.9");
        record(dir, "light", "0.4");
    }
    // A stale api.addr (node gone) is ignored: the store is used.
    std::fs::write(dir.join("api.addr"), format!("{}\n", dead_addr())).unwrap();
    record(dir, "standard", "0.95");

    let bad = metamesh(
        dir,
        &[
            "record",
            "--depth",
            "deep",
            "--quality",
            "1.5",
            "--atp-before",
            "1",
            "--atp-after",
            "0",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--quality"),
        "{bad:?}"
    );

    let local = json(dir, &["insights", "--scope", "local", "--json"]);
    assert_eq!(local["node_id"], peer.as_str());
    assert_eq!(local["pattern_count"], 13);
    assert_eq!(
        local["learned_preferences"]["optimal_quality_depth"],
        "standard"
    );
    let coll = json(dir, &["insights", "--json"]);
    assert_eq!(coll["pattern_count"], 13);
    let human = ok(dir, &["insights"]);
    assert!(
        human.contains("evidence from 1 origins (13 patterns)") && human.contains("(anchor)"),
        "{human}"
    );
    let human = ok(dir, &["insights", "--scope", "local"]);
    assert!(
        human.contains("local insights")
            && human.contains("standard")
            && human.contains("optimal_quality_depth"),
        "{human}"
    );

    let rec = json(
        dir,
        &["recommend", "--atp", "500", "--strategy", "thor", "--json"],
    );
    assert_eq!(rec["depth"], "standard");
    assert_eq!(rec["strategy"], "thor");
    let human = ok(dir, &["recommend", "--atp", "500"]);
    assert!(human.contains("strategy posterior"), "{human}");
    let bad = metamesh(dir, &["recommend", "--atp", "5", "--strategy", "oracle"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--strategy"),
        "{bad:?}"
    );

    let stats = json(dir, &["stats", "--json"]);
    assert_eq!(stats["peer_id"], peer.as_str());
    assert_eq!(stats["pattern_count"], 13);
    assert_eq!(stats["own_seq"], 13);
    assert_eq!(stats["depth_distribution"]["standard"], 7);
    assert!(ok(dir, &["stats"]).contains("not running"));

    assert_eq!(json(dir, &["peers", "--json"]), serde_json::json!([]));
    assert!(ok(dir, &["peers"]).contains("no known peers"));
}

#[test]
fn a_locked_store_with_a_silent_api_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    // This process holds the store, as a running node would.
    let _held = metamesh_storage::Store::open(&dir.join("store"), &Default::default()).unwrap();
    std::fs::write(dir.join("api.addr"), dead_addr()).unwrap();
    let o = metamesh(dir, &["stats"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("locked by a running node") && err.contains("does not answer"),
        "{err}"
    );
    std::fs::remove_file(dir.join("api.addr")).unwrap();
    let o = metamesh(dir, &["insights"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("locked by another process"),
        "{o:?}"
    );
    let o = metamesh(tempfile::tempdir().unwrap().path(), &["stats"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("metamesh init"),
        "{o:?}"
    );
}

// ---- through the API -------------------------------------------------------

#[derive(Clone)]
struct Fake {
    peer_id: String,
    recorded: Arc<Mutex<Vec<Pattern>>>,
    events: broadcast::Sender<NodeEvent>,
    metrics: Metrics,
}

impl NodeApi for Fake {
    async fn submit_patterns(
        &self,
        patterns: Vec<Pattern>,
    ) -> Result<Vec<SubmittedPattern>, ApiError> {
        let mut r = self.recorded.lock().unwrap();
        let mut out = Vec::new();
        for p in patterns {
            r.push(p.clone());
            out.push(SubmittedPattern {
                origin: self.peer_id.clone(),
                seq: 1000 + r.len() as u64,
                hash: "ff".into(),
                pattern_id: p.pattern_id,
            });
        }
        Ok(out)
    }
    async fn query_patterns(
        &self,
        _: RequestFilters,
        _: usize,
    ) -> Result<Vec<PatternView>, ApiError> {
        Ok(vec![])
    }
    async fn insights(&self, scope: Scope) -> Result<InsightsDocument, ApiError> {
        let id = match scope {
            Scope::Local => "from-api-local",
            Scope::Collective => "from-api-collective",
        };
        Ok(InsightsDocument::new(
            id,
            "fake",
            77,
            InsightSet::default(),
            1.0,
        ))
    }
    async fn recommend(&self, atp: f64, strategy: String) -> Result<Recommendation, ApiError> {
        Ok(Recommendation {
            depth: Depth::Thorough,
            strategy,
            confidence: 0.99,
            atp,
            reason: "from api".into(),
        })
    }
    async fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        Ok(vec![PeerView {
            peer_id: "remote".into(),
            addrs: vec![],
            connected: true,
            reputation: 1.0,
            class: "neutral".into(),
        }])
    }
    async fn reputation(&self) -> Result<Vec<ReputationView>, ApiError> {
        Ok(vec![])
    }
    async fn stats(&self) -> Result<StatsView, ApiError> {
        Ok(StatsView {
            peer_id: self.peer_id.clone(),
            pattern_count: 4242,
            metrics: self.metrics.snapshot(),
            ..Default::default()
        })
    }
    async fn node_info(&self) -> Result<NodeInfo, ApiError> {
        Ok(NodeInfo {
            peer_id: self.peer_id.clone(),
            listen_addrs: vec![],
            mesh: "default".into(),
            api_addr: None,
            version: "fake".into(),
        })
    }
    fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_use_a_running_nodes_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let peer = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || ok(&dir, &["init"]).trim().to_string())
            .await
            .unwrap()
    };
    let fake = Fake {
        peer_id: peer.clone(),
        recorded: Arc::default(),
        events: broadcast::channel(4).0,
        metrics: Metrics::new(),
    };
    let server = ApiServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    std::fs::write(dir.join("api.addr"), format!("{}\n", server.local_addr())).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(fake.clone(), async move {
        let _ = stopped.await;
    }));
    // The node holds the store, so success proves the API was used.
    let held = metamesh_storage::Store::open(&dir.join("store"), &Default::default()).unwrap();

    let d = dir.clone();
    let results = tokio::task::spawn_blocking(move || {
        record(&d, "deep", "0.5");
        (
            json(&d, &["stats", "--json"]),
            json(&d, &["insights", "--scope", "local", "--json"]),
            json(&d, &["recommend", "--atp", "42", "--json"]),
            json(&d, &["peers", "--json"]),
            ok(&d, &["stats"]),
        )
    })
    .await
    .unwrap();
    let (stats, insights, rec, peers, human) = results;
    assert_eq!(stats["pattern_count"], 4242);
    assert_eq!(insights["node_id"], "from-api-local");
    assert_eq!(rec["depth"], "thorough");
    assert_eq!(rec["atp"], 42.0);
    assert_eq!(peers[0]["peer_id"], "remote");
    assert!(human.contains("uptime"), "{human}");
    let recorded = fake.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].depth_used, Depth::Deep);
    assert_eq!(recorded[0].node_id, peer);
    assert_eq!(
        held.pattern_count(),
        0,
        "nothing written behind the node's back"
    );

    // An api.addr that answers as a different node is not trusted.
    let other = Fake {
        peer_id: "someone-else".into(),
        ..fake.clone()
    };
    let server2 = ApiServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    std::fs::write(dir.join("api.addr"), server2.local_addr().to_string()).unwrap();
    let (stop2, stopped2) = tokio::sync::oneshot::channel::<()>();
    let task2 = tokio::spawn(server2.run(other, async move {
        let _ = stopped2.await;
    }));
    let d = dir.clone();
    let o = tokio::task::spawn_blocking(move || metamesh(&d, &["stats"]))
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("different node"),
        "{o:?}"
    );

    stop.send(()).unwrap();
    stop2.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), task2)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
