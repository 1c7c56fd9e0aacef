"""The benchmark runs end to end at a tiny size."""

from __future__ import annotations

import pytest

from bench import telegram as bench


@pytest.mark.slow
def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.cli(["--smoke"]) == 0
    out = capsys.readouterr().out
    for bot in ("floor", "chinwag", "engine"):
        assert f"{bot} " in out
    assert "== 1 user(s): chinwag" in out and "== 5 user(s): chinwag" in out
    assert "msg/s" in out and "p99=" in out
