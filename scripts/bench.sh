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
# Instructions per request under callgrind: repeatable where the figures above are noisy.
if command -v valgrind >/dev/null; then
  echo
  echo "### Instructions per request (callgrind)"
  echo
  target/release/capgate-bench instructions
else
  echo "valgrind not found: instructions per request not counted (apt-get install valgrind)" >&2
fi
