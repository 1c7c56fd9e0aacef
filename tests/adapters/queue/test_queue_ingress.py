"""Ingress: platform events become queued turns, once each; /stop reaches the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from procrastinate import App

from adapters.memory.in_memory import InMemoryStore
from adapters.queue.stats import queue_stats
from adapters.queue.turns import ProcrastinateTurnQueue
from core.engine import Engine
from core.errors import StoreError
from core.ingress import IngressEngine
from core.queue import JobKind, LocalStopSignal
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.types import ConversationKey, IncomingAction, IncomingMessage
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """The bot's engine as ingress has it: built, never started (no model is called)."""
    async with InMemoryStore() as store:
        yield Engine(
            backend=ScriptedBackend(),
            store=store,
            core=CoreSettings(_env_file=None, bot_name="testbot"),
            llm=LLMSettings(_env_file=None),
            access=AccessSettings(_env_file=None),
        )


def _msg(text: str, message_id: str | None = "m1", user: str = "u1") -> IncomingMessage:
    return IncomingMessage("telegram", "c1", user, text, message_id=message_id)


@pytest.mark.postgres
async def test_a_redelivered_message_makes_one_job(
    engine: Engine, open_app: Callable[[], App]
) -> None:
    first, second = open_app(), open_app()  # two ingress replicas
    await first.open_async()
    await second.open_async()
    ingresses = [
        IngressEngine(engine, ProcrastinateTurnQueue(app), LocalStopSignal())
        for app in (first, second)
    ]
    out = RecordingChannel()
    await asyncio.gather(*(ingress.handle(_msg("hello"), out) for ingress in ingresses))
    await ingresses[0].handle(_msg("hello"), out)
    await ingresses[0].handle(_msg("/model", "m2"), out)  # commands are turns too (in order)
    await ingresses[1].handle_action(
        IncomingAction("telegram", "c1", "u1", "confirm-1", accepted=True), out
    )
    stats = await queue_stats(first, heartbeat_timeout=6)
    assert stats.depth == 3, "hello once, /model, the button press"
    assert out.texts == [], "ingress answers nothing itself"
    rows: Any = await first.connector.execute_query_all_async(
        "SELECT args, lock FROM procrastinate_jobs ORDER BY id"
    )
    assert [r["args"]["kind"] for r in rows] == ["message", "message", "action"]
    assert [r["args"]["payload"].get("text") for r in rows[:2]] == ["hello", "/model"]
    assert len({r["lock"] for r in rows}) == 1, "one conversation, one lock"


async def test_stop_reaches_the_process_writing_the_reply(engine: Engine) -> None:
    stops = LocalStopSignal()
    stopped: list[ConversationKey] = []

    def on_stop(key: ConversationKey) -> bool:
        stopped.append(key)
        return key.user_id == "u1"  # u1 has a reply in progress somewhere

    listener = asyncio.create_task(stops.listen(on_stop))
    await asyncio.sleep(0)
    queue = _NoQueue()
    ingress = IngressEngine(engine, queue, stops)
    out = RecordingChannel()
    await ingress.handle(_msg("/stop", "m5"), out)
    await ingress.handle(_msg("/stop", "m6", user="u2"), out)
    listener.cancel()
    assert out.texts == ["Stopped.", "There's no reply in progress to stop."]
    assert stopped == [
        ConversationKey("testbot", "telegram", "c1", None, "u1"),
        ConversationKey("testbot", "telegram", "c1", None, "u2"),
    ]
    assert queue.calls == [], "/stop is not queued behind the reply it stops"


async def test_a_queue_that_cannot_store_is_not_acknowledged(engine: Engine) -> None:
    ingress = IngressEngine(engine, _NoQueue(fail=True), LocalStopSignal())
    out = RecordingChannel()
    with pytest.raises(StoreError):
        await ingress.handle(_msg("hello"), out)
    assert out.texts == [StoreError.user_message]


async def test_a_conversations_events_are_queued_in_arrival_order(engine: Engine) -> None:
    """The first event's queueing is slow: the second (same conversation) waits for it;
    another conversation's does not."""
    queue = _SlowFirst()
    ingress = IngressEngine(engine, queue, LocalStopSignal())
    out = RecordingChannel()
    first = ingress.submit(_msg("one", "m1"), out)
    second = ingress.submit(_msg("two", "m2"), out)
    press = asyncio.ensure_future(
        ingress.handle_action(IncomingAction("telegram", "c1", "u1", "confirm-1", True), out)
    )
    other = ingress.submit(_msg("elsewhere", "m3", user="u2"), out)
    await other
    assert queue.order == ["elsewhere"]  # not held behind another conversation
    queue.release.set()
    await asyncio.gather(first, second, press)
    assert queue.order == ["elsewhere", "one", "two", "confirm-1"]


class _SlowFirst:
    """A queue whose first "one" waits for ``release``; records what it stored, in order."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.order: list[str] = []

    async def enqueue(self, kind: JobKind, key: ConversationKey, payload: Any) -> bool:
        if payload.get("text") == "one":
            await self.release.wait()
        self.order.append(payload.get("text") or payload.get("action_id"))
        return True


class _NoQueue:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[JobKind] = []

    async def enqueue(self, kind: JobKind, key: ConversationKey, payload: Any) -> bool:
        self.calls.append(kind)
        if self.fail:
            raise StoreError("could not queue: ConnectionRefusedError")
        return True
