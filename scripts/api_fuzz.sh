#!/usr/bin/env bash
# Property-based fuzz run of the HTTP API against a real node: schemathesis
# generates inputs for every operation in the served OpenAPI document and
# fails on any 5xx. Starts its own node on a fresh data directory.
#
#   scripts/api_fuzz.sh [max-examples] [seed]   (default 200, random seed)
#
# Needs `schemathesis` (pip install schemathesis, 4.x) on PATH, or
# SCHEMATHESIS=/path/to/schemathesis; METAMESH_BIN picks the binary
# (default: target/debug/metamesh, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-200}"
seed_args=()
[[ -n "${2:-}" ]] && seed_args=(--seed "$2")
bin="${METAMESH_BIN:-}"
if [[ -z "$bin" ]]; then
  cargo build -q -p metamesh-node --bin metamesh
  bin="${CARGO_TARGET_DIR:-target}/debug/metamesh"
fi
st="${SCHEMATHESIS:-schemathesis}"
dir="$(mktemp -d)"
api="127.0.0.1:${API_FUZZ_PORT:-0}"
trap 'kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" --data-dir "$dir" init >/dev/null
"$bin" --data-dir "$dir" run --listen /ip4/127.0.0.1/tcp/0 --api "$api" >"$dir/node.log" 2>&1 &
node=$!
# The node writes api.addr once its API listens (port 0 picks a free port).
for _ in $(seq 1 240); do
  [[ -s "$dir/api.addr" ]] && break
  kill -0 "$node" 2>/dev/null || { cat "$dir/node.log" >&2; exit 1; }
  sleep 0.5
done
base="http://$(cat "$dir/api.addr")"
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=scripts \
  "$st" run "$base/v1/openapi.json" \
  --checks not_a_server_error --exclude-path /v1/events \
  --max-examples "$examples" "${seed_args[@]}"
panics="$(grep -c -i panic "$dir/node.log" || true)"
echo "node log lines with panic: $panics"
[[ "$panics" == 0 ]]
