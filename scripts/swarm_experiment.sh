#!/usr/bin/env bash
# Real-swarm version of the convergence experiment (issue 9, docs/learning.md
# "Real-swarm experiment"): `metamesh swarm` on loopback with the trust a real
# node has by default (`--trust none`: every peer a stranger), per seed
#   * N = 1 alone                              (the individual baseline),
#   * N = 10 honest strangers                  (speedup_n10_strangers_real),
#   * N = 10 honest strangers + 3 liars        (accuracy and rounds vs alone),
# and, only when asked for with CELLS, the operator-trust variants
# (fleet: every honest node trusts every other; anchor: all trust node 0).
# Prints one JSON summary on stdout; raw per-run JSON and logs go to $OUT.
#
# Usage: bash scripts/swarm_experiment.sh   (default cells, 5 seeds)
# Environment (all optional):
#   SEEDS=5            seeds 1..SEEDS for every cell
#   ALONE_SEEDS=SEEDS  N=1 runs over seeds 1..ALONE_SEEDS (N=1 is cheap; a wider baseline)
#   ROUNDS_ALONE=300   round cap for N=1 (runs that never reach 90% count as the cap: censored)
#   ROUNDS_N10=60      round cap for the N=10 runs (same censoring)
#   ROUNDS_BYZ=60      rounds for the runs with liars (accuracy is read at the last round)
#   BYZANTINE=3        liars added to the 10 honest nodes
#   OUT=/tmp/swarm-experiment
#   METAMESH_BIN=...   use this binary instead of building target/release/metamesh
#   CELLS="alone n10 byz"   which cells to run; add n10-fleet byz-fleet n10-anchor byz-anchor
#   KEEP=1             keep the runs already in $OUT (to add cells), then aggregate all
set -euo pipefail

SEEDS=${SEEDS:-5}
ALONE_SEEDS=${ALONE_SEEDS:-$SEEDS}
ROUNDS_ALONE=${ROUNDS_ALONE:-300}
ROUNDS_N10=${ROUNDS_N10:-60}
ROUNDS_BYZ=${ROUNDS_BYZ:-60}
BYZANTINE=${BYZANTINE:-3}
OUT=${OUT:-/tmp/swarm-experiment}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

if [[ -z "${METAMESH_BIN:-}" ]]; then
    cargo build --release -p metamesh-node >&2
    target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
    METAMESH_BIN=$target_dir/release/metamesh
fi
[[ -x "$METAMESH_BIN" ]] || { echo "no metamesh binary at $METAMESH_BIN" >&2; exit 1; }

