#!/usr/bin/env python3
"""An upstream's requests to the caller, through a running capgate, with the official MCP
Python SDK client (package `mcp`).

Usage: sdk_relay.py URL  (the caller's token in the TOKEN environment variable)

One client declares elicitation and sampling and records every request it is sent; another
declares neither. Prints one JSON object with what each saw; tests/conformance.rs asserts on
it. Exits non-zero if the SDK itself fails.
"""
import asyncio
import json
import os
import sys
import time

import httpx2
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client


async def session_for(url: str, steps, **callbacks):
    token = os.environ["TOKEN"]
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, **callbacks) as session:
                await session.initialize()
                return await steps(session)


async def timed_call(session: ClientSession, tool: str, args: dict) -> dict:
    start = time.monotonic()
    try:
        r = await session.call_tool(tool, args)
        seen = {"result": json.loads(r.model_dump_json(by_alias=True, exclude_none=True))}
    except Exception as e:  # the SDK raises on JSON-RPC errors
        seen = {"error": str(e)}
    seen["seconds"] = time.monotonic() - start
    return seen


async def main() -> int:
    url = sys.argv[1]
    out: dict = {"elicited": [], "sampled": []}

    async def elicit(context, params):
        out["elicited"].append(params.message)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async def sample(context, params):
        out["sampled"].append(len(params.messages))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="from the caller's model"), model="canary"
        )

    async def capable(s: ClientSession):
        out["relayed"] = await timed_call(s, "test_elicitation", {"message": "Who are you?"})
        out["unnamed"] = await timed_call(s, "test_sampling", {"prompt": "Say hi"})

    async def incapable(s: ClientSession):
        out["incapable"] = await timed_call(s, "test_elicitation", {"message": "Anyone there?"})

    await session_for(url, capable, elicitation_callback=elicit, sampling_callback=sample)
    await session_for(url, incapable)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
