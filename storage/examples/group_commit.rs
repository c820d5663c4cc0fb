//! Benchmark (not a test): many small writers through the group-commit writer.
//!
//! ```text
//! cargo run --release -p metamesh-storage --example group_commit -- [CLIENTS] [SECONDS]
//! ```
//!
//! CLIENTS threads (default 16) each submit single patterns, one at a time,
//! for SECONDS (default 10): first each doing `append_local` + `flush` (every
//! write waits for its own flush — the node before the writer), then all
//! through one shared `Writer` (each `submit` returns after the flush that
//! covers it). Every acknowledged pattern is durable in both; the run
//! reopens the store and checks that every acknowledged pattern is there.
//! Prints acknowledged patterns/s, flushes, mean group size and the ratio,
//! and the ceiling the disk sets: with each client waiting for its own
//! acknowledgement, at most CLIENTS patterns can share one fsync, so the
//! rate cannot exceed CLIENTS ÷ (one fsync's latency, measured here on the
//! same file system).
#![allow(clippy::unwrap_used)]

// The `metamesh` binary's allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_storage::{Batch, Outcomes, Store, StoreConfig, Writer, WriterConfig};

fn pattern(i: u64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("gc-{i}"), "node_id": "bench", "timestamp": 1_704_902_400.0 + i as f64,
            "platform": "bench", "depth_used": Depth::ALL[(i % 5) as usize].as_str(), "mode": "general",
            "quality_achieved": (i % 100) as f64 / 100.0, "success": i % 2 == 0,
            "atp_before": 100.0, "atp_after": 90.0
        }),
        None,
    )
    .unwrap()
}

/// Run `clients` threads calling `one(i)` until `secs` pass; acknowledged count.
fn run(clients: u64, secs: f64, one: impl Fn(u64) + Sync) -> (u64, f64) {
    let stop = AtomicBool::new(false);
    let acked = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let (stop, acked, one) = (&stop, &acked, &one);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    one(c * 1_000_000_000 + i);
                    i += 1;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    (acked.load(Ordering::Relaxed), t.elapsed().as_secs_f64())
}

/// Mean latency of a 4 KiB append + fdatasync in `dir` (the disk's floor
/// under every durable acknowledgement).
fn fsync_latency(dir: &std::path::Path, n: u32) -> f64 {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [7u8; 4096];
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
    }
    let s = t.elapsed().as_secs_f64() / f64::from(n);
    drop(f);
    let _ = std::fs::remove_file(path);
    s
}

/// Mean latency of one raw sled insert (a record-sized value) + `flush` in
/// `dir`: the floor under one group commit through sled.
fn sled_flush_latency(dir: &std::path::Path, n: u32) -> f64 {
    let db = sled::Config::new()
        .path(dir.join("sled-probe"))
        .flush_every_ms(Some(500))
        .open()
        .unwrap();
    let value = [7u8; 130];
    let t = Instant::now();
    for i in 0..n {
        db.insert(i.to_be_bytes(), &value[..]).unwrap();
        db.flush().unwrap();
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let key = Keypair::ed25519_from_bytes([3; 32]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let fsync_before = fsync_latency(tmp.path(), 200);

    let path_a = tmp.path().join("own-flush");
    let store = Store::open(&path_a, &StoreConfig::default()).unwrap();
    let (n_own, t_own) = run(clients, secs, |i| {
        store.append_local(&key, pattern(i)).unwrap();
        store.flush().unwrap();
    });
    drop(store);
    let own_rate = n_own as f64 / t_own;
    println!("{clients} clients, append_local + own flush each: {n_own} acknowledged in {t_own:.1} s = {own_rate:.0}/s");

    let path_b = tmp.path().join("group");
    let store = Store::open(&path_b, &StoreConfig::default()).unwrap();
    let writer = Writer::start(store.clone(), Some(key.clone()), WriterConfig::default()).unwrap();
    let (n_gc, t_gc) = run(clients, secs, |i| {
        match writer
            .submit(Batch::Append(vec![(pattern(i), None)]))
            .unwrap()
        {
            Outcomes::Appended(o) => assert_eq!(o.len(), 1),
            o => panic!("{o:?}"),
        }
    });
    let groups = writer.stats().groups.load(Ordering::Relaxed);
    let apply_us = writer.stats().apply_us.load(Ordering::Relaxed);
    let flush_us = writer.stats().flush_us.load(Ordering::Relaxed);
    writer.shutdown();
    drop(store);
    let gc_rate = n_gc as f64 / t_gc;
    println!(
        "{clients} clients through one Writer: {n_gc} acknowledged in {t_gc:.1} s = {gc_rate:.0}/s; {groups} flushes ({:.0}/s), {:.1} patterns per flush",
        groups as f64 / t_gc,
        n_gc as f64 / groups.max(1) as f64
    );
    println!(
        "  writer thread per group: plan + apply {:.3} ms, flush {:.3} ms; busy {:.0}% of the run",
        apply_us as f64 / 1e3 / groups.max(1) as f64,
        flush_us as f64 / 1e3 / groups.max(1) as f64,
        (apply_us + flush_us) as f64 / 1e4 / t_gc
    );

    // Every acknowledged pattern is on disk (reopen; the writer's store was
    // not closed cleanly, only flushed).
    let deadline = Instant::now() + Duration::from_secs(60);
    let reopened = loop {
        match Store::open(&path_b, &StoreConfig::default()) {
            Err(metamesh_storage::StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => break r.unwrap(),
        }
    };
    let held = reopened.pattern_count();
    assert!(held >= n_gc, "held {held} < acknowledged {n_gc}");
    println!("reopened: {held} patterns held ≥ {n_gc} acknowledged");
    let fsync_after = fsync_latency(tmp.path(), 200);
    let fsync_s = (fsync_before + fsync_after) / 2.0;
    let sled_s = sled_flush_latency(tmp.path(), 500);
    println!(
        "raw sled insert + flush: {:.2} ms; ceiling {clients} / that = {:.0}/s; achieved {:.0}% of it",
        sled_s * 1e3,
        clients as f64 / sled_s,
        100.0 * gc_rate * sled_s / clients as f64
    );
    let ceiling = clients as f64 / fsync_s;
    println!(
        "fsync (4 KiB append + fdatasync) on this disk: {:.2} ms before, {:.2} ms after; ceiling with {clients} clients each waiting for its acknowledgement = {clients} / fsync = {ceiling:.0}/s; achieved {:.0}% of it",
        fsync_before * 1e3,
        fsync_after * 1e3,
        100.0 * gc_rate / ceiling
    );
    println!(
        "\n== budget: {clients} concurrent single-pattern writers ≥ 10000 acknowledged/s ==\n    {gc_rate:.0}/s ÷ 10000 = {:.2}x  {}; group commit / own flush = {:.1}x",
        gc_rate / 10000.0,
        if gc_rate >= 10000.0 { "MET" } else { "NOT MET" },
        gc_rate / own_rate.max(1e-9)
    );
}
