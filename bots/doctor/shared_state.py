"""Doctor's Redis check: ``REDIS_URL`` answers, and which version it runs."""

from __future__ import annotations

import asyncio

from bots.doctor.check import Check
from core.settings import ScaleSettings

_MIN_VERSION = (6, 2)  # PXAT (gates expiring with their time) and float BLPOP timeouts


async def check_redis(scale: ScaleSettings, limit: float) -> list[Check]:
    """Redis's line: reachable within ``limit`` seconds, and recent enough.

    No line without ``REDIS_URL``: a single process needs no Redis, and nothing is missing.
    """
    if scale.redis_url is None:
        return []
    from adapters.shared import RedisShared, RedisUnavailable

    shared = RedisShared(scale.redis_url.get_secret_value(), "doctor")
    try:
        await asyncio.wait_for(shared.start(), limit)
    except RedisUnavailable as exc:
        return [Check("FAIL", "Redis", str(exc), "start Redis or correct REDIS_URL")]
    except TimeoutError:
        return [
            Check(
                "FAIL",
                "Redis",
                f"no answer from {shared.where} within {limit:.0f} s",
                "start Redis or correct REDIS_URL",
            )
        ]
    finally:
        await shared.aclose()
    version = tuple(int(p) for p in shared.version.split(".")[:2] if p.isdigit())
    if version < _MIN_VERSION:
        return [
            Check(
                "FAIL",
                "Redis",
                f"Redis {shared.version} at {shared.where} is too old",
                "use Redis 6.2 or later",
            )
        ]
    return [Check("ok", "Redis", f"REDIS_URL answers: Redis {shared.version}")]
