#![allow(clippy::unwrap_used)]
//! Streamed routes against the fake node: `POST /v1/import`, `GET
//! /v1/export`, cursor paging, SSE ids and `Last-Event-ID` resume, and the
//! ops routes (`/healthz`, `/v1/openapi.json`, `/metrics` gauges).

mod api_fake;

use api_fake::*;
use metamesh_node::api::*;
use metamesh_node::events::NodeEvent;
use serde_json::{json, Value};

fn line(i: usize, q: f64) -> String {
    json!({"pattern_id": format!("imp-{i}"), "node_id": "legacy", "timestamp": 1.7e9 + i as f64,
           "depth_used": "DEEP", "quality_achieved": q, "success": true,
           "atp_before": 100.0, "atp_after": 90.0})
    .to_string()
}

async fn import(s: &TestServer, query: &str, body: String) -> (u16, Value) {
    let r = s
        .client
        .post(s.url(&format!("/v1/import{query}")))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_lines_and_dedups() {
    let s = TestServer::start(FakeNode::new(4)).await;
    let mut body = String::new();
    for i in 0..1200 {
        body.push_str(&line(i, 0.5));
        body.push('\n');
    }
    body.push_str("\n{not json\n[1,2]\n");
    body.push_str(&line(9999, 1.5));
    body.push('\n');
    body.push_str(&"x".repeat(MAX_LINE_BYTES + 1));
    body.push('\n');
    // The last line has no newline: still read.
    body.push_str(&line(5000, 0.7));
    let (status, r) = import(&s, "?format=thor&line_offset=10", body.clone()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["lines"], 1206);
    assert_eq!(r["accepted"], 1201);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["skipped_total"], 3, "{r}");
    assert_eq!(r["invalid_total"], 2, "{r}");
    let skipped: Vec<(u64, String)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(skipped[0], (1211, "blank line".to_string()));
    assert_eq!(skipped[1].0, 1212);
    assert!(skipped[1].1.starts_with("not valid JSON"));
    assert_eq!(skipped[2].0, 1215);
    assert!(skipped[2].1.contains("longer than"), "{r}");
    assert_eq!(r["invalid"][0]["line"], 1213);
    assert_eq!(r["invalid"][0]["field"], "pattern");
    assert_eq!(r["invalid"][1]["line"], 1214);
    assert_eq!(r["invalid"][1]["field"], "quality_achieved");
    let stored = s.node.stored();
    assert_eq!(stored.len(), 1201);
    assert_eq!(
        stored[0].platform, "thor",
        "format sets the default platform"
    );
    assert_eq!(stored[0].node_id, "legacy");

    // Re-import: all duplicates, nothing new.
    let (status, r) = import(&s, "?format=thor", body).await;
    assert_eq!(status, 200);
    assert_eq!(r["accepted"], 0, "{r}");
    assert_eq!(r["duplicates"], 1201, "{r}");
    assert_eq!(s.node.stored().len(), 1201);

    // Wrong content type, bad parameters.
    let r = s
        .client
        .post(s.url("/v1/import"))
        .header("content-type", "application/json")
        .body(line(1, 0.5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    for (q, field) in [
        ("?format=csv", "format"),
        ("?line_offset=-1", "line_offset"),
        ("?x=1", "x"),
    ] {
        let (status, r) = import(&s, q, line(1, 0.5)).await;
        assert_eq!(status, 400, "{q}: {r}");
        assert_error(&r, Some(field));
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_without_node_id_needs_default_node() {
    let s = TestServer::start(FakeNode::new(4)).await;
    let mut v: Value = serde_json::from_str(&line(1, 0.5)).unwrap();
    v.as_object_mut().unwrap().remove("node_id");
    let (_, r) = import(&s, "", v.to_string()).await;
    assert_eq!(r["invalid"][0]["field"], "node_id", "{r}");
    let (_, r) = import(&s, "?default_node=thor7", v.to_string()).await;
    assert_eq!(r["accepted"], 1, "{r}");
    assert_eq!(s.node.stored()[0].node_id, "thor7");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_every_pattern_and_cursor_pages_cover_all() {
    let s = TestServer::start(FakeNode::new(4)).await;
    let mut body = String::new();
    for i in 0..2500 {
        body.push_str(&line(i, 0.25));
        body.push('\n');
    }
    let (status, _) = import(&s, "", body).await;
    assert_eq!(status, 200);

    let r = s.client.get(s.url("/v1/export")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2500);
    assert!(text.ends_with('\n'));
    for (i, l) in lines.iter().enumerate() {
        let expected = serde_json::to_string(&s.node.stored()[i]).unwrap();
        assert_eq!(*l, expected);
    }

    // Cursor paging, both shapes.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/patterns?paged=true&limit=1000&cursor={c}"),
            None => "/v1/patterns?paged=true&limit=1000".to_string(),
        };
        let (status, page) = s.get(&q).await;
        assert_eq!(status, 200, "{page}");
        for p in page["patterns"].as_array().unwrap() {
            seen.push(p["pattern"]["pattern_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2500);
    let r = s
        .client
        .get(s.url("/v1/patterns?max_count=1000"))
        .send()
        .await
        .unwrap();
    let next = r.headers()["x-next-cursor"].to_str().unwrap().to_string();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains("rel=\"next\""), "{link}");
    assert!(link.contains("max_count=1000"), "{link}");
    let arr: Value = r.json().await.unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 1000);
    assert_eq!(next, format!("{PEER}:1000"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_carry_ids_and_resume() {
    let s = TestServer::start(FakeNode::new(64)).await;
    let mut first = s.client.get(s.url("/v1/events")).send().await.unwrap();
    wait_for_subscriber(&s.node, 1).await;
    for i in 0..5 {
        s.node
            .inner
            .events
            .send(NodeEvent::PeerJoined {
                peer: format!("p{i}"),
            })
            .unwrap();
    }
    let mut acc = String::new();
    read_until(&mut first, &mut acc, "\"peer\":\"p4\"").await;
    let ids: Vec<String> = acc
        .lines()
        .filter_map(|l| l.strip_prefix("id:").map(|i| i.trim().to_string()))
        .collect();
    assert_eq!(ids.len(), 5, "{acc}");
    let (boot, _) = ids[0].split_once('-').unwrap();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(*id, format!("{boot}-{}", n + 1));
    }
    drop(first);

    // Resume after the second event: p2, p3, p4 replayed, then live.
    let mut resumed = s
        .client
        .get(s.url("/v1/events"))
        .header("last-event-id", &ids[1])
        .send()
        .await
        .unwrap();
    let mut acc = String::new();
    read_until(&mut resumed, &mut acc, "\"peer\":\"p4\"").await;
    assert!(!acc.contains("\"peer\":\"p1\""), "{acc}");
    assert!(acc.contains("\"peer\":\"p2\""), "{acc}");
    s.node
        .inner
        .events
        .send(NodeEvent::PeerLeft {
            peer: "live".into(),
        })
        .unwrap();
    read_until(&mut resumed, &mut acc, "\"peer\":\"live\"").await;
    assert_eq!(
        acc.matches("\"peer\":\"p3\"").count(),
        1,
        "each event once: {acc}"
    );

    // An id from another process: a reset event first.
    let mut other = s
        .client
        .get(s.url("/v1/events"))
        .header("last-event-id", "deadbeef-3")
        .send()
        .await
        .unwrap();
    let mut acc = String::new();
    read_until(&mut other, &mut acc, "event: reset").await;
    read_until(&mut other, &mut acc, "\n\n").await;
    assert!(acc.contains("\"type\":\"reset\""), "{acc}");
    drop(resumed);
    drop(other);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_routes_healthz_openapi_and_gauges() {
    let s = TestServer::start(FakeNode::new(4)).await;
    let (status, body) = s.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");

    let (status, doc) = s.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][*path][method.to_ascii_lowercase()].is_object(),
            "{method} {path} not in the OpenAPI document"
        );
        // And the router serves it (not the 404 fallback).
        if *method == "GET" && *path != "/v1/events" {
            let r = s.client.get(s.url(path)).send().await.unwrap();
            assert_ne!(r.status().as_u16(), 404, "{path}");
        }
    }
    // Every documented path is a route.
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(
            ROUTES.iter().any(|(_, p)| p == path),
            "{path} documented but not routed"
        );
    }

    s.post("/v1/patterns", pattern_json(0.5).to_string()).await;
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("metamesh_patterns_stored 1"), "{text}");
    s.shutdown().await;
}
