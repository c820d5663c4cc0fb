#![allow(clippy::unwrap_used, dead_code)]
//! A fake in-memory `NodeApi` and a test server around it, shared by the
//! API route tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metamesh_node::api::*;
use metamesh_node::events::NodeEvent;
use metamesh_node::metrics::Metrics;
use metamesh_protocol::insights::InsightSet;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, InsightsDocument, Pattern};
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

pub const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
pub const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct FakeNode {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub stored: Mutex<Vec<Pattern>>,
    pub import_keys: Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Milliseconds each submit takes.
    pub submit_delay_ms: std::sync::atomic::AtomicU64,
    pub last_query: Mutex<Option<(RequestFilters, usize)>>,
    pub events: broadcast::Sender<NodeEvent>,
    pub metrics: Metrics,
    pub fail_submit: AtomicBool,
    pub slow_calls: std::sync::atomic::AtomicUsize,
}

impl FakeNode {
    pub fn new(event_capacity: usize) -> Self {
        FakeNode {
            inner: Arc::new(Inner {
                stored: Mutex::new(Vec::new()),
                import_keys: Mutex::new(Default::default()),
                submit_delay_ms: Default::default(),
                last_query: Mutex::new(None),
                events: broadcast::channel(event_capacity).0,
                metrics: Metrics::new(),
                fail_submit: AtomicBool::new(false),
                slow_calls: Default::default(),
            }),
        }
    }
    pub fn stored(&self) -> Vec<Pattern> {
        self.inner.stored.lock().unwrap().clone()
    }
}

fn insights_doc(node_id: &str) -> InsightsDocument {
    InsightsDocument::new(node_id, "test", 0, InsightSet::default(), 1.0)
}

