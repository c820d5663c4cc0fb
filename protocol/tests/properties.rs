//! Property tests of the protocol core: round trips of every public type,
//! decoders that never panic, signatures that catch every change, statistics
//! that merge in any order, validation that never panics.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::codec;
use metamesh_protocol::insights::{self, InsightSet};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::record::{
    self, InsightBody, PatternBody, RecordKind, SignedRecord, BODY_VERSION,
};
use metamesh_protocol::reputation::{self, ReputationEvent, ReputationPolicy, ReputationState};
use metamesh_protocol::schema::{Depth, Pattern, PatternType, MAX_ATP};
use metamesh_protocol::stats::{DepthStats, DepthTable};
use metamesh_protocol::wire::{
    Cursor, FrontierEntry, GossipMessage, InsightBroadcast, PatternAnnouncement, PatternRequest,
    PatternResponse, RequestFilters, SeqRange, WIRE_VERSION,
};
use metamesh_protocol::ContentHash;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const NOW: f64 = 1_800_000_000.0;

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn peer(seed: u8) -> PeerId {
    key(seed).public().to_peer_id()
}

// ---------- strategies ----------

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-zA-Z0-9 _é]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Value> {
    btree_map("[a-z_]{1,8}", arb_json(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn arb_depth() -> impl Strategy<Value = Depth> {
    (0usize..Depth::COUNT).prop_map(|i| Depth::ALL[i])
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_:.-]{0,30}"
}

prop_compose! {
    fn arb_pattern()(
        (pattern_id, node_id, platform, mode) in (arb_name(), arb_name(), arb_name(), arb_name()),
        timestamp in 0.0f64..NOW,
        depth_used in arb_depth(),
        quality_achieved in 0.0f64..=1.0,
        success in any::<bool>(),
        (atp_before, atp_after) in (-1e6f64..1e6, -1e6f64..1e6),
        (reputation_before, reputation_after) in (proptest::option::of(-100.0f64..100.0), proptest::option::of(-100.0f64..100.0)),
        context in proptest::option::of(arb_object()),
        pattern_type in proptest::option::of(prop_oneof![
            Just(PatternType::Algorithmic), Just(PatternType::Behavioral), Just(PatternType::Resource)
        ]),
        (cogitation_mode, outcome_confidence, verification_quality_score) in (
            proptest::option::of(arb_name()), proptest::option::of(0.0f64..=1.0), proptest::option::of(-10.0f64..10.0)
        ),
        (cognitive_depth, network_health, federation_context) in (
            proptest::option::of(arb_name()), proptest::option::of(0.0f64..=1.0), proptest::option::of(arb_object())
        ),
    ) -> Pattern {
        Pattern {
            pattern_id, node_id, timestamp, platform, depth_used, mode, quality_achieved, success,
            atp_before, atp_after, reputation_before, reputation_after, context, pattern_type,
            cogitation_mode, outcome_confidence, verification_quality_score, cognitive_depth,
            network_health, federation_context,
        }
    }
}

/// (depth, quality, success, cost) observations.
fn arb_obs() -> impl Strategy<Value = Vec<(Depth, f64, bool, f64)>> {
    vec(
        (arb_depth(), 0.0f64..=1.0, any::<bool>(), -100.0f64..1000.0),
        0..80,
    )
}

fn table_of(obs: &[(Depth, f64, bool, f64)]) -> DepthTable {
    let mut t = DepthTable::default();
    for &(d, q, s, c) in obs {
        t.get_mut(d).add(q, s, c);
    }
    t
}

fn arb_table() -> impl Strategy<Value = DepthTable> {
    arb_obs().prop_map(|o| table_of(&o))
}

fn arb_modes() -> impl Strategy<Value = BTreeMap<String, DepthStats>> {
    btree_map(
        "[a-z]{1,8}",
        vec((0.0f64..=1.0, any::<bool>()), 1..20),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| {
                let mut s = DepthStats::default();
                for (q, ok) in v {
                    s.add(q, ok, 1.0);
                }
                (k, s)
            })
            .collect()
    })
}

fn arb_insight_set() -> impl Strategy<Value = InsightSet> {
    (arb_table(), proptest::option::of(arb_modes()), 0.0f64..NOW)
        .prop_map(|(t, m, now)| insights::compute(&t, m.as_ref(), &Prior::default(), now))
}

