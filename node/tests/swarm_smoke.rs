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
