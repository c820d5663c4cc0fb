//! Benchmark (not a test): a million generated patterns.
//!
//! ```text
//! cargo run --release -p metamesh-storage --example million -- [N | --n N] [--dir DIR] [--cache-mb MIB]
//! ```
//!
//! `--cache-mb` sets the import's sled cache (`StoreConfig::cache_capacity_bytes`,
//! `metamesh import` uses `StoreConfig::bulk()`, 32 MiB), which sets most of the peak RSS.
//!
//! N defaults to 1 000 000 (`--n 10000000` for the 10M run). The input file
//! and the store go to a temporary directory under DIR (default: `$TMPDIR`),
//! removed at the end; a 10M run needs about 6 GB there.
//!
//! 1. writes N unified JSONL patterns to a temp file;
//! 2. imports them (parse, validate, sign on every core, store with the time
//!    index and statistics, flush, and `Store::close`, which lets sled write
//!    its snapshot so the next open does not replay the log) and reports the
//!    rate;
//! 3. reports the store's size on disk;
//! 4. in a fresh process: opens the store cold and computes the insights
//!    (from the merged statistics, no scan), with that process's peak RSS;
//! 5. runs `python3 scripts/thor_baseline.py FILE` (the Thor prototype's way:
//!    read the JSONL, keep per-depth lists, compute averages) on the same file
//!    as the baseline, and prints the ratios.
#![allow(clippy::unwrap_used)]

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use libp2p_identity::Keypair;
use metamesh_protocol::schema::Depth;
use metamesh_storage::interop::{self, Format};
use metamesh_storage::{Store, StoreConfig};

