//! Import / export of the interop files.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use libp2p_identity::Keypair;
use metamesh_protocol::schema::Depth;
use metamesh_storage::interop::{self, Format};
use metamesh_storage::{Store, StoreConfig};

fn fixtures() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for c in [
        here.join("../../shared/fixtures"),
        PathBuf::from("/work/shared/fixtures"),
    ] {
        if c.join("expected.json").exists() {
            return c;
        }
    }
    panic!("fixtures not found: expected ../../shared/fixtures beside the checkout or /work/shared/fixtures");
}

fn store(dir: &std::path::Path, name: &str) -> Store {
    Store::open(&dir.join(name), &StoreConfig::default()).unwrap()
}

fn key() -> Keypair {
    Keypair::ed25519_from_bytes([9; 32]).unwrap()
}

#[test]
fn detects_formats() {
    let f = fixtures();
    assert_eq!(
        interop::detect_format(&f.join("legion_patterns.json")).unwrap(),
        Format::Legion
    );
    assert_eq!(
        interop::detect_format(&f.join("thor_depth_patterns.jsonl")).unwrap(),
        Format::Thor
    );
    assert_eq!(
        interop::detect_format(&f.join("mixed_unified.jsonl")).unwrap(),
        Format::Unified
    );
    // Thor detected by content, whatever the name.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.jsonl");
    std::fs::copy(f.join("thor_depth_patterns.jsonl"), &p).unwrap();
    assert_eq!(interop::detect_format(&p).unwrap(), Format::Thor);
}

#[test]
fn fixtures_import_matches_expected_and_reimport_adds_nothing() {
    let f = fixtures();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "a");
    let k = key();
    let mut invalid = 0;
    let mut accepted = 0;
    for name in [
        "legion_patterns.json",
        "thor_depth_patterns.jsonl",
        "mixed_unified.jsonl",
    ] {
        let r = interop::import_file(&s, &k, &f.join(name), Format::Auto, false).unwrap();
        invalid += r.invalid_total;
        accepted += r.accepted;
        if name.starts_with("thor") {
            let lines: Vec<u64> = r.skipped_lines.iter().map(|(l, _)| *l).collect();
            assert_eq!(lines, vec![7, 10, 26, 35, 45], "{:?}", r.skipped_lines);
        }
        for (_, field, reason) in &r.invalid_records {
            assert!(!field.is_empty() && !reason.is_empty());
        }
    }
    assert_eq!(accepted, expected["pattern_count"].as_u64().unwrap());
    assert_eq!(invalid, expected["invalid_records"].as_u64().unwrap());
    assert_eq!(s.pattern_count(), accepted);
    let t = s.merged_stats();
    for d in Depth::ALL {
        let e = &expected["depth_performance"][d.as_str()];
        let st = t.get(d);
        assert_eq!(st.n, e["sample_count"].as_u64().unwrap(), "{d}");
        assert!(
            (st.avg_quality() - e["avg_quality"].as_f64().unwrap()).abs() < 1e-9,
            "{d}"
        );
        assert!(
            (st.success_rate() - e["success_rate"].as_f64().unwrap()).abs() < 1e-9,
            "{d}"
        );
    }
    // Re-import: nothing new.
    for name in [
        "legion_patterns.json",
        "thor_depth_patterns.jsonl",
        "mixed_unified.jsonl",
    ] {
        let r = interop::import_file(&s, &k, &f.join(name), Format::Auto, false).unwrap();
        assert_eq!(r.accepted, 0, "{name}");
        assert!(r.duplicates > 0);
    }
    assert_eq!(s.pattern_count(), accepted);

    // Export -> import into a fresh store: the same pattern set.
    let out = dir.path().join("all.jsonl");
    let n = interop::export_patterns_jsonl(&s, std::fs::File::create(&out).unwrap()).unwrap();
    assert_eq!(n, accepted);
    let s2 = store(dir.path(), "b");
    let r = interop::import_file(&s2, &k, &out, Format::Auto, false).unwrap();
    assert_eq!(r.accepted, accepted);
    assert_eq!(r.invalid_total + r.skipped_total, 0);
    let set = |s: &Store| {
        let mut v: Vec<String> = s
            .iter_records()
            .map(|r| serde_json::to_string(&r.unwrap().1.pattern).unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(set(&s), set(&s2));
    assert_eq!(s.merged_stats(), s2.merged_stats());
    // and importing the export into the original store adds nothing
    let r = interop::import_file(&s, &k, &out, Format::Unified, false).unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, accepted));

    // Per-node layout.
    let pn = dir.path().join("per_node");
    let counts = interop::export_patterns_per_node(&s, &pn).unwrap();
    assert_eq!(counts.values().sum::<u64>(), accepted);
    assert!(pn.join("legion_patterns.jsonl").exists());
    assert!(pn.join("thor_patterns.jsonl").exists());

    // Insights document: the seed's top-level keys.
    let mut buf = Vec::new();
    let doc = interop::export_insights_json(&s, &mut buf, "me").unwrap();
    assert_eq!(doc.pattern_count, accepted);
    // The depth with the best average quality (expected.json's definition)...
    let best_avg = Depth::ALL
        .into_iter()
        .max_by(|a, b| t.get(*a).avg_quality().total_cmp(&t.get(*b).avg_quality()))
        .unwrap();
    assert_eq!(
        best_avg.as_str(),
        expected["optimal_quality_depth"].as_str().unwrap()
    );
    // ...and the posterior's choice agree on these fixtures.
    assert_eq!(
        doc.learned_preferences.optimal_quality_depth,
        Some(best_avg)
    );
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    for k in [
        "version",
        "node_id",
        "platform",
        "last_updated",
        "pattern_count",
        "insights",
        "depth_performance",
        "learned_preferences",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
}

