"""What a bot's processes share through Redis: limits, rate windows, confirmations, /stop.

Contract tests run every port over its in-memory and its Redis implementation; the engine
tests run two engines, each with its own Redis client (as two processes would), on one
store, and check what a user notices: the rate limit holds across them, ``/stop`` sent to
one stops the reply the other writes (and says so), a ``/forget`` asked on one is answered
on the other, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.memory.in_memory import InMemoryStore
from adapters.shared import RedisShared, RedisUnavailable
from core.access import RateLimiter, RateLimits
from core.confirmations import CONFIRM_TTL, MemoryPendingStore, Pending, PendingStore
from core.engine import Engine
from core.limits import LocalLimits, SharedLimits
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.types import IncomingAction, IncomingMessage
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend


def _msg(text: str, user: str = "alice", n: list[int] = [0]) -> IncomingMessage:  # noqa: B006
    n[0] += 1
    return IncomingMessage(
        platform="test",
        chat_id=user,
        user_id=user,
        text=text,
        message_id=f"m{n[0]}-{time.monotonic_ns()}",
        is_private=True,
    )


@pytest.fixture
async def make_shared(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``await make_shared()``: a started RedisShared with its own client, on the test's prefix.

    Redis is asked for (and the test skipped without it) only when one is made.
    """
    made: list[RedisShared] = []

    async def make() -> RedisShared:
        url = request.getfixturevalue("redis_url")
        shared = RedisShared(url, "testbot", prefix=request.getfixturevalue("redis_prefix"))
        await shared.start()
        made.append(shared)
        return shared

    yield make
    for shared in made:
        await shared.aclose()


# --- contracts ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def limits(request: pytest.FixtureRequest, make_shared: Any) -> SharedLimits:
    if request.param == "memory":
        return LocalLimits()
    return (await make_shared()).limits


async def test_a_closed_gate_holds_until_its_time_and_is_never_shortened(limits) -> None:
    now = time.time()
    assert await limits.closed_until(["bot", "chat:1"]) == 0.0
    await limits.close("chat:1", now + 5)
    await limits.close("chat:1", now + 2)  # an earlier 429's shorter wait does not reopen it
    assert await limits.closed_until(["bot", "chat:1"]) == pytest.approx(now + 5, abs=0.01)
    assert await limits.closed_until(["bot", "chat:2"]) == 0.0
    await limits.close("bot", now - 1)  # already past: open
    assert await limits.closed_until(["bot"]) <= time.time()


async def test_paced_slots_are_an_interval_apart(limits) -> None:
    first = await limits.reserve("chat:1", 2.0)
    second = await limits.reserve("chat:1", 2.0)
    other = await limits.reserve("chat:2", 2.0)
    assert first == pytest.approx(time.time(), abs=0.5)
    assert second == pytest.approx(first + 2.0, abs=0.01)
    assert other == pytest.approx(first, abs=0.5)  # another chat is paced on its own


@pytest.fixture(params=["memory", "redis"])
async def rates(request: pytest.FixtureRequest, make_shared: Any) -> RateLimits:
    if request.param == "memory":
        return RateLimiter(3)
    return (await make_shared()).rate_limits


async def test_rate_window_refuses_without_recording_and_tells_the_wait(rates) -> None:
    t = 1_000_000.0
    assert [await rates.admit("test:a", t + i, 3) for i in range(3)] == [0.0, 0.0, 0.0]
    assert await rates.admit("test:a", t + 10, 3) == pytest.approx(50.0)
    assert await rates.admit("test:a", t + 30, 3) == pytest.approx(30.0)  # refusals not counted
    assert await rates.admit("test:b", t + 30, 3) == 0.0
    assert await rates.admit("test:a", t + 60, 3) == 0.0  # the first one left the window


@pytest.fixture(params=["memory", "redis"])
async def pending_store(request: pytest.FixtureRequest, make_shared: Any) -> PendingStore:
    if request.param == "memory":
        return MemoryPendingStore(lambda: datetime.now(UTC))
    return (await make_shared()).pending


async def test_a_confirmation_is_taken_once(pending_store) -> None:
    pending = Pending("forget", "test", "alice", datetime.now(UTC) + CONFIRM_TTL)
    await pending_store.put("forget:abc", pending)
    assert await pending_store.get("forget:abc") == pending
    assert await pending_store.get("forget:other") is None
    assert [await pending_store.take("forget:abc") for _ in range(2)] == [True, False]
    assert await pending_store.get("forget:abc") is None


async def test_a_confirmation_in_redis_expires_with_its_time(make_shared) -> None:
    shared = await make_shared()
    soon = datetime.now(UTC) + timedelta(milliseconds=200)
    await shared.pending.put("forget:x", Pending("forget", "test", "alice", soon))
    await asyncio.sleep(0.4)
    assert await shared.pending.get("forget:x") is None


# --- engines sharing Redis ------------------------------------------------------------------


@pytest.fixture
async def engines(make_shared) -> AsyncIterator[Any]:
    """``await engines(backend, **access)``: an engine on the shared store and its own Redis."""
    store = InMemoryStore()
    await store.start()
    made: list[Engine] = []

    async def make(backend: ScriptedBackend | None = None, **access: Any) -> Engine:
        shared = await make_shared()
        engine = Engine(
            backend=backend or ScriptedBackend(),
            store=store,
            core=CoreSettings(_env_file=None, bot_name="testbot"),
            llm=LLMSettings(_env_file=None),
            access=AccessSettings(_env_file=None, **access),
            shared=True,
            rate_limits=shared.rate_limits,
            pending=shared.pending,
            stop_signal=shared.stop_signal,
        )
        await engine.start()
        made.append(engine)
        if engine._stop_signal is not None:  # listening before a test publishes
            await asyncio.wait_for(shared.stop_signal.listening.wait(), 5)
        return engine

    yield make
    for engine in made:
        await engine.aclose(grace=1)
    await store.aclose()