impl NodeApi for FakeNode {
    async fn submit_patterns(
        &self,
        patterns: Vec<Pattern>,
    ) -> Result<Vec<SubmittedPattern>, ApiError> {
        if self.inner.fail_submit.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("store is closing"));
        }
        let delay = self.inner.submit_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            self.inner.slow_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut stored = self.inner.stored.lock().unwrap();
        let mut out = Vec::new();
        for p in patterns {
            stored.push(p.clone());
            out.push(SubmittedPattern {
                origin: PEER.into(),
                seq: stored.len() as u64,
                hash: format!("{:064x}", stored.len()),
                pattern_id: p.pattern_id,
            });
        }
        Ok(out)
    }
    async fn query_patterns(
        &self,
        filters: RequestFilters,
        limit: usize,
    ) -> Result<Vec<PatternView>, ApiError> {
        *self.inner.last_query.lock().unwrap() = Some((filters, limit));
        let stored = self.inner.stored.lock().unwrap();
        Ok(stored
            .iter()
            .enumerate()
            .map(|(i, p)| PatternView {
                origin: PEER.into(),
                seq: i as u64 + 1,
                hash: "00".into(),
                pattern: p.clone(),
            })
            .collect())
    }
    async fn insights(&self, scope: Scope) -> Result<InsightsDocument, ApiError> {
        Ok(insights_doc(match scope {
            Scope::Local => "local",
            Scope::Collective => "collective",
        }))
    }
    async fn recommend(&self, atp: f64, strategy: String) -> Result<Recommendation, ApiError> {
        if strategy == "slow" {
            self.inner.slow_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        if strategy == "unknown" {
            return Err(ApiError::bad_request("unknown strategy", "strategy"));
        }
        Ok(Recommendation {
            depth: Depth::Standard,
            strategy,
            confidence: 0.75,
            atp,
            reason: "fake".into(),
        })
    }
    async fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        Ok(vec![PeerView {
            peer_id: PEER.into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            connected: true,
            reputation: 12.0,
            class: "neutral".into(),
        }])
    }
    async fn reputation(&self) -> Result<Vec<ReputationView>, ApiError> {
        Ok(vec![ReputationView {
            peer_id: PEER.into(),
            score: 12.0,
            class: "neutral".into(),
            weight: 1.0,
            counters: BTreeMap::from([("valid_patterns".to_string(), 3)]),
        }])
    }
    async fn stats(&self) -> Result<StatsView, ApiError> {
        Ok(StatsView {
            peer_id: PEER.into(),
            pattern_count: self.inner.stored.lock().unwrap().len() as u64,
            metrics: self.inner.metrics.snapshot(),
            ..StatsView::default()
        })
    }
    async fn node_info(&self) -> Result<NodeInfo, ApiError> {
        Ok(NodeInfo {
            peer_id: PEER.into(),
            listen_addrs: vec![],
            mesh: "default".into(),
            api_addr: None,
            version: "test".into(),
        })
    }
    fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }
    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    async fn query_patterns_page(
        &self,
        filters: RequestFilters,
        cursor: Option<PageCursor>,
        limit: usize,
    ) -> Result<PatternPage, ApiError> {
        *self.inner.last_query.lock().unwrap() = Some((filters, limit));
        let stored = self.inner.stored.lock().unwrap();
        let start = cursor.map(|c| c.seq as usize).unwrap_or(0);
        let patterns: Vec<PatternView> = stored
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, p)| PatternView {
                origin: PEER.into(),
                seq: i as u64 + 1,
                hash: "00".into(),
                pattern: p.clone(),
            })
            .collect();
        let next_cursor = patterns
            .last()
            .filter(|v| (v.seq as usize) < stored.len())
            .map(|v| {
                PageCursor {
                    origin: PEER.into(),
                    seq: v.seq,
                }
                .to_string()
            });
        Ok(PatternPage {
            patterns,
            next_cursor,
        })
    }
    async fn import_patterns(
        &self,
        batch: Vec<(Pattern, [u8; 32])>,
    ) -> Result<ImportOutcome, ApiError> {
        let mut keys = self.inner.import_keys.lock().unwrap();
        let mut stored = self.inner.stored.lock().unwrap();
        let mut out = ImportOutcome::default();
        for (p, k) in batch {
            if keys.insert(k) {
                stored.push(p);
                out.accepted += 1;
            } else {
                out.duplicates += 1;
            }
        }
        Ok(out)
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub node: FakeNode,
    pub stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<Result<(), ServeError>>,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(node: FakeNode) -> TestServer {
        Self::start_with(node, ApiLimits::default()).await
    }
    pub async fn start_with(node: FakeNode, limits: ApiLimits) -> TestServer {
        let server = ApiServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap()
            .with_limits(limits);
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0, "port 0 resolves to the bound port");
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(node.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            base: format!("http://{addr}"),
            node,
            stop: Some(stop),
            done,
            client: reqwest::Client::builder()
                .timeout(DEADLINE)
                .build()
                .unwrap(),
        }
    }
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

pub fn pattern_json(quality: f64) -> Value {
    json!({
        "depth_used": "standard",
        "quality_achieved": quality,
        "success": true,
        "atp_before": 100.0,
        "atp_after": 80.0,
    })
}

pub fn assert_error(body: &Value, field: Option<&str>) {
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["field"].as_str(), field, "{body}");
}

/// Read SSE chunks until `want` appears in the accumulated text.
pub async fn read_until(resp: &mut reqwest::Response, acc: &mut String, want: &str) {
    let start = Instant::now();
    while !acc.contains(want) {
        assert!(start.elapsed() < DEADLINE, "no {want:?} in {acc:?}");
        match tokio::time::timeout(DEADLINE, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => acc.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("stream ended or failed before {want:?}: {other:?}; got {acc:?}"),
        }
    }
}

pub async fn wait_for_subscriber(node: &FakeNode, n: usize) {
    let start = Instant::now();
    while node.inner.events.receiver_count() < n {
        assert!(start.elapsed() < DEADLINE, "no SSE subscriber");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Send raw bytes on a fresh connection and read the answer until the
/// server closes it or `DEADLINE` passes (then `None`).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(request).await.unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(DEADLINE, c.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// The status code of a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}
