//! `metamesh swarm` runs real nodes on loopback and prints a summary.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn swarm_command_finishes_and_prints_a_summary() {
    let out = Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .args(["swarm", "--nodes", "3", "--rounds", "5", "--seed", "7"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("summary: true best depth deep"), "{stdout}");
    assert!(stdout.contains("rounds to 90% confidence"), "{stdout}");
    assert!(
        stdout.contains("alone (one node, same workload and seed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a pattern reaches every node: p50"),
        "{stdout}"
    );
    // five rounds were reported
    assert!(
        stdout.lines().any(|l| l.trim_start().starts_with("5 ")),
        "{stdout}"
    );
}

#[test]
fn swarm_json_summary_is_one_object() {
    let out = Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .args([
            "swarm",
            "--nodes",
            "3",
            "--byzantine",
            "1",
            "--rounds",
            "3",
            "--json",
        ])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["byzantine"], 1);
    assert_eq!(v["per_round"].as_array().unwrap().len(), 3);
    // 2 honest × 1 + 1 liar × 2 patterns per round
    assert_eq!(v["patterns_total"], 12);
    // Propagation figures: every pattern reached every node, with a latency.
    assert_eq!(v["trust"], "none");
    assert_eq!(v["undelivered"], 0, "{v}");
    let p50 = v["p50_ms"].as_f64().unwrap();
    let p99 = v["p99_ms"].as_f64().unwrap();
    assert!(p50 >= 0.0 && p99 >= p50 && v["max_ms"].as_f64().unwrap() >= p99);
    assert!(v["bytes_per_pattern"].as_f64().unwrap() > 0.0);
    assert!(v["record_bytes"].as_f64().unwrap() > 100.0);
    assert!(v["cpu_ms_per_pattern"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["alone_p_best_by_round"].as_array().unwrap().len(), 3);
    assert_eq!(v["p_best_by_round"].as_array().unwrap().len(), 3);
}

#[test]
fn swarm_refuses_nonsense() {
    let out = Command::new(env!("CARGO_BIN_EXE_metamesh"))
        .args(["swarm", "--nodes", "2", "--byzantine", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--byzantine"));
}
