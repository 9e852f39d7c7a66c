#!/usr/bin/env bash
# Reproduces docs/BENCHMARKS.md: builds release binaries, then runs every scenario of
# capgate-bench (gateway, upstream and load generator on this machine), printing the tables.
# Usage: scripts/bench.sh [SECONDS_PER_MEASUREMENT] [JSON_OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
cargo build --release --locked --bin capgate --bin capgate-bench
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -sr)"
args=(suite --seconds "$secs")
[ -n "${2:-}" ] && args+=(--json "$2")
target/release/capgate-bench "${args[@]}"
