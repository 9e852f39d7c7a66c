#!/usr/bin/env python3
"""Quick latency probe (the benchmark suite is separate): p50/p90/p99 of an allowed
`tools/call` through capgate versus directly to the same upstream, over streamable HTTP with
one keep-alive connection each, sequentially.

Usage: scripts/quick_latency.py [CAPGATE_BINARY] [N]
"""
import json, os, pathlib, re, statistics, subprocess, sys, tempfile, time

import httpx2

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/capgate"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000


def session(url, token=None):
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if token:
        h["authorization"] = f"Bearer {token}"
    c = httpx2.Client(headers=h, timeout=30)
    r = c.post(url, content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "lat", "version": "1"}}}))
    r.raise_for_status()
    c.headers["mcp-session-id"] = r.headers["mcp-session-id"]
    c.post(url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return c


def measure(c, url, n):
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_tickets", "arguments": {}}})
    out = []
    for i in range(n + 50):
        t = time.perf_counter()
        r = c.post(url, content=body)
        dt = (time.perf_counter() - t) * 1000
        assert r.status_code == 200 and '"isError":false' in r.text.replace(" ", ""), r.text
        if i >= 50:
            out.append(dt)
    out.sort()
    q = lambda p: out[min(len(out) - 1, int(p * len(out)))]
    return {"p50": round(q(0.5), 3), "p90": round(q(0.9), 3), "p99": round(q(0.99), 3), "mean": round(statistics.mean(out), 3)}


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
        direct = measure(session(up_url), up_url, N)
        through = measure(session(gw_url, token), gw_url, N)
        print(json.dumps({"n": N, "direct_ms": direct, "gateway_ms": through, "added_p50_ms": round(through["p50"] - direct["p50"], 3)}))
    finally:
        gw.terminate(); up.terminate()


main()
