#!/usr/bin/env python3
"""Quick latency probe (the benchmark suite is separate): p50/p90/p99 of an allowed
`tools/call` through capgate versus directly to the same upstream, over streamable HTTP with
one keep-alive connection, one call at a time. The calls are driven by the Rust load generator
(`examples/quick_load.rs`, reqwest with TCP_NODELAY): a Python HTTP client here measured the
40 ms delayed-ACK stall of its own split writes on both paths, not the gateway.

Usage: scripts/quick_latency.py [CAPGATE_BINARY] [SECONDS]
(build first: cargo build --release --example quick_load)
"""
import json, os, pathlib, re, subprocess, sys, tempfile

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/capgate"
SECS = sys.argv[2] if len(sys.argv) > 2 else "10"
LOAD = str(pathlib.Path(BIN).parent / "examples" / "quick_load")


def measure(url, token):
    out = subprocess.run([LOAD, url, token, "1", SECS, "list_tickets"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    d = pathlib.Path(tempfile.mkdtemp())
    up = subprocess.Popen([BIN, "upstream-demo", "--http", "127.0.0.1:0", "--state", str(d / "state")], stdout=subprocess.PIPE, text=True)
    up_url = up.stdout.readline().split()[-1]
    for name in ["issuer", "audit"]:
        subprocess.run([BIN, "keys", "generate", "--out", str(d / "keys"), "--name", name], check=True, capture_output=True)
    (d / "contracts").mkdir()
    (d / "contracts/t.json").write_text(json.dumps({"tool": "list_tickets", "allowed_roles": ["viewer"], "arg_schema": {}, "side_effects": "read"}))
    (d / "capgate.toml").write_text(f'''contracts = "contracts/"
[[environment]]
name = "dev"
listen = "127.0.0.1:0"
public_url = "http://lat.test/mcp"
[environment.identity]
issuer = "https://idp.lat.test"
jwks = "keys/issuer.jwks.json"
mint_key = "keys/issuer.pem"
[environment.audit]
store = "sqlite://data/audit.db"
signing_key = "keys/audit.pem"
[[upstream]]
name = "demo"
environment = "dev"
url = "{up_url}"
''')
    token = subprocess.run([BIN, "token", "mint", "--config", str(d / "capgate.toml"), "--env", "dev", "--sub", "lat", "--roles", "viewer", "--ttl", "1h"], check=True, capture_output=True, text=True).stdout.strip()
    gw = subprocess.Popen([BIN, "serve", "--config", str(d / "capgate.toml")], stdout=subprocess.PIPE, text=True, env={**os.environ, "CAPGATE_LOG": "error"})
    gw_url = re.search(r"(http://\S+/mcp)", gw.stdout.readline()).group(1)
    try:
        direct = measure(up_url, "unused")
        through = measure(gw_url, token)
        print(json.dumps({"direct": direct, "gateway": through, "added_p50_ms": round(through["p50_ms"] - direct["p50_ms"], 3)}))
    finally:
        gw.terminate(); up.terminate()


main()