fn arb_record() -> impl Strategy<Value = SignedRecord> {
    (arb_pattern(), 1u64..u64::MAX, any::<u8>())
        .prop_map(|(p, seq, k)| SignedRecord::sign_pattern(p, seq, &key(k)))
}

fn arb_peer() -> impl Strategy<Value = PeerId> {
    (0u8..16).prop_map(peer)
}

fn arb_frontier() -> impl Strategy<Value = Vec<FrontierEntry>> {
    vec(
        (arb_peer(), any::<u64>()).prop_map(|(origin, seq)| FrontierEntry { origin, seq }),
        0..8,
    )
}

fn arb_filters() -> impl Strategy<Value = RequestFilters> {
    (
        proptest::option::of(vec(arb_depth(), 0..=Depth::COUNT)),
        proptest::option::of(0.0f64..=1.0),
        proptest::option::of(0.0f64..NOW),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(depths, min_quality, min_timestamp, max_count)| RequestFilters {
                depths,
                min_quality,
                min_timestamp,
                max_count,
            },
        )
}

fn arb_cursor() -> impl Strategy<Value = Cursor> {
    (arb_peer(), any::<u64>()).prop_map(|(origin, seq)| Cursor { origin, seq })
}

fn arb_request() -> impl Strategy<Value = PatternRequest> {
    (
        vec(
            (arb_peer(), any::<u64>(), any::<u64>()).prop_map(|(origin, from_seq, to_seq)| {
                SeqRange {
                    origin,
                    from_seq,
                    to_seq,
                }
            }),
            0..6,
        ),
        proptest::option::of(arb_frontier()),
        proptest::option::of(arb_filters()),
        proptest::option::of(arb_cursor()),
        any::<u32>(),
    )
        .prop_map(
            |(ranges, have, filters, cursor, max_count)| PatternRequest {
                v: WIRE_VERSION,
                ranges,
                have,
                filters,
                cursor,
                max_count,
                promote: None,
            },
        )
}

fn arb_response() -> impl Strategy<Value = PatternResponse> {
    (
        vec(arb_record(), 0..4),
        any::<bool>(),
        proptest::option::of(arb_cursor()),
        proptest::option::of("[a-z ]{0,20}"),
    )
        .prop_map(|(records, more, next_cursor, error)| PatternResponse {
            v: WIRE_VERSION,
            records,
            more,
            next_cursor,
            error,
            insight: None,
        })
}

fn arb_insight_body() -> impl Strategy<Value = InsightBody> {
    (
        arb_table(),
        arb_insight_set(),
        1u64..1_000_000,
        0.0f64..NOW,
        any::<u8>(),
    )
        .prop_map(|(stats, insights, seq, computed_at, k)| InsightBody {
            v: BODY_VERSION,
            origin: peer(k),
            seq,
            prev_seq: None,
            computed_at,
            stats,
            insights,
        })
}

fn arb_gossip() -> impl Strategy<Value = GossipMessage> {
    let ann = (
        arb_peer(),
        any::<u64>(),
        any::<[u8; 32]>(),
        btree_map(arb_depth(), any::<u64>(), 0..=Depth::COUNT),
        arb_frontier(),
        any::<bool>(),
    )
        .prop_map(
            |(from, pattern_count, h, depth_distribution, frontier, frontier_truncated)| {
                GossipMessage::PatternAnnouncement(PatternAnnouncement {
                    v: WIRE_VERSION,
                    from,
                    pattern_count,
                    patterns_hash: ContentHash(h),
                    depth_distribution,
                    frontier,
                    frontier_truncated,
                })
            },
        );
    let ins = (arb_insight_body(), any::<u8>()).prop_map(|(mut body, k)| {
        body.origin = peer(k);
        GossipMessage::InsightBroadcast(InsightBroadcast {
            v: WIRE_VERSION,
            record: SignedRecord::sign_insight(&body, &key(k)),
        })
    });
    prop_oneof![ann, ins]
}

fn arb_reputation() -> impl Strategy<Value = ReputationState> {
    (
        0.0f64..NOW,
        vec((0usize..ReputationEvent::ALL.len(), 0.0f64..1e6), 0..40),
    )
        .prop_map(|(t0, events)| {
            let p = ReputationPolicy::default();
            let mut s = ReputationState::new(t0);
            let mut now = t0;
            for (e, dt) in events {
                now += dt;
                reputation::apply(&mut s, ReputationEvent::ALL[e], now, &p);
            }
            s
        })
}

// ---------- helpers ----------

fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let s = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&s).unwrap();
    assert_eq!(&back, v, "JSON: {s}");
}

