"""``SqlMemoryStore`` beyond the port's contract: restarts, two stores on one database, locks.

Run on SQLite and on PostgreSQL (with ``CHINWAG_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.memory.store import SqlMemoryStore
from core.errors import StoreError
from core.types import Preferences
from tests.adapters.memory.conftest import MakeSqlStore
from tests.adapters.memory.store_helpers import BOT, bot_msg, private, user_msg


async def fetch_all(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql))]
    finally:
        await engine.dispose()


async def test_usage_rows_hold_no_user_id(sql_store: SqlMemoryStore, migrated_url: str) -> None:
    day = date(2026, 3, 14)
    user = "user-1234567"
    await sql_store.add_usage(BOT, "telegram", user, day, prompt_tokens=7, completion_tokens=3)
    await sql_store.forget_user(BOT, "telegram", user)
    rows = await fetch_all(migrated_url, "SELECT * FROM usage_daily")
    assert len(rows) == 1
    assert not any(user in str(value) for value in rows[0])


async def test_two_bots_sharing_a_database_never_mix(make_sql_store: MakeSqlStore) -> None:
    one = await make_sql_store()
    two = await make_sql_store()
    a = await one.current_conversation(private(bot="alpha"))
    b = await two.current_conversation(private(bot="beta"))
    assert a.id != b.id
    await one.append_messages(a.id, [user_msg("for alpha", "u1", "42")])
    await two.append_messages(b.id, [user_msg("for beta", "u1", "42")])  # same platform id
    found_a = await two.find_by_platform_message("alpha", "telegram", "u1", "42")
    found_b = await one.find_by_platform_message("beta", "telegram", "u1", "42")
    assert found_a is not None and found_a.content == "for alpha"
    assert found_b is not None and found_b.content == "for beta"

    await one.save_preferences(private(bot="alpha"), Preferences(persona="pirate"))
    assert await two.get_preferences(private(bot="beta")) == Preferences()
    await one.add_usage(
        "alpha", "telegram", "u1", date(2026, 3, 14), prompt_tokens=5, completion_tokens=5
    )
    assert (await two.get_usage("beta", "telegram", "u1", date(2026, 3, 14))).tokens_total == 0

    assert await two.forget_user("beta", "telegram", "u1") == 1
    assert [m.content for m in await one.recent_messages(a.id, limit=5)] == ["for alpha"]
    stats = await one.stats("alpha", date(2026, 3, 14))
    assert [(s.platform, s.messages_total) for s in stats] == [("telegram", 1)]


async def test_usage_pseudonyms_persist_across_restarts(make_sql_store: MakeSqlStore) -> None:
    day = date(2026, 3, 14)
    first = await make_sql_store()
    await first.add_usage(BOT, "telegram", "u1", day, prompt_tokens=1, completion_tokens=1)
    await first.aclose()
    second = await make_sql_store()
    await second.add_usage(BOT, "telegram", "u1", day, prompt_tokens=1, completion_tokens=1)
    assert (await second.get_usage(BOT, "telegram", "u1", day)).tokens_today == 4


async def test_aclose_commits_writes_already_queued(migrated_url: str) -> None:
    store = SqlMemoryStore(migrated_url)
    await store.start()
    conv = await store.current_conversation(private())
    writes = [
        asyncio.create_task(store.append_messages(conv.id, [user_msg(f"m{i}")])) for i in range(30)
    ]
    await asyncio.sleep(0)  # the appends are queued, not yet committed
    await store.aclose()
    await asyncio.gather(*writes)

    async with SqlMemoryStore(migrated_url) as reopened:
        history = await reopened.recent_messages(conv.id, limit=100)
    assert sorted(m.content for m in history) == sorted(f"m{i}" for i in range(30))


async def test_start_without_schema_says_to_migrate(db_url: str) -> None:
    store = SqlMemoryStore(db_url)
    with pytest.raises(StoreError, match="migrations"):
        await store.start()
    await store.aclose()


async def test_data_survives_a_restart(make_sql_store: MakeSqlStore) -> None:
    first = await make_sql_store()
    conv = await first.current_conversation(private())
    await first.append_messages(conv.id, [user_msg("remember me")])
    await first.aclose()
    second = await make_sql_store()
    assert (await second.current_conversation(private())).id == conv.id
    assert [m.content for m in await second.recent_messages(conv.id, limit=3)] == ["remember me"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # a file lock: SQLite's alone
async def test_sqlite_waits_out_another_process_holding_the_write_lock(
    make_sql_store: MakeSqlStore,
) -> None:
    store = await make_sql_store()
    conv = await store.current_conversation(private())
    path = make_url(store._url).database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock...
        appended = asyncio.create_task(store.append_messages(conv.id, [user_msg("patient")]))
        await asyncio.sleep(0.5)
        assert not appended.done()
        other.execute("COMMIT")  # ...and lets go
        stored = await asyncio.wait_for(appended, 10)
    finally:
        other.close()
    assert stored[0].content == "patient"
    mode = (await fetch_all(store._url, "PRAGMA journal_mode"))[0][0]
    assert mode == "wal"


@pytest.mark.slow
async def test_two_stores_on_one_database_write_and_read_at_once(
    make_sql_store: MakeSqlStore,
) -> None:
    """Two bots (processes) sharing a file: contention is waited out, never an error."""
    stores = [await make_sql_store(), await make_sql_store()]
    convs = [
        [await s.current_conversation(private(f"u{i}", bot=f"bot{n}")) for i in range(10)]
        for n, s in enumerate(stores)
    ]

    async def talk(store: SqlMemoryStore, conversation_id: int) -> None:
        for i in range(15):
            await store.append_messages(conversation_id, [user_msg(f"m{i}"), bot_msg(f"r{i}")])
            await store.recent_messages(conversation_id, limit=20)

    await asyncio.gather(*(talk(s, c.id) for s, cs in zip(stores, convs, strict=True) for c in cs))
    for store, cs in zip(stores, convs, strict=True):
        for conv in cs:
            seqs = [m.seq for m in await store.recent_messages(conv.id, limit=100)]
            assert seqs == list(range(30, 0, -1))