#[test]
fn legion_node_id_comes_from_the_file_name_and_truncated_arrays_keep_the_head() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(f.join("legion_patterns.json")).unwrap();
    let p = dir.path().join("sage7_patterns.json");
    // Truncate in the middle of the 4th record.
    let cut = text.match_indices("\"pattern_id\"").nth(3).unwrap().0 + 5;
    std::fs::write(&p, &text[..cut]).unwrap();
    let s = store(dir.path(), "s");
    let r = interop::import_file(&s, &key(), &p, Format::Auto, false).unwrap();
    assert_eq!(r.format, Some(Format::Legion));
    assert_eq!(r.skipped_total, 1, "{r:?}");
    let pats: Vec<_> = s.iter_records().map(|x| x.unwrap().1.pattern).collect();
    assert_eq!(pats.len() as u64, r.accepted);
    assert!(r.accepted >= 2);
    assert!(pats
        .iter()
        .all(|p| p.node_id == "sage7" && p.platform == "legion"));
}

#[test]
fn bad_lines_are_reported_with_numbers_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.jsonl");
    let good = r#"{"pattern_id":"p1","node_id":"a","timestamp":1704902400.0,"depth_used":"standard","quality_achieved":0.45,"success":true,"atp_before":100.0,"atp_after":95.0}"#;
    let bad_q = good.replace("0.45", "1.7");
    let bad_d = good.replace("standard", "medium").replace("p1", "p3");
    std::fs::write(&p, format!("{good}\n{{oops\n\n{bad_q}\n[1]\n{bad_d}\n")).unwrap();
    let s = store(dir.path(), "s");
    let r = interop::import_file(&s, &key(), &p, Format::Unified, false).unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(
        r.skipped_lines.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let inv: Vec<(u64, &str)> = r
        .invalid_records
        .iter()
        .map(|x| (x.0, x.1.as_str()))
        .collect();
    assert_eq!(
        inv,
        vec![(4, "quality_achieved"), (5, "pattern"), (6, "depth_used")]
    );
}

