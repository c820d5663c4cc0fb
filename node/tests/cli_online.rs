#![allow(clippy::unwrap_used)]
//! The real binary with a real `metamesh run` node on the data dir:
//! `import` and `export` through its API give the offline result; offline
//! `insights`/`export` weigh origins under the configured trust exactly as
//! the running node does; a second node on an occupied port fails clearly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use metamesh_protocol::{Pattern, SignedRecord};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metamesh"));
    c.env_remove("METAMESH_DATA_DIR")
        .env_remove("METAMESH_CONFIG")
        .env("RUST_LOG", "warn");
    c
}

fn run_cli(dir: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run_cli(dir, args);
    assert!(
        o.status.success(),
        "metamesh {args:?}: exit {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = ok(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn fixtures() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("../../shared/fixtures"),
        PathBuf::from("/work/shared/fixtures"),
    ]
    .into_iter()
    .find(|c| c.join("expected.json").exists())
    .expect("shared/fixtures beside the checkout")
}

struct Node {
    child: Child,
    base: String,
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

/// Start `metamesh run` on `dir` and wait until its API answers.
fn start(dir: &Path, extra: &[&str]) -> Node {
    start_with(bin(), dir, extra, Stdio::null())
}

/// [`start`] with this command (environment) and this stderr.
fn start_with(mut cmd: Command, dir: &Path, extra: &[&str], stderr: Stdio) -> Node {
    let _ = std::fs::remove_file(dir.join("api.addr"));
    let child = cmd
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
        .stderr(stderr)
        .spawn()
        .unwrap();
    let api_file = dir.join("api.addr");
    let mut node = Node {
        child,
        base: String::new(),
    };
    wait_for("api.addr", || {
        assert!(node.child.try_wait().unwrap().is_none(), "the node exited");
        api_file.exists()
    });
    node.base = format!(
        "http://{}",
        std::fs::read_to_string(&api_file).unwrap().trim()
    );
    let http = reqwest::blocking::Client::new();
    wait_for("the API", || {
        http.get(format!("{}/v1/node", node.base))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    node
}

/// Stop the node (SIGTERM-like kill is enough: the test then waits for the
/// store lock to be released by retrying an offline command).
fn stop(node: Node, dir: &Path) {
    drop(node);
    let _ = std::fs::remove_file(dir.join("api.addr"));
    wait_for("the store lock", || {
        run_cli(dir, &["stats", "--json"]).status.success()
    });
}

const FILES: [&str; 3] = [
    "legion_patterns.json",
    "thor_depth_patterns.jsonl",
    "mixed_unified.jsonl",
];

#[test]
fn online_import_and_export_match_the_offline_result() {
    let fx = fixtures();
    let files: Vec<String> = FILES
        .iter()
        .map(|f| fx.join(f).display().to_string())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let (off, on) = (tmp.path().join("off"), tmp.path().join("on"));
    ok(&off, &["init"]);
    ok(&on, &["init"]);

    let mut args = vec!["import", "--json"];
    args.extend(files.iter().map(String::as_str));
    let offline = json(&off, &args);
    assert_eq!(offline["via"], "store");
    let off_pats = tmp.path().join("off.jsonl");
    ok(&off, &["export", "--patterns", off_pats.to_str().unwrap()]);

    let node = start(&on, &[]);
    let online = json(&on, &args);
    assert_eq!(online["via"], "api", "{online}");
    for k in [
        "accepted",
        "skipped_lines",
        "invalid_records",
        "pattern_count",
    ] {
        assert_eq!(online[k], offline[k], "{k}: {online} vs {offline}");
    }
    for (a, b) in online["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(offline["files"].as_array().unwrap())
    {
        // The same lines are reported, with the file's line numbers.
        assert_eq!(
            a["skipped_lines"].as_array().unwrap().len(),
            b["skipped_lines"].as_array().unwrap().len()
        );
        let lines = |v: &Value, k: &str| -> Vec<u64> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|e| e[0].as_u64().unwrap())
                .collect()
        };
        assert_eq!(lines(a, "skipped_lines"), lines(b, "skipped_lines"));
        assert_eq!(lines(a, "invalid_records"), lines(b, "invalid_records"));
        assert_eq!(a["format"], b["format"]);
    }
    let on_pats = tmp.path().join("on.jsonl");
    let exported = json(
        &on,
        &["export", "--json", "--patterns", on_pats.to_str().unwrap()],
    );
    assert_eq!(exported["via"], "api");
    assert_eq!(exported["patterns"], offline["accepted"]);
    // Patterns carry no signer: the two exports are the same bytes.
    assert_eq!(
        std::fs::read_to_string(&on_pats).unwrap(),
        std::fs::read_to_string(&off_pats).unwrap()
    );
    // Per-node layout through the API, too.
    let dir = tmp.path().join("per_node");
    let per = json(
        &on,
        &[
            "export",
            "--json",
            "--per-node",
            "--patterns",
            dir.to_str().unwrap(),
        ],
    );
    let total: u64 = per["per_node"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, offline["accepted"].as_u64().unwrap());

    // A file with nothing valid: exit code 3 through the API as offline.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "not json\n{\"depth_used\": \"abyss\"}\n").unwrap();
    let o = run_cli(&on, &["import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nothing imported"), "{err}");
    stop(node, &on);
    let o = run_cli(&off, &["import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
}

fn foreign_patterns(store_dir: &Path, key: &Keypair, n: u64) {
    let me = key.public().to_peer_id();
    let dd = metamesh_node::datadir::DataDir::resolve(Some(store_dir.to_path_buf()));
    let store = metamesh_storage::Store::open(&dd.store_path(), &Default::default()).unwrap();
    for i in 1..=n {
        let p = Pattern::from_json_value(
            serde_json::json!({
                "pattern_id": format!("x{i}"),
                "node_id": me.to_string(),
                "timestamp": 1.7e9 + i as f64,
                "depth_used": if i % 2 == 0 { "deep" } else { "light" },
                "quality_achieved": 0.6,
                "success": true,
                "atp_before": 100.0,
                "atp_after": 80.0,
            }),
            None,
        )
        .unwrap();
        let rec = SignedRecord::sign_pattern(p, i, key);
        let body = rec.open_pattern(1.8e9).unwrap();
        store.insert(&rec, &body).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn offline_commands_honour_the_configured_trust_like_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    ok(&dir, &["init"]);
    for _ in 0..4 {
        ok(
            &dir,
            &[
                "record",
                "--depth",
                "standard",
                "--quality",
                "0.8",
                "--success",
                "--atp-before",
                "100",
                "--atp-after",
                "70",
            ],
        );
    }
    let other = Keypair::generate_ed25519();
    foreign_patterns(&dir, &other, 6);
    let plain = json(&dir, &["insights", "--json"]);
    assert_eq!(plain["pattern_count"], 10, "{plain}");

    // Deny the other origin in DIR/config.toml (read by every command).
    std::fs::write(
        dir.join("config.toml"),
        format!("[trust]\ndenied = [\"{}\"]\n", other.public().to_peer_id()),
    )
    .unwrap();
    let offline = json(&dir, &["insights", "--json"]);
    assert_eq!(
        offline["pattern_count"], 4,
        "denied origin still counted: {offline}"
    );
    let ins = tmp.path().join("ins.json");
    ok(&dir, &["export", "--insights", ins.to_str().unwrap()]);
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&ins).unwrap()).unwrap();
    assert_eq!(exported["pattern_count"], 4);

    let node = start(&dir, &[]);
    let online = json(&dir, &["insights", "--json"]);
    for k in ["pattern_count", "depth_performance", "learned_preferences"] {
        assert_eq!(
            online[k], offline[k],
            "{k}: online {online} vs offline {offline}"
        );
    }
    stop(node, &dir);
}

#[test]
fn a_second_node_on_an_occupied_port_fails_naming_the_address() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    drop(held);
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let child = bin()
        .arg("--data-dir")
        .arg(&a)
        .args(["run", "--json", "--listen", &listen, "--api", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = Node {
        child,
        base: String::new(),
    };
    // `run --json` prints one JSON line once it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(first.child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let started: Value = serde_json::from_str(&line).unwrap();
    assert!(started["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    assert!(
        started["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains(&format!("/tcp/{port}"))),
        "{started}"
    );
    let o = bin()
        .arg("--data-dir")
        .arg(&b)
        .args(["run", "--listen", &listen, "--api", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the second node started");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&listen) && err.contains("in use"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    drop(first.child.kill());
}

/// A lone node (no bootstrap peers, default log level) that starts, records
/// and reads through its API writes no WARN or ERROR line, and no ANSI colour
/// codes into a redirected log. (Before the fix, kad's own bootstrap timer
/// logged "Failed to trigger bootstrap: No known peers" at WARN.)
#[test]
fn a_lone_node_logs_no_warnings_and_no_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    ok(&dir, &["init"]);
    let log_path = tmp.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = bin();
    cmd.env_remove("RUST_LOG");
    let node = start_with(cmd, &dir, &[], Stdio::from(log));
    let http = reqwest::blocking::Client::new();
    ok(
        &dir,
        &[
            "record",
            "--depth",
            "deep",
            "--quality",
            "0.8",
            "--atp-before",
            "10",
            "--atp-after",
            "5",
        ],
    );
    let stats: Value = http
        .get(format!("{}/v1/stats", node.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["pattern_count"], 1, "{stats}");
    // kad's bootstrap attempt on a new listen address comes after a 500 ms
    // throttle: let the node run past it before reading the log.
    wait_for("two seconds of uptime", || {
        http.get(format!("{}/v1/stats", node.base))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .and_then(|v| v["uptime_secs"].as_f64())
            .is_some_and(|u| u >= 2.0)
    });
    stop(node, &dir);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("INFO"),
        "the log has the node's info lines: {text}"
    );
    assert!(!text.contains('\u{1b}'), "ANSI codes in {text:?}");
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(loud.is_empty(), "a lone node warned: {loud:#?}");
}
