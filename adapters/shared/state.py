"""Flood gates, edit pacing, rate windows and confirmations in Redis, shared by a bot's processes.

Each class implements a core port over one ``redis.asyncio`` client; keys live under
``<prefix>`` (``chinwag:<bot>:`` by default), so several bots may share one Redis. Every
read-modify-write is one Lua script, atomic on the server.

Redis going away at run time never stops the bot: a failed call is logged once (and its
recovery once more), and the call falls back to this process's own state (the in-memory
implementation of the same port), so the process keeps serving with the limits of a single
process until Redis answers again. Nothing a user sent is lost: these stores hold no
messages.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.access import RateLimiter
from core.confirmations import MemoryPendingStore, Pending
from core.limits import LocalLimits

__all__ = ["Outage", "RedisLimits", "RedisPendingStore", "RedisRateLimits"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_WINDOW_MS: Final = 60_000

# KEYS[1]: the gate; ARGV[1]: until (ms). Keeps the later closing; expires with it.
_CLOSE = """
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if new > old then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', new)
end
return 1
"""

# KEYS[1]: the slot; ARGV[1]: now (ms), ARGV[2]: interval (ms). Returns the slot taken.
_RESERVE = """
local now = tonumber(ARGV[1])
local booked = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = now
if ARGV[3] ~= '1' then at = math.max(now, booked) end
local nxt = math.max(booked, at + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], tostring(nxt), 'PXAT', math.max(nxt, now + 1000))
return at
"""

# KEYS[1]: the subject's window (sorted set of ms stamps); ARGV: now (ms), limit, member.
# Returns 0 (recorded) or the ms to wait; a refused message is not recorded.
_ADMIT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, 60000 - (now - tonumber(first[2])))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], 60000)
return 0
"""


class Outage:
    """Logs a Redis outage once when it starts and once when it ends.

    Args:
        what: what the failing calls are for (``"flood control"``), for the log line.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._down = False

    async def run(
        self, call: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]
    ) -> _T:
        """``call()``; on a Redis error ``fallback()`` (this process's own state) instead.

        A failed call is made once more first: after Redis restarted, the first command on
        each pooled connection fails (redis-py 8 does not retry that one).
        """
        try:
            try:
                result = await call()
            except (RedisError, OSError):
                result = await call()
        except (RedisError, OSError) as exc:
            if not self._down:
                self._down = True
                _log.warning(
                    "Redis is unreachable (%s): %s holds for this process only until it is back",
                    type(exc).__name__,
                    self._what,
                )
            return await fallback()
        if self._down:
            self._down = False
            _log.warning("Redis is back: %s is shared again", self._what)
        return result


class RedisLimits:
    """``core.limits.SharedLimits`` in Redis: gates as keys expiring with them, slots as keys."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix + "limits:"
        self._close = client.register_script(_CLOSE)
        self._reserve = client.register_script(_RESERVE)
        self._local = LocalLimits()
        self._outage = Outage("flood control")

    async def closed_until(self, names: Sequence[str]) -> float:
        """See ``SharedLimits.closed_until`` (the local gates count too)."""
        keys = [self._prefix + "gate:" + name for name in names]

        async def shared() -> float:
            values: list[Any] = await self._client.mget(keys)
            return max((int(v) / 1000 for v in values if v is not None), default=0.0)

        local = await self._local.closed_until(names)
        return max(local, await self._outage.run(shared, _zero))

    async def close(self, name: str, until: float) -> None:
        """See ``SharedLimits.close``."""
        await self._local.close(name, until)

        async def shared() -> None:
            await self._close(keys=[self._prefix + "gate:" + name], args=[int(until * 1000)])

        await self._outage.run(shared, _none)

    async def reserve(self, name: str, interval: float, *, now: bool = False) -> float:
        """See ``SharedLimits.reserve``."""

        async def shared() -> float:
            at = await self._reserve(
                keys=[self._prefix + "slot:" + name],
                args=[int(time.time() * 1000), int(interval * 1000), "1" if now else "0"],
            )
            return int(at) / 1000

        return await self._outage.run(shared, lambda: self._local.reserve(name, interval, now=now))


class RedisRateLimits:
    """``core.access.RateLimits`` in Redis: a sorted set of message times per subject."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix + "rate:"
        self._admit = client.register_script(_ADMIT)
        self._local = RateLimiter(1)
        self._outage = Outage("the per-user rate limit")
        self._seq = 0

    async def admit(self, subject: str, now: float, per_minute: int) -> float:
        """See ``RateLimits.admit``."""
        self._seq += 1
        member = f"{now:.6f}:{id(self)}:{self._seq}"  # unique: two messages in one ms count twice

        async def shared() -> float:
            ms = await self._admit(
                keys=[self._prefix + subject], args=[int(now * 1000), per_minute, member]
            )
            return int(ms) / 1000

        return await self._outage.run(shared, lambda: self._local.admit(subject, now, per_minute))


class RedisPendingStore:
    """``core.confirmations.PendingStore`` in Redis: one key per confirmation, expiring with it.

    Args:
        client: the Redis client.
        prefix: the bot's key prefix.
        clock: the engine's clock (the fallback store's).
    """

    def __init__(self, client: Redis, prefix: str, clock: Callable[[], datetime]) -> None:
        self._client = client
        self._prefix = prefix + "confirm:"
        self._local = MemoryPendingStore(clock)
        self._outage = Outage("confirmations (/forget's yes/no)")

    async def put(self, action_id: str, pending: Pending) -> None:
        """See ``PendingStore.put``."""
        value = json.dumps(
            {
                "kind": pending.kind,
                "platform": pending.platform,
                "user_id": pending.user_id,
                "expires": pending.expires.isoformat(),
            }
        )
        ms = max(int(pending.expires.timestamp() * 1000), int(time.time() * 1000) + 1)

        async def shared() -> None:
            await self._client.set(self._prefix + action_id, value, pxat=ms)

        await self._outage.run(shared, lambda: self._local.put(action_id, pending))

    async def get(self, action_id: str) -> Pending | None:
        """See ``PendingStore.get`` (those asked while Redis was away are found too)."""

        async def shared() -> Pending | None:
            raw = await self._client.get(self._prefix + action_id)
            return None if raw is None else _pending(raw)

        found = await self._outage.run(shared, _none_pending)
        return found or await self._local.get(action_id)

    async def take(self, action_id: str) -> bool:
        """See ``PendingStore.take``: ``DEL`` answers 1 to only one caller."""
        if await self._local.take(action_id):
            return True

        async def shared() -> bool:
            return bool(await self._client.delete(self._prefix + action_id))

        return await self._outage.run(shared, _false)


def _pending(raw: str | bytes) -> Pending | None:
    try:
        data = json.loads(raw)
        return Pending(
            data["kind"], data["platform"], data["user_id"], datetime.fromisoformat(data["expires"])
        )
    except (ValueError, KeyError, TypeError):
        _log.warning("ignored a confirmation in Redis that this version cannot read")
        return None


async def _zero() -> float:
    return 0.0


async def _none() -> None:
    return None


async def _none_pending() -> Pending | None:
    return None


async def _false() -> bool:
    return False
