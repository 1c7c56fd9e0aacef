"""``python -m bench.scale --smoke`` runs real ingress and worker processes end to end and
prints every figure it promises (needs PostgreSQL and Redis)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]


def test_bench_scale_smoke_prints_all_figures(direct_url: str, redis_url: str) -> None:
    env = {**os.environ, "CHINWAG_TEST_REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=290,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for label in ("run (1 process)", "1 worker", "2 workers"):
        assert re.search(rf"^{re.escape(label)} +\d+ +[\d.]+ +[\d.]+ +[\d.]+$", out, re.M), out
    assert re.search(r"2 workers / one process: throughput [\d.]+x", out), out
    assert re.search(r"2 workers / one process: CPU per message [\d.]+x", out), out
    assert re.search(r"killed worker: its turns complete [\d.]+ s after SIGKILL", out), out
