"""Wiring the state a bot's processes share through Redis (``REDIS_URL``).

:func:`connect_shared` is what every serving command calls: ``chinwag run`` (optional: without
``REDIS_URL`` everything stays in the process, as it always did) and ``chinwag ingress`` /
``chinwag worker`` (which require it). The returned :class:`~adapters.shared.RedisShared`
carries the pieces to hand on:

- ``limits`` to ``TelegramAdapter(limits=...)`` (and any REST-only outbound adapter): flood
  gates and per-chat pacing across processes;
- ``rate_limits``, ``pending`` and ``stop_signal`` to ``Engine(...)``: the per-user rate
  limit, ``/forget``'s confirmations and ``/stop`` across processes.

Redis going away later never stops the process: each piece logs it once and falls back to
this process's own state until it is back (see :mod:`adapters.shared.state`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from adapters.shared import RedisShared, RedisUnavailable
from bots.app import Exit
from core.settings import ScaleSettings

__all__ = ["RedisShared", "connect_shared", "shared_state"]


async def connect_shared(
    settings: ScaleSettings,
    bot_name: str,
    *,
    clock: Callable[[], datetime] | None = None,
) -> RedisShared | None:
    """The started shared state for ``REDIS_URL``, or ``None`` when it is unset.

    The caller closes it (``await shared.aclose()``), after the engine and adapters.

    Raises:
        Exit: Redis does not answer (one line naming REDIS_URL, without its password).
    """
    if settings.redis_url is None:
        return None
    shared = RedisShared(settings.redis_url.get_secret_value(), bot_name, clock=clock)
    try:
        await shared.start()
    except RedisUnavailable as exc:
        await shared.aclose()
        raise Exit(str(exc)) from None
    return shared


@asynccontextmanager
async def shared_state(settings: ScaleSettings, bot_name: str) -> AsyncIterator[RedisShared | None]:
    """:func:`connect_shared` as a context: closed on the way out."""
    shared = await connect_shared(settings, bot_name)
    try:
        yield shared
    finally:
        if shared is not None:
            await shared.aclose()