#[test]
fn legion_invalid_records_name_the_line_where_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lx_patterns.json");
    let rec = |id: &str, q: &str| {
        format!(
            "  {{\n    \"pattern_id\": \"{id}\",\n    \"cogitation_mode\": \"verifying\",\n    \"depth_used\": \"light\",\n    \"outcome_quality\": {q},\n    \"atp_before\": 4.0,\n    \"atp_after\": 3.0,\n    \"success\": true,\n    \"timestamp\": 1767225600.0\n  }}"
        )
    };
    // Each record spans 10 lines; the array opens on line 1.
    let text = format!(
        "[\n{},\n{},\n{}\n]\n",
        rec("a", "0.5"),
        rec("b", "1.7"),
        rec("c", "0.25")
    );
    std::fs::write(&p, text).unwrap();
    let s = store(dir.path(), "s");
    let r = interop::import_file(&s, &key(), &p, Format::Auto, false).unwrap();
    assert_eq!(r.accepted, 2);
    assert_eq!(r.invalid_records.len(), 1);
    let (line, field, _) = &r.invalid_records[0];
    assert_eq!(field, "quality_achieved");
    assert_eq!(*line, 21, "record b spans lines 12..=21");
    assert!(s
        .iter_records()
        .all(|x| x.unwrap().1.pattern.node_id == "lx"));
}

/// The import key as schema ≤ 3 stores hold it: blake3 over the pattern's
/// JSON rebuilt with every object's keys sorted (the reference the faster
/// in-place sort must reproduce byte for byte, or re-imports into existing
/// stores would stop being recognised).
fn reference_import_key(p: &metamesh_protocol::schema::Pattern) -> [u8; 32] {
    use serde_json::{Map, Value};
    fn canonical(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut e: Vec<(String, Value)> =
                    m.into_iter().map(|(k, v)| (k, canonical(v))).collect();
                e.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(e.into_iter().collect::<Map<String, Value>>())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
            other => other,
        }
    }
    let v = canonical(serde_json::to_value(p).unwrap());
    let mut h = blake3::Hasher::new();
    h.update(b"metamesh/import-key/v1\0");
    h.update(&serde_json::to_vec(&v).unwrap());
    *h.finalize().as_bytes()
}

#[test]
fn import_key_is_unchanged_for_nested_and_unsorted_fields() {
    let lines = [
        r#"{"pattern_id":"a","node_id":"n","timestamp":1700000000.5,"platform":"thor","depth_used":"DEEP","quality_achieved":0.7,"success":true,"zeta":1,"alpha":{"z":[{"b":1,"a":2}],"m":"x","a":null},"reputation_before":0.5,"atp_before":3,"atp_after":1}"#,
        r#"{"timestamp":1700000001,"pattern_id":"b","node_id":"n","platform":"legion","depth_used":"light","mode":"verifying","quality_achieved":0.25,"success":false,"atp_before":10,"atp_after":4.5,"context":{"task":"t","nested":{"y":2,"x":1}}}"#,
        r#"{"pattern_id":"c","node_id":"n","timestamp":1700000002,"platform":"p","depth_used":"thorough","quality_achieved":1.0,"success":true,"atp_before":0,"atp_after":0}"#,
    ];
    let mut keys = std::collections::HashSet::new();
    for l in lines {
        let p = metamesh_protocol::schema::Pattern::from_json_value(
            serde_json::from_str(l).unwrap(),
            None,
        )
        .unwrap();
        let k = interop::import_key(&p);
        assert_eq!(k, reference_import_key(&p), "{l}");
        keys.insert(k);
    }
    assert_eq!(keys.len(), lines.len());
}

/// `decode_file` is the importer's decoding half: over the fixtures it hands
/// over exactly the patterns `import_file` stores (as duplicates within a
/// file count as one import each) and reports the same skipped and invalid
/// lines, without touching a store.
#[test]
fn decode_file_hands_over_what_import_file_stores() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "a");
    for name in [
        "legion_patterns.json",
        "thor_depth_patterns.jsonl",
        "mixed_unified.jsonl",
    ] {
        let mut decoded = Vec::new();
        let d =
            interop::decode_file(&f.join(name), Format::Auto, &mut |p| decoded.push(p)).unwrap();
        let r = interop::import_file(&s, &key(), &f.join(name), Format::Auto, false).unwrap();
        assert_eq!(d.accepted, 0, "{name}");
        assert_eq!(decoded.len() as u64, r.accepted + r.duplicates, "{name}");
        assert_eq!(d.skipped_lines, r.skipped_lines, "{name}");
        assert_eq!(d.invalid_records, r.invalid_records, "{name}");
        assert_eq!(d.format, r.format, "{name}");
    }
}
