"""The PostgreSQL turn queue: order per conversation, parallel across them, stalled and
failed turns (real PostgreSQL through procrastinate)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from procrastinate import App

from adapters.queue.runner import QueueWorker
from adapters.queue.stats import queue_stats, retry_failed
from adapters.queue.turns import ProcrastinateTurnQueue
from core.queue import JobKind, message_payload
from core.types import ConversationKey, IncomingMessage

pytestmark = pytest.mark.postgres


def _message(chat: str, n: int) -> tuple[ConversationKey, dict[str, Any]]:
    msg = IncomingMessage("telegram", chat, "u1", f"message {n}", message_id=f"{chat}-{n}")
    return ConversationKey("bot", "telegram", chat, None, "u1"), message_payload(msg)


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_one_conversation_in_order_different_ones_in_parallel(
    open_app: Callable[[], App],
) -> None:
    done: list[tuple[str, str, str]] = []
    running: dict[str, str] = {}
    overlaps: list[str] = []

    def handler(name: str) -> Callable[[JobKind, Mapping[str, Any]], Any]:
        async def handle(kind: JobKind, payload: Mapping[str, Any]) -> None:
            chat = payload["chat_id"]
            assert chat not in running, f"two turns of {chat} at once"
            running[chat] = payload["text"]
            if len(running) > 1:
                overlaps.append(chat)
            await asyncio.sleep(0.15)
            del running[chat]
            done.append((name, chat, payload["text"]))

        return handle

    ingress = open_app()
    await ingress.open_async()
    queue = ProcrastinateTurnQueue(ingress)
    for n in range(4):
        for chat in ("c1", "c2", "c3"):
            assert await queue.enqueue(JobKind.MESSAGE, *_message(chat, n))
    workers = []
    for name in ("w1", "w2"):
        app = open_app()
        await app.open_async()
        workers.append(QueueWorker(app, handler(name), concurrency=1, heartbeat_timeout=6))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await _until(lambda: len(done) == 12)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    for chat in ("c1", "c2", "c3"):
        assert [text for _, c, text in done if c == chat] == [f"message {n}" for n in range(4)]
    assert {name for name, _, _ in done} == {"w1", "w2"}, "both workers took turns"
    assert overlaps, "turns of different conversations ran at the same time"
    stats = await queue_stats(ingress, heartbeat_timeout=6)
    assert (stats.depth, stats.doing, stats.failed) == (0, 0, 0), "answered turns are gone"


async def test_a_redelivered_message_makes_one_job(open_app: Callable[[], App]) -> None:
    app = open_app()
    await app.open_async()
    queue = ProcrastinateTurnQueue(app)
    assert await queue.enqueue(JobKind.MESSAGE, *_message("c1", 1))
    assert not await queue.enqueue(JobKind.MESSAGE, *_message("c1", 1))
    assert not await ProcrastinateTurnQueue(app).enqueue(JobKind.MESSAGE, *_message("c1", 1))
    assert await queue.enqueue(JobKind.MESSAGE, *_message("c2", 1)), "same id, other chat"
    assert (await queue_stats(app, heartbeat_timeout=6)).depth == 2


async def test_a_dead_workers_turn_is_answered_by_another(
    open_app: Callable[[], App],
) -> None:
    """A worker SIGKILLed mid-turn leaves its job doing and its heartbeat old (as here)."""
    app = open_app()
    await app.open_async()
    queue = ProcrastinateTurnQueue(app)
    assert await queue.enqueue(JobKind.MESSAGE, *_message("c1", 1))
    assert await queue.enqueue(JobKind.MESSAGE, *_message("c1", 2))
    connector: Any = app.connector
    dead = await connector.execute_query_one_async(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour') "
        "RETURNING id"
    )
    await connector.execute_query_async(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %(w)s "
        "WHERE id = (SELECT min(id) FROM procrastinate_jobs)",
        w=dead["id"],
    )
    stats = await queue_stats(app, heartbeat_timeout=3)
    assert (stats.depth, stats.doing, stats.stalled) == (1, 1, 1)
    answered: list[str] = []

    async def handle(kind: JobKind, payload: Mapping[str, Any]) -> None:
        answered.append(payload["text"])

    worker_app = open_app()
    await worker_app.open_async()
    retried: list[int] = []
    worker = QueueWorker(
        worker_app, handle, concurrency=4, heartbeat_timeout=3, on_retry=retried.append
    )
    task = asyncio.create_task(worker.run())
    try:
        await _until(lambda: len(answered) == 2)
    finally:
        worker.stop()
        await task
    assert answered == ["message 1", "message 2"], "the dead worker's turn first"
    assert sum(retried) == 1
    stats = await queue_stats(app, heartbeat_timeout=3)
    assert (stats.depth, stats.doing, stats.stalled) == (0, 0, 0)


async def test_a_failed_turn_is_listed_and_retried(open_app: Callable[[], App]) -> None:
    app = open_app()
    await app.open_async()
    queue = ProcrastinateTurnQueue(app)
    assert await queue.enqueue(JobKind.MESSAGE, *_message("c1", 1))
    calls: list[str] = []

    async def handle(kind: JobKind, payload: Mapping[str, Any]) -> None:
        calls.append(payload["text"])
        if len(calls) == 1:
            raise RuntimeError("the store said no")

    worker = QueueWorker(app, handle, concurrency=2, heartbeat_timeout=6)
    task = asyncio.create_task(worker.run())
    try:
        await _until(lambda: len(calls) == 1)
        stats = await queue_stats(app, heartbeat_timeout=6)
        async with asyncio.timeout(10):
            while stats.failed != 1:
                await asyncio.sleep(0.05)
                stats = await queue_stats(app, heartbeat_timeout=6)
        [failed] = stats.failed_turns
        assert (failed.kind, failed.platform) == ("message", "telegram")
        assert failed.error == "RuntimeError: the store said no"
        with pytest.raises(LookupError, match="no queued turn"):
            await retry_failed(app, failed.id + 1000)
        await retry_failed(app, failed.id)
        await _until(lambda: len(calls) == 2)
    finally:
        worker.stop()
        await task
    stats = await queue_stats(app, heartbeat_timeout=6)
    assert (stats.depth, stats.failed, stats.failed_turns) == (0, 0, [])


async def test_a_turn_cut_off_by_a_deploy_is_answered_by_the_next_worker(
    open_app: Callable[[], App],
) -> None:
    app = open_app()
    await app.open_async()
    assert await ProcrastinateTurnQueue(app).enqueue(JobKind.MESSAGE, *_message("c1", 1))
    started = asyncio.Event()

    async def stuck(kind: JobKind, payload: Mapping[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()  # a reply longer than the shutdown grace

    old = QueueWorker(app, stuck, concurrency=2, heartbeat_timeout=6, grace=0.3)
    task = asyncio.create_task(old.run())
    await asyncio.wait_for(started.wait(), 20)
    old.stop()  # SIGTERM
    await asyncio.wait_for(task, 20)
    stats = await queue_stats(app, heartbeat_timeout=6)
    assert (stats.depth, stats.doing, stats.failed) == (1, 0, 0), "queued again, not lost"
    answered: list[str] = []

    async def handle(kind: JobKind, payload: Mapping[str, Any]) -> None:
        answered.append(payload["text"])

    new_app = open_app()
    await new_app.open_async()
    new = QueueWorker(new_app, handle, concurrency=2, heartbeat_timeout=6)
    task = asyncio.create_task(new.run())
    try:
        await _until(lambda: answered == ["message 1"])
    finally:
        new.stop()
        await task
