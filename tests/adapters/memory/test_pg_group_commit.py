"""Group commit on PostgreSQL: many conversations share a transaction, nobody shares a failure.

Every row records the transaction that wrote it (``xmin``; a savepoint's own), which is how
these tests see that writes made together really were committed together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.memory.store import SqlMemoryStore
from core.errors import DuplicateMessage, StoreUnavailable
from core.types import MessageStatus
from tests.adapters.memory.store_helpers import BOT, bot_msg, private, user_msg
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

MakeStore = Callable[..., Awaitable[SqlMemoryStore]]


@pytest.fixture
async def make_store(direct_url: str) -> AsyncIterator[MakeStore]:
    """Started stores on the test's PostgreSQL database (``url=`` to go through a proxy)."""
    made: list[SqlMemoryStore] = []

    async def make(url: str = direct_url, **kwargs: Any) -> SqlMemoryStore:
        store = SqlMemoryStore(url, **kwargs)
        made.append(store)
        await store.start()
        return store

    yield make
    for store in made:
        await store.aclose()


def through(proxy: TcpProxy, direct_url: str) -> str:
    return make_url(direct_url).set(port=proxy.port).render_as_string(hide_password=False)


async def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def transactions(url: str) -> int:
    """How many transactions wrote the stored messages."""
    ((count,),) = await rows(url, "SELECT count(DISTINCT xmin::text) FROM messages")
    return int(count)


