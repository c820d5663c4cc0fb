//! A real full disk (issue 12 #3): the `metamesh` binary runs with its data
//! directory on a small tmpfs of its own (a private mount namespace made by
//! `unshare -m`); the test fills that file system until writes answer 507,
//! frees it again, and the node — whose sled instance keeps the ENOSPC it
//! saw — reopens its store in process and takes writes again, with every
//! pattern acknowledged before still there. Needs root and mount
//! namespaces (as this project's CI has); elsewhere it says so and passes.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metamesh_protocol::schema::Depth;

#[path = "../examples/kill_cycles.rs"]
#[allow(dead_code)]
mod kill_cycles;

const DEADLINE: Duration = Duration::from_secs(120);

fn can_mount() -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `metamesh run` with `mnt` a 32 MiB tmpfs seen by it alone.
fn spawn(bin: &Path, mnt: &Path, port: u16, log: &Path) -> Child {
    Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=32m tmpfs \"$0\" && exec \"$1\" --data-dir \"$0/node\" run \
             --listen /ip4/127.0.0.1/tcp/0 --api \"127.0.0.1:$2\"",
        ])
        .arg(mnt)
        .arg(bin)
        .arg(port.to_string())
        .env_remove("METAMESH_DATA_DIR")
        .env("RUST_LOG", "warn,metamesh=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap()
}

fn batch(prefix: &str, from: usize, n: usize) -> serde_json::Value {
    (from..from + n)
        .map(|i| metamesh_tests::pattern_json(&format!("{prefix}-{i}"), Depth::Standard, 0.5))
        .collect()
}

/// POST a batch: the HTTP status and, on 201, the acknowledged ids.
fn post(
    http: &reqwest::blocking::Client,
    api: &str,
    body: &serde_json::Value,
) -> (u16, Vec<String>) {
    match http.post(format!("{api}/v1/patterns")).json(body).send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let ids = if status == 201 {
                r.json::<Vec<serde_json::Value>>()
                    .unwrap()
                    .iter()
                    .map(|s| s["pattern_id"].as_str().unwrap().to_string())
                    .collect()
            } else {
                vec![]
            };
            (status, ids)
        }
        Err(_) => (0, vec![]),
    }
}

fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; node log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fill the file system holding `dir` (seen through the node's mount
/// namespace) until a write fails.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {}
    path
}

#[test]
fn a_real_full_disk_answers_507_and_the_node_reopens_its_store_once_space_returns() {
    if !can_mount() {
        eprintln!("skipped: needs root and `unshare -m` to give the node a small tmpfs");
        return;
    }
    let bin = kill_cycles::default_bin();
    assert!(
        bin.exists(),
        "{} not found: cargo build -p metamesh-node --bin metamesh",
        bin.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let log = tmp.path().join("node.log");
    let port = free_port();
    let mut child = spawn(&bin, &mnt, port, &log);
    // The node's view of its tmpfs, from outside its mount namespace.
    let seen = PathBuf::from(format!("/proc/{}/root{}", child.id(), mnt.display()));
    let api = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let healthz = |http: &reqwest::blocking::Client| {
        http.get(format!("{api}/healthz"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    wait_for("the node to serve", &log, || healthz(&http) == 200);

    let mut acked: HashSet<String> = HashSet::new();
    let (status, ids) = post(&http, &api, &batch("before", 0, 200));
    assert_eq!(status, 201);
    acked.extend(ids);

    // Fill the disk; writes go on until the store refuses them.
    let filler = fill(&seen.join("node"));
    let mut n = 0;
    let mut refused = 0;
    wait_for("a write refused with 507", &log, || {
        n += 50;
        let (status, ids) = post(&http, &api, &batch("full", n, 50));
        acked.extend(ids);
        if status != 201 {
            refused = status;
        }
        status == 507
    });
    assert_eq!(refused, 507);
    assert_eq!(healthz(&http), 503, "healthz while the disk is full");

    // Free the space: within a few probes the node reopens its store.
    std::fs::remove_file(&filler).unwrap();
    let mut again = 0;
    wait_for("writes accepted again", &log, || {
        again += 1;
        let (status, ids) = post(&http, &api, &batch("after", again * 10, 10));
        acked.extend(ids);
        status == 201
    });
    assert_eq!(healthz(&http), 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("reopening it"),
        "no reopen in the log:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // Everything acknowledged, before, during and after, is held.
    let export = http
        .get(format!("{api}/v1/export"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let held: HashSet<String> = export
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["pattern_id"].as_str().unwrap().to_string()
        })
        .collect();
    let missing: Vec<&String> = acked.difference(&held).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged patterns lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    stop(&mut child);
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
