"""``python -m bench.core --smoke`` runs end to end and prints every figure it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_core_smoke_prints_all_figures():
    result = subprocess.run(
        [sys.executable, "-m", "bench.core", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"sqlite\s+1 user\(s\) x\s+50 msgs:\s+\d+ msg/s at most; overhead p50", out)
    assert re.search(
        r"sqlite\s+10 user\(s\) x\s+10 msgs sent at 1,000 msg/s .* p99 +[\d.]+ ms", out
    )
    assert re.search(r"prompt build: 100 stored [\d.]+ ms, 2,000 stored [\d.]+ ms", out)
    if os.environ.get("CHINWAG_TEST_POSTGRES_URL"):
        assert re.search(r"postgresql\s+1 user\(s\) x\s+50 msgs:\s+\d+ msg/s", out), out
        assert re.search(r"postgresql prompt build: 100 stored", out), out
        # both databases side by side, and PostgreSQL's target met or missed, in figures
        assert re.search(r"1,000 msg/s sent, p99 ms +[\d.]+ +[\d.]+\n", out), out
        assert re.search(
            r"postgresql target (met|MISSED): serve 1,000 msg/s at p99 overhead < 20 ms.*"
            r"served [\d,]+.*p99 [\d.]+ ms",
            out,
        ), out
    else:
        assert "postgresql skipped: set CHINWAG_TEST_POSTGRES_URL" in out
        assert re.search(r"1,000 msg/s sent, p99 ms +[\d.]+ +-\n", out), out
