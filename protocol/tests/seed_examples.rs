//! The protocol document's (seed 004) example JSON lines and example
//! messages, verbatim, parse and map into our types.
//!
//! The seed's messages are JSON with `from_node` LCT strings and inline
//! signatures; ours are CBOR with PeerIds and signed envelopes. These tests
//! show that every piece of content the seed's shapes carry has a home in our
//! types and survives our encoding.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use libp2p_identity::Keypair;
use metamesh_protocol::insights::{self, types, Insight, InsightSet, InsightsDocument};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::record::{InsightBody, SignedRecord, BODY_VERSION};
use metamesh_protocol::schema::{Depth, Pattern, DEFAULT_MODE, DEFAULT_PLATFORM};
use metamesh_protocol::stats::DepthTable;
use metamesh_protocol::sync::{frontier_digest, frontier_entries, Frontier};
use metamesh_protocol::wire::{
    GossipMessage, InsightBroadcast, PatternAnnouncement, PatternRequest, PatternResponse,
    RequestFilters, WIRE_VERSION,
};
use serde::Deserialize;
use serde_json::Value;

const NOW: f64 = 1_800_000_000.0;

/// "Pattern Storage: JSONL", the example, verbatim.
const SEED_JSONL: &str = r#"{"pattern_id":"p1","node_id":"legion","timestamp":1704902400.0,"depth_used":"standard","quality_achieved":0.45,"success":true,"atp_before":100.0,"atp_after":95.0}
{"pattern_id":"p2","node_id":"thor","timestamp":1704902460.0,"depth_used":"deep","quality_achieved":0.52,"success":true,"atp_before":120.0,"atp_after":110.0}"#;

/// "Pattern Announcement", verbatim.
const SEED_ANNOUNCEMENT: &str = r#"{
  "type": "pattern_announcement",
  "from_node": "lct:web4:tpm2:legion",
  "pattern_count": 50,
  "patterns_hash": "sha256_of_recent_patterns",
  "depth_distribution": {"minimal": 5, "standard": 30, "deep": 15}
}"#;

/// "Pattern Request", verbatim.
const SEED_REQUEST: &str = r#"{
  "type": "pattern_request",
  "from_node": "lct:web4:trustzone:thor",
  "request_filters": {
    "depths": ["standard", "deep"],
    "min_quality": 0.4,
    "min_timestamp": 1704900000.0,
    "max_count": 100
  }
}"#;

/// "Pattern Response", with the seed's `...pattern fields...` placeholder
/// filled in by the first example JSONL line (the rest is verbatim).
const SEED_RESPONSE: &str = r#"{
  "type": "pattern_response",
  "from_node": "lct:web4:tpm2:legion",
  "patterns": [
    {
      "pattern_id": "p1",
      "signature": "lct_attestation_signature",
      "node_id":"legion","timestamp":1704902400.0,"depth_used":"standard","quality_achieved":0.45,"success":true,"atp_before":100.0,"atp_after":95.0
    }
  ]
}"#;

/// "Insight Broadcast", verbatim.
const SEED_INSIGHT_BROADCAST: &str = r#"{
  "type": "insight_broadcast",
  "from_node": "lct:web4:tpm2:legion",
  "insights": [
    {
      "insight_type": "optimal_depth",
      "description": "Standard depth best for quality (0.45 avg)",
      "confidence": 0.9,
      "evidence_count": 50,
      "signature": "lct_attestation"
    }
  ]
}"#;

/// "Insight Storage: JSON": the schema's shape with its type placeholders
/// replaced by values (its `depth_performance` and `learned_preferences`
/// examples are verbatim).
const SEED_INSIGHTS_DOC: &str = r#"{
  "version": "1.0",
  "node_id": "legion",
  "platform": "legion",
  "last_updated": 1704902460.0,
  "pattern_count": 35,
  "insights": [
    {
      "insight_type": "optimal_depth",
      "description": "Standard depth best for quality (0.45 avg)",
      "evidence_count": 35,
      "confidence": 0.9,
      "recommendation": "use standard",
      "learned_at": 1704902460.0
    }
  ],
  "depth_performance": {
    "minimal": {"avg_quality": 0.3, "success_rate": 0.7, "sample_count": 10},
    "standard": {"avg_quality": 0.45, "success_rate": 0.9, "sample_count": 25}
  },
  "learned_preferences": {
    "optimal_quality_depth": "standard",
    "optimal_success_depth": "standard",
    "optimal_atp_depth": "light"
  }
}"#;

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn seed_patterns() -> Vec<Pattern> {
    SEED_JSONL
        .lines()
        .map(|l| Pattern::from_json_value(serde_json::from_str(l).unwrap(), None).unwrap())
        .collect()
}