CELLS=${CELLS:-alone n10 byz}
mkdir -p "$OUT"
[[ "${KEEP:-0}" == 1 ]] || rm -f "$OUT"/*.json "$OUT"/*.log
want() { [[ " $CELLS " == *" $1 "* ]]; }

# run NAME SEED ARGS... : one swarm run, JSON to $OUT/NAME-sSEED.json
run() {
    local name=$1 seed=$2
    shift 2
    local file="$OUT/$name-s$seed"
    local started=$SECONDS
    "$METAMESH_BIN" swarm --seed "$seed" --json "$@" >"$file.json" 2>"$file.log"
    echo "  $name seed $seed: $((SECONDS - started)) s" >&2
}

echo "machine: nproc=$(nproc), load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[[ "${KEEP:-0}" == 1 && -f "$OUT/machine.start" ]] ||
    echo "$(nproc) $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/machine.start"
wall_start=$SECONDS

if want alone; then
    for seed in $(seq 1 "$ALONE_SEEDS"); do
        run alone "$seed" --nodes 1 --rounds "$ROUNDS_ALONE" 2>/dev/null
    done
    echo "N=1: $ALONE_SEEDS seeds done" >&2
fi
byz=(--nodes $((10 + BYZANTINE)) --byzantine "$BYZANTINE" --rounds "$ROUNDS_BYZ")
n10=(--nodes 10 --rounds "$ROUNDS_N10")
for seed in $(seq 1 "$SEEDS"); do
    if want n10; then run n10 "$seed" "${n10[@]}" --trust none; fi
    if want byz; then run byz "$seed" "${byz[@]}" --trust none; fi
    for t in fleet anchor; do
        if want "n10-$t"; then run "n10-$t" "$seed" "${n10[@]}" --trust "$t"; fi
        if want "byz-$t"; then run "byz-$t" "$seed" "${byz[@]}" --trust "$t"; fi
    done
done

echo "$(nproc) $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/machine.end"
prev_wall=0
[[ "${KEEP:-0}" == 1 && -f "$OUT/wall_secs" ]] && prev_wall=$(cat "$OUT/wall_secs")
echo "$((prev_wall + SECONDS - wall_start))" >"$OUT/wall_secs"

OUT="$OUT" SEEDS="$SEEDS" ALONE_SEEDS="$ALONE_SEEDS" ROUNDS_ALONE="$ROUNDS_ALONE" \
ROUNDS_N10="$ROUNDS_N10" BYZANTINE="$BYZANTINE" python3 - <<'PY'
"""Aggregate the per-run JSON of `metamesh swarm --json`.

Definitions (as close to the simulator's, docs/learning.md section 1, as the
swarm's output allows):
* rounds to 90%: the swarm's `rounds_to_90`, the first round at which the
  median honest node gives the true best depth P(best) >= 0.9; `null`
  (not reached) counts as the run's round cap (censored).
* wrong at 90%: at the first round at which the median honest node's
  confidence in its *own* answer is >= 0.9, the majority answer is not the
  true best depth. Rate over the runs that ever reached that point.
* accuracy: `final_fraction_correct`, the fraction of honest nodes naming the
  true best depth at the last round, averaged over seeds.
"""
import json, os, statistics

out = os.environ["OUT"]
seeds = int(os.environ["SEEDS"])
alone_seeds = int(os.environ["ALONE_SEEDS"])


def load(name, seed):
    with open(f"{out}/{name}-s{seed}.json") as f:
        return json.load(f)


def rounds(run):
    r = run["rounds_to_90"]
    return (run["rounds"], True) if r is None else (r, False)


def first_confident(run):
    """(reached, wrong) at the first round the median own-answer confidence is >= 0.9."""
    for row in run["per_round"]:
        if row["median_confidence"] >= 0.9:
            return True, row["majority_depth"] != run["true_best_depth"]
    return False, False


def cell(name, n_seeds):
    if not os.path.exists(f"{out}/{name}-s1.json"):
        return None
    runs = [load(name, s) for s in range(1, n_seeds + 1)]
    rs = [rounds(r) for r in runs]
    conf = [first_confident(r) for r in runs]
    reached = [w for ok, w in conf if ok]
    return {
        "seeds": n_seeds,
        "rounds_to_90": [r for r, _ in rs],
        "censored": sum(c for _, c in rs),
        "median_rounds_to_90": statistics.median(r for r, _ in rs),
        "wrong_rate_at_90": (sum(reached) / len(reached)) if reached else None,
        "accuracy_end": statistics.mean(r["final_fraction_correct"] for r in runs),
        "accuracy_end_per_seed": [r["final_fraction_correct"] for r in runs],
        "rounds_fully_propagated": sum(r["rounds_fully_propagated"] for r in runs),
        "rounds_run": sum(r["rounds"] for r in runs),
        "median_wall_secs": statistics.median(r["wall_secs"] for r in runs),
        "median_round_ms": statistics.median(
            row["round_ms"] for r in runs for row in r["per_round"]
        ),
    }


alone = cell("alone", seeds)
alone_wide = cell("alone", alone_seeds)
n10 = cell("n10", seeds)
byz = cell("byz", seeds)
extra = {name: cell(name, seeds) for name in ["n10-fleet", "byz-fleet", "n10-anchor", "byz-anchor"]}


def get(c, key):
    return None if c is None else c[key]


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


with open(f"{out}/machine.start") as f:
    machine_start = f.read().split()
with open(f"{out}/machine.end") as f:
    machine_end = f.read().split()
with open(f"{out}/wall_secs") as f:
    wall = int(f.read())

base = get(alone_wide, "median_rounds_to_90")
speedup = ratio(base, get(n10, "median_rounds_to_90"))
acc_byz = get(byz, "accuracy_end")
# "Never slower than alone": per seed, the run with liars reaches 90% no later
# than the alone run of the same seed (censored runs count as their cap).
slower = None
if byz is not None and alone is not None:
    slower = sum(b > a for a, b in zip(alone["rounds_to_90"], byz["rounds_to_90"]))
summary = {
    "trust": "none (default: every peer a stranger)",
    "seeds": seeds,
    "byzantine": int(os.environ["BYZANTINE"]),
    "median_rounds_alone": base,
    "alone_seeds": alone_seeds,
    "median_rounds_n10_strangers": get(n10, "median_rounds_to_90"),
    "speedup_n10_strangers_real": speedup,
    "wrong_rate_alone": get(alone_wide, "wrong_rate_at_90"),
    "wrong_rate_n10_strangers": get(n10, "wrong_rate_at_90"),
    "accuracy_n10_strangers": get(n10, "accuracy_end"),
    "accuracy_liars3_strangers": acc_byz,
    "median_rounds_liars3_strangers": get(byz, "median_rounds_to_90"),
    "liars3_seeds_slower_than_alone": slower,
    "targets": {
        "speedup_n10_strangers_real >= 5": None if speedup is None else speedup >= 5,
        "accuracy_liars3_strangers >= 0.95": None if acc_byz is None else acc_byz >= 0.95,
        "liars3 never slower than alone": None if slower is None else slower == 0,
    },
    "operator_trust": {
        name: None
        if c is None
        else {
            "median_rounds_to_90": c["median_rounds_to_90"],
            "speedup": ratio(base, c["median_rounds_to_90"]),
            "accuracy_end": c["accuracy_end"],
        }
        for name, c in extra.items()
    },
    "machine": {
        "nproc": int(machine_start[0]),
        "loadavg_start": " ".join(machine_start[1:]),
        "loadavg_end": " ".join(machine_end[1:]),
        "wall_secs": wall,
    },
    "cells": {"alone": alone_wide, "n10_strangers": n10, "liars3_strangers": byz},
}
with open(f"{out}/summary.json", "w") as f:
    json.dump(summary, f, indent=1)
print(json.dumps(summary, indent=1))
PY