fn cbor_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let b = codec::to_cbor(v);
    let back: T = codec::from_cbor(&b, usize::MAX).unwrap();
    assert_eq!(&back, v);
}

fn both<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    json_round_trip(v);
    cbor_round_trip(v);
}

// ---------- round trips ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pattern_round_trips(p in arb_pattern()) {
        p.validate(NOW).unwrap();
        both(&p);
        // The lenient file parser reads the strict output back unchanged.
        let lenient = Pattern::from_json_value(serde_json::to_value(&p).unwrap(), None).unwrap();
        prop_assert_eq!(lenient, p);
    }

    #[test]
    fn signed_record_and_body_round_trip(r in arb_record()) {
        both(&r);
        prop_assert_eq!(SignedRecord::from_bytes(&r.to_bytes()).unwrap(), r.clone());
        let body = r.open_pattern(NOW).unwrap();
        both(&body);
        // Re-encoding the decoded body gives the signed bytes back (canonical).
        prop_assert_eq!(codec::to_cbor(&body), r.body.clone());
    }

    #[test]
    fn insight_types_round_trip(set in arb_insight_set(), body in arb_insight_body()) {
        set.validate().unwrap();
        both(&set);
        both(&body);
        let doc = insights::InsightsDocument::new("node", "test", 7, set, NOW);
        both(&doc);
    }

    #[test]
    fn depth_table_round_trips(t in arb_table()) {
        t.validate().unwrap();
        both(&t);
    }

    #[test]
    fn wire_messages_round_trip(
        g in arb_gossip(), req in arb_request(), resp in arb_response(), f in arb_filters(), c in arb_cursor()
    ) {
        both(&g);
        prop_assert_eq!(GossipMessage::decode(&g.encode()).unwrap(), g);
        both(&req);
        prop_assert_eq!(PatternRequest::decode(&req.encode()).unwrap(), req);
        both(&resp);
        prop_assert_eq!(PatternResponse::decode(&resp.encode()).unwrap(), resp);
        both(&f);
        both(&c);
    }

    #[test]
    fn reputation_state_round_trips(s in arb_reputation()) {
        both(&s);
        prop_assert_eq!(ReputationState::from_bytes(&s.to_bytes()).unwrap(), s);
    }
}

// ---------- decoders never panic ----------

