//! Crash consistency of a running node (issue 12): start the real `metamesh`
//! binary, load it with concurrent `POST /v1/patterns`, kill it with
//! SIGKILL at a random moment — during start-up (store open, snapshot
//! generation, identity) or under load — and repeat. The node must start
//! again every time, and at the end the store must hold every pattern a
//! `201 Created` acknowledged.
//!
//! ```text
//! cargo build --release -p metamesh-node --bin metamesh
//! cargo run --release -p metamesh-tests --example kill_cycles -- --cycles 100
//! ```
//! Options: `--cycles N` (5), `--seed S` (random, printed), `--clients C`
//! (4), `--batch B` (patterns per POST, 50), `--max-load-ms M` (1500),
//! `--bin PATH` (default: `metamesh` beside this executable's profile dir,
//! or `$METAMESH_BIN`), `--keep DIR` (use DIR as the data dir and keep it).
//! The short version runs in the suite as `tests/tests/kill_node.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use metamesh_protocol::Depth;
use metamesh_storage::{Store, StoreConfig, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Generous: a loaded 2-core machine is slow.
const DEADLINE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct Options {
    pub cycles: u32,
    pub seed: u64,
    pub clients: usize,
    pub batch: usize,
    pub max_load_ms: u64,
    pub bin: PathBuf,
    pub data_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(cycles: u32) -> Options {
        Options {
            cycles,
            seed: rand::random(),
            clients: 4,
            batch: 50,
            max_load_ms: 1500,
            bin: default_bin(),
            data_dir: None,
        }
    }
}

/// What the cycles did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub cycles: u32,
    /// Kills that landed before the API was up (start-up, store open).
    pub startup_kills: u32,
    pub load_kills: u32,
    /// Patterns acknowledged with 201 over all cycles.
    pub acknowledged: usize,
    /// POSTs that failed (connection cut by the kill, 503, ...): not acknowledged.
    pub failed_posts: usize,
    /// Patterns the store held at the end.
    pub held: u64,
    /// Partial snapshots the store's recovery moved aside (files in `recovered/`).
    pub recovered_snapshots: usize,
    pub elapsed: Duration,
}

/// `metamesh` of the same profile as this executable: `$METAMESH_BIN`, else
/// `target/<profile>/metamesh` found from `target/<profile>/{deps,examples}/me`.
pub fn default_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("METAMESH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if matches!(
        dir.file_name().and_then(|n| n.to_str()),
        Some("deps" | "examples")
    ) {
        dir = dir.parent().unwrap();
    }
    dir.join(format!("metamesh{}", std::env::consts::EXE_SUFFIX))
}

struct Node {
    child: Child,
    api: mpsc::Receiver<String>,
}

fn spawn(bin: &Path, data: &Path, log: &Path) -> Node {
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .env_remove("METAMESH_DATA_DIR")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (build it: cargo build -p metamesh-node --bin metamesh)",
                bin.display()
            )
        });
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(api) = line.strip_prefix("api: ") {
                let _ = tx.send(api.trim().to_string());
            }
        }
    });
    Node { child, api: rx }
}

fn kill(node: &mut Node) {
    node.child.kill().unwrap(); // SIGKILL on Unix
    node.child.wait().unwrap();
}

fn pattern_batch(prefix: &str, from: usize, n: usize) -> serde_json::Value {
    let items: Vec<_> = (from..from + n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let q = (i % 100) as f64 / 100.0;
            metamesh_tests::pattern_json(&id, Depth::ALL[i % Depth::ALL.len()], q)
        })
        .collect();
    serde_json::Value::Array(items)
}

/// One POSTing client: acknowledged ids go to `acked`, until `stop`.
fn client(
    api: String,
    prefix: String,
    batch: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
    failed: Arc<Mutex<usize>>,
) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let body = pattern_batch(&prefix, n, batch);
        n += batch;
        let resp = http.post(format!("{api}/v1/patterns")).json(&body).send();
        match resp {
            Ok(r) if r.status().as_u16() == 201 => {
                let Ok(subs) = r.json::<Vec<serde_json::Value>>() else {
                    // The body was cut by the kill: not acknowledged.
                    *failed.lock().unwrap() += 1;
                    continue;
                };
                let mut a = acked.lock().unwrap();
                for s in subs {
                    a.insert(s["pattern_id"].as_str().unwrap().to_string());
                }
            }
            Ok(_) => *failed.lock().unwrap() += 1,
            Err(_) => {
                *failed.lock().unwrap() += 1;
                // The node is gone (killed): stop rather than spin.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Open the store after the last kill, waiting if the lock lingers.
fn open_store(path: &Path) -> Store {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match Store::open(path, &StoreConfig::default()) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            r => {
                return r.unwrap_or_else(|e| panic!("the store will not open: {e}"));
            }
        }
    }
}

