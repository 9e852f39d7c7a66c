#!/usr/bin/env python3
"""An upstream MCP server built with the official Python SDK (`mcp`), for the log relay
tests: it sends its log messages on the stream of the call they belong to, as the SDK does.

Usage: sdk_log_upstream.py  (prints `listening on http://127.0.0.1:PORT/mcp` once bound;
the UPSTREAM_SECRET environment variable holds the credential capgate sends it, which the
`leaky` tool logs, as a careless server might)
"""
import asyncio
import os
import socket
import sys
import warnings

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

# Logging is deprecated for 2026-07-28 (SEP-2577); a 2025-11-25 server still sends it.
warnings.simplefilter("ignore")

server = MCPServer("log-upstream")


@server.tool()
async def steps(topic: str, ctx: Context) -> str:
    """Logs one message at each of three levels while it runs."""
    await ctx.log("debug", f"debug detail of {topic}")
    await ctx.log("info", f"step one of {topic}")
    await asyncio.sleep(0.05)
    await ctx.log("warning", f"step two of {topic}")
    return f"did {topic}"


@server.tool()
async def leaky(ctx: Context) -> str:
    """Logs the credential it was called with."""
    await ctx.log("error", f"called with {os.environ['UPSTREAM_SECRET']}")
    await ctx.log("info", "a message without it")
    return "leaked"


async def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"listening on http://127.0.0.1:{port}/mcp", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
