#!/usr/bin/env python3
"""Prompts, resources and completion through a running capgate, with the official MCP Python
SDK client (package `mcp`).

Usage: sdk_surface.py URL  (tokens in TOKEN_ONCALL and TOKEN_VIEWER environment variables)

Prints one JSON object with what each step saw; tests/interop.rs asserts on it. Exits non-zero
if the SDK itself fails.
"""
import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import PromptReference, ResourceTemplateReference


async def session_for(url: str, token: str, steps):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await steps(session)


def dump(result) -> dict:
    return json.loads(result.model_dump_json(by_alias=True, exclude_none=True))


async def refused(out: dict, name: str, step) -> None:
    try:
        out[name] = {"result": dump(await step)}
    except Exception as e:  # the SDK raises on JSON-RPC errors
        out[name] = {"error": str(e), "type": type(e).__name__}


async def main() -> int:
    url = sys.argv[1]
    out: dict = {}

    async def oncall(s: ClientSession):
        out["prompts"] = sorted(p.name for p in (await s.list_prompts()).prompts)
        out["resources"] = sorted(r.uri for r in (await s.list_resources()).resources)
        out["templates"] = sorted(t.uri_template for t in (await s.list_resource_templates()).resource_templates)
        out["prompt"] = dump(await s.get_prompt("incident_summary", {"incident": "INC-9"}))
        out["resource"] = dump(await s.read_resource("runbook://web/restart"))
        out["completion"] = dump(
            await s.complete(ResourceTemplateReference(uri="runbook://{service}/{page}"), {"name": "service", "value": ""})
        )
        await refused(out, "bad_prompt_arg", s.get_prompt("incident_summary", {"incident": "rm -rf /"}))
        await refused(out, "unknown_resource", s.read_resource("secrets://vault/root"))

    async def viewer(s: ClientSession):
        out["viewer_prompts"] = sorted(p.name for p in (await s.list_prompts()).prompts)
        await refused(out, "viewer_prompt", s.get_prompt("incident_summary", {"incident": "INC-9"}))
        await refused(
            out,
            "viewer_completion",
            s.complete(PromptReference(name="incident_summary"), {"name": "audience", "value": ""}),
        )

    await session_for(url, os.environ["TOKEN_ONCALL"], oncall)
    await session_for(url, os.environ["TOKEN_VIEWER"], viewer)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
