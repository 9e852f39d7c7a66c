#!/usr/bin/env python3
"""Drives a running capgate with the official MCP Python SDK client (package `mcp`).

Usage: sdk_client.py URL BASE  (tokens in TOKEN_ONCALL, TOKEN_VIEWER, TOKEN_IC, TOKEN_LEAD
environment variables; BASE: the environment's base URL, for the approvals API)

Prints one JSON object with what each step saw; the Rust test `interop_python` asserts on it.
Exits non-zero if the SDK itself fails.
"""
import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def session_for(url: str, token: str | None, steps):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await steps(session)


def dump(result) -> dict:
    return json.loads(result.model_dump_json(by_alias=True, exclude_none=True))


async def main() -> int:
    url, base = sys.argv[1], sys.argv[2]
    out: dict = {}

    async def oncall(s: ClientSession):
        tools = await s.list_tools()
        out["oncall_tools"] = sorted(t.name for t in tools.tools)
        out["create_ticket_schema"] = next(t.input_schema for t in tools.tools if t.name == "create_ticket")
        out["ok_call"] = dump(await s.call_tool("create_ticket", {"title": "from the python sdk", "severity": "medium"}))
        for name, args in [
            ("bad_enum", {"title": "x", "severity": "urgent"}),
            ("extra_arg", {"title": "x", "severity": "low", "shell": "id"}),
            ("forbidden", {"ip": "10.0.0.0/8", "ttl_minutes": 5}),
        ]:
            tool = "create_firewall_block" if name == "forbidden" else "create_ticket"
            try:
                r = await s.call_tool(tool, args)
                out[name] = {"result": dump(r)}
            except Exception as e:  # the SDK raises on JSON-RPC errors
                out[name] = {"error": str(e), "type": type(e).__name__}

    # An approval: pending, approved by a security lead in the API, then the identical
    # repeat runs, once.
    async def ic(s: ClientSession):
        block = {"ip": "192.0.2.0/24", "ttl_minutes": 30}
        out["pending"] = dump(await s.call_tool("create_firewall_block", block))
        approval = out["pending"]["structuredContent"]["approval_id"]
        lead = {"Authorization": f"Bearer {os.environ['TOKEN_LEAD']}"}
        async with httpx2.AsyncClient(headers=lead, timeout=30) as http:
            decided = await http.post(f"{base}/api/approvals/{approval}/approve", json={"reason": "interop python"})
            out["approved"] = {"status": decided.status_code, "body": decided.json()}
        out["repeat"] = dump(await s.call_tool("create_firewall_block", block))

    async def viewer(s: ClientSession):
        out["viewer_tools"] = sorted(t.name for t in (await s.list_tools()).tools)

    await session_for(url, os.environ["TOKEN_ONCALL"], oncall)
    await session_for(url, os.environ["TOKEN_IC"], ic)
    await session_for(url, os.environ["TOKEN_VIEWER"], viewer)
    try:
        await session_for(url, None, viewer)
        out["no_token"] = "connected"
    except BaseException as e:  # an ExceptionGroup from the task group
        out["no_token"] = f"refused: {type(e).__name__}: {e}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
