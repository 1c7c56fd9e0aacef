"""The MCP half of the tools benchmark measures both paths on a live stdio server."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from bench.mcp_calls import measure_mcp_calls, validate_and_invoke
from core.tools import Tool


@pytest.mark.slow
async def test_both_paths_are_measured_and_reported() -> None:
    seen: list[str] = []

    async def through(tool: Tool, arguments: str) -> object:
        seen.append(tool.name)
        return await validate_and_invoke(tool, arguments)

    figures = await measure_mcp_calls(calls=20, warmup=3, through=through)

    assert len(figures.bare.latencies) == 20
    assert len(figures.chinwag.latencies) == 20
    assert seen == ["bench__echo"] * 23  # every chinwag call went through the hook
    assert figures.ratio(0.5) > 0
    bare, ours, ratio = figures.lines()
    assert re.fullmatch(
        r"MCP call_tool x 20 via bare mcp client: p50 [\d.]+ ms, p99 [\d.]+ ms", bare
    )
    assert re.fullmatch(
        r"MCP call_tool x 20 via chinwag MCP tool: p50 [\d.]+ ms, p99 [\d.]+ ms", ours
    )
    assert re.fullmatch(
        r"MCP chinwag/bare: p50 x[\d.]+, p99 x[\d.]+ \(target p50 <= x1.2: .+\)", ratio
    )
