"""A brief PostgreSQL outage costs latency, not messages (issue 10, "Database outages").

The store talks to the real PostgreSQL through a loopback proxy (``tests.fakes.tcp_proxy``)
that cuts every connection and resets new ones on demand; the shared cluster never stops.
What was stored is checked over a direct connection, past the proxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.memory.store import SqlMemoryStore
from core.errors import StoreError, StoreUnavailable
from core.types import MessageStatus, UsageRecord
from tests.adapters.memory.store_helpers import BOT, bot_msg, private, user_msg
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

OUTAGE_S = 3.0


MakeStore = Callable[..., Awaitable[SqlMemoryStore]]


@pytest.fixture
async def make_store(direct_url: str, proxy: TcpProxy) -> AsyncIterator[MakeStore]:
    """Started stores that reach the database through ``proxy``; closed at teardown."""
    url = make_url(direct_url).set(port=proxy.port).render_as_string(hide_password=False)
    made: list[SqlMemoryStore] = []

    async def make(**kwargs: Any) -> SqlMemoryStore:
        store = SqlMemoryStore(url, pool_size=2, **kwargs)
        made.append(store)
        await store.start()
        return store

    yield make
    proxy.restore()
    for store in made:
        await store.aclose()


async def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def outage(proxy: TcpProxy, pending: asyncio.Future[Any], seconds: float) -> None:
    """Keep the database away for ``seconds`` while ``pending`` retries; then restore it."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    await proxy.wait_refused(2)  # the call has lost its connection and is reconnecting
    await asyncio.sleep(max(0.0, until - loop.time()))
    assert not pending.done(), "the call gave up (or finished) during the outage"
    proxy.restore()


@pytest.mark.slow
async def test_a_write_during_an_outage_lands_once_when_the_database_returns(
    make_store: MakeStore, proxy: TcpProxy, direct_url: str
) -> None:
    store = await make_store()
    conversation = await store.current_conversation(private())
    proxy.cut()
    write = asyncio.ensure_future(
        store.append_messages(conversation.id, [user_msg("during the outage", "u1", "m1")])
    )
    await outage(proxy, write, OUTAGE_S)
    (stored,) = await write
    assert stored.content == "during the outage"
    assert await rows(direct_url, "SELECT id, content FROM messages") == [
        (stored.id, "during the outage")
    ]
    assert await rows(direct_url, "SELECT message_id FROM platform_messages") == [(stored.id,)]


@pytest.mark.slow
async def test_a_read_during_an_outage_answers_when_the_database_returns(
    make_store: MakeStore, proxy: TcpProxy
) -> None:
    store = await make_store()
    conversation = await store.current_conversation(private())
    await store.append_messages(conversation.id, [user_msg("before"), bot_msg("answer")])
    proxy.cut()
    read = asyncio.ensure_future(store.recent_messages(conversation.id, limit=10))
    await outage(proxy, read, OUTAGE_S)
    assert [m.content for m in await read] == ["answer", "before"]


async def test_after_the_grace_period_a_call_is_refused_and_nothing_is_half_written(
    make_store: MakeStore, proxy: TcpProxy, direct_url: str
) -> None:
    store = await make_store(outage_grace=0.5)
    conversation = await store.current_conversation(private())
    proxy.cut()
    with pytest.raises(StoreUnavailable) as refused:
        await store.append_messages(
            conversation.id, [user_msg("lost", "u1", "m1"), bot_msg("", MessageStatus.IN_PROGRESS)]
        )
    assert refused.value.waited >= 0.5
    assert isinstance(refused.value, StoreError)  # the engine's store-failure path applies
    assert "not keep your message" in refused.value.user_message
    assert "again" in refused.value.user_message
    proxy.restore()
    assert await rows(direct_url, "SELECT count(*) FROM messages") == [(0,)]
    assert await rows(direct_url, "SELECT count(*) FROM platform_messages") == [(0,)]
    # The sequence was not bumped either: the next message is the conversation's first.
    (first,) = await store.append_messages(conversation.id, [user_msg("sent again", "u1", "m1")])
    assert first.seq == 1


