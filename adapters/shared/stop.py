"""``/stop`` across processes: Redis pub/sub, with acknowledgements so the user hears back.

A stop is published on the bot's channel (``<prefix>stop``) with a request id; every
process listening calls its ``on_stop`` and pushes ``1`` (it stopped a reply) or ``0`` onto
the request's reply list. :meth:`RedisStopSignal.publish` waits up to
:data:`ACK_SECONDS` for a ``1``, or until every listener said ``0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.types import ConversationKey

__all__ = ["ACK_SECONDS", "RedisStopSignal"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

ACK_SECONDS: Final = 1.0
_RECONNECT_MAX: Final = 10.0


class RedisStopSignal:
    """``core.queue.StopSignal`` on Redis pub/sub.

    Args:
        client: the Redis client.
        prefix: the bot's key prefix (the channel and reply lists live under it).
    """

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._channel = prefix + "stop"
        self._acks = prefix + "stop:ack:"
        self.listening = asyncio.Event()  # set while subscribed (tests wait for it)

    async def publish(self, key: ConversationKey) -> bool:
        """See ``StopSignal.publish``; ``False`` too when Redis cannot be reached (logged)."""
        request = secrets.token_hex(8)
        message = json.dumps({"id": request, "key": asdict(key)})
        acks = self._acks + request
        try:
            listeners = int(await _again(lambda: self._client.publish(self._channel, message)))
            deadline = time.monotonic() + ACK_SECONDS
            while listeners > 0 and (left := deadline - time.monotonic()) > 0:
                answer = await self._client.blpop([acks], timeout=max(left, 0.01))
                if answer is None:
                    break
                if answer[1] in (b"1", "1"):
                    return True
                listeners -= 1
            return False
        except (RedisError, OSError) as exc:
            _log.warning("could not publish /stop through Redis (%s)", type(exc).__name__)
            return False
        finally:
            await _quietly(self._client.delete(acks))

    async def listen(self, on_stop: Callable[[ConversationKey], bool]) -> None:
        """See ``StopSignal.listen``: reconnects (with backoff) after Redis goes away."""
        delay = 0.5
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self.listening.set()
                if delay > 0.5:
                    _log.warning("Redis is back: /stop reaches this process again")
                delay = 0.5
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message.get("type") == "message":
                        await self._answer(message["data"], on_stop)
            except (RedisError, OSError) as exc:
                _log.debug("the /stop subscription failed", exc_info=True)
                self.listening.clear()
                if delay == 0.5:
                    _log.warning(
                        "lost Redis (%s): /stop from other processes does not reach this one "
                        "until it is back; reconnecting",
                        type(exc).__name__,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
            finally:
                self.listening.clear()
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]

    async def _answer(self, data: Any, on_stop: Callable[[ConversationKey], bool]) -> None:
        try:
            request = json.loads(data)
            key = ConversationKey(**request["key"])
            acks = self._acks + str(request["id"])
        except (ValueError, TypeError, KeyError):
            _log.warning("ignored a /stop in Redis that this version cannot read")
            return
        stopped = on_stop(key)

        async def ack() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(acks, "1" if stopped else "0")
            pipe.pexpire(acks, int(ACK_SECONDS * 5000))
            await pipe.execute()

        await _again(ack)


async def _again(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, made a second time if the first fails.

    After Redis restarted, the first command on each pooled connection fails (redis-py 8
    does not retry that one).
    """
    try:
        return await call()
    except (RedisError, OSError):
        return await call()


async def _quietly(call: Awaitable[Any]) -> None:
    with contextlib.suppress(RedisError, OSError):
        await call
