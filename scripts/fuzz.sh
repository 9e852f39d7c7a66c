#!/usr/bin/env bash
# Runs every cargo-fuzz target briefly (default 10 s each) on its corpus; CI calls it.
# A crash or a broken invariant fails the script; libFuzzer leaves the input under
# fuzz/artifacts/TARGET/. Usage: scripts/fuzz.sh [SECONDS]
# `--dev` (unoptimised, still instrumented and with AddressSanitizer): a brief run finds
# more per minute of CI when the build is quick than when it is fast.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-10}"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi
# cargo-fuzz passes sanitizer flags only nightly accepts; the stable toolchain accepts them
# with RUSTC_BOOTSTRAP (no nightly can be fetched on CI machines).
export RUSTC_BOOTSTRAP=1
# FUZZ_PROFILE=release for long runs: slower to build, ~100x more inputs per second.
profile=--dev
[ "${FUZZ_PROFILE:-dev}" = release ] && profile=--release
log=$(mktemp)
# New inputs go to a scratch corpus; the committed seeds under corpus/ are only read.
scratch=$(mktemp -d)
for target in contract_file arg_types request_body token upstream_answer input_responses store_setting resource_uri policy_file; do
  mkdir -p "corpus/$target" "$scratch/$target"
  if ! cargo fuzz run $profile "$target" "$scratch/$target" "corpus/$target" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target FAILED" >&2
    exit 1
  fi
  runs=$(grep -oE "stat::number_of_executed_units: [0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
  echo "fuzz: $target ok, ${runs} inputs in ${secs}s"
done
rm -rf "$log" "$scratch"
