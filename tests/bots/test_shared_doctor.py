"""``chinwag doctor``'s Redis line: none when unset, ok with the version, a clear failure."""

from __future__ import annotations

from bots.doctor.shared_state import check_redis
from core.settings import ScaleSettings


async def test_unset_redis_adds_no_line() -> None:
    assert await check_redis(ScaleSettings(_env_file=None), 5) == []


async def test_unreachable_redis_fails_in_one_line_without_the_password() -> None:
    scale = ScaleSettings(_env_file=None, redis_url="redis://:hunter2-pw@127.0.0.1:1/0")
    [line] = await check_redis(scale, 5)
    assert line.status == "FAIL"
    assert "hunter2" not in line.line()
    assert "redis://127.0.0.1:1/0" in line.detail


async def test_reachable_redis_is_ok_with_its_version(redis_url: str) -> None:
    [line] = await check_redis(ScaleSettings(_env_file=None, redis_url=redis_url), 5)
    assert line.status == "ok"
    assert line.detail.startswith("REDIS_URL answers: Redis ")
    assert line.detail[-1].isdigit()
