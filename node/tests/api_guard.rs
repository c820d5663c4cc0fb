#![allow(clippy::unwrap_used)]
//! API hardening (issue 12 #4–#7) against the fake node: write checks
//! (content type, Host, Origin), bodies read before permits, an immediate
//! 413 on a huge declared length, header-read/idle timeouts, the connection
//! cap, and "503 means nothing was stored".

mod api_fake;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use api_fake::*;
use metamesh_node::api::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn post_with(s: &TestServer, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = s
        .client
        .post(s.url("/v1/patterns"))
        .body(pattern_json(0.5).to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_json_same_origin_and_a_known_host() {
    let s = TestServer::start(FakeNode::new(4)).await;
    let json = ("content-type", "application/json");

    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, body) = post_with(&s, &[("content-type", ct)]).await;
        assert_eq!(status, 415, "{ct}: {body}");
        assert_error(&body, Some("content-type"));
    }
    let (status, body) = post_with(&s, &[]).await;
    assert_eq!(status, 415, "no content type: {body}");

    for (k, v) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let (status, body) = post_with(&s, &[json, (k, v)]).await;
        assert_eq!(status, 403, "{k}: {v}: {body}");
        assert_error(&body, Some("origin"));
    }
    assert!(s.node.stored().is_empty(), "refused writes stored nothing");

    // The dashboard's own fetches: same origin.
    let own = format!("http://{}", s.addr);
    let (status, body) = post_with(
        &s,
        &[
            json,
            ("origin", own.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let own = format!("http://localhost:{}", s.addr.port());
    let (status, _) = post_with(&s, &[json, ("origin", own.as_str())]).await;
    assert_eq!(status, 201);
    let (status, _) = post_with(&s, &[("content-type", "application/json; charset=utf-8")]).await;
    assert_eq!(status, 201);

    // DNS rebinding: a foreign Host is refused, for reads too.
    let answer = raw_exchange(
        s.addr,
        b"GET /v1/patterns HTTP/1.1\r\nHost: rebind.example:80\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&answer), Some(421), "{answer}");
    assert!(answer.contains("\"field\":\"host\""), "{answer}");
    let req = format!(
        "GET /v1/node HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        s.addr.port()
    );
    let answer = raw_exchange(s.addr, req.as_bytes()).await.unwrap();
    assert_eq!(raw_status(&answer), Some(200), "{answer}");
    let req = format!(
        "GET /v1/node HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        s.addr.port() ^ 1
    );
    let answer = raw_exchange(s.addr, req.as_bytes()).await.unwrap();
    assert_eq!(raw_status(&answer), Some(421), "wrong port: {answer}");

    // The dashboard page itself.
    let r = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_allowed_hosts_are_answered() {
    let server = ApiServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_allowed_hosts(["node.lan".to_string()]);
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.run(FakeNode::new(4), async move {
        let _ = stopped.await;
    }));
    let answer = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: node.lan:8080\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&answer), Some(200), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_declared_body_is_413_at_once() {
    // A body timeout far beyond the test's deadline: an answer proves the
    // server did not wait for the body.
    let limits = ApiLimits {
        body_read_timeout: Duration::from_secs(3600),
        ..ApiLimits::default()
    };
    let s = TestServer::start_with(FakeNode::new(4), limits).await;
    for path in ["/v1/patterns", "/v1/import"] {
        let ct = if path == "/v1/import" {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\ncontent-type: {ct}\r\nContent-Length: 1000000000\r\n\r\n[",
            s.addr
        );
        let answer = raw_exchange(s.addr, req.as_bytes())
            .await
            .expect("answered");
        assert_eq!(raw_status(&answer), Some(413), "{path}: {answer}");
        assert!(answer.contains("\"field\":\"body\""), "{answer}");
    }
    s.shutdown().await;
}

/// Open a connection that sends a write's headers and part of its body, then stalls.
async fn stalled_body(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/patterns HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\nContent-Length: 200\r\n\r\n{{\"depth"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_no_permit_and_time_out() {
    let limits = ApiLimits {
        max_concurrent_requests: 1,
        body_read_timeout: Duration::from_secs(2),
        ..ApiLimits::default()
    };
    let s = TestServer::start_with(FakeNode::new(4), limits).await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stalled_body(s.addr).await);
    }
    // The only permit is free: a complete write goes through.
    let (status, body) = s.post("/v1/patterns", pattern_json(0.4).to_string()).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = s.get("/v1/node").await;
    assert_eq!(status, 200);
    // Each stalled body ends in 408.
    for mut c in stalled {
        let mut out = Vec::new();
        tokio::time::timeout(DEADLINE, c.read_to_end(&mut out))
            .await
            .expect("stalled connection answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&out);
        assert_eq!(raw_status(&answer), Some(408), "{answer}");
    }
    assert_eq!(s.node.stored().len(), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_cut_and_capped() {
    let limits = ApiLimits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 64,
        ..ApiLimits::default()
    };
    let s = TestServer::start_with(FakeNode::new(4), limits).await;
    let mut conns = Vec::new();
    // 300 slowloris connections (an unfinished request head) and 373 idle ones.
    for i in 0..673 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        if i < 300 {
            c.write_all(b"GET /v1/node HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .unwrap();
        }
        conns.push(c);
    }
    // Every one is closed by the server: beyond the cap at once, the
    // rest after the header-read timeout.
    let start = Instant::now();
    for mut c in conns {
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout(DEADLINE, c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                // A 408 answer may precede the close.
                Ok(Ok(_)) => continue,
                Err(_) => panic!("a connection was held past the deadline"),
            }
        }
    }
    assert!(start.elapsed() < DEADLINE);
    // And the server still serves.
    let (status, _) = s.get("/v1/node").await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_means_nothing_was_stored_and_admitted_writes_finish() {
    let limits = ApiLimits {
        max_concurrent_requests: 1,
        request_timeout: Duration::from_millis(300),
        ..ApiLimits::default()
    };
    let s = TestServer::start_with(FakeNode::new(4), limits).await;

    // A write slower than the request timeout still answers 201: once
    // admitted, it is never cut off (the old code answered 503 after
    // storing).
    s.node.inner.submit_delay_ms.store(1500, Ordering::SeqCst);
    let slow = {
        let c = s.client.clone();
        let url = s.url("/v1/patterns");
        tokio::spawn(async move {
            c.post(url)
                .header("content-type", "application/json")
                .body(pattern_json(0.3).to_string())
                .send()
                .await
                .unwrap()
        })
    };
    // While it holds the only permit, another write is refused — and
    // nothing of it is stored.
    let start = Instant::now();
    while s.node.inner.slow_calls.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the slow write never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = s.post("/v1/patterns", pattern_json(0.9).to_string()).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, None);
    assert!(
        body["error"].as_str().unwrap().contains("nothing was done"),
        "{body}"
    );
    let resp = tokio::time::timeout(DEADLINE, slow).await.unwrap().unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let stored = s.node.stored();
    assert_eq!(stored.len(), 1, "only the admitted write is stored");
    assert_eq!(stored[0].quality_achieved, 0.3);
    let answered_201 = stored.len();
    s.node.inner.submit_delay_ms.store(0, Ordering::SeqCst);
    let (_, list) = s.get("/v1/patterns?max_count=1000").await;
    assert_eq!(list.as_array().unwrap().len(), answered_201);
    s.shutdown().await;
}
