"""``python -m bench.media --smoke`` runs end to end and prints every figure it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MS = r"[\d.]+ ms"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_media_smoke_prints_all_figures():
    result = subprocess.run(
        [sys.executable, "-m", "bench.media", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = result.stdout
    # A missed target is a non-zero exit and says so; anything else is a failure.
    missed = "bench.media: below target: photo turn added latency" in out
    assert result.returncode == (1 if missed else 0), result.stderr + out
    assert re.search(rf"^text turn  x 5: framework cost p50 +{MS}, p99 +{MS}$", out, re.M), out
    assert re.search(
        rf"^photo turn x 5 \(640x480 JPEG, [\d.]+ MB\): framework cost p50 +{MS}, p99 +{MS} "
        rf"\(of which the downscale p50 {MS}\)$",
        out,
        re.M,
    ), out
    assert re.search(rf"^the decode alone .*: p50 {MS}, p99 {MS}, CPU p50 {MS}$", out, re.M), out
    assert re.search(rf"^CPU time per turn .* p50: text {MS}, photo {MS}$", out, re.M), out
    verdict = "BELOW TARGET" if missed else "ok"
    assert re.search(
        rf"^a photo adds p50 -?{MS}, p99 -?{MS} \(target p50 < 50 ms: {verdict}\)$", out, re.M
    ), out
