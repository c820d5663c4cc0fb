//! Stable-toolchain fuzz driver for the targets in `fuzz/src/lib.rs` (the
//! same bodies the libFuzzer binaries run): structure-aware mutation of the
//! valid seeds in `fuzz/seeds/<target>/` (bit flips, CBOR and JSON tokens,
//! insertions, deletions, duplications, splices, truncation) plus purely
//! random inputs. A panic is a crash: the input is saved to
//! `fuzz/artifacts-stable/<target>/` and counted.
//!
//! ```text
//! cargo run --release -p metamesh-tests --example fuzz_seeds -- fuzz/seeds
//! cargo run --release -p metamesh-tests --example fuzz_stable -- --inputs 10000000
//! ```
//! Options: `--inputs N` per target (100 000), `--target NAME` (repeatable;
//! default all), `--seed S`, `--seeds DIR` (fuzz/seeds).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: [Target; 9] = [
    ("wire_gossip", targets::wire_gossip),
    ("wire_request", targets::wire_request),
    ("wire_response", targets::wire_response),
    ("record_envelope", targets::record_envelope),
    ("pattern_body", targets::pattern_body),
    ("insight_body", targets::insight_body),
    ("import_line", targets::import_line),
    ("import_file", targets::import_file),
    ("api_body", targets::api_body),
];

/// Bytes worth splicing in: CBOR heads (indefinite lengths, break, floats,
/// 8-byte lengths, tags) and JSON tokens and field names.
const TOKENS: &[&[u8]] = &[
    &[0x00],
    &[0xff],
    &[0x7f],
    &[0x80],
    &[0x9f],
    &[0xbf],
    &[0x5f],
    &[0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xf9, 0x7e, 0x00],
    &[0xfb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],
    &[0xfb, 0xff, 0xf8, 0, 0, 0, 0, 0, 1],
    &[0xc0],
    &[0xf6],
    &[0xf7],
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"NaN",
    b"null",
    b"true",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"depth_used\"",
    b"\"quality_achieved\"",
    b"\"timestamp\"",
    b"\"context\"",
    b"\"DEEP\"",
    b"\n",
    b"\r\n",
    b"&",
    b"=",
    b"%",
];

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    if seeds.is_empty() || rng.gen_ratio(1, 10) {
        let n = rng.gen_range(0..256);
        out.extend((0..n).map(|_| rng.gen::<u8>()));
        return;
    }
    out.extend_from_slice(&seeds[rng.gen_range(0..seeds.len())]);
    for _ in 0..rng.gen_range(1..=4) {
        let len = out.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] = rng.gen();
            }
            2 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                let i = rng.gen_range(0..=len);
                out.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let j = rng.gen_range(i..=len.min(i + 64));
                out.drain(i..j);
            }
            4 if len > 0 => {
                let i = rng.gen_range(0..len);
                let j = rng.gen_range(i..=len.min(i + 64));
                let chunk = out[i..j].to_vec();
                let k = rng.gen_range(0..=out.len());
                out.splice(k..k, chunk);
            }
            5 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() {
                    let i = rng.gen_range(0..other.len());
                    let j = rng.gen_range(i..=other.len());
                    let k = rng.gen_range(0..=out.len());
                    out.splice(k..k, other[i..j].iter().copied());
                }
            }
            6 if len > 0 => out.truncate(rng.gen_range(0..len)),
            _ if len > 0 => {
                // An arithmetic nudge of one byte (lengths, counts, versions).
                let i = rng.gen_range(0..len);
                out[i] = out[i].wrapping_add(rng.gen_range(1..=4)).wrapping_sub(2);
            }
            _ => {}
        }
    }
}

fn load_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(PathBuf, Vec<u8>)> = rd
        .filter_map(Result::ok)
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, b)| b).collect()
}

/// Figures of one target's run.
#[derive(Debug, Clone)]
pub struct Run {
    pub target: &'static str,
    pub inputs: u64,
    pub crashes: u64,
    pub secs: f64,
}

/// Run `inputs` mutated inputs through `target`; crashes are saved under
/// `artifacts` (when given) and counted.
pub fn run_target(
    target: Target,
    seeds_dir: &Path,
    inputs: u64,
    seed: u64,
    artifacts: Option<&Path>,
) -> Run {
    let (name, f) = target;
    let seeds = load_seeds(&seeds_dir.join(name));
    let mut rng = StdRng::seed_from_u64(seed ^ name.len() as u64);
    let mut buf = Vec::new();
    let mut crashes = 0;
    let start = Instant::now();
    // Seeds first, as they are.
    for s in &seeds {
        f(s);
    }
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for _ in 0..inputs {
        mutate(&mut rng, &seeds, &mut buf);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&buf)));
        if r.is_err() {
            crashes += 1;
            if let Some(dir) = artifacts {
                let d = dir.join(name);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(format!("crash-{seed}-{crashes}")), &buf).unwrap();
            }
        }
    }
    std::panic::set_hook(quiet);
    Run {
        target: name,
        inputs,
        crashes,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = 100_000u64;
    let mut only: Vec<String> = Vec::new();
    let mut seed: u64 = rand::random();
    let mut seeds = root.join("seeds");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--inputs" => inputs = val().parse().unwrap(),
            "--target" => only.push(val()),
            "--seed" => seed = val().parse().unwrap(),
            "--seeds" => seeds = PathBuf::from(val()),
            other => panic!("unknown option {other}"),
        }
    }
    println!("fuzz_stable: {inputs} inputs per target, seed {seed}");
    let artifacts = root.join("artifacts-stable");
    let mut total_crashes = 0;
    for t in TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == t.0) {
            continue;
        }
        let r = run_target(t, &seeds, inputs, seed, Some(&artifacts));
        total_crashes += r.crashes;
        println!(
            "{:<16} {:>11} inputs {:>8.1} s {:>9.0} inputs/s  crashes {}",
            r.target,
            r.inputs,
            r.secs,
            r.inputs as f64 / r.secs.max(1e-9),
            r.crashes
        );
    }
    if total_crashes > 0 {
        println!("crashing inputs saved under {}", artifacts.display());
        std::process::exit(1);
    }
}
