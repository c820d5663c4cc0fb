//! Property tests: paged queries equal one filtered scan; arbitrary import
//! input never panics and every line is accounted for.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use libp2p_identity::Keypair;
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::wire::RequestFilters;
use metamesh_storage::interop::{self, Format};
use metamesh_storage::{Store, StoreConfig};
use proptest::prelude::*;

fn pattern(i: usize, d: usize, q: f64, ts: f64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("p{i}"), "node_id": "n", "timestamp": ts, "platform": "t",
            "depth_used": Depth::ALL[d].as_str(), "mode": "m", "quality_achieved": q,
            "success": q > 0.5, "atp_before": 10.0, "atp_after": 5.0
        }),
        None,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn paged_query_equals_filtered_scan(
        items in prop::collection::vec((0usize..5, 0u32..=100, 0u32..50), 1..60),
        depths in prop::option::of(prop::collection::btree_set(0usize..5, 1..3)),
        min_q in prop::option::of(0u32..=100),
        min_ts in prop::option::of(0u32..50),
        page in 1usize..7,
        keys in 1u8..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s"), &StoreConfig::default()).unwrap();
        let mut all = Vec::new();
        for (i, (d, q, ts)) in items.iter().enumerate() {
            let k = Keypair::ed25519_from_bytes([(i as u8 % keys) + 1; 32]).unwrap();
            let (_, b) = s.append_local(&k, pattern(i, *d, *q as f64 / 100.0, 1e9 + *ts as f64)).unwrap();
            all.push(b);
        }
        let f = RequestFilters {
            depths: depths.map(|ds| ds.into_iter().map(|d| Depth::ALL[d]).collect()),
            min_quality: min_q.map(|q| q as f64 / 100.0),
            min_timestamp: min_ts.map(|t| 1e9 + t as f64),
            max_count: None,
        };
        let mut want: Vec<(String, u64)> = all.iter().filter(|b| f.matches(&b.pattern))
            .map(|b| (b.origin.to_string(), b.seq)).collect();
        want.sort();
        let mut got = Vec::new();
        let mut cursor = None;
        let mut rounds = 0;
        loop {
            rounds += 1;
            prop_assert!(rounds < 200);
            let (recs, next) = s.query(&f, cursor, page).unwrap();
            prop_assert!(recs.len() <= page);
            got.extend(recs.into_iter().map(|(_, b)| (b.origin.to_string(), b.seq)));
            match next { Some(c) => cursor = Some(c), None => break }
        }
        let n = got.len();
        got.sort();
        got.dedup();
        prop_assert_eq!(got.len(), n, "a record was returned twice");
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_import_input_is_accounted_for(lines in prop::collection::vec(
        prop_oneof![
            "[ -~]{0,40}",
            Just(r#"{"pattern_id":"x","node_id":"a","timestamp":1.0,"depth_used":"DEEP","quality_achieved":0.5,"success":true,"atp_before":1,"atp_after":0}"#.to_string()),
            Just(r#"{"pattern_id":"y","timestamp":1.0}"#.to_string()),
            Just("[]".to_string()),
        ], 0..30)) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s"), &StoreConfig::default()).unwrap();
        let p = dir.path().join("in.jsonl");
        let mut f = std::fs::File::create(&p).unwrap();
        for l in &lines {
            writeln!(f, "{l}").unwrap();
        }
        drop(f);
        let k = Keypair::ed25519_from_bytes([5; 32]).unwrap();
        let r = interop::import_file(&s, &k, &p, Format::Unified, false).unwrap();
        prop_assert_eq!(r.accepted + r.duplicates + r.skipped_total + r.invalid_total, lines.len() as u64);
        prop_assert_eq!(s.pattern_count(), r.accepted);
        // Any format, any content: an error or a report, never a panic.
        for fmt in [Format::Auto, Format::Legion, Format::Thor] {
            let _ = interop::import_file(&s, &k, &p, fmt, false);
        }
    }
}
