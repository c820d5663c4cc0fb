//! Benchmark (not a test): DESIGN §8 budgets for ingest and sync bytes.
//!
//! ```text
//! cargo run --release -p metamesh-storage --example ingest -- [K] [PAGE]
//! ```
//!
//! Generates K signed pattern records (default 30 000) from 10 origins with
//! real ed25519 keys, packs them into `PatternResponse` pages of PAGE records
//! (default 256) encoded as they travel, then, in one run:
//!
//! 1. raw verification: `verify_signature` one by one over every record, and
//!    `record::verify_batch` in chunks of PAGE;
//! 2. full ingest, the node's path for a sync response: decode the
//!    response → size check → on the `Verifier`'s threads: one batched
//!    signature check per page with each signer's key decoded once (a key
//!    cache kept across pages), kind, body decode + schema → dedup by
//!    (origin, seq) point lookups (`Store::holds`) → `Store::insert_batch`
//!    (one atomic batch: record, time index, statistics, frontier) → `flush`
//!    per page (durable), into a fresh store; once with one verifier
//!    thread and once with two;
//! 3. sync bytes on the wire per pattern versus the pattern's own size.
//!
//! Prints rates, ratios, and where the ingest time goes.
#![allow(clippy::unwrap_used)]

// The `metamesh` binary's allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use metamesh_protocol::codec;
use metamesh_protocol::record::{self, PatternBody, SignedRecord, MAX_BODY_BYTES};
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::wire::{PatternResponse, WIRE_VERSION};
use metamesh_storage::verify::Verifier;
use metamesh_storage::{Batch, InsertOutcome, Outcomes, Store, StoreConfig, Writer, WriterConfig};

const ORIGINS: usize = 10;
const NOW: f64 = 1_800_000_000.0;

