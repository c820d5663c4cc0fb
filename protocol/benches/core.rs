//! Benchmarks of the protocol core: signing, verification (single and batch),
//! encoding and decoding, the O(1) insight update, insight computation and
//! the posterior P(best) integral.
//!
//! Run: `cargo bench -p metamesh-protocol --bench core -- --warm-up-time 1 --measurement-time 3`
//! Figures are recorded in `docs/protocol.md`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use libp2p_identity::Keypair;
use metamesh_protocol::codec;
use metamesh_protocol::insights;
use metamesh_protocol::posterior::{prob_best, Prior};
use metamesh_protocol::record::{self, PatternBody, SignedRecord, MAX_BODY_BYTES};
use metamesh_protocol::reputation::{self, ReputationEvent, ReputationPolicy, ReputationState};
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::stats::{DepthStats, DepthTable};

const NOW: f64 = 1_800_000_000.0;

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

/// A typical pattern: the unified fields plus a small Thor-style context.
fn pattern(i: u64) -> Pattern {
    let v = serde_json::json!({
        "pattern_id": format!("thor-{i:08}"),
        "node_id": "12D3KooWHqa5P3qJX1jULuwB8nriEojY7hE5mfCjBrNVFHjG2tQv",
        "timestamp": 1_767_225_600.0 + i as f64,
        "platform": "thor",
        "depth_used": Depth::ALL[(i % 5) as usize].as_str(),
        "mode": "verifying",
        "quality_achieved": (i % 97) as f64 / 97.0,
        "success": !i.is_multiple_of(3),
        "atp_before": 100.0,
        "atp_after": 100.0 - (i % 60) as f64,
        "reputation_before": 12.5,
        "reputation_after": 12.75,
        "context": {"task": "claim-check", "peers": 7, "network_health": 0.93},
    });
    Pattern::from_json_value(v, None).unwrap()
}

fn records(n: u64) -> Vec<SignedRecord> {
    (0..n)
        .map(|i| SignedRecord::sign_pattern(pattern(i), i + 1, &key((i % 8) as u8)))
        .collect()
}

fn bench_signing(c: &mut Criterion) {
    let k = key(1);
    let p = pattern(1);
    let r = SignedRecord::sign_pattern(p.clone(), 1, &k);
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_pattern", |b| {
        b.iter_batched(
            || p.clone(),
            |p| SignedRecord::sign_pattern(p, 1, &k),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("verify_signature", |b| {
        b.iter(|| black_box(&r).verify_signature().unwrap())
    });
    g.bench_function("open_pattern (verify+decode+validate)", |b| {
        b.iter(|| black_box(&r).open_pattern(NOW).unwrap())
    });
    g.finish();

    let batch = records(64);
    let mut g = c.benchmark_group("record_batch");
    g.throughput(Throughput::Elements(64));
    g.bench_function("verify_batch_64", |b| {
        b.iter(|| record::verify_batch(black_box(&batch)))
    });
    g.bench_function("verify_one_by_one_64", |b| {
        b.iter(|| {
            for r in black_box(&batch) {
                r.verify_signature().unwrap();
            }
        })
    });
    g.finish();
}

fn bench_codec(c: &mut Criterion) {
    let r = SignedRecord::sign_pattern(pattern(7), 7, &key(1));
    let body: PatternBody = r.open_pattern(NOW).unwrap();
    let bytes = r.to_bytes();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function(format!("encode_record ({} B)", bytes.len()), |b| {
        b.iter(|| black_box(&r).to_bytes())
    });
    g.bench_function(format!("decode_record ({} B)", bytes.len()), |b| {
        b.iter(|| SignedRecord::from_bytes(black_box(&bytes)).unwrap())
    });
    g.throughput(Throughput::Bytes(r.body.len() as u64));
    g.bench_function(format!("encode_pattern_body ({} B)", r.body.len()), |b| {
        b.iter(|| codec::to_cbor(black_box(&body)))
    });
    g.bench_function(format!("decode_pattern_body ({} B)", r.body.len()), |b| {
        b.iter(|| codec::from_cbor::<PatternBody>(black_box(&r.body), MAX_BODY_BYTES).unwrap())
    });
    g.finish();
}

fn bench_insights(c: &mut Criterion) {
    let ps: Vec<Pattern> = (0..1024).map(pattern).collect();
    let mut g = c.benchmark_group("insights");
    g.throughput(Throughput::Elements(1));
    g.bench_function("depth_table_add_pattern", |b| {
        let mut t = DepthTable::default();
        let mut i = 0usize;
        b.iter(|| {
            t.add_pattern(black_box(&ps[i & 1023]));
            i = i.wrapping_add(1);
        })
    });
    let table = DepthTable::from_patterns(&ps);
    let mut other = table;
    other.merge(&table);
    g.bench_function("depth_table_merge", |b| {
        b.iter(|| {
            let mut t = black_box(table);
            t.merge(black_box(&other));
            t
        })
    });
    let prior = Prior::default();
    g.bench_function("insights_compute", |b| {
        b.iter(|| insights::compute(black_box(&table), None, &prior, NOW))
    });
    let mut modes: BTreeMap<String, DepthStats> = BTreeMap::new();
    for (i, p) in ps.iter().enumerate() {
        modes
            .entry(format!("mode{}", i % 8))
            .or_default()
            .add(p.quality_achieved, p.success, 1.0);
    }
    g.bench_function("insights_compute_with_8_modes", |b| {
        b.iter(|| insights::compute(black_box(&table), Some(&modes), &prior, NOW))
    });
    let beliefs = prior.beliefs(&table);
    g.bench_function("posterior_prob_best_5", |b| {
        b.iter(|| prob_best(black_box(&beliefs)))
    });
    g.finish();

    let policy = ReputationPolicy::default();
    let mut g = c.benchmark_group("reputation");
    g.throughput(Throughput::Elements(1));
    g.bench_function("apply_event", |b| {
        let mut s = ReputationState::new(NOW);
        let mut now = NOW;
        b.iter(|| {
            now += 1.0;
            reputation::apply(
                &mut s,
                black_box(ReputationEvent::ValidPattern),
                now,
                &policy,
            );
        })
    });
    g.finish();
}

criterion_group!(benches, bench_signing, bench_codec, bench_insights);
criterion_main!(benches);
