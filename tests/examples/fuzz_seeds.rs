//! Writes the seed corpus of the fuzz targets (`fuzz/`): valid inputs of
//! every decoder, from which libFuzzer mutates.
//!
//! ```text
//! cargo run -p metamesh-tests --example fuzz_seeds -- fuzz/seeds
//! ```
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
use metamesh_protocol::insights;
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::record::{InsightBody, SignedRecord, BODY_VERSION};
use metamesh_protocol::stats::DepthTable;
use metamesh_protocol::sync::frontier_digest;
use metamesh_protocol::wire::*;
use metamesh_protocol::Depth;

const NOW: f64 = 1.8e9;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

fn fixtures() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("../../shared/fixtures"),
        "/work/shared/fixtures".into(),
    ]
    .into_iter()
    .find(|p| p.join("expected.json").exists())
    .expect("shared/fixtures not found")
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let key = Keypair::ed25519_from_bytes([9; 32]).unwrap();
    let me = key.public().to_peer_id();
    let mut patterns = Vec::new();
    for (i, d) in Depth::ALL.iter().enumerate() {
        let mut p = metamesh_tests::pattern(&format!("seed-{i}"), *d, 0.2 * i as f64);
        p.timestamp = NOW - 100.0;
        patterns.push(p);
    }
    let recs: Vec<SignedRecord> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| SignedRecord::sign_pattern(p.clone(), i as u64 + 1, &key))
        .collect();
    let stats = DepthTable::from_patterns(patterns.iter());
    let ibody = InsightBody {
        v: BODY_VERSION,
        origin: me,
        seq: 3,
        computed_at: NOW,
        insights: insights::compute(&stats, None, &Prior::default(), NOW),
        stats: stats.clone(),
    };
    let irec = SignedRecord::sign_insight(&ibody, &key);

    // Records and bodies.
    for (i, r) in recs.iter().enumerate() {
        write(
            &out,
            "record_envelope",
            &format!("pattern-{i}"),
            &r.to_bytes(),
        );
        write(&out, "pattern_body", &format!("body-{i}"), &r.body);
    }
    write(&out, "record_envelope", "insight", &irec.to_bytes());
    write(&out, "insight_body", "insight", &irec.body);

    // Wire messages.
    let frontier: Vec<FrontierEntry> = vec![FrontierEntry { origin: me, seq: 5 }];
    let ann = GossipMessage::PatternAnnouncement(PatternAnnouncement {
        v: WIRE_VERSION,
        from: me,
        pattern_count: 5,
        patterns_hash: frontier_digest(&[(me, 5)].into_iter().collect()),
        depth_distribution: Depth::ALL.iter().map(|d| (*d, 1)).collect(),
        frontier: frontier.clone(),
        frontier_truncated: false,
    });
    write(&out, "wire_gossip", "announcement", &ann.encode());
    let ib = GossipMessage::InsightBroadcast(InsightBroadcast {
        v: WIRE_VERSION,
        record: irec.clone(),
    });
    write(&out, "wire_gossip", "insight", &ib.encode());
    let req = PatternRequest {
        v: WIRE_VERSION,
        ranges: vec![SeqRange {
            origin: me,
            from_seq: 1,
            to_seq: 5,
        }],
        have: Some(frontier),
        filters: Some(RequestFilters {
            depths: Some(vec![Depth::Deep, Depth::Light]),
            min_quality: Some(0.5),
            min_timestamp: Some(NOW - 1000.0),
            max_count: Some(10),
        }),
        cursor: Some(Cursor { origin: me, seq: 2 }),
        max_count: 100,
        promote: Some(irec.clone()),
    };
    write(&out, "wire_request", "full", &req.encode());
    let resp = PatternResponse {
        v: WIRE_VERSION,
        records: recs.clone(),
        more: true,
        next_cursor: Some(Cursor { origin: me, seq: 5 }),
        error: None,
        insight: Some(irec),
    };
    write(&out, "wire_response", "full", &resp.encode());

    // Import lines and files, API bodies.
    let fx = fixtures();
    let files = [
        ("mixed_unified.jsonl", 0u8 | (1 << 2)),
        ("legion_patterns.json", 1 | (2 << 2)),
        ("thor_depth_patterns.jsonl", 2 | (3 << 2)),
    ];
    for (name, sel) in files {
        let text = std::fs::read(fx.join(name)).unwrap();
        let mut with_sel = vec![sel];
        with_sel.extend_from_slice(&text);
        write(&out, "import_file", name, &with_sel);
        let mut auto = vec![sel & 3];
        auto.extend_from_slice(&text);
        write(&out, "import_file", &format!("auto-{name}"), &auto);
        for (i, line) in text.split(|b| *b == b'\n').take(4).enumerate() {
            write(&out, "import_line", &format!("{name}-{i}"), line);
        }
    }
    let one = serde_json::to_vec(&patterns[0]).unwrap();
    write(&out, "api_body", "one", &one);
    write(
        &out,
        "api_body",
        "array",
        &serde_json::to_vec(&patterns).unwrap(),
    );
    write(
        &out,
        "api_body",
        "query",
        b"depths=deep,light&min_quality=0.5&max_count=10&atp=50&strategy=thompson&scope=local",
    );
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../metamesh.example.toml");
    write(&out, "api_body", "config", &std::fs::read(example).unwrap());
    println!("seeds written to {}", out.display());
}