/// A pattern shaped like the seed's examples (the million benchmark's
/// generator): ids, timestamp, platform, depth, mode, quality, ATP.
fn pattern(rng: &mut ChaCha8Rng, i: usize) -> Pattern {
    let means = [0.30, 0.45, 0.58, 0.63, 0.64];
    let modes = ["general", "verifying", "exploring", "integrating"];
    let d = (rng.gen_range(0..5)) as usize;
    let q = (means[d] + (rng.gen::<f64>() - 0.5) * 0.4).clamp(0.0, 1.0);
    let q = (q * 1e6).round() / 1e6;
    let before = 50.0 + (rng.gen::<f64>() * 1000.0).round() / 10.0;
    let cost = [4.0, 9.0, 20.0, 35.0, 60.0][d];
    let v = serde_json::json!({
        "pattern_id": format!("gen-{i}"),
        "node_id": format!("node-{}", i % ORIGINS),
        "timestamp": 1_704_902_400.0 + i as f64 * 0.5,
        "platform": "bench",
        "depth_used": Depth::ALL[d].as_str(),
        "mode": modes[i % 4],
        "quality_achieved": q,
        "success": q > 0.5,
        "atp_before": before,
        "atp_after": before - cost,
    });
    Pattern::from_json_value(v, None).unwrap()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// CPU seconds used by this process, all threads (user + system, from
/// /proc/self/stat, 10 ms resolution). On a shared, overloaded machine the
/// wall time of a phase depends on how much of a core the scheduler gave
/// us; CPU time measures the work itself (it leaves out waiting on fsync).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime, stime are 14, 15.
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

/// Where one ingest pass spends its time.
#[derive(Default)]
struct Split {
    decode_response: Duration,
    decode_body: Duration,
    verify: Duration,
    dedup: Duration,
    insert: Duration,
    flush: Duration,
    inserted: usize,
}

impl Split {
    fn total(&self) -> Duration {
        self.decode_response
            + self.decode_body
            + self.verify
            + self.dedup
            + self.insert
            + self.flush
    }
}

/// The node's ingest path over encoded response pages.
fn ingest(store: &Store, pages: &[Vec<u8>], flush_each_page: bool, threads: usize) -> Split {
    let mut s = Split::default();
    let mut verifier = Verifier::new(threads);
    for page in pages {
        let t = Instant::now();
        let resp = PatternResponse::decode(page).unwrap();
        s.decode_response += t.elapsed();

        // Size bound, then on `verifier`'s threads: batched signature check
        // with each signer's key decoded once (cached across pages), kind,
        // body decode + schema.
        let t = Instant::now();
        let recs: Vec<SignedRecord> = resp
            .records
            .into_iter()
            .filter(|r| r.body.len() <= MAX_BODY_BYTES)
            .collect();
        s.decode_body += t.elapsed();
        let t = Instant::now();
        let opened = verifier.open_patterns(&recs, NOW);
        s.verify += t.elapsed();

        // dedup by (origin, seq) point lookups, then one batch.
        let t = Instant::now();
        let mut to_insert: Vec<(SignedRecord, PatternBody)> = Vec::with_capacity(recs.len());
        for (rec, body) in recs.into_iter().zip(opened) {
            let Ok(body) = body else { continue };
            let hash = rec.content_hash();
            if store.holds(&body.origin, body.seq, &hash).unwrap() {
                continue;
            }
            to_insert.push((rec, body));
        }
        s.dedup += t.elapsed();

        let t = Instant::now();
        let outcomes = store.insert_batch(&to_insert).unwrap();
        s.insert += t.elapsed();
        s.inserted += outcomes
            .iter()
            .filter(|o| matches!(o, InsertOutcome::Inserted))
            .count();

        if flush_each_page {
            let t = Instant::now();
            store.flush().unwrap();
            s.flush += t.elapsed();
        }
    }
    if !flush_each_page {
        // One final flush so both passes end durable.
        let t = Instant::now();
        store.flush().unwrap();
        s.flush += t.elapsed();
    }
    s
}

/// The two-core path: a verifier thread decodes each page, verifies it on
/// `threads` threads (keys cached) and dedups it while the store's
/// group-commit [`Writer`] stores and flushes the pages before it (each page
/// acknowledged only after the fsync that covers it). Returns the wall time
/// and the records inserted.
fn ingest_pipelined(store: &Store, pages: &[Vec<u8>], threads: usize) -> (Duration, usize) {
    let t0 = Instant::now();
    let writer = Writer::start(
        store.clone(),
        None,
        WriterConfig {
            queue: 4,
            ..WriterConfig::default()
        },
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(SignedRecord, PatternBody)>>(2);
    let mut inserted = 0usize;
    let count = |o: Outcomes| match o {
        Outcomes::Inserted(v) => v
            .iter()
            .filter(|o| matches!(o, InsertOutcome::Inserted))
            .count(),
        _ => 0,
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut verifier = Verifier::new(threads);
            for page in pages {
                let resp = PatternResponse::decode(page).unwrap();
                let recs: Vec<SignedRecord> = resp
                    .records
                    .into_iter()
                    .filter(|r| r.body.len() <= MAX_BODY_BYTES)
                    .collect();
                let opened = verifier.open_patterns(&recs, NOW);
                let batch: Vec<_> = recs
                    .into_iter()
                    .zip(opened)
                    .filter_map(|(r, b)| {
                        let b = b.ok()?;
                        let held = store.holds(&b.origin, b.seq, &r.content_hash()).unwrap();
                        (!held).then_some((r, b))
                    })
                    .collect();
                if tx.send(batch).is_err() {
                    break;
                }
            }
        });
        let mut in_flight = std::collections::VecDeque::new();
        for batch in rx {
            in_flight.push_back(writer.submit_nowait(Batch::Insert(batch)).unwrap());
            while in_flight.len() > 2 {
                inserted += count(in_flight.pop_front().unwrap().wait().unwrap());
            }
        }
        for t in in_flight {
            inserted += count(t.wait().unwrap());
        }
    });
    writer.shutdown();
    (t0.elapsed(), inserted)
}