// The `metamesh` binary's allocator, so the import here costs what
// `metamesh import` costs (sled allocates a node per insert).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds used by this process so far, all threads (user + system).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / 100.0)
        })
        .unwrap_or(0.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Bytes under `p`: a file's length, or a directory's files, recursively.
fn dir_size(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn generate(path: &Path, n: u64) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let means = [0.30, 0.45, 0.58, 0.63, 0.64];
    let modes = ["general", "verifying", "exploring", "integrating"];
    for i in 0..n {
        let d = (rng.gen_range(0..5)) as usize;
        let q = (means[d] + (rng.gen::<f64>() - 0.5) * 0.4).clamp(0.0, 1.0);
        let q = (q * 1e6).round() / 1e6;
        let before = 50.0 + (rng.gen::<f64>() * 1000.0).round() / 10.0;
        let cost = [4.0, 9.0, 20.0, 35.0, 60.0][d];
        writeln!(
            w,
            r#"{{"pattern_id":"gen-{i}","node_id":"node-{}","timestamp":{},"platform":"bench","depth_used":"{}","mode":"{}","quality_achieved":{q},"success":{},"atp_before":{before},"atp_after":{}}}"#,
            i % 16,
            1_704_902_400.0 + i as f64 * 0.5,
            Depth::ALL[d].as_str(),
            modes[(i % 4) as usize],
            q > 0.5,
            before - cost
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// Child mode: cold open + insights.
fn cold_open(dir: &Path) {
    let t0 = Instant::now();
    let store = Store::open(dir, &StoreConfig::default()).unwrap();
    let open_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let doc = interop::insights_document(&store, "bench", 0.0);
    let insights_s = t1.elapsed().as_secs_f64();
    let dp: serde_json::Value = serde_json::to_value(&doc.depth_performance).unwrap();
    println!(
        "{}",
        serde_json::json!({
            "open_seconds": open_s, "insights_seconds": insights_s,
            "pattern_count": doc.pattern_count, "peak_rss_kib": peak_rss_kib(),
            "depth_performance": dp,
            "optimal_quality_depth": doc.learned_preferences.optimal_quality_depth,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--cold-open") {
        cold_open(Path::new(&args[2]));
        return;
    }
    let mut n: u64 = 1_000_000;
    let mut dir: Option<PathBuf> = None;
    let mut cache_mb: Option<u64> = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--n" => n = it.next().and_then(|s| s.parse().ok()).expect("--n N"),
            "--dir" => dir = Some(it.next().expect("--dir DIR").into()),
            "--cache-mb" => {
                cache_mb = Some(
                    it.next()
                        .and_then(|s| s.parse().ok())
                        .expect("--cache-mb MIB"),
                )
            }
            "-h" | "--help" => {
                println!("usage: million [N | --n N] [--dir DIR] [--cache-mb MIB]   (N default 1000000; DIR default $TMPDIR; sled cache default 32 MiB, as metamesh import)");
                return;
            }
            v => n = v.parse().expect("N must be a number"),
        }
    }
    println!(
        "million: n = {n}, {} cores, load average at start {}",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1),
        loadavg()
    );
    let tmp = match &dir {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    };
    let file = tmp.path().join("bench_patterns.jsonl");
    let store_dir = tmp.path().join("store");

    let t = Instant::now();
    generate(&file, n);
    let file_bytes = std::fs::metadata(&file).unwrap().len();
    println!(
        "generated {n} patterns ({:.1} MiB) in {:.1} s",
        file_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let key = Keypair::ed25519_from_bytes([1; 32]).unwrap();
    // What `metamesh import` opens the store with.
    let mut cfg = StoreConfig::bulk();
    if let Some(mb) = cache_mb {
        cfg.cache_capacity_bytes = mb << 20;
    }
    let store = Store::open(&store_dir, &cfg).unwrap();
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let report = interop::import_file(&store, &key, &file, Format::Auto, false).unwrap();
    let store_s = t.elapsed().as_secs_f64();
    assert_eq!(report.accepted, n, "{report:?}");
    let sled_size = store.size_on_disk().unwrap();
    let t_close = Instant::now();
    store.close().unwrap();
    let close_s = t_close.elapsed().as_secs_f64();
    let import_s = t.elapsed().as_secs_f64();
    let import_cpu = cpu_seconds() - cpu0;
    let disk = dir_size(&store_dir);
    if let Ok(rd) = std::fs::read_dir(&store_dir) {
        let mut parts: Vec<String> = rd
            .flatten()
            .map(|e| {
                format!(
                    "{} {:.1} MiB",
                    e.file_name().to_string_lossy(),
                    dir_size(&e.path()) as f64 / 1048576.0
                )
            })
            .collect();
        parts.sort();
        println!("store files: {}", parts.join(", "));
    }
    let import_rss = peak_rss_kib();
    println!(
        "import: {n} patterns in {import_s:.1} s = {:.0} patterns/s (parse + validate + sign + store + flush {store_s:.1} s, then close + snapshot {close_s:.1} s); peak RSS so far {} MiB",
        n as f64 / import_s,
        import_rss / 1024
    );
    println!(
        "import CPU: {import_cpu:.1} s of this process (all threads) = {:.1} µs/pattern, {:.2} cores busy on average; load average now {}",
        import_cpu * 1e6 / n as f64,
        import_cpu / import_s,
        loadavg()
    );
    println!(
        "store size on disk: {:.1} MiB ({:.0} bytes/pattern; sled reports {:.1} MiB); input file {:.1} MiB",
        disk as f64 / 1048576.0,
        disk as f64 / n as f64,
        sled_size as f64 / 1048576.0,
        file_bytes as f64 / 1048576.0
    );

    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--cold-open")
        .arg(&store_dir)
        .output()
        .unwrap();
    let cold_wall = t.elapsed().as_secs_f64();
    let cold: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // And again: the open after that one (for how open time depends on the log).
    let out2 = Command::new(std::env::current_exe().unwrap())
        .arg("--cold-open")
        .arg(&store_dir)
        .output()
        .unwrap();
    let cold2: serde_json::Value = serde_json::from_slice(&out2.stdout).unwrap();
    let cold_s =
        cold["open_seconds"].as_f64().unwrap() + cold["insights_seconds"].as_f64().unwrap();
    println!(
        "cold open + insights (fresh process): open {:.3} s + insights {:.6} s = {cold_s:.3} s (process wall {cold_wall:.3} s); peak RSS {} MiB; optimal quality depth {}",
        cold["open_seconds"].as_f64().unwrap(),
        cold["insights_seconds"].as_f64().unwrap(),
        cold["peak_rss_kib"].as_u64().unwrap() / 1024,
        cold["optimal_quality_depth"]
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/thor_baseline.py");
    let t = Instant::now();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap();
    let base_wall = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "baseline (python3 scripts/thor_baseline.py, Thor's way): {:.2} s wall ({:.2} s inside), peak RSS {} MiB",
        base_wall,
        base["elapsed_seconds"].as_f64().unwrap(),
        base["peak_rss_kib"].as_u64().unwrap() / 1024
    );
    // Same answers?
    let mut max_diff = 0.0f64;
    for d in Depth::ALL {
        let a = cold["depth_performance"][d.as_str()]["avg_quality"]
            .as_f64()
            .unwrap();
        let b = base["depth_performance"][d.as_str()]["avg_quality"]
            .as_f64()
            .unwrap();
        max_diff = max_diff.max((a - b).abs());
        assert_eq!(
            cold["depth_performance"][d.as_str()]["sample_count"],
            base["depth_performance"][d.as_str()]["sample_count"]
        );
    }
    println!(
        "second cold open + insights: {:.3} s",
        cold2["open_seconds"].as_f64().unwrap() + cold2["insights_seconds"].as_f64().unwrap()
    );
    println!("per-depth avg_quality: max |ours - baseline| = {max_diff:.2e}");
    let rate = n as f64 / import_s;
    let bpp = disk as f64 / n as f64;
    let ratio = base_wall / cold_s;
    let rss_mib = (import_rss.max(cold["peak_rss_kib"].as_u64().unwrap())) as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    println!("\n== budgets (DESIGN §8, issue 10), n = {n} ==");
    println!(
        "    import {rate:.0}/s ÷ 20000 = {:.2}x  {}",
        rate / 20000.0,
        verdict(rate >= 20000.0)
    );
    println!(
        "    store {bpp:.0} B/pattern ÷ 400 = {:.2}x  {}",
        bpp / 400.0,
        verdict(bpp <= 400.0)
    );
    println!(
        "    cold open + insights {cold_s:.3} s ÷ 1 s  {}",
        verdict(cold_s <= 1.0)
    );
    println!(
        "    baseline / ours = {ratio:.0}x (≥ 50x)  {}",
        verdict(ratio >= 50.0)
    );
    println!(
        "    peak RSS {rss_mib:.0} MiB ÷ 256 MiB = {:.2}x  {}",
        rss_mib / 256.0,
        verdict(rss_mib <= 256.0)
    );
    println!(
        "ratios: baseline analysis / our cold open + insights = {:.0}x; our one-time import / baseline analysis = {:.2}x; baseline RSS / our cold-open RSS = {:.1}x",
        base_wall / cold_s,
        import_s / base_wall,
        base["peak_rss_kib"].as_f64().unwrap() / cold["peak_rss_kib"].as_f64().unwrap()
    );
}
