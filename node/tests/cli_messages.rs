#![allow(clippy::unwrap_used)]
//! Messages and exit codes of the real `metamesh` binary (no node running):
//! bad numbers, negative ATP, `--success true|false`, a missing file, an
//! import that stores nothing, a misspelled `METAMESH_*` variable, no ANSI
//! colour when stderr is not a terminal, `version`, `completions`, and
//! `--json` on every command.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn metamesh(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("METAMESH_DATA_DIR")
        .env_remove("METAMESH_CONFIG")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = metamesh(dir, args);
    assert!(
        o.status.success(),
        "metamesh {args:?}: exit {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = ok(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn record(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["record", "--depth", "deep"];
    args.extend_from_slice(extra);
    metamesh(dir, &args)
}

#[test]
fn record_values_are_checked_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    let base = ["--atp-before", "100", "--atp-after", "80"];
    for (quality, before, after, want) in [
        (
            "NaN",
            "100",
            "80",
            "--quality: must be a finite number between 0 and 1, got NaN",
        ),
        (
            "0.5",
            "inf",
            "80",
            "--atp-before: must be a finite number, got inf",
        ),
        (
            "0.5",
            "100",
            "NaN",
            "--atp-after: must be a finite number, got NaN",
        ),
    ] {
        let o = record(
            dir,
            &[
                "--quality",
                quality,
                "--atp-before",
                before,
                "--atp-after",
                after,
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = stderr(&o);
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("is required"), "{err}");
    }
    // Out of range: named, exit 2.
    let mut a = vec!["--quality", "1.5"];
    a.extend_from_slice(&base);
    let o = record(dir, &a);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--quality"), "{}", stderr(&o));

    // Negative ATP parses with a space; --success takes true/false or nothing.
    for success in [
        &["--success"][..],
        &["--success", "true"],
        &["--success", "false"],
        &[],
    ] {
        let mut a = vec![
            "--quality",
            "0.5",
            "--atp-before",
            "-10",
            "--atp-after",
            "-20",
            "--json",
        ];
        a.extend_from_slice(success);
        let o = record(dir, &a);
        assert!(o.status.success(), "{success:?}: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["seq"].as_u64().unwrap() > 0, "{v}");
    }
    let o = record(
        dir,
        &[
            "--quality",
            "0.5",
            "--success",
            "maybe",
            "--atp-before",
            "1",
            "--atp-after",
            "0",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // The four records above: successes true, true, false, false.
    let ins = json(dir, &["insights", "--scope", "local", "--json"]);
    assert_eq!(ins["pattern_count"], 4);
    let deep = &ins["depth_performance"]["deep"];
    assert!(
        (deep["success_rate"].as_f64().unwrap() - 0.5).abs() < 1e-9,
        "{deep}"
    );
    // recommend checks --atp too (negative values reach the check).
    for atp in ["NaN", "-5"] {
        let o = metamesh(dir, &["recommend", "--atp", atp]);
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        assert!(
            stderr(&o).contains("--atp: must be a finite number"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn import_failures_have_one_clear_message_and_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    ok(&dir, &["init"]);
    let missing = tmp.path().join("missing.jsonl");
    let o = metamesh(&dir, &["import", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert_eq!(
        err.trim(),
        format!("error: cannot read {}: no such file", missing.display())
    );

    // Nothing valid: exit 3, the report still printed.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "garbage\n\n{\"depth_used\":\"deep\",\"quality_achieved\":7}\n",
    )
    .unwrap();
    let o = metamesh(&dir, &["import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("0 accepted") && out.contains("line 1: skipped"),
        "{out}"
    );
    assert!(stderr(&o).contains("nothing imported"), "{}", stderr(&o));

    // One good line: success; importing it again (all duplicates) too.
    let good = tmp.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"pattern_id\":\"g1\",\"node_id\":\"n1\",\"depth_used\":\"deep\",\"quality_achieved\":0.7,\"success\":true,\"atp_before\":10,\"atp_after\":5,\"timestamp\":1700000000}\n",
    )
    .unwrap();
    let r = json(&dir, &["import", "--json", good.to_str().unwrap()]);
    assert_eq!(r["accepted"], 1);
    let r = json(&dir, &["import", "--json", good.to_str().unwrap()]);
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(1))
    );

    // A usage error is 2; an unknown subcommand too (clap).
    assert_eq!(metamesh(&dir, &["export"]).status.code(), Some(2));
    assert_eq!(metamesh(&dir, &["frobnicate"]).status.code(), Some(2));
    // No identity: an error (1) naming `metamesh init`.
    let o = metamesh(&tmp.path().join("none"), &["stats"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("metamesh init"));
}

#[test]
fn misspelled_environment_variables_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    let o = Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .arg("--data-dir")
        .arg(dir)
        .args(["stats", "--json"])
        .env_remove("METAMESH_DATA_DIR")
        .env_remove("RUST_LOG")
        .env("METAMESH_SHARING_ENABELD", "false")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("METAMESH_SHARING_ENABELD")
            && err.contains("did you mean METAMESH_SHARING_ENABLED?"),
        "{err}"
    );
    // Redirected stderr: no ANSI escape codes in the log line.
    assert!(!err.contains('\u{1b}'), "ANSI codes in {err:?}");
    // A bad value for a real key is an error naming the variable.
    let o = Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .arg("--data-dir")
        .arg(dir)
        .args(["stats"])
        .env_remove("METAMESH_DATA_DIR")
        .env("METAMESH_SHARING_ENABLED", "perhaps")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("METAMESH_SHARING_ENABLED"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn version_completions_and_json_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let v = json(dir, &["version", "--json"]);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let commit = v["commit"].as_str().unwrap();
    assert!(!commit.is_empty());
    // In a git checkout the commit is the abbreviated hash.
    if std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");
    }
    let text = ok(dir, &["version"]);
    assert!(text.contains(commit), "{text}");
    assert!(ok(dir, &["--version"]).contains(env!("CARGO_PKG_VERSION")));

    for (shell, marker) in [
        ("bash", "_metamesh()"),
        ("zsh", "#compdef metamesh"),
        ("fish", "complete -c metamesh"),
    ] {
        let s = ok(dir, &["completions", shell]);
        assert!(s.contains(marker), "{shell}: {}", &s[..s.len().min(200)]);
        assert!(s.contains("import") && s.contains("export"), "{shell}");
    }

    // --json on every data command, each printing one JSON document.
    let init = json(dir, &["init", "--json"]);
    assert!(init["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    let rec = json(
        dir,
        &[
            "record",
            "--json",
            "--depth",
            "light",
            "--quality",
            "0.5",
            "--atp-before",
            "10",
            "--atp-after",
            "5",
        ],
    );
    assert_eq!(rec["origin"], init["peer_id"]);
    json(dir, &["id", "--json"]);
    json(dir, &["stats", "--json"]);
    json(dir, &["peers", "--json"]);
    json(dir, &["insights", "--json"]);
    json(dir, &["recommend", "--atp", "100", "--json"]);
    let out = tmp.path().join("o.jsonl");
    let e = json(
        dir,
        &["export", "--json", "--patterns", out.to_str().unwrap()],
    );
    assert_eq!(
        (e["patterns"].as_u64(), e["via"].as_str()),
        (Some(1), Some("store"))
    );
    let i = json(dir, &["import", "--json", out.to_str().unwrap()]);
    assert_eq!(
        i["accepted"].as_u64().unwrap() + i["duplicates"].as_u64().unwrap(),
        1
    );
}