async def test_rate_limit_holds_across_two_engines(engines) -> None:
    one, two = await engines(rate_limit_per_minute=3), await engines(rate_limit_per_minute=3)
    out = RecordingChannel()
    for n in range(6):
        await (one if n % 2 == 0 else two).handle(_msg(f"m{n}"), out)
    assert len(out.replies) == 3  # not 3 per process
    assert len(out.notices) >= 1
    assert out.notices[0].startswith("You're sending messages too fast (limit: 3 per minute)")
    other = RecordingChannel()
    await two.handle(_msg("hello", "bob"), other)  # another user is not held back
    assert len(other.replies) == 1


async def test_stop_sent_to_one_engine_stops_the_reply_the_other_writes(engines) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    writer = await engines(ScriptedBackend(reply=words, chunk_size=10, delay=0.05))
    front = await engines()
    out, told = RecordingChannel(), RecordingChannel()
    reply = asyncio.create_task(writer.handle(_msg("write a lot"), out))
    await asyncio.wait_for(out.stream_started.wait(), 5)
    await asyncio.sleep(0.2)  # a few words written
    await front.handle(_msg("/stop"), told)
    assert told.notices == ["Stopped."]
    await asyncio.wait_for(reply, 10)
    assert out.replies
    assert len(out.replies[-1]) < len(words)  # cut short, not finished
    await front.handle(_msg("/stop"), told)
    assert told.notices[-1] == "There's no reply in progress to stop."


async def test_forget_asked_on_one_engine_is_answered_on_the_other(engines) -> None:
    asker, answerer = await engines(), await engines()
    out = RecordingChannel()
    await asker.handle(_msg("remember me"), out)
    await asker.handle(_msg("/forget"), out)
    (_, action_id) = out.confirmations[-1]
    press = IncomingAction("test", "alice", "alice", action_id, accepted=True)
    await answerer.handle_action(press, out)
    assert out.notices[-1].startswith("Done: I deleted everything stored about you")
    await asker.handle_action(press, out)  # the same press again, on the first engine
    assert out.notices[-1] == "That confirmation has expired. Send the command again."


# --- Redis away -----------------------------------------------------------------------------


async def test_start_fails_in_one_line_without_the_password() -> None:
    shared = RedisShared("redis://chinwag:s3cret-pw@127.0.0.1:1/0", "testbot")
    with pytest.raises(RedisUnavailable) as caught:
        await shared.start()
    await shared.aclose()
    text = str(caught.value)
    assert "s3cret" not in text
    assert "\n" not in text
    assert text.startswith("REDIS_URL: cannot reach Redis at redis://127.0.0.1:1/0")


async def test_redis_gone_at_run_time_falls_back_to_this_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = RedisShared("redis://127.0.0.1:1/0", "testbot")
    caplog.set_level(logging.WARNING)
    try:
        t = 1_000_000.0
        waits = [await shared.rate_limits.admit("test:a", t + i, 2) for i in range(3)]
        assert waits[:2] == [0.0, 0.0]
        assert waits[2] > 0  # the limit still holds here
        await shared.limits.close("telegram:bot", time.time() + 5)
        assert await shared.limits.closed_until(["telegram:bot"]) > time.time()
        assert await shared.stop_signal.publish(_key()) is False
    finally:
        await shared.aclose()
    lines = [r.getMessage() for r in caplog.records if "Redis" in r.getMessage()]
    assert any("per-user rate limit holds for this process only" in line for line in lines)
    assert len([line for line in lines if "rate limit" in line]) == 1  # once, not per call


def _key() -> Any:
    from core.types import ConversationKey

    return ConversationKey("testbot", "test", "alice", None, "alice")


async def _redis_server(port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
        "no", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return process
    raise AssertionError("redis-server did not start")


@pytest.mark.slow
async def test_stop_reaches_a_listener_again_after_redis_restarts(redis_url: str) -> None:
    import shutil
    import socket

    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server program to restart a Redis of its own")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await _redis_server(port)
    url = f"redis://127.0.0.1:{port}/0"
    listener, publisher = RedisShared(url, "testbot"), RedisShared(url, "testbot")
    await listener.start()
    await publisher.start()
    stops: list[Any] = []

    def on_stop(key: Any) -> bool:
        stops.append(key)
        return True

    task = asyncio.create_task(listener.stop_signal.listen(on_stop))
    try:
        await asyncio.wait_for(listener.stop_signal.listening.wait(), 5)
        assert await publisher.stop_signal.publish(_key()) is True
        server.kill()
        await server.wait()
        assert await publisher.stop_signal.publish(_key()) is False  # Redis away: no one
        server = await _redis_server(port)
        for _ in range(200):  # the listener reconnects by itself (backoff up to a few s)
            if listener.stop_signal.listening.is_set():
                break
            await asyncio.sleep(0.05)
        assert await publisher.stop_signal.publish(_key()) is True
        assert len(stops) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.aclose()
        await publisher.aclose()
        server.kill()
        await server.wait()
