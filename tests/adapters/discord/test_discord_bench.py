"""The Discord benchmark runs end to end in its smoke size."""

from __future__ import annotations

import pytest

from bench import discord as bench_discord


@pytest.mark.slow
def test_bench_smoke_measures_all_three_bots(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_discord.main(["--smoke"]) == 0

    out = capsys.readouterr().out
    for bot in ("floor", "adapter", "chinwag"):
        assert f"  {bot}" in out
    assert "chinwag / floor throughput,  1 user(s)" in out
    assert "chinwag / floor throughput, 30 user(s)" in out