fn print_split(label: &str, s: &Split, k: usize) {
    let total = s.total();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
    println!(
        "{label}: {} records in {:.3} s = {:.0} records/s (inserted {})",
        k,
        total.as_secs_f64(),
        rate(k, total),
        s.inserted
    );
    for (name, d) in [
        ("decode response", s.decode_response),
        ("size check", s.decode_body),
        ("verify_batch + decode + schema (parallel)", s.verify),
        ("dedup lookups", s.dedup),
        ("insert_batch (tx)", s.insert),
        ("flush (fsync)", s.flush),
    ] {
        println!(
            "    {name:<22} {:>8.3} s  {:>5.1} %  ({:.1} µs/record)",
            d.as_secs_f64(),
            pct(d),
            d.as_secs_f64() * 1e6 / k as f64
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let k: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30_000);
    let page: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    println!("load average at start: {}", loadavg());

    // ---- generate ----------------------------------------------------------
    let t = Instant::now();
    let keys: Vec<Keypair> = (0..ORIGINS).map(|_| Keypair::generate_ed25519()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut seqs = [0u64; ORIGINS];
    let mut records = Vec::with_capacity(k);
    let mut json_bytes = 0usize;
    let mut pattern_cbor_bytes = 0usize;
    for i in 0..k {
        let o = i % ORIGINS;
        seqs[o] += 1;
        let p = pattern(&mut rng, i);
        json_bytes += serde_json::to_vec(&p).unwrap().len() + 1; // + '\n'
        pattern_cbor_bytes += codec::to_cbor(&p).len();
        records.push(SignedRecord::sign_pattern(p, seqs[o], &keys[o]));
    }
    // Pages as a responder sends them: one origin's seq range at a time.
    let mut by_origin: Vec<Vec<SignedRecord>> = vec![Vec::new(); ORIGINS];
    for (i, r) in records.iter().enumerate() {
        by_origin[i % ORIGINS].push(r.clone());
    }
    let mut pages: Vec<Vec<u8>> = Vec::new();
    for recs in &by_origin {
        for chunk in recs.chunks(page) {
            let resp = PatternResponse {
                v: WIRE_VERSION,
                records: chunk.to_vec(),
                more: true,
                next_cursor: None,
                error: None,
                insight: None,
            };
            pages.push(resp.encode());
        }
    }
    println!(
        "generated {k} records from {ORIGINS} origins in {:.2} s; {} pages of ≤{page}",
        t.elapsed().as_secs_f64(),
        pages.len()
    );

    // ---- sync bytes per pattern -------------------------------------------
    let envelope_bytes: usize = records.iter().map(|r| r.to_bytes().len()).sum();
    let body_bytes: usize = records.iter().map(|r| r.body.len()).sum();
    let full_pages: Vec<&Vec<u8>> = pages
        .iter()
        .zip(by_origin.iter().flat_map(|r| r.chunks(page)))
        .filter(|(_, c)| c.len() == page)
        .map(|(p, _)| p)
        .collect();
    let full_page_bytes: usize = full_pages.iter().map(|p| p.len()).sum();
    let per_record_wire = full_page_bytes as f64 / (full_pages.len() * page) as f64;
    let kf = k as f64;
    let sig_len = records[0].signature.len();
    let signer_len = records[0].signer.len();
    println!("\n== sync bytes per missing pattern (full pages of {page}) ==");
    println!(
        "    unified JSON line           {:>7.1} B",
        json_bytes as f64 / kf
    );
    println!(
        "    pattern alone, CBOR         {:>7.1} B",
        pattern_cbor_bytes as f64 / kf
    );
    println!(
        "    signed body (v, origin, seq, pattern), CBOR {:>7.1} B",
        body_bytes as f64 / kf
    );
    println!(
        "    envelope (kind, body, signer {signer_len} B, signature {sig_len} B) {:>7.1} B",
        envelope_bytes as f64 / kf
    );
    println!("    PatternResponse ÷ records   {per_record_wire:>7.1} B");
    println!(
        "    wire / JSON line = {:.3}x; wire / pattern CBOR = {:.3}x",
        per_record_wire / (json_bytes as f64 / kf),
        per_record_wire / (pattern_cbor_bytes as f64 / kf)
    );

    // ---- raw verification ---------------------------------------------------
    println!("\nload average before verify: {}", loadavg());
    let t = Instant::now();
    let c = cpu_seconds();
    let mut ok = 0usize;
    for r in &records {
        if r.verify_signature().is_ok() {
            ok += 1;
        }
    }
    let one_by_one = t.elapsed();
    let one_by_one_cpu = cpu_seconds() - c;
    assert_eq!(ok, k);
    let t = Instant::now();
    let mut ok = 0usize;
    for chunk in records.chunks(page) {
        ok += record::verify_batch(chunk)
            .iter()
            .filter(|v| v.is_ok())
            .count();
    }
    let batched = t.elapsed();
    assert_eq!(ok, k);
    let raw = rate(k, one_by_one);
    println!(
        "verify_signature one by one: {:.3} s = {raw:.0} records/s",
        one_by_one.as_secs_f64()
    );
    println!(
        "verify_batch (chunks of {page}): {:.3} s = {:.0} records/s ({:.2}x one by one)",
        batched.as_secs_f64(),
        rate(k, batched),
        one_by_one.as_secs_f64() / batched.as_secs_f64()
    );

    // ---- full ingest --------------------------------------------------------
    println!("\nload average before ingest: {}", loadavg());
    let tmp = tempfile::tempdir().unwrap();
    let c = cpu_seconds();
    let store = Store::open(&tmp.path().join("a"), &StoreConfig::default()).unwrap();
    let durable = ingest(&store, &pages, true, 1);
    let durable_cpu = cpu_seconds() - c;
    assert_eq!(durable.inserted, k);
    assert_eq!(store.pattern_count(), k as u64);
    drop(store);
    print_split("ingest, one core, flush per page (durable)", &durable, k);

    let c = cpu_seconds();
    let store = Store::open(&tmp.path().join("b"), &StoreConfig::default()).unwrap();
    let background = ingest(&store, &pages, true, 2);
    let background_cpu = cpu_seconds() - c;
    assert_eq!(background.inserted, k);
    drop(store);
    print_split(
        "ingest, two verifier threads, flush per page (durable)",
        &background,
        k,
    );

    let c = cpu_seconds();
    let store = Store::open(&tmp.path().join("c"), &StoreConfig::default()).unwrap();
    let (piped, piped_n) = ingest_pipelined(&store, &pages, 2);
    let piped_cpu = cpu_seconds() - c;
    assert_eq!(piped_n, k);
    assert_eq!(store.pattern_count(), k as u64);
    drop(store);
    println!(
        "ingest, two cores pipelined (verify page k+1 on two threads while the group-commit writer stores and flushes page k; each page acknowledged durable): {k} records in {:.3} s = {:.0} records/s",
        piped.as_secs_f64(),
        rate(k, piped)
    );

    // Raw verification again, after the ingest, to bracket machine drift.
    let t = Instant::now();
    let c = cpu_seconds();
    for r in &records {
        let _ = r.verify_signature();
    }
    let raw_after = rate(k, t.elapsed());
    let raw_after_cpu = cpu_seconds() - c;
    println!(
        "\nverify_signature one by one again: {raw_after:.0} records/s; load average {}",
        loadavg()
    );
    let raw_mean = (raw + raw_after) / 2.0;
    let r_durable = rate(k, durable.total()) / raw_mean;
    let r_bg = rate(k, background.total()) / raw_mean;
    let r_piped = rate(k, piped) / raw_mean;
    println!("\n== budget: ingest ≥ 0.8x raw one-core ed25519 verification (≥ 1.5x on two cores; mean of before/after) ==");
    println!(
        "    one core: {:.0}/s ÷ {raw_mean:.0}/s = {r_durable:.2}x  {}",
        rate(k, durable.total()),
        if r_durable >= 0.8 { "MET" } else { "NOT MET" }
    );
    println!(
        "    two verifier threads, one page at a time: {:.0}/s ÷ {raw_mean:.0}/s = {r_bg:.2}x",
        rate(k, background.total()),
    );
    println!(
        "    two cores, pipelined: {:.0}/s ÷ {raw_mean:.0}/s = {r_piped:.2}x  {}",
        rate(k, piped),
        if r_piped >= 1.5 { "MET" } else { "NOT MET" }
    );
    let raw_cpu = (one_by_one_cpu + raw_after_cpu) / 2.0;
    println!("\n== the same in CPU seconds of this process (all threads; fsync waits excluded) ==");
    println!(
        "    verify one by one: {:.2} s CPU ({:.1} µs/record)",
        raw_cpu,
        raw_cpu * 1e6 / kf
    );
    for (label, cpu) in [
        ("one core", durable_cpu),
        ("two verifier threads", background_cpu),
        ("two cores pipelined", piped_cpu),
    ] {
        let r = raw_cpu / cpu;
        println!(
            "    ingest, {label}: {cpu:.2} s CPU ({:.1} µs/record) → {r:.2}x  {}",
            cpu * 1e6 / kf,
            if r >= 0.8 { "MET" } else { "NOT MET" }
        );
    }
}
