#!/usr/bin/env python3
"""Upstream log messages through a running capgate, with the official MCP Python SDK client.

Usage: sdk_logging.py URL  (the caller's token in the TOKEN environment variable)

Client `set` sets its session's level to `info` and calls `steps` and `leaky`; client
`unset` sets none and calls `steps`. Prints one JSON object with the log messages each
received; tests/interop.rs asserts on it. Exits non-zero if the SDK itself fails.
"""
import asyncio
import json
import os
import sys
import warnings

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

warnings.simplefilter("ignore")


async def run(url: str, level: str | None, calls: list) -> dict:
    seen: list = []

    async def on_log(params):
        seen.append({"level": params.level, "data": params.data})

    token = os.environ["TOKEN"]
    results = []
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, logging_callback=on_log) as session:
                await session.initialize()
                if level is not None:
                    await session.set_logging_level(level)
                for tool, args in calls:
                    r = await session.call_tool(tool, args)
                    results.append(r.content[0].text if r.content else None)
                # Log messages may come on the session's own stream, beside the answers.
                await asyncio.sleep(0.5)
    return {"logs": seen, "results": results}


async def main() -> int:
    url = sys.argv[1]
    out = {
        "set": await run(url, "info", [("steps", {"topic": "backup"}), ("leaky", {})]),
        "unset": await run(url, None, [("steps", {"topic": "restore"})]),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
