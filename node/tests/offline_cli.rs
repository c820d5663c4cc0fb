//! The offline commands of the real `metamesh` binary: init, id, import,
//! export — on the shared fixtures, checked against `expected.json`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

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
    panic!(
        "fixtures not found: expected {} (shared/ beside the checkout) or /work/shared/fixtures",
        here.join("../../shared/fixtures").display()
    );
}

fn metamesh(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("METAMESH_DATA_DIR")
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

const FILES: [&str; 3] = [
    "legion_patterns.json",
    "thor_depth_patterns.jsonl",
    "mixed_unified.jsonl",
];

#[test]
fn fixtures_reproduce_expected_json() {
    let fx = fixtures();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("expected.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let id1 = ok(metamesh(&data, &["init"]));
    let id2 = ok(metamesh(&data, &["init"]));
    assert_eq!(id1, id2, "init is idempotent");
    assert!(id1.trim().starts_with("12D3KooW"), "{id1}");
    let idj: Value = serde_json::from_str(&ok(metamesh(&data, &["id", "--json"]))).unwrap();
    assert_eq!(idj["peer_id"].as_str().unwrap(), id1.trim());

    let mut args = vec!["import".to_string(), "--json".to_string()];
    args.extend(FILES.iter().map(|f| fx.join(f).display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report: Value = serde_json::from_str(&ok(metamesh(&data, &args))).unwrap();
    assert_eq!(report["accepted"], expected["pattern_count"]);
    assert_eq!(report["pattern_count"], expected["pattern_count"]);
    assert_eq!(report["invalid_records"], expected["invalid_records"]);
    // The Thor file's truncated and blank lines are reported by number.
    let thor = &report["files"][1];
    let skipped: Vec<u64> = thor["skipped_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(skipped, vec![7, 10, 26, 35, 45]);
    // Invalid records carry (line, field, reason).
    for f in report["files"].as_array().unwrap() {
        for e in f["invalid_records"].as_array().unwrap() {
            assert!(e[0].as_u64().unwrap() > 0);
            assert!(
                ["quality_achieved", "depth_used"].contains(&e[1].as_str().unwrap()),
                "{e}"
            );
        }
    }

    // Human-readable report names line numbers too.
    let text = ok(metamesh(
        &data,
        &[
            "import",
            fx.join("thor_depth_patterns.jsonl").to_str().unwrap(),
        ],
    ));
    assert!(text.contains("0 accepted, 40 duplicates"), "{text}");
    assert!(text.contains("line 7: skipped"), "{text}");

    let pats = tmp.path().join("out/all.jsonl");
    let ins = tmp.path().join("out/insights.json");
    ok(metamesh(
        &data,
        &[
            "export",
            "--patterns",
            pats.to_str().unwrap(),
            "--insights",
            ins.to_str().unwrap(),
        ],
    ));
    let lines = std::fs::read_to_string(&pats).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        expected["pattern_count"].as_u64().unwrap()
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&ins).unwrap()).unwrap();
    assert_eq!(doc["pattern_count"], expected["pattern_count"]);
    assert_eq!(doc["node_id"].as_str().unwrap(), id1.trim());
    let mut best = ("", f64::MIN);
    for (depth, e) in expected["depth_performance"].as_object().unwrap() {
        let got = &doc["depth_performance"][depth];
        assert_eq!(got["sample_count"], e["sample_count"], "{depth}");
        for k in ["avg_quality", "success_rate"] {
            let (g, x) = (got[k].as_f64().unwrap(), e[k].as_f64().unwrap());
            assert!((g - x).abs() < 1e-9, "{depth}.{k}: {g} vs {x}");
        }
        let q = got["avg_quality"].as_f64().unwrap();
        if q > best.1 {
            best = (depth.as_str(), q);
        }
    }
    // expected.json's optimal depth is the best average quality; the
    // exported learned preference (posterior argmax) agrees on this data.
    assert_eq!(best.0, expected["optimal_quality_depth"].as_str().unwrap());
    assert_eq!(
        doc["learned_preferences"]["optimal_quality_depth"],
        expected["optimal_quality_depth"]
    );

    // `metamesh insights --json` (no node running: it reads the store) gives
    // the same per-depth figures, for both scopes (one origin here).
    for scope in ["local", "collective"] {
        let ins: Value = serde_json::from_str(&ok(metamesh(
            &data,
            &["insights", "--json", "--scope", scope],
        )))
        .unwrap();
        assert_eq!(ins["pattern_count"], expected["pattern_count"], "{scope}");
        for (depth, e) in expected["depth_performance"].as_object().unwrap() {
            let got = &ins["depth_performance"][depth];
            assert_eq!(got["sample_count"], e["sample_count"], "{scope} {depth}");
            for k in ["avg_quality", "success_rate"] {
                let (g, x) = (got[k].as_f64().unwrap(), e[k].as_f64().unwrap());
                assert!((g - x).abs() < 1e-9, "{scope} {depth}.{k}: {g} vs {x}");
            }
        }
        assert_eq!(
            ins["learned_preferences"]["optimal_quality_depth"], expected["optimal_quality_depth"],
            "{scope}"
        );
        if scope == "collective" {
            // `export --insights` writes the same document.
            assert_eq!(ins["depth_performance"], doc["depth_performance"]);
            assert_eq!(ins["learned_preferences"], doc["learned_preferences"]);
            assert_eq!(ins["node_id"], doc["node_id"]);
        }
    }

    // The export re-imports as the same pattern set: nothing new.
    let again: Value = serde_json::from_str(&ok(metamesh(
        &data,
        &["import", "--json", pats.to_str().unwrap()],
    )))
    .unwrap();
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"], expected["pattern_count"]);

    // Per-node layout.
    let dir = tmp.path().join("per_node");
    ok(metamesh(
        &data,
        &["export", "--per-node", "--patterns", dir.to_str().unwrap()],
    ));
    let mut total = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        assert!(p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("_patterns.jsonl"));
        total += std::fs::read_to_string(&p).unwrap().lines().count();
    }
    assert_eq!(total as u64, expected["pattern_count"].as_u64().unwrap());
}

#[test]
fn commands_without_identity_or_with_a_locked_store_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let o = metamesh(&data, &["id"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("metamesh init"), "{err}");

    ok(metamesh(&data, &["init"]));
    // Hold the store as a running node would.
    let dd = metamesh_node::datadir::DataDir::resolve(Some(data.clone()));
    let store = metamesh_storage::Store::open(&dd.store_path(), &Default::default()).unwrap();
    let f = fixtures().join("mixed_unified.jsonl");
    let o = metamesh(&data, &["import", f.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("locked") && err.contains("running"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // With the API address a running node writes, the message names it.
    std::fs::write(dd.api_addr_path(), "127.0.0.1:9\n").unwrap();
    let o = metamesh(
        &data,
        &[
            "export",
            "--patterns",
            tmp.path().join("x.jsonl").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("127.0.0.1:9") && err.contains("locked"),
        "{err}"
    );
    std::fs::remove_file(dd.api_addr_path()).unwrap();
    // init still succeeds (the store exists) and prints the same id.
    ok(metamesh(&data, &["init"]));
    drop(store);
    // sled releases its file lock when its background threads let go of the
    // database, shortly after the drop: wait for that, with a generous deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = metamesh(&data, &["import", f.to_str().unwrap()]);
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("locked"), "{err}");
        assert!(
            std::time::Instant::now() < deadline,
            "store still locked after the holder closed it"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