/// Run the cycles; panics (naming the cycle and the seed) when the node
/// does not start again or an acknowledged pattern is missing.
pub fn run(opts: &Options) -> Outcome {
    let start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let seed = opts.seed;
    let mut rng = StdRng::seed_from_u64(seed);
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let failed: Arc<Mutex<usize>> = Arc::default();
    let mut out = Outcome::default();
    let node_log = |cycle: u32| logs.join(format!("node-{cycle}.log"));
    let read_log = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    for cycle in 0..opts.cycles {
        let log = node_log(cycle);
        let mut node = spawn(&opts.bin, &data, &log);
        // A third of the kills land during start-up (before the API answers):
        // identity, store open and sled's snapshot, network start.
        if cycle > 0 && rng.gen_bool(1.0 / 3.0) {
            let delay = Duration::from_millis(rng.gen_range(0..400));
            std::thread::sleep(delay);
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!(
                    "seed {seed} cycle {cycle}: the node exited by itself ({status}) during start-up:\n{}",
                    read_log(&log)
                );
            }
            kill(&mut node);
            out.startup_kills += 1;
            continue;
        }
        let api = loop {
            match node.api.recv_timeout(Duration::from_millis(100)) {
                Ok(a) => break a,
                Err(_) => {
                    if let Ok(Some(status)) = node.child.try_wait() {
                        panic!(
                            "seed {seed} cycle {cycle}: the node did not start ({status}):\n{}",
                            read_log(&log)
                        );
                    }
                    assert!(
                        start.elapsed() < DEADLINE * (cycle + 2),
                        "seed {seed} cycle {cycle}: no API address"
                    );
                }
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..opts.clients)
            .map(|c| {
                let (api, stop, acked, failed) =
                    (api.clone(), stop.clone(), acked.clone(), failed.clone());
                let prefix = format!("k{cycle}-c{c}");
                let batch = opts.batch;
                std::thread::spawn(move || client(api, prefix, batch, stop, acked, failed))
            })
            .collect();
        // Kill at a random moment under load: once this cycle's load is
        // flowing (an acknowledgement), so that every load kill cuts writes.
        let before = acked.lock().unwrap().len();
        let t = Instant::now();
        while acked.lock().unwrap().len() == before {
            assert!(
                t.elapsed() < DEADLINE,
                "seed {seed} cycle {cycle}: no POST acknowledged:\n{}",
                read_log(&log)
            );
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!(
                    "seed {seed} cycle {cycle}: the node exited ({status}):\n{}",
                    read_log(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(
            rng.gen_range(20..opts.max_load_ms.max(21)),
        ));
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!(
                "seed {seed} cycle {cycle}: the node exited by itself ({status}) under load:\n{}",
                read_log(&log)
            );
        }
        kill(&mut node);
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        out.load_kills += 1;
    }
    out.cycles = opts.cycles;

    // After the last kill: the store opens, and holds every acknowledged pattern.
    let store = open_store(&data.join("store"));
    let mut held = HashSet::new();
    for r in store.iter_records() {
        let (_, body) = r.unwrap_or_else(|e| panic!("seed {seed}: reading the store: {e}"));
        held.insert(body.pattern.pattern_id);
    }
    let acked = acked.lock().unwrap();
    let missing: Vec<&String> = acked.iter().filter(|id| !held.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: {} of {} acknowledged patterns lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    out.acknowledged = acked.len();
    out.failed_posts = *failed.lock().unwrap();
    out.held = store.pattern_count();
    assert_eq!(out.held, held.len() as u64, "seed {seed}: count disagrees");
    out.recovered_snapshots = count_files(&data.join("store").join("recovered"));
    out.elapsed = start.elapsed();
    out
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                usize::from(
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().ends_with(".generating")),
                )
            }
        })
        .sum()
}

fn main() {
    let mut opts = Options::new(5);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--cycles" => opts.cycles = val().parse().unwrap(),
            "--seed" => opts.seed = val().parse().unwrap(),
            "--clients" => opts.clients = val().parse().unwrap(),
            "--batch" => opts.batch = val().parse().unwrap(),
            "--max-load-ms" => opts.max_load_ms = val().parse().unwrap(),
            "--bin" => opts.bin = PathBuf::from(val()),
            "--keep" => opts.data_dir = Some(PathBuf::from(val())),
            other => panic!("unknown option {other} (see the file's docs)"),
        }
    }
    println!(
        "kill_cycles: {} cycles, seed {}, {} clients x {} patterns per POST, bin {}",
        opts.cycles,
        opts.seed,
        opts.clients,
        opts.batch,
        opts.bin.display()
    );
    let o = run(&opts);
    println!(
        "ok: {} cycles ({} kills during start-up, {} under load) in {:.1} s; \
         {} patterns acknowledged with 201, all present; {} held; {} POSTs cut by kills; \
         {} partial snapshots recovered",
        o.cycles,
        o.startup_kills,
        o.load_kills,
        o.elapsed.as_secs_f64(),
        o.acknowledged,
        o.held,
        o.failed_posts,
        o.recovered_snapshots
    );
}
