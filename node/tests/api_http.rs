#![allow(clippy::unwrap_used)]
//! HTTP API routes against a fake in-memory `NodeApi`: every route, status
//! codes, error shapes, size limits, SSE delivery and shutdown.

mod api_fake;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use api_fake::*;
use metamesh_node::api::*;
use metamesh_node::events::NodeEvent;
use metamesh_protocol::Depth;
use serde_json::{json, Value};
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_patterns_single_and_array() {
    let s = TestServer::start(FakeNode::new(16)).await;

    // One object, no node_id / pattern_id / timestamp: filled in.
    let (status, body) = s.post("/v1/patterns", pattern_json(0.8).to_string()).await;
    assert_eq!(status, 201, "{body}");
    let list = body.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["origin"], PEER);
    assert_eq!(list[0]["seq"], 1);
    let stored = s.node.stored();
    assert_eq!(
        stored[0].node_id, PEER,
        "node_id defaults to this node's PeerId"
    );
    assert!(stored[0].pattern_id.starts_with("api-"));
    assert!(stored[0].timestamp > 1.6e9);
    assert_eq!(list[0]["pattern_id"], stored[0].pattern_id.as_str());

    // Array, with explicit ids kept and the Legion alias accepted.
    let mut legion = pattern_json(0.5);
    legion.as_object_mut().unwrap().remove("quality_achieved");
    legion["outcome_quality"] = json!(0.6);
    legion["pattern_id"] = json!("mine-1");
    legion["node_id"] = json!("someone");
    let arr = json!([pattern_json(0.1), legion, pattern_json(1.0)]);
    let (status, body) = s.post("/v1/patterns", arr.to_string()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 3);
    let stored = s.node.stored();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[2].pattern_id, "mine-1");
    assert_eq!(stored[2].node_id, "someone");
    assert_eq!(stored[2].quality_achieved, 0.6);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_patterns_errors_name_the_field() {
    let s = TestServer::start(FakeNode::new(16)).await;

    // Array element 1 out of range: 422 naming "[1].quality_achieved"; nothing stored.
    let arr = json!([pattern_json(0.5), pattern_json(1.5), pattern_json(0.5)]);
    let (status, body) = s.post("/v1/patterns", arr.to_string()).await;
    assert_eq!(status, 422);
    assert_error(&body, Some("[1].quality_achieved"));
    assert!(s.node.stored().is_empty());

    // Single object: the field without an index.
    let mut p = pattern_json(0.5);
    p.as_object_mut().unwrap().remove("depth_used");
    let (status, body) = s.post("/v1/patterns", p.to_string()).await;
    assert_eq!(status, 422);
    assert_error(&body, Some("depth_used"));

    let mut p = pattern_json(0.5);
    p["depth_used"] = json!("bottomless");
    let (status, body) = s.post("/v1/patterns", json!([p]).to_string()).await;
    assert_eq!(status, 422);
    assert_error(&body, Some("[0].depth_used"));

    let mut p = pattern_json(0.5);
    p["success"] = json!("yes");
    let (status, body) = s.post("/v1/patterns", p.to_string()).await;
    assert_eq!(status, 422);
    assert_error(&body, Some("success"));

    // Timestamp too far in the future.
    let mut p = pattern_json(0.5);
    p["timestamp"] = json!(1.0e12);
    let (status, body) = s.post("/v1/patterns", p.to_string()).await;
    assert_eq!(status, 422);
    assert_error(&body, Some("timestamp"));

    // A non-object array element.
    let (status, body) = s
        .post("/v1/patterns", json!([pattern_json(0.5), 7]).to_string())
        .await;
    assert_eq!(status, 422);
    assert_error(&body, Some("[1]"));

    // Not JSON / wrong top-level type / empty array: 400 on the body.
    for bad in ["{not json", "42", "\"x\"", "[]", ""] {
        let (status, body) = s.post("/v1/patterns", bad.to_string()).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_error(&body, Some("body"));
    }

    // The node's own error passes through with its status.
    s.node.inner.fail_submit.store(true, Ordering::SeqCst);
    let (status, body) = s.post("/v1/patterns", pattern_json(0.5).to_string()).await;
    assert_eq!(status, 503);
    assert_error(&body, None);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_patterns_size_limits() {
    let s = TestServer::start(FakeNode::new(16)).await;

    // Body over 1 MiB: 413 as JSON.
    let mut big = pattern_json(0.5);
    big["context"] = json!({ "blob": "x".repeat(MAX_BODY_BYTES + 10) });
    let (status, body) = s.post("/v1/patterns", big.to_string()).await;
    assert_eq!(status, 413);
    assert_error(&body, Some("body"));

    // Too many patterns (each small): 413.
    let many: Vec<Value> = (0..=MAX_PATTERNS_PER_POST)
        .map(|_| pattern_json(0.5))
        .collect();
    let text = Value::Array(many).to_string();
    assert!(text.len() < MAX_BODY_BYTES);
    let (status, body) = s.post("/v1/patterns", text).await;
    assert_eq!(status, 413);
    assert_error(&body, Some("body"));

    // Exactly the maximum is fine.
    let max: Vec<Value> = (0..MAX_PATTERNS_PER_POST)
        .map(|_| pattern_json(0.5))
        .collect();
    let (status, body) = s.post("/v1/patterns", Value::Array(max).to_string()).await;
    assert_eq!(status, 201);
    assert_eq!(body.as_array().unwrap().len(), MAX_PATTERNS_PER_POST);
    assert_eq!(s.node.stored().len(), MAX_PATTERNS_PER_POST);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_patterns_filters_and_bad_params() {
    let s = TestServer::start(FakeNode::new(16)).await;
    s.post(
        "/v1/patterns",
        json!([pattern_json(0.2), pattern_json(0.9)]).to_string(),
    )
    .await;

    let (status, body) = s.get("/v1/patterns").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(body[0]["pattern"]["depth_used"], "standard");
    let (filters, limit) = s.node.inner.last_query.lock().unwrap().clone().unwrap();
    assert_eq!(limit, DEFAULT_QUERY_COUNT as usize);
    assert_eq!(filters.max_count, Some(DEFAULT_QUERY_COUNT));
    assert_eq!(filters.depths, None);

    let (status, _) = s
        .get("/v1/patterns?depths=standard,DEEP&min_quality=0.5&min_timestamp=1700000000&max_count=1")
        .await;
    assert_eq!(status, 200);
    let (filters, limit) = s.node.inner.last_query.lock().unwrap().clone().unwrap();
    assert_eq!(limit, 1);
    assert_eq!(filters.depths, Some(vec![Depth::Standard, Depth::Deep]));
    assert_eq!(filters.min_quality, Some(0.5));
    assert_eq!(filters.min_timestamp, Some(1.7e9));
    // The route never returns more than max_count even if the node does.
    let (_, body) = s.get("/v1/patterns?max_count=1").await;
    assert_eq!(body.as_array().unwrap().len(), 1);

    for (query, field) in [
        ("depths=standard,bogus", "depths"),
        ("depths=", "depths"),
        ("min_quality=abc", "min_quality"),
        ("min_quality=2", "min_quality"),
        ("min_quality=NaN", "min_quality"),
        ("min_timestamp=inf", "min_timestamp"),
        ("max_count=0", "max_count"),
        ("max_count=1001", "max_count"),
        ("max_count=-3", "max_count"),
        ("max_count=1&max_count=2", "max_count"),
        ("limit=0", "limit"),
        ("limit=5&max_count=5", "limit"),
        ("limt=5", "limt"),
        ("cursor=nocolon", "cursor"),
        ("cursor=a:b", "cursor"),
        ("paged=maybe", "paged"),
    ] {
        let (status, body) = s.get(&format!("/v1/patterns?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_error(&body, Some(field));
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_routes() {
    let s = TestServer::start(FakeNode::new(16)).await;

    let (status, body) = s.get("/v1/insights?scope=local").await;
    assert_eq!(status, 200);
    assert_eq!(body["node_id"], "local");
    assert_eq!(body["version"], "1.0");
    let (_, body) = s.get("/v1/insights").await;
    assert_eq!(
        body["node_id"], "collective",
        "collective is the default scope"
    );
    let (status, body) = s.get("/v1/insights?scope=global").await;
    assert_eq!(status, 400);
    assert_error(&body, Some("scope"));

    let (status, body) = s.get("/v1/recommendation?atp=120&strategy=thor").await;
    assert_eq!(status, 200);
    assert_eq!(body["depth"], "standard");
    assert_eq!(body["strategy"], "thor");
    assert_eq!(body["atp"], 120.0);
    let (_, body) = s.get("/v1/recommendation?atp=5").await;
    assert_eq!(body["strategy"], "posterior");
    for (query, field) in [
        ("", "atp"),
        ("atp=lots", "atp"),
        ("atp=-1", "atp"),
        ("atp=10&strategy=", "strategy"),
        ("atp=10&strategy=rm%20-rf", "strategy"),
        ("atp=10&strategy=unknown", "strategy"),
    ] {
        let (status, body) = s.get(&format!("/v1/recommendation?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_error(&body, Some(field));
    }

    let (status, body) = s.get("/v1/peers").await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["peer_id"], PEER);
    assert_eq!(body[0]["connected"], true);

    let (status, body) = s.get("/v1/reputation").await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["class"], "neutral");
    assert_eq!(body[0]["counters"]["valid_patterns"], 3);

    s.node.metrics().pattern_recorded();
    let (status, body) = s.get("/v1/stats").await;
    assert_eq!(status, 200);
    assert_eq!(body["peer_id"], PEER);
    assert_eq!(body["metrics"]["patterns_recorded"], 1);

    let (status, body) = s.get("/v1/node").await;
    assert_eq!(status, 200);
    assert_eq!(body["mesh"], "default");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_unknown_routes() {
    let s = TestServer::start(FakeNode::new(16)).await;
    s.node.metrics().pattern_rejected("bad_signature");

    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("metamesh_patterns_rejected_total{reason=\"bad_signature\"} 1"),
        "{text}"
    );

    let r = s
        .client
        .get(s.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");

    // A node that does not implement the optional report: 501, JSON.
    let (status, body) = s.get("/v1/knowledge").await;
    assert_eq!(status, 501);
    assert_error(&body, None);

    let (status, body) = s.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_error(&body, None);
    // Every route is named in the 404 answer.
    for (_, path) in ROUTES {
        assert!(
            body["error"].as_str().unwrap().contains(path),
            "{path}: {body}"
        );
    }
    assert!(body["error"].as_str().unwrap().contains("/v1/knowledge"));

    let r = s.client.delete(s.url("/v1/patterns")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let body: Value = r.json().await.unwrap();
    assert_error(&body, None);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_events_and_ends_at_shutdown() {
    let s = TestServer::start(FakeNode::new(16)).await;
    let mut resp = s.client.get(s.url("/v1/events")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    wait_for_subscriber(&s.node, 1).await;

    s.node
        .inner
        .events
        .send(NodeEvent::PatternAccepted {
            origin: PEER.into(),
            seq: 9,
            hash: "abcd".into(),
            depth: Depth::Deep,
            local: false,
        })
        .unwrap();
    s.node
        .inner
        .events
        .send(NodeEvent::PeerJoined { peer: PEER.into() })
        .unwrap();
    let mut acc = String::new();
    read_until(&mut resp, &mut acc, "event: peer_joined").await;
    read_until(&mut resp, &mut acc, "\n\n").await;
    assert!(acc.contains("event: pattern_accepted\n"), "{acc}");
    let data_line = acc
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("pattern_accepted"))
        .unwrap();
    let data: Value = serde_json::from_str(data_line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(data["type"], "pattern_accepted");
    assert_eq!(data["seq"], 9);
    assert_eq!(data["depth"], "deep");

    // Graceful shutdown completes although the event stream is still open.
    s.shutdown().await;
    let start = Instant::now();
    loop {
        match tokio::time::timeout(DEADLINE, resp.chunk()).await {
            Ok(Ok(Some(_))) => assert!(start.elapsed() < DEADLINE),
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => panic!("event stream still open after shutdown"),
        }
    }
}

/// A subscriber that falls behind skips the lost events (a comment says how
/// many) and keeps receiving. Single-threaded runtime so the server cannot
/// drain the channel while the test floods it.
#[tokio::test(flavor = "current_thread")]
async fn sse_lagging_subscriber_skips_and_continues() {
    let s = TestServer::start(FakeNode::new(4)).await;
    let mut resp = s.client.get(s.url("/v1/events")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    wait_for_subscriber(&s.node, 1).await;
    for i in 0..20 {
        s.node
            .inner
            .events
            .send(NodeEvent::PeerLeft {
                peer: format!("p{i}"),
            })
            .unwrap();
    }
    let mut acc = String::new();
    read_until(&mut resp, &mut acc, "lagged: 16 events skipped").await;
    read_until(&mut resp, &mut acc, "\"peer\":\"p19\"").await;
    assert!(!acc.contains("\"peer\":\"p0\""), "{acc}");
    s.node
        .inner
        .events
        .send(NodeEvent::PeerJoined {
            peer: "after".into(),
        })
        .unwrap();
    read_until(&mut resp, &mut acc, "\"peer\":\"after\"").await;
    drop(resp);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_prebound_listener_returns_its_address() {
    let node = FakeNode::new(4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(node, listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let body: Value = client
        .get(format!("http://{addr}/v1/node"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["peer_id"], PEER);
    stop.send(()).unwrap();
    let returned = tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(returned, addr);

    // Binding an address in use is a clear error.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = ApiServer::bind(taken.local_addr().unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("binding the HTTP API"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_time_out_and_concurrency_is_bounded() {
    let limits = ApiLimits {
        max_concurrent_requests: 1,
        // Long enough for the probe below to land while the slow call hangs.
        request_timeout: Duration::from_secs(5),
        max_event_streams: 1,
        ..ApiLimits::default()
    };
    let s = TestServer::start_with(FakeNode::new(4), limits).await;

    // A hung node call ends in 503 after the timeout, not never.
    let slow = {
        let c = s.client.clone();
        let url = s.url("/v1/recommendation?atp=1&strategy=slow");
        tokio::spawn(async move { c.get(url).send().await.unwrap() })
    };
    // While it is in flight, the only request slot is taken: 503.
    let start = Instant::now();
    while s.node.inner.slow_calls.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "slow request never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = s.get("/v1/node").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, None);
    let resp = tokio::time::timeout(DEADLINE, slow).await.unwrap().unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("did not answer"),
        "{body}"
    );
    // Slot free again.
    assert_eq!(s.get("/v1/node").await.0, 200);

    // Event streams: one at a time; the permit returns when it closes.
    let first = s.client.get(s.url("/v1/events")).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    wait_for_subscriber(&s.node, 1).await;
    let (status, body) = s.get("/v1/events").await;
    assert_eq!(status, 503);
    assert_error(&body, None);
    drop(first);
    let start = Instant::now();
    loop {
        let r = s.client.get(s.url("/v1/events")).send().await.unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "event stream permit never returned"
        );
        // The server notices the closed connection at its next write (keep-alive or event).
        let _ = s
            .node
            .inner
            .events
            .send(NodeEvent::PeerJoined { peer: "x".into() });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}

/// The bare router (no server wrapper) serves the same routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_router_serves() {
    let node = FakeNode::new(4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(node.clone());
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let r = client
        .get(format!("http://{addr}/v1/node"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(format!("http://{addr}/v1/patterns?max_count=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_error(&body, Some("max_count"));
    task.abort();
}