async def test_a_duplicate_in_a_shared_transaction_fails_only_its_own_call(
    make_store: MakeStore, direct_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store()
    first = await store.current_conversation(private("dup"))
    await store.append_messages(first.id, [user_msg("first", "dup", "p1")])
    convs = [await store.current_conversation(private(f"c{i}")) for i in range(30)]
    calls = [
        store.append_messages(c.id, [user_msg(f"m{i}", c.key.chat_id, f"x{i}"), bot_msg("r")])
        for i, c in enumerate(convs)
    ]
    calls.insert(12, store.append_messages(first.id, [bot_msg("lost"), user_msg("d", "dup", "p1")]))

    with caplog.at_level(logging.DEBUG, logger="adapters.memory.postgres"):
        results = await asyncio.gather(*calls, return_exceptions=True)

    # it was committed together with others: their group was replayed, each in a savepoint
    assert any("replaying the group isolated" in r.getMessage() for r in caplog.records)
    duplicate = results[12]
    assert isinstance(duplicate, DuplicateMessage)
    assert duplicate.existing == await store.find_by_platform_message(BOT, "telegram", "dup", "p1")
    assert sum(isinstance(r, BaseException) for r in results) == 1
    stored = await rows(
        direct_url, "SELECT content FROM messages WHERE content LIKE 'm%' ORDER BY content"
    )
    assert sorted(c for (c,) in stored) == sorted(f"m{i}" for i in range(30))
    # nothing of the failed call is stored and its sequence numbers were not used up
    assert [m.content for m in await store.recent_messages(first.id, limit=10)] == ["first"]
    (nxt,) = await store.append_messages(first.id, [bot_msg("next")])
    assert nxt.seq == 2


async def test_many_conversations_at_once_keep_each_conversations_order(
    make_store: MakeStore, direct_url: str
) -> None:
    store = await make_store()
    convs = [await store.current_conversation(private(f"u{i}")) for i in range(40)]

    async def talk(n: int) -> None:
        for turn in range(10):
            user, placeholder = await store.append_messages(
                convs[n].id,
                [
                    user_msg(f"{n}:{turn}", f"u{n}", f"{n}-{turn}"),
                    bot_msg("", MessageStatus.IN_PROGRESS),
                ],
            )
            assert (user.seq, placeholder.seq) == (2 * turn + 1, 2 * turn + 2)
            await store.finish_message(
                placeholder.id, content=f"answer {n}:{turn}", status=MessageStatus.COMPLETE
            )

    await asyncio.gather(*(talk(n) for n in range(40)))

    for n, conv in enumerate(convs):
        history = list(reversed(await store.recent_messages(conv.id, limit=100)))
        expected = [text for t in range(10) for text in (f"{n}:{t}", f"answer {n}:{t}")]
        assert [m.content for m in history] == expected
        assert [m.seq for m in history] == list(range(1, 21))
    assert await transactions(direct_url) < 400  # 400 appends: many were committed together


async def test_a_group_cut_off_during_commit_lands_exactly_once_for_every_caller(
    make_store: MakeStore, proxy: TcpProxy, direct_url: str
) -> None:
    store = await make_store(through(proxy, direct_url), pool_size=2)
    convs = [await store.current_conversation(private(f"c{i}")) for i in range(20)]
    proxy.cut_at(b"COMMIT", forward=True)  # the server commits; the answer never comes back
    writes = asyncio.gather(
        *(
            store.append_messages(c.id, [user_msg(f"once {i}", c.key.chat_id, f"p{i}")])
            for i, c in enumerate(convs)
        )
    )
    await proxy.wait_triggered()
    proxy.restore()

    results = await writes  # not DuplicateMessage, though their ids are stored

    assert [stored.content for (stored,) in results] == [f"once {i}" for i in range(20)]
    stored = await rows(direct_url, "SELECT id, content FROM messages ORDER BY id")
    assert stored == sorted((s.id, s.content) for (s,) in results)
    assert await rows(direct_url, "SELECT DISTINCT last_seq FROM conversations") == [(1,)]


async def test_a_group_refused_after_the_grace_period_leaves_nothing_half_written(
    make_store: MakeStore, proxy: TcpProxy, direct_url: str
) -> None:
    store = await make_store(through(proxy, direct_url), pool_size=2, outage_grace=0.5)
    convs = [await store.current_conversation(private(f"c{i}")) for i in range(10)]
    proxy.cut()
    results = await asyncio.gather(
        *(
            store.append_messages(
                c.id,
                [user_msg("lost", c.key.chat_id, "m1"), bot_msg("", MessageStatus.IN_PROGRESS)],
            )
            for c in convs
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    proxy.restore()
    assert await rows(direct_url, "SELECT count(*) FROM messages") == [(0,)]
    assert await rows(direct_url, "SELECT count(*) FROM platform_messages") == [(0,)]
    (again,) = await store.append_messages(convs[0].id, [user_msg("sent again", "c0", "m1")])
    assert again.seq == 1


async def test_a_group_deadlocked_by_another_process_is_committed_one_by_one(
    make_store: MakeStore, direct_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store()
    a = await store.current_conversation(private("a"))
    b = await store.current_conversation(private("b"))
    other = await asyncpg.connect(direct_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await other.execute("SET deadlock_timeout = '20s'")  # the group's side detects it
        other_tx = other.transaction()
        await other_tx.start()
        await other.execute("UPDATE conversations SET last_seq = last_seq WHERE id = $1", a.id)
        with caplog.at_level(logging.INFO, logger="adapters.memory"):
            # one group: b's row, then a's, which the other process holds
            writes = asyncio.gather(
                store.append_messages(b.id, [user_msg("to b", "b", "pb")]),
                store.append_messages(a.id, [user_msg("to a", "a", "pa")]),
            )
            await asyncio.sleep(0.3)
            # ... which now wants b's row: a deadlock, which PostgreSQL breaks in ~1 s
            blocked = asyncio.ensure_future(
                other.execute("UPDATE conversations SET last_seq = last_seq WHERE id = $1", b.id)
            )
            done, _ = await asyncio.wait([blocked], timeout=15)
            assert done, "the other process never got b's row"
            await other_tx.commit()
            (to_b,), (to_a,) = await asyncio.wait_for(writes, 15)
    finally:
        await other.close()
    assert (to_a.content, to_a.seq, to_b.content, to_b.seq) == ("to a", 1, "to b", 1)
    assert any("one by one" in r.getMessage() for r in caplog.records)
    found = await store.find_by_platform_message(BOT, "telegram", "a", "pa")
    assert found is not None and found.id == to_a.id