#[test]
fn jsonl_example_lines_parse_validate_and_sign() {
    let ps = seed_patterns();
    assert_eq!(ps.len(), 2);
    assert_eq!(
        (
            ps[0].pattern_id.as_str(),
            ps[0].node_id.as_str(),
            ps[0].depth_used
        ),
        ("p1", "legion", Depth::Standard)
    );
    assert_eq!(
        (ps[1].depth_used, ps[1].quality_achieved, ps[1].atp_cost()),
        (Depth::Deep, 0.52, 10.0)
    );
    for (i, p) in ps.iter().enumerate() {
        p.validate(NOW).unwrap();
        // The example lines omit platform and mode: documented defaults.
        assert_eq!(
            (p.platform.as_str(), p.mode.as_str()),
            (DEFAULT_PLATFORM, DEFAULT_MODE)
        );
        assert!(p.context.is_none(), "nothing unknown to keep");
        let r = SignedRecord::sign_pattern(p.clone(), i as u64 + 1, &key(1));
        assert_eq!(&r.open_pattern(NOW).unwrap().pattern, p);
    }
}

#[test]
fn insights_document_example_parses() {
    let doc: InsightsDocument = serde_json::from_str(SEED_INSIGHTS_DOC).unwrap();
    assert_eq!(doc.version, insights::INSIGHTS_DOC_VERSION);
    assert_eq!(doc.pattern_count, 35);
    let std = doc.depth_performance[&Depth::Standard];
    assert_eq!(
        (std.avg_quality, std.success_rate, std.sample_count),
        (0.45, 0.9, 25)
    );
    assert_eq!(std.avg_atp_cost, 0.0, "absent in the seed: defaults to 0");
    assert_eq!(
        doc.learned_preferences.optimal_atp_depth,
        Some(Depth::Light)
    );
    assert_eq!(doc.insights[0].insight_type, types::OPTIMAL_DEPTH);
    // And our own documents have exactly the seed's top-level keys.
    let ours = InsightsDocument::new(
        "n",
        "p",
        2,
        insights::compute(
            &DepthTable::from_patterns(&seed_patterns()),
            None,
            &Prior::default(),
            NOW,
        ),
        NOW,
    );
    let v = serde_json::to_value(&ours).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    let seed: Value = serde_json::from_str(SEED_INSIGHTS_DOC).unwrap();
    let seed_keys: Vec<&String> = seed.as_object().unwrap().keys().collect();
    assert_eq!(keys, seed_keys);
    for i in v["insights"].as_array().unwrap() {
        let ks: Vec<&String> = i.as_object().unwrap().keys().collect();
        assert_eq!(
            ks,
            [
                "insight_type",
                "description",
                "evidence_count",
                "confidence",
                "recommendation",
                "learned_at"
            ]
        );
    }
}

#[derive(Deserialize)]
struct SeedAnnouncement {
    #[serde(rename = "type")]
    kind: String,
    from_node: String,
    pattern_count: u64,
    patterns_hash: String,
    depth_distribution: BTreeMap<Depth, u64>,
}

#[test]
fn announcement_example_maps_into_our_message() {
    let a: SeedAnnouncement = serde_json::from_str(SEED_ANNOUNCEMENT).unwrap();
    assert_eq!(a.kind, "pattern_announcement");
    assert!(a.from_node.starts_with("lct:"));
    assert_eq!(a.patterns_hash, "sha256_of_recent_patterns");
    assert_eq!(a.depth_distribution[&Depth::Standard], 30);
    // Our announcement carries the same content: the sender (a PeerId, not an
    // LCT string), the count, a digest (of the frontier), the distribution.
    let me = key(1).public().to_peer_id();
    let frontier: Frontier = [(me, a.pattern_count)].into();
    let (entries, truncated) = frontier_entries(&frontier);
    let msg = GossipMessage::PatternAnnouncement(PatternAnnouncement {
        v: WIRE_VERSION,
        from: me,
        pattern_count: a.pattern_count,
        patterns_hash: frontier_digest(&frontier),
        depth_distribution: a.depth_distribution.clone(),
        frontier: entries,
        frontier_truncated: truncated,
    });
    let back = GossipMessage::decode(&msg.encode()).unwrap();
    assert_eq!(back, msg);
    // Our JSON rendering uses the seed's type tag.
    let j = serde_json::to_value(&msg).unwrap();
    assert_eq!(j["type"], "pattern_announcement");
    assert_eq!(j["depth_distribution"]["standard"], 30);
}

#[derive(Deserialize)]
struct SeedRequest {
    #[serde(rename = "type")]
    kind: String,
    request_filters: RequestFilters,
}

