"""``python -m bench.tools --smoke`` runs end to end and prints every figure it promises."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_tools_smoke_prints_all_figures():
    result = subprocess.run(
        [sys.executable, "-m", "bench.tools", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    out = result.stdout
    # A missed target is a non-zero exit and says which; anything else is a failure.
    missed = re.findall(r"^bench\.tools: below target: (.+)$", out, re.M)
    assert result.returncode == (1 if missed else 0), result.stderr + out
    assert re.search(
        r"^sqlite\s+tool call x 20 \(no-op read tool\): framework cost p50 [\d.]+ ms, "
        r"p99 [\d.]+ ms \(p50 to the tool [\d.]+ ms, the rest back to the model\) "
        r"\(target p50 < 2 ms: (ok|BELOW TARGET)\)$",
        out,
        re.M,
    ), out
    if "sqlite tool-call cost" in "".join(missed):
        assert "target p50 < 2 ms: BELOW TARGET" in out
    if os.environ.get("CHINWAG_TEST_POSTGRES_URL"):
        assert re.search(
            r"^postgresql tool call x 20 .* p50 [\d.]+ ms, p99 [\d.]+ ms .*\(no target\)$",
            out,
            re.M,
        ), out
    else:
        assert "postgresql skipped: set CHINWAG_TEST_POSTGRES_URL" in out
    if importlib.util.find_spec("mcp") is None:
        assert "MCP comparison skipped" in out
        return
    assert re.search(r"^MCP call_tool x 20 via bare mcp client: p50 [\d.]+ ms", out, re.M), out
    assert re.search(r"^MCP call_tool x 20 via chinwag MCP tool: p50 [\d.]+ ms", out, re.M), out
    assert re.search(r"^MCP chinwag/bare: p50 x[\d.]+, p99 x[\d.]+ \(target", out, re.M), out
