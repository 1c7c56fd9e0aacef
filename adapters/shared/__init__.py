"""What every process of one bot shares through Redis: flood control, rate limits, /stop.

:class:`RedisShared` owns one ``redis.asyncio`` client for ``REDIS_URL`` and the pieces
built on it, each implementing a core port: :class:`~adapters.shared.state.RedisLimits`
(``core.limits.SharedLimits``), :class:`~adapters.shared.state.RedisRateLimits`
(``core.access.RateLimits``), :class:`~adapters.shared.state.RedisPendingStore`
(``core.confirmations.PendingStore``) and :class:`~adapters.shared.stop.RedisStopSignal`
(``core.queue.StopSignal``). ``bots/shared.py`` builds it and hands the pieces to the engine
and the platform adapters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.shared.state import RedisLimits, RedisPendingStore, RedisRateLimits
from adapters.shared.stop import RedisStopSignal
from core.errors import ChinwagError
from core.lifecycle import Lifecycle

__all__ = ["RedisShared", "RedisUnavailable", "redacted"]

_log = logging.getLogger(__name__)

_TIMEOUT: Final = 5.0  # seconds for a connection or a reply; a call never hangs a turn


class RedisUnavailable(ChinwagError):
    """Redis could not be reached at start (the message names where, without a password)."""


def redacted(url: str) -> str:
    """``url`` without its user and password: ``redis://host:6379/0``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable REDIS_URL)"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisShared:
    """The Redis client of one bot's processes and the shared state on it.

    Args:
        url: ``REDIS_URL``.
        bot_name: the bot whose state it is (keys live under ``chinwag:<bot>:``).
        clock: the engine's clock (for confirmations' expiry when Redis is away).
        prefix: the key prefix, if not ``chinwag:<bot>:`` (tests give each test its own).
    """

    def __init__(
        self,
        url: str,
        bot_name: str,
        *,
        clock: Callable[[], datetime] | None = None,
        prefix: str | None = None,
    ) -> None:
        self.where = redacted(url)
        self.prefix = prefix if prefix is not None else f"chinwag:{bot_name}:"
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=_TIMEOUT,
            socket_connect_timeout=_TIMEOUT,
            health_check_interval=30,
        )
        self.limits = RedisLimits(self.client, self.prefix)
        self.rate_limits = RedisRateLimits(self.client, self.prefix)
        self.pending = RedisPendingStore(
            self.client, self.prefix, clock or (lambda: datetime.now(UTC))
        )
        self.stop_signal = RedisStopSignal(self.client, self.prefix)
        self.version = ""
        self._state = Lifecycle.NEW

    async def start(self) -> None:
        """Check that Redis answers (and note its version). Idempotent.

        Raises:
            RedisUnavailable: it does not (one line, no password).
        """
        if not self._state.require_startable("RedisShared"):
            return
        self._state = Lifecycle.STARTING
        try:
            info = await self.client.info("server")
        except (RedisError, OSError) as exc:
            self._state = Lifecycle.NEW
            raise RedisUnavailable(
                f"REDIS_URL: cannot reach Redis at {self.where} ({type(exc).__name__}: "
                f"{_short(exc)}); start it or fix the URL (e.g. redis://127.0.0.1:6379/0)"
            ) from exc
        self.version = str(info.get("redis_version", "?"))
        self._state = Lifecycle.RUNNING
        _log.info("shared state in Redis %s at %s", self.version, self.where)

    async def aclose(self) -> None:
        """Close the client's connections. Idempotent."""
        if self._state.closed:
            return
        self._state = Lifecycle.CLOSED
        await self.client.aclose()


def _short(exc: BaseException) -> str:
    # redis-py's messages name host and port, never the password; keep them to one line.
    return str(exc).splitlines()[0][:160] if str(exc) else "no answer"
