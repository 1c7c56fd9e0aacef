"""MCP servers built with the real ``mcp`` SDK, for the MCP tool-source tests and benchmark.

Run one as a process::

    python -m tests.fakes.mcp_servers stdio --state DIR
    python -m tests.fakes.mcp_servers http --port 8765 --token s3cret --state DIR

Both serve the same tools. ``--state DIR`` is where the server writes what a test reads
back: ``pid`` (its process id, so a test can kill it), ``set_light.log`` (one line per
``set_light`` call that ran, so a test counts executions) and ``added`` (tools added at
runtime; a restarted server serves them again, the way a real server's config would).

The HTTP server speaks streamable HTTP on ``/mcp`` and answers 401 unless the request
carries ``Authorization: Bearer <token>``; it logs every refused request's path (never a
header) to stderr.

Tools:
    echo(text): says it back (declares ``readOnlyHint``).
    set_light(entity, on): "switches" a light; declares ``readOnlyHint`` even though it acts
        (a lying server: chinwag must still treat it as ``act``).
    light_calls(): how many ``set_light`` calls ran.
    ``weird tool.name/with spaces & a name far longer than sixty-four characters, really``:
        a name no OpenAI tool may have.
    odd.name / odd_name: two names that clash once sanitised.
    fail(reason): always fails (an ``isError`` result carrying ``reason``).
    slow(seconds): sleeps, then answers "slept".
    wipe(): declares ``destructiveHint``.
    stats(): structured output (a JSON object).
    picture(): an image.
    add_tool(name): adds a tool ``name`` at runtime and sends ``tools/list_changed``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

WEIRD_NAME = "weird tool.name/with spaces & a name far longer than sixty-four characters, really"
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def build_server(state: Path) -> MCPServer:
    """The fake server's tools, writing what tests read back under ``state``."""
    server = MCPServer("chinwag-fake", log_level="WARNING")
    # The odd names below are on purpose; the SDK's advice about them is noise here.
    logging.getLogger("mcp.shared.tool_name_validation").setLevel(logging.ERROR)
    lights = state / "set_light.log"
    added = state / "added"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def echo(text: str) -> str:
        """Say the text back."""
        return text

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def set_light(entity: str, on: bool) -> str:
        """Switch a light on or off."""
        with lights.open("a", encoding="utf-8") as f:
            f.write(f"{entity} {'on' if on else 'off'}\n")
        return f"{entity} is now {'on' if on else 'off'}"

    @server.tool()
    def light_calls() -> int:
        """How many set_light calls ran."""
        return len(lights.read_text().splitlines()) if lights.exists() else 0

    def weird() -> str:
        return "weird answered"

    server.add_tool(weird, name=WEIRD_NAME, description="A tool with an unusable name.")

    def odd_dot() -> str:
        return "odd.name answered"

    def odd_underscore() -> str:
        return "odd_name answered"

    server.add_tool(odd_dot, name="odd.name", description="Clashes once sanitised.")
    server.add_tool(odd_underscore, name="odd_name", description="The other one.")

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails with the reason."""
        raise ToolError(reason)

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "slept"

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    def wipe() -> str:
        """Erase everything."""
        return "wiped"

    @server.tool()
    def stats() -> dict[str, Any]:
        """Numbers as structured output."""
        return {"lights": 3, "on": ["light.kitchen"]}

    @server.tool()
    def picture() -> Image:
        """A tiny picture."""
        return Image(data=PNG_1PX, format="png")

    def add_runtime_tool(name: str) -> None:
        def runtime_tool() -> str:
            return f"hello from {name}"

        server.add_tool(runtime_tool, name=name, description=f"Added at runtime: {name}.")

    @server.tool()
    async def add_tool(name: str, ctx: Context) -> str:
        """Add a tool at runtime and tell the client its list changed."""
        add_runtime_tool(name)
        with added.open("a", encoding="utf-8") as f:
            f.write(name + "\n")
        await ctx.session.send_tool_list_changed()
        return f"added {name}"

    if added.exists():
        for name in added.read_text().split():
            add_runtime_tool(name)
    return server


class BearerGate:
    """ASGI middleware: 401 for an HTTP request without the right bearer token."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != (
            self.expected
        ):
            print(f"401 for {scope['path']}", file=sys.stderr, flush=True)
            body = json.dumps({"error": "unauthorized"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def main(argv: list[str] | None = None) -> None:
    """Run the fake over stdio or streamable HTTP (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.mcp_servers")
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    (args.state / "pid").write_text(str(os.getpid()))
    server = build_server(args.state)
    if args.transport == "stdio":
        asyncio.run(server.run_stdio_async())
        return
    import uvicorn

    app = BearerGate(server.streamable_http_app(), args.token)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
