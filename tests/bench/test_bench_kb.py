"""``python -m bench.kb --smoke`` runs end to end and prints every figure it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.kb.embed_local import local_embedder_available
from tests._require import require_or_skip

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_kb_smoke_prints_all_figures():
    if not local_embedder_available():
        require_or_skip("kb", "the offline embedder is not installed (make install)")
    result = subprocess.run(
        [sys.executable, "-m", "bench.kb", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    out = result.stdout
    # A missed target is a non-zero exit and says which; anything else is a failure.
    missed = re.findall(r"^bench\.kb: below target: (.+)$", out, re.M)
    assert result.returncode == (1 if missed else 0), result.stderr + out
    assert re.search(
        r"^ingestion: \d+ chunks of 700-800 chars \(mean \d+\) in [\d.]+ s: [\d.]+ chunks/s "
        r"with minilm-l6-int8 on \d+ CPUs \(target >= 25: (ok|BELOW TARGET)\)$",
        out,
        re.M,
    ), out
    assert re.search(r"^ingestion: \d+ ms of CPU per chunk", out, re.M), out
    recall = re.search(r"^recall@5: ([\d.]+) on 6 questions over \d+ documents", out, re.M)
    assert recall, out
    # The smoke corpus holds the answer to each of its questions: the model finds them.
    assert float(recall.group(1)) >= 0.8, out
    assert re.search(
        r"^sqlite 1000 chunks: query p50 [\d.]+ ms, p99 [\d.]+ ms over 20 queries "
        r"\(query embedding alone p50 [\d.]+ ms, p99 [\d.]+ ms\) \(no target\)",
        out,
        re.M,
    ), out
    if os.environ.get("CHINWAG_TEST_POSTGRES_URL"):
        assert re.search(r"^postgresql 1000 chunks: query p50 [\d.]+ ms", out, re.M), out
    else:
        assert "postgresql skipped: set CHINWAG_TEST_POSTGRES_URL" in out
