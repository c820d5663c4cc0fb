//! Decoding hostile bytes never allocates more than a bound: a constant
//! (serde pre-allocates at most 1 MiB for a sequence whose length prefix
//! lies, per nesting level) plus a small multiple of the input length, which
//! is itself capped by each message type's byte bound before parsing.
//!
//! Counted with an instrumented global allocator; one test function, so no
//! other test thread allocates while we measure.

#![allow(clippy::unwrap_used)]

use std::alloc::System;

use libp2p_identity::Keypair;
use metamesh_protocol::codec;
use metamesh_protocol::record::{InsightBody, PatternBody, SignedRecord};
use metamesh_protocol::reputation::ReputationState;
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::wire::{
    FrontierEntry, GossipMessage, PatternAnnouncement, PatternRequest, PatternResponse, SeqRange,
    MAX_RECORDS_PER_RESPONSE, WIRE_VERSION,
};
use metamesh_protocol::ContentHash;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Constant allowance: serde's cautious pre-allocation (≤ 1 MiB per lying
/// sequence) across the few nesting levels our types have.
const CONSTANT: usize = 2 << 20;
/// Allowance per input byte.
const PER_BYTE: usize = 16;

fn allocated_by(f: impl FnOnce()) -> usize {
    let region = Region::new(GLOBAL);
    f();
    let s = region.change();
    s.bytes_allocated + s.bytes_reallocated.max(0) as usize
}

fn decode_everything(b: &[u8]) {
    let _ = SignedRecord::from_bytes(b);
    let _ = GossipMessage::decode(b);
    let _ = PatternRequest::decode(b);
    let _ = PatternResponse::decode(b);
    let _ = codec::from_cbor::<PatternBody>(b, 1 << 20);
    let _ = codec::from_cbor::<InsightBody>(b, 1 << 20);
    let _ = ReputationState::from_bytes(b);
}

// Minimal CBOR writers for hand-made hostile inputs.
fn head(major: u8, len: u64) -> Vec<u8> {
    let m = major << 5;
    match len {
        0..=23 => vec![m | len as u8],
        24..=0xff => vec![m | 24, len as u8],
        0x100..=0xffff => [vec![m | 25], (len as u16).to_be_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => [vec![m | 26], (len as u32).to_be_bytes().to_vec()].concat(),
        _ => [vec![m | 27], len.to_be_bytes().to_vec()].concat(),
    }
}
fn text(s: &str) -> Vec<u8> {
    [head(3, s.len() as u64), s.as_bytes().to_vec()].concat()
}
fn uint(v: u64) -> Vec<u8> {
    head(0, v)
}

fn hostile_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let huge = 1u64 << 62;
    vec![
        // A record whose body claims 2^62 bytes.
        (
            "record body length",
            [
                head(5, 4),
                text("kind"),
                text("pattern"),
                text("body"),
                head(2, huge),
                vec![0; 16],
            ]
            .concat(),
        ),
        // A response whose record list claims 2^32 entries.
        (
            "response records count",
            [
                head(5, 2),
                text("v"),
                uint(1),
                text("records"),
                head(4, 1 << 32),
            ]
            .concat(),
        ),
        // An announcement whose frontier claims 2^40 entries.
        (
            "announcement frontier count",
            [
                head(5, 3),
                text("type"),
                text("pattern_announcement"),
                text("v"),
                uint(1),
                text("frontier"),
                head(4, 1 << 40),
            ]
            .concat(),
        ),
        // A request whose ranges claim 2^40 entries.
        (
            "request ranges count",
            [
                head(5, 2),
                text("v"),
                uint(1),
                text("ranges"),
                head(4, 1 << 40),
            ]
            .concat(),
        ),
        // A pattern whose context claims 2^40 keys, and a string claiming 2^62 bytes.
        (
            "context map count",
            [
                head(5, 2),
                text("v"),
                uint(1),
                text("pattern"),
                head(5, 1),
                text("context"),
                head(5, 1 << 40),
            ]
            .concat(),
        ),
        (
            "string length",
            [head(5, 1), text("v"), head(3, huge)].concat(),
        ),
        // Deep nesting.
        ("nested arrays", [vec![0x81; 100_000], vec![0x00]].concat()),
        ("nested indefinite maps", vec![0xbf; 60_000]),
        // A map claiming 2^62 entries.
        ("map count", head(5, huge)),
    ]
}

