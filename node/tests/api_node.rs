#![allow(clippy::unwrap_used)]
//! The HTTP API of a real `metamesh run` node (the binary), end to end:
//! api.addr discovery, POST durability, queries, SSE, metrics, the client
//! commands through the API, and clean shutdown.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(90);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metamesh"));
    c.env_remove("METAMESH_DATA_DIR").env("RUST_LOG", "warn");
    c
}

fn cli(dir: &Path, args: &[&str]) -> String {
    let o = bin()
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "metamesh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pattern(depth: &str, q: f64) -> Value {
    json!({"depth_used": depth, "quality_achieved": q, "success": true, "atp_before": 200.0, "atp_after": 170.0})
}

#[test]
fn real_node_api_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let peer = cli(dir, &["init"]).trim().to_string();
    let child = bin()
        .arg("--data-dir")
        .arg(dir)
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--mesh",
            "api-test",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut node = Node { child };
    let api_file = dir.join("api.addr");
    wait_for("api.addr", || api_file.exists());
    let base = format!(
        "http://{}",
        std::fs::read_to_string(&api_file).unwrap().trim()
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();

    let info: Value = http
        .get(format!("{base}/v1/node"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["peer_id"], peer.as_str());
    assert_eq!(info["mesh"], "api-test");

    // Event stream in a thread; report every `event:` line.
    let (tx, rx) = mpsc::channel::<String>();
    let sse_url = format!("{base}/v1/events");
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap();
        let resp = client.get(sse_url).send().unwrap();
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // POST until the stream has seen one accepted pattern (it subscribes asynchronously).
    let mut posted = 0;
    let start = Instant::now();
    let mut seen = Vec::new();
    'outer: loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no pattern_accepted event; saw {seen:?}"
        );
        let r = http
            .post(format!("{base}/v1/patterns"))
            .json(&pattern("standard", 0.9))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        posted += 1;
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            if line.starts_with("data:") && line.contains("\"pattern_accepted\"") {
                let v: Value =
                    serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
                assert_eq!(v["origin"], peer.as_str());
                assert_eq!(v["local"], true);
                break 'outer;
            }
            seen.push(line);
        }
    }

    // A batch with one bad element stores nothing and names it.
    let r = http
        .post(format!("{base}/v1/patterns"))
        .json(&json!([pattern("deep", 0.5), pattern("deep", 7.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let e: Value = r.json().unwrap();
    assert_eq!(e["field"], "[1].quality_achieved");

    let r = http
        .post(format!("{base}/v1/patterns"))
        .json(&json!([pattern("deep", 0.5), pattern("light", 0.3)]))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let stored: Value = r.json().unwrap();
    assert_eq!(stored.as_array().unwrap().len(), 2);
    posted += 2;

    let list: Value = http
        .get(format!("{base}/v1/patterns?depths=deep,light&max_count=10"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let r = http
        .get(format!("{base}/v1/patterns?max_count=0"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    for route in [
        "/v1/insights?scope=local",
        "/v1/insights",
        "/v1/recommendation?atp=150",
        "/v1/peers",
        "/v1/reputation",
        "/v1/stats",
    ] {
        let r = http.get(format!("{base}{route}")).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{route}");
        let _: Value = r.json().unwrap();
    }
    let r = http.get(format!("{base}/nope")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(&format!("metamesh_patterns_recorded_total {posted}")),
        "{metrics}"
    );

    // Client commands go through the API while the node holds the store.
    cli(
        dir,
        &[
            "record",
            "--depth",
            "thorough",
            "--quality",
            "0.6",
            "--atp-before",
            "300",
            "--atp-after",
            "240",
        ],
    );
    posted += 1;
    let stats: Value = serde_json::from_str(&cli(dir, &["stats", "--json"])).unwrap();
    assert_eq!(stats["pattern_count"], posted);
    assert!(
        stats["uptime_secs"].as_f64().unwrap() > 0.0,
        "answered by the running node"
    );

    // SIGTERM: clean shutdown removes api.addr; everything acknowledged is on disk.
    let pid = node.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            assert!(status.success(), "node exit status {status}");
            break;
        }
        assert!(start.elapsed() < DEADLINE, "node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!api_file.exists(), "api.addr removed on clean shutdown");
    let stats: Value = serde_json::from_str(&cli(dir, &["stats", "--json"])).unwrap();
    assert_eq!(stats["pattern_count"], posted);
    assert_eq!(stats["uptime_secs"], 0.0, "answered from the store");
}

/// Start `metamesh run` on `dir` (initialised); its API base URL.
fn start_node(dir: &Path, extra: &[&str]) -> (Node, String) {
    let child = bin()
        .arg("--data-dir")
        .arg(dir)
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node { child };
    let api_file = dir.join("api.addr");
    wait_for("api.addr", || api_file.exists());
    let base = format!(
        "http://{}",
        std::fs::read_to_string(&api_file).unwrap().trim()
    );
    (node, base)
}

fn stop_node(mut node: Node) {
    let pid = node.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    while node.child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 11: 10 000 patterns imported through the API while the node runs;
/// the cursor returns each exactly once; the streamed export equals the
/// offline export of the same store and of an offline import of the file.
#[test]
fn ten_thousand_patterns_import_page_and_export_like_offline() {
    const N: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    cli(&a, &["init"]);
    cli(&b, &["init"]);
    let mut file = String::new();
    for i in 0..N {
        let depth = ["minimal", "light", "standard", "deep", "thorough"][i % 5];
        file.push_str(
            &json!({"pattern_id": format!("big-{i}"), "node_id": "legacy-node",
                    "timestamp": 1.7e9 + i as f64, "platform": "legacy", "mode": "general",
                    "depth_used": depth, "quality_achieved": (i % 100) as f64 / 100.0,
                    "success": i % 3 != 0, "atp_before": 200.0, "atp_after": 150.0})
            .to_string(),
        );
        file.push('\n');
    }
    let big = tmp.path().join("big.jsonl");
    std::fs::write(&big, &file).unwrap();

    let (node, base) = start_node(&a, &[]);
    let http = reqwest::blocking::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/v1/import"))
        .header("content-type", "application/x-ndjson")
        .body(file.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report: Value = r.json().unwrap();
    assert_eq!(report["accepted"], N as u64, "{report}");
    assert_eq!(report["lines"], N as u64);

    // Cursor paging (an odd page size, array shape with the header).
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/patterns?max_count=997");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = http.get(url).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let next = r
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Value = r.json().unwrap();
        for p in page.as_array().unwrap() {
            let id = p["pattern"]["pattern_id"].as_str().unwrap().to_string();
            assert!(seen.insert(id.clone()), "{id} returned twice");
        }
        pages += 1;
        assert!(pages < 100, "paging does not end");
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), N, "every pattern exactly once");

    // The gauge and the streamed export.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(&format!("metamesh_patterns_stored {N}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("metamesh_best_depth_confidence{depth=\"deep\"}"),
        "{metrics}"
    );
    let online = http
        .get(format!("{base}/v1/export"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(online.lines().count(), N);
    stop_node(node);

    let out_a = tmp.path().join("a.jsonl");
    cli(&a, &["export", "--patterns", out_a.to_str().unwrap()]);
    assert_eq!(
        online,
        std::fs::read_to_string(&out_a).unwrap(),
        "online export = offline export"
    );
    cli(&b, &["import", big.to_str().unwrap()]);
    let out_b = tmp.path().join("b.jsonl");
    cli(&b, &["export", "--patterns", out_b.to_str().unwrap()]);
    assert_eq!(
        online,
        std::fs::read_to_string(&out_b).unwrap(),
        "online import = offline import"
    );

    // A second online import of the same file adds nothing.
    let (node, base) = start_node(&a, &[]);
    let report: Value = http
        .post(format!("{base}/v1/import"))
        .header("content-type", "application/x-ndjson")
        .body(file)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(report["accepted"], 0, "{report}");
    assert_eq!(report["duplicates"], N as u64);
    stop_node(node);
}