#[test]
fn request_example_filters_parse_and_apply() {
    let r: SeedRequest = serde_json::from_str(SEED_REQUEST).unwrap();
    assert_eq!(r.kind, "pattern_request");
    let f = r.request_filters;
    f.validate().unwrap();
    assert_eq!(
        f.depths.as_deref(),
        Some(&[Depth::Standard, Depth::Deep][..])
    );
    assert_eq!(
        (f.min_quality, f.min_timestamp, f.max_count),
        (Some(0.4), Some(1_704_900_000.0), Some(100))
    );
    // Both seed patterns pass the seed's filters; a light or low one does not.
    let ps = seed_patterns();
    assert!(ps.iter().all(|p| f.matches(p)));
    let mut light = ps[0].clone();
    light.depth_used = Depth::Light;
    assert!(!f.matches(&light));
    let mut low = ps[0].clone();
    low.quality_achieved = 0.39;
    assert!(!f.matches(&low));
    let mut old = ps[0].clone();
    old.timestamp = 1_704_899_999.0;
    assert!(!f.matches(&old));
    // They travel in our request unchanged.
    let req = PatternRequest {
        v: WIRE_VERSION,
        ranges: vec![],
        have: None,
        max_count: f.max_count.unwrap_or(0),
        filters: Some(f),
        cursor: None,
        promote: None,
    };
    assert_eq!(PatternRequest::decode(&req.encode()).unwrap(), req);
}

#[derive(Deserialize)]
struct SeedResponse {
    #[serde(rename = "type")]
    kind: String,
    patterns: Vec<Value>,
}

#[test]
fn response_example_patterns_parse_and_travel_signed() {
    let r: SeedResponse = serde_json::from_str(SEED_RESPONSE).unwrap();
    assert_eq!(r.kind, "pattern_response");
    let k = key(2);
    let records: Vec<SignedRecord> = r
        .patterns
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let p = Pattern::from_json_value(v, None).unwrap();
            p.validate(NOW).unwrap();
            // The inline LCT signature is replaced by our signed envelope, not
            // kept as an unknown field.
            assert!(p.context.is_none());
            assert_eq!(p, seed_patterns()[0]);
            SignedRecord::sign_pattern(p, i as u64 + 1, &k)
        })
        .collect();
    let resp = PatternResponse {
        v: WIRE_VERSION,
        records,
        more: false,
        next_cursor: None,
        error: None,
        insight: None,
    };
    let back = PatternResponse::decode(&resp.encode()).unwrap();
    assert_eq!(back, resp);
    let body = back.records[0].open_pattern(NOW).unwrap();
    assert_eq!(body.origin, k.public().to_peer_id());
    assert_eq!(body.pattern.pattern_id, "p1");
}

#[derive(Deserialize)]
struct SeedInsight {
    insight_type: String,
    description: String,
    confidence: f64,
    evidence_count: u64,
    signature: String,
}

#[derive(Deserialize)]
struct SeedBroadcast {
    #[serde(rename = "type")]
    kind: String,
    insights: Vec<SeedInsight>,
}

#[test]
fn insight_broadcast_example_maps_into_a_signed_broadcast() {
    let b: SeedBroadcast = serde_json::from_str(SEED_INSIGHT_BROADCAST).unwrap();
    assert_eq!(b.kind, "insight_broadcast");
    let si = &b.insights[0];
    assert_eq!(si.signature, "lct_attestation");
    // `optimal_depth` is one of the types our insights always carry.
    let ours = insights::compute(
        &DepthTable::from_patterns(&seed_patterns()),
        None,
        &Prior::default(),
        NOW,
    );
    assert!(ours.get(&si.insight_type).is_some());
    // Map the seed's insight into ours (it lacks recommendation/learned_at).
    let insight = Insight {
        insight_type: si.insight_type.clone(),
        description: si.description.clone(),
        evidence_count: si.evidence_count,
        confidence: si.confidence,
        recommendation: String::new(),
        learned_at: NOW,
    };
    let set = InsightSet {
        insights: vec![insight],
        ..Default::default()
    };
    set.validate().unwrap();
    let k = key(3);
    let body = InsightBody {
        v: BODY_VERSION,
        origin: k.public().to_peer_id(),
        seq: 1,
        prev_seq: None,
        computed_at: NOW,
        stats: DepthTable::default(),
        insights: set.clone(),
    };
    let msg = GossipMessage::InsightBroadcast(InsightBroadcast {
        v: WIRE_VERSION,
        record: SignedRecord::sign_insight(&body, &k),
    });
    let GossipMessage::InsightBroadcast(back) = GossipMessage::decode(&msg.encode()).unwrap()
    else {
        panic!("wrong message kind");
    };
    let opened = back.record.open_insight().unwrap();
    assert_eq!(opened.insights, set);
    assert_eq!(opened.insights.insights[0].confidence, 0.9);
    assert_eq!(opened.insights.insights[0].evidence_count, 50);
}
