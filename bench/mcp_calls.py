"""What chinwag adds to an MCP tool call: ``python -m bench.mcp_calls [--smoke]``.

Runs the fake MCP server (``tests/fakes/mcp_servers.py``) over stdio twice, one process for
the ``mcp`` SDK's bare ``ClientSession`` and one for chinwag's supervised
:class:`~adapters.mcp.source.McpServerSource`, and calls its ``echo`` tool (configured
``read``) N times through each, alternating which goes first so that drift hits both alike:

* bare: ``session.call_tool("echo", {...})``;
* chinwag: the model's JSON arguments validated against the tool's schema, then the
  ``bench__echo`` tool's ``invoke``, or whatever ``through`` does with them (``bench.tools``
  passes the safety gate with its audit write).

It reports p50 and p99 of each and their ratio (target: chinwag at most 1.2x the bare
client). :func:`measure_mcp_calls` returns the figures for ``bench.tools`` to print.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from adapters.mcp.config import parse_config
from adapters.mcp.source import McpServerSource
from bench._common import Result
from core.tools import Tool

ROOT = Path(__file__).resolve().parents[1]
ARGUMENTS = '{"text": "ping"}'
TARGET_RATIO = 1.2

Through = Callable[[Tool, str], Awaitable[object]]
"""How chinwag runs a call: given the tool and the model's JSON arguments."""


async def validate_and_invoke(tool: Tool, arguments: str) -> object:
    """The tool's own path: schema validation, then the call."""
    return await tool.invoke(tool.validate(arguments))


@dataclass
class McpCallFigures:
    """Latencies of the same tool call through the bare client and through chinwag."""

    bare: Result
    chinwag: Result

    def ratio(self, q: float) -> float:
        """chinwag's ``q`` quantile over the bare client's."""
        return self.chinwag.percentile(q) / self.bare.percentile(q)

    def lines(self) -> list[str]:
        """The report, one figure per line."""
        calls = self.bare.messages
        out = []
        for label, result in (("bare mcp client", self.bare), ("chinwag MCP tool", self.chinwag)):
            out.append(
                f"MCP call_tool x {calls:,} via {label}: p50 {result.percentile(0.5):.3f} ms, "
                f"p99 {result.percentile(0.99):.3f} ms"
            )
        verdict = "ok" if self.ratio(0.5) <= TARGET_RATIO else "over target"
        out.append(
            f"MCP chinwag/bare: p50 x{self.ratio(0.5):.2f}, p99 x{self.ratio(0.99):.2f} "
            f"(target p50 <= x{TARGET_RATIO}: {verdict})"
        )
        return out


def _server(state: Path) -> tuple[str, list[str]]:
    return sys.executable, ["-m", "tests.fakes.mcp_servers", "stdio", "--state", str(state)]


async def measure_mcp_calls(
    calls: int = 2000, warmup: int = 100, through: Through = validate_and_invoke
) -> McpCallFigures:
    """Call the fake server's ``echo`` ``calls`` times each way, after ``warmup`` calls."""
    with tempfile.TemporaryDirectory() as directory:
        command, args = _server(Path(directory) / "chinwag")
        entry = {"command": command, "args": args, "cwd": str(ROOT), "tools": {"echo": "read"}}
        (config,) = parse_config({"mcpServers": {"bench": entry}}, origin=Path("bench"))
        source = McpServerSource(config)
        command, args = _server(Path(directory) / "bare")
        params = StdioServerParameters(command=command, args=args, cwd=ROOT)
        try:
            await source.start()
            tool = next((t for t in source.tools() if t.name == "bench__echo"), None)
            if tool is None:
                raise RuntimeError("the fake MCP server did not come up")
            async with stdio_client(params) as (read, write), ClientSession(read, write) as bare:
                await bare.initialize()
                await bare.list_tools()  # as chinwag does: the SDK caches output schemas
                return await _alternate(bare, tool, calls, warmup, through)
        finally:
            await source.aclose()


async def _alternate(
    bare: ClientSession, tool: Tool, calls: int, warmup: int, through: Through
) -> McpCallFigures:
    bare_times: list[float] = []
    chinwag_times: list[float] = []

    async def bare_call() -> None:
        started = time.perf_counter()
        await bare.call_tool("echo", {"text": "ping"})
        bare_times.append(time.perf_counter() - started)

    async def chinwag_call() -> None:
        started = time.perf_counter()
        await through(tool, ARGUMENTS)
        chinwag_times.append(time.perf_counter() - started)

    started = time.perf_counter()
    for i in range(warmup + calls):
        if i == warmup:
            bare_times.clear()
            chinwag_times.clear()
            started = time.perf_counter()
        first, second = (bare_call, chinwag_call) if i % 2 else (chinwag_call, bare_call)
        await first()
        await second()
    seconds = time.perf_counter() - started
    return McpCallFigures(
        bare=Result("bare", 1, calls, seconds, bare_times),
        chinwag=Result("chinwag", 1, calls, seconds, chinwag_times),
    )


async def main(smoke: bool) -> None:
    figures = await measure_mcp_calls(calls=50 if smoke else 2000, warmup=10 if smoke else 100)
    for line in figures.lines():
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny size, for a quick check")
    asyncio.run(main(parser.parse_args().smoke))
