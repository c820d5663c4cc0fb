#!/usr/bin/env python3
"""Baseline for the storage benchmark: analyse a unified JSONL pattern file
the way the Thor prototype's PersistentMetaLearningManager does it — read
every line with json.loads, keep per-depth lists of outcomes in memory, then
compute per-depth averages (avg_quality, success_rate, sample_count).

Usage: thor_baseline.py FILE.jsonl
Prints one JSON object: per-depth results, pattern count, elapsed seconds
and peak RSS (KiB).
"""
import json
import sys
import time
from collections import defaultdict


def peak_rss_kib() -> int:
    # VmHWM of this process image (getrusage's ru_maxrss survives exec and may
    # report the parent's size instead).
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    patterns_by_depth = defaultdict(list)  # depth -> list of pattern dicts, as Thor keeps them
    count = 0
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                p = json.loads(line)
            except json.JSONDecodeError:
                continue
            depth = str(p.get("depth_used", "")).lower()
            patterns_by_depth[depth].append(p)
            count += 1
    load_s = time.perf_counter() - t0
    depth_performance = {}
    for depth, ps in patterns_by_depth.items():
        qualities = [p["quality_achieved"] for p in ps]
        successes = [1 if p["success"] else 0 for p in ps]
        depth_performance[depth] = {
            "avg_quality": sum(qualities) / len(qualities),
            "success_rate": sum(successes) / len(successes),
            "sample_count": len(ps),
        }
    elapsed = time.perf_counter() - t0
    print(json.dumps({
        "pattern_count": count,
        "depth_performance": depth_performance,
        "load_seconds": load_s,
        "elapsed_seconds": elapsed,
        "peak_rss_kib": peak_rss_kib(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