@pytest.mark.slow
async def test_a_seen_reply_is_stored_when_the_database_returns_after_the_grace_period(
    make_store: MakeStore, proxy: TcpProxy, direct_url: str
) -> None:
    store = await make_store(outage_grace=0.2)
    conversation = await store.current_conversation(private())
    _, placeholder = await store.append_messages(
        conversation.id, [user_msg("question"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    proxy.cut()
    finish = asyncio.ensure_future(
        store.finish_message(
            placeholder.id,
            content="the answer the user saw",
            status=MessageStatus.COMPLETE,
            platform_chat_id="u1",
            platform_message_ids=("r1",),
            usage=UsageRecord(BOT, "telegram", "u1", date(2026, 3, 14), 5, 7),
        )
    )
    await outage(proxy, finish, 10 * 0.2)  # ten grace periods
    await finish
    assert await rows(
        direct_url, "SELECT content, status FROM messages WHERE id = :id", id=placeholder.id
    ) == [("the answer the user saw", "complete")]
    usage = await store.get_usage(BOT, "telegram", "u1", date(2026, 3, 14))
    assert usage.tokens_today == 12


async def test_closing_during_an_outage_gives_up_on_a_reply_after_a_bounded_wait(
    make_store: MakeStore, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store(outage_grace=0.1, close_timeout=0.3)
    conversation = await store.current_conversation(private())
    _, placeholder = await store.append_messages(
        conversation.id, [user_msg("question"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    proxy.cut()
    finish = asyncio.ensure_future(
        store.finish_message(
            placeholder.id, content="secret reply text", status=MessageStatus.COMPLETE
        )
    )
    await proxy.wait_refused(2)
    with caplog.at_level(logging.INFO, logger="adapters.memory"):
        await asyncio.wait_for(store.aclose(), 10)
        with pytest.raises(StoreUnavailable):
            await finish
    ours = [r for r in caplog.records if r.name.startswith("adapters.memory")]
    errors = [r for r in ours if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(placeholder.id) in errors[0].getMessage()
    assert not any("secret reply text" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("landed", [True, False], ids=["commit-landed", "commit-lost"])
async def test_a_write_cut_off_during_commit_is_applied_exactly_once(
    make_store: MakeStore, proxy: TcpProxy, direct_url: str, landed: bool
) -> None:
    store = await make_store()
    conversation = await store.current_conversation(private())
    proxy.cut_at(b"COMMIT", forward=landed)
    write = asyncio.ensure_future(
        store.append_messages(
            conversation.id, [user_msg("once", "u1", "m1"), bot_msg("", MessageStatus.IN_PROGRESS)]
        )
    )
    await proxy.wait_triggered()
    await proxy.wait_refused(1)
    proxy.restore()
    user, placeholder = await write  # not DuplicateMessage, though its id may be stored
    assert await rows(direct_url, "SELECT id, content FROM messages ORDER BY seq") == [
        (user.id, "once"),
        (placeholder.id, ""),
    ]
    assert await rows(direct_url, "SELECT message_id FROM platform_messages") == [(user.id,)]
    assert await rows(direct_url, "SELECT last_seq FROM conversations") == [(2,)]


async def test_usage_of_a_reply_cut_off_during_commit_is_counted_once(
    make_store: MakeStore, proxy: TcpProxy
) -> None:
    store = await make_store()
    conversation = await store.current_conversation(private())
    _, placeholder = await store.append_messages(
        conversation.id, [user_msg("question"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    proxy.cut_at(b"COMMIT", forward=True)
    finish = asyncio.ensure_future(
        store.finish_message(
            placeholder.id,
            content="answer",
            status=MessageStatus.COMPLETE,
            platform_message_ids=("r1",),
            usage=UsageRecord(BOT, "telegram", "u1", date(2026, 3, 14), 5, 7),
        )
    )
    await proxy.wait_triggered()
    proxy.restore()
    await finish  # not "platform id already recorded"
    usage = await store.get_usage(BOT, "telegram", "u1", date(2026, 3, 14))
    assert usage.tokens_today == 12