fn decode_all(b: &[u8]) -> [bool; 7] {
    [
        SignedRecord::from_bytes(b).is_err(),
        GossipMessage::decode(b).is_err(),
        PatternRequest::decode(b).is_err(),
        PatternResponse::decode(b).is_err(),
        codec::from_cbor::<PatternBody>(b, 1 << 20).is_err(),
        codec::from_cbor::<InsightBody>(b, 1 << 20).is_err(),
        ReputationState::from_bytes(b).is_err(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_errors(b in vec(any::<u8>(), 0..600)) {
        prop_assert_eq!(decode_all(&b), [true; 7]);
    }

    /// CBOR-shaped noise: valid headers with absurd lengths, nested arrays
    /// and maps, so the decoders get past the first byte.
    #[test]
    fn cbor_shaped_bytes_are_errors(parts in vec(prop_oneof![
        Just(vec![0x9f]), Just(vec![0xbf]), Just(vec![0xff]),
        Just(vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Just(vec![0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Just(vec![0xa1, 0x64, b't', b'y', b'p', b'e']),
        Just(vec![0x61, b'v', 0x01]),
        any::<u8>().prop_map(|b| vec![b]),
    ], 0..40)) {
        let b: Vec<u8> = parts.concat();
        prop_assert_eq!(decode_all(&b), [true; 7]);
    }

    /// Valid messages with bytes flipped, cut or appended: decoding may
    /// succeed or fail, but never panics, and a decoded record's signature
    /// still guards its body.
    #[test]
    fn mutated_messages_never_panic(
        g in arb_gossip(), resp in arb_response(), req in arb_request(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()
    ) {
        for enc in [g.encode(), resp.encode(), req.encode()] {
            let mut m = enc.clone();
            for (i, x) in &edits {
                let i = i.index(m.len());
                m[i] ^= x | 1;
            }
            let _ = decode_all(&m);
            let _ = decode_all(&enc[..cut.index(enc.len())]);
            if let Ok(r) = SignedRecord::from_bytes(&m) {
                let _ = r.open_pattern(NOW);
                let _ = r.open_insight();
            }
            if let Ok(GossipMessage::InsightBroadcast(b)) = GossipMessage::decode(&m) {
                let _ = b.record.open_insight();
            }
            if let Ok(resp) = PatternResponse::decode(&m) {
                let _ = record::verify_batch(&resp.records);
            }
        }
    }
}

// ---------- signatures ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_change_fails_verification(
        r in arb_record(), at in any::<prop::sample::Index>(), mask in 1u8..=255, other in any::<u8>()
    ) {
        prop_assert!(r.verify_signature().is_ok());

        let mut t = r.clone();
        let i = at.index(t.body.len());
        t.body[i] ^= mask;
        prop_assert!(t.verify_signature().is_err());
        prop_assert!(t.open_pattern(NOW).is_err());

        let mut t = r.clone();
        let i = at.index(t.signature.len());
        t.signature[i] ^= mask;
        prop_assert!(t.verify_signature().is_err());

        let mut t = r.clone();
        t.signature.truncate(at.index(t.signature.len()));
        prop_assert!(t.verify_signature().is_err());

        let signer = r.signer_peer().unwrap();
        let mut t = r.clone();
        let new_signer = if peer(other) == signer { peer(other.wrapping_add(1)) } else { peer(other) };
        t.signer = new_signer.to_bytes();
        prop_assert!(t.verify_signature().is_err());

        let mut t = r.clone();
        let i = at.index(t.signer.len());
        t.signer[i] ^= mask;
        prop_assert!(t.verify_signature().is_err());

        let mut t = r.clone();
        t.kind = RecordKind::Insight;
        prop_assert!(t.verify_signature().is_err());

        // Batch verification agrees record by record.
        let mut batch = vec![r.clone(), t];
        batch.push(r.clone());
        let out = record::verify_batch(&batch);
        prop_assert!(out[0].is_ok() && out[1].is_err() && out[2].is_ok());
    }
}

// ---------- statistics merge ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn merge_in_any_order_and_partition_equals_all_at_once(
        obs in arb_obs(),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
        seed in any::<u64>(),
    ) {
        let whole = table_of(&obs);
        // Shuffle the observations, split at arbitrary cut points, build one
        // table per chunk, merge the chunks in reverse.
        use rand::{seq::SliceRandom, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut shuffled = obs.clone();
        shuffled.shuffle(&mut rng);
        let mut idx: Vec<usize> = cuts.iter().map(|c| c.index(shuffled.len() + 1)).collect();
        idx.push(0);
        idx.push(shuffled.len());
        idx.sort_unstable();
        let mut chunks: Vec<DepthTable> = idx.windows(2).map(|w| table_of(&shuffled[w[0]..w[1]])).collect();
        chunks.shuffle(&mut rng);
        let mut merged = DepthTable::default();
        for c in chunks.iter().rev() {
            merged.merge(c);
        }
        prop_assert_eq!(merged, whole);
        let prior = Prior::default();
        prop_assert_eq!(
            insights::compute(&merged, None, &prior, NOW),
            insights::compute(&whole, None, &prior, NOW)
        );
        // Removing what was added restores the table.
        let mut t = whole;
        for &(d, q, s, c) in &shuffled {
            t.get_mut(d).remove(q, s, c);
        }
        prop_assert_eq!(t, DepthTable::default());
    }
}

// ---------- validation never panics ----------

fn arb_any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(1.0 + f64::EPSILON),
        Just(-f64::MIN_POSITIVE),
        Just(f64::MAX),
        Just(NOW + 301.0),
        -2.0f64..2.0,
        any::<f64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validate_never_panics_and_names_the_bad_field(
        base in arb_pattern(),
        vals in vec(proptest::option::of(arb_any_f64()), 9),
    ) {
        let mut p = base;
        let mut bad: Vec<&str> = Vec::new();
        let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        if let Some(v) = vals[0] { p.quality_achieved = v; }
        if let Some(v) = vals[1] { p.timestamp = v; }
        if let Some(v) = vals[2] { p.atp_before = v; }
        if let Some(v) = vals[3] { p.atp_after = v; }
        if let Some(v) = vals[4] { p.reputation_before = Some(v); }
        if let Some(v) = vals[5] { p.reputation_after = Some(v); }
        if let Some(v) = vals[6] { p.outcome_confidence = Some(v); }
        if let Some(v) = vals[7] { p.network_health = Some(v); }
        if let Some(v) = vals[8] { p.verification_quality_score = Some(v); }
        if !in_range(p.quality_achieved, 0.0, 1.0) { bad.push("quality_achieved"); }
        if !in_range(p.timestamp, 0.0, NOW + 300.0) { bad.push("timestamp"); }
        if !in_range(p.atp_before, -MAX_ATP, MAX_ATP) { bad.push("atp_before"); }
        if !in_range(p.atp_after, -MAX_ATP, MAX_ATP) { bad.push("atp_after"); }
        if p.reputation_before.is_some_and(|v| !in_range(v, -1e6, 1e6)) { bad.push("reputation_before"); }
        if p.reputation_after.is_some_and(|v| !in_range(v, -1e6, 1e6)) { bad.push("reputation_after"); }
        if p.outcome_confidence.is_some_and(|v| !in_range(v, 0.0, 1.0)) { bad.push("outcome_confidence"); }
        if p.network_health.is_some_and(|v| !in_range(v, 0.0, 1.0)) { bad.push("network_health"); }
        if p.verification_quality_score.is_some_and(|v| !in_range(v, -MAX_ATP, MAX_ATP)) {
            bad.push("verification_quality_score");
        }
        match p.validate(NOW) {
            Ok(()) => prop_assert!(bad.is_empty(), "accepted bad fields {:?}", bad),
            Err(e) => {
                prop_assert!(bad.contains(&e.field.as_str()), "error names {} but bad fields are {:?}", e.field, bad);
                prop_assert!(!e.reason.is_empty());
            }
        }
        // Statistics and insights never panic on whatever got through.
        let mut t = DepthTable::default();
        t.add_pattern(&p);
        let _ = insights::compute(&t, None, &Prior::default(), NOW);
    }

    /// The lenient parser never panics on arbitrary JSON objects and its
    /// errors name a field.
    #[test]
    fn lenient_parse_never_panics(obj in arb_object(), base in arb_pattern(), drop in vec(any::<bool>(), 8)) {
        let _ = Pattern::from_json_value(obj, Some("x"));
        let mut v = serde_json::to_value(&base).unwrap();
        let m = v.as_object_mut().unwrap();
        for (k, d) in ["pattern_id", "node_id", "timestamp", "depth_used", "quality_achieved", "success", "atp_before", "atp_after"].iter().zip(drop) {
            if d {
                m.insert((*k).to_string(), Value::String("bogus".into()));
            }
        }
        if let Err(e) = Pattern::from_json_value(v, None) {
            prop_assert!(!e.field.is_empty());
        }
    }
}

// ---------- reputation invariants ----------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn reputation_invariants(
        t0 in 0.0f64..NOW,
        events in vec((0usize..ReputationEvent::ALL.len(), -1e4f64..1e6), 0..200),
    ) {
        use reputation::{standing, Trust};
        let p = ReputationPolicy::default();
        let mut s = ReputationState::new(t0);
        let mut now = t0;
        let mut equivocated = false;
        let mut any_valid = false;
        for (e, dt) in events {
            // Time mostly moves forward, sometimes steps back.
            now += dt;
            let e = ReputationEvent::ALL[e];
            equivocated |= e == ReputationEvent::Equivocation;
            any_valid |= e.is_valid_behaviour();
            let before = s.score_at(now, &p);
            reputation::apply(&mut s, e, now, &p);
            prop_assert!(s.score.is_finite() && s.score >= p.min_score && s.score <= p.max_score);
            // Events move the (decayed) score in the direction of their delta.
            if p.delta(e) > 0.0 {
                prop_assert!(s.score >= before - 1e-12);
            } else if p.delta(e) < 0.0 {
                prop_assert!(s.score <= before + 1e-12);
            }
            // A positive score never exceeds the newcomer cap (no score was
            // ever above it: it only grows).
            if s.score > 0.0 {
                prop_assert!(s.score <= s.newcomer_cap(s.last_update, &p) + 1e-9);
            }
            prop_assert_eq!(s.hostile, equivocated);
            let st = standing(&s, Trust::Default, now, &p);
            if st.newcomer {
                prop_assert!(st.weight <= 1.0);
            }
            if s.hostile {
                prop_assert_eq!(st.weight, 0.0);
            }
            prop_assert!(standing(&s, Trust::Trusted, now, &p).score >= 50.0 || s.hostile);
            prop_assert_eq!(standing(&s, Trust::Denied, now, &p).weight, 0.0);
        }
        if !any_valid {
            prop_assert!(s.score <= 0.0);
        }
    }
}