#[test]
fn decoding_never_allocates_beyond_the_bound() {
    // Warm up lazily-initialised statics outside the measured regions.
    decode_everything(&[0xa0]);

    for (name, input) in hostile_inputs() {
        let used = allocated_by(|| decode_everything(&input));
        let bound = CONSTANT + PER_BYTE * input.len();
        eprintln!(
            "{name}: {} input bytes, {used} allocated (bound {bound})",
            input.len()
        );
        assert!(
            used <= bound,
            "{name}: allocated {used} bytes for {} input bytes",
            input.len()
        );
    }

    // Pseudo-random garbage of many sizes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [0usize, 1, 7, 64, 1000, 70_000, 200_000, 5_000_000] {
        let b: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let used = allocated_by(|| decode_everything(&b));
        // Oversized inputs are refused before parsing: nothing to allocate.
        let bound = CONSTANT + PER_BYTE * len.min(4 << 20);
        assert!(used <= bound, "random {len}: {used}");
    }

    // The largest legitimate messages: the cost stays proportional.
    let key = Keypair::ed25519_from_bytes([9; 32]).unwrap();
    let p = Pattern::from_json_value(
        serde_json::json!({"pattern_id": "p", "node_id": "n", "timestamp": 1.0, "depth_used": "deep",
            "quality_achieved": 0.5, "success": true, "atp_before": 1.0, "atp_after": 0.5,
            "context": {"k": "v".repeat(2000)}}),
        None,
    )
    .unwrap();
    let resp = PatternResponse {
        v: WIRE_VERSION,
        records: (1..=MAX_RECORDS_PER_RESPONSE as u64)
            .map(|s| SignedRecord::sign_pattern(p.clone(), s, &key))
            .collect(),
        more: false,
        next_cursor: None,
        error: None,
        insight: None,
    };
    let bytes = resp.encode();
    let used = allocated_by(|| {
        let _ = PatternResponse::decode(&bytes).unwrap();
    });
    eprintln!("full response: {} bytes, {used} allocated", bytes.len());
    assert!(
        used <= CONSTANT + 8 * bytes.len(),
        "{used} for {}",
        bytes.len()
    );

    let peer = key.public().to_peer_id();
    let ann = GossipMessage::PatternAnnouncement(PatternAnnouncement {
        v: WIRE_VERSION,
        from: peer,
        pattern_count: 1,
        patterns_hash: ContentHash([0; 32]),
        depth_distribution: [(Depth::Deep, 1)].into(),
        frontier: vec![
            FrontierEntry {
                origin: peer,
                seq: 1
            };
            1024
        ],
        frontier_truncated: false,
    });
    let bytes = ann.encode();
    let used = allocated_by(|| {
        let _ = GossipMessage::decode(&bytes).unwrap();
    });
    eprintln!("full announcement: {} bytes, {used} allocated", bytes.len());
    assert!(used <= CONSTANT + PER_BYTE * bytes.len());

    let req = PatternRequest {
        v: WIRE_VERSION,
        ranges: vec![
            SeqRange {
                origin: peer,
                from_seq: 1,
                to_seq: 9
            };
            1024
        ],
        have: Some(vec![
            FrontierEntry {
                origin: peer,
                seq: 1
            };
            1024
        ]),
        filters: None,
        cursor: None,
        max_count: 10,
        promote: None,
    };
    let bytes = req.encode();
    let used = allocated_by(|| {
        let _ = PatternRequest::decode(&bytes).unwrap();
    });
    eprintln!("full request: {} bytes, {used} allocated", bytes.len());
    assert!(used <= CONSTANT + PER_BYTE * bytes.len());
}
