"""The Alembic migrations give exactly the models' schema, both ways, on both databases."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from adapters.memory import migrate
from adapters.memory.models import KB_UNMODELLED, metadata
from adapters.memory.store import SqlMemoryStore
from core.types import ConversationKey
from tests.adapters.memory.store_helpers import user_msg

TABLES = {
    "conversations",
    "messages",
    "platform_messages",
    "preferences",
    "usage_daily",
    "chinwag_meta",
    "instances",
    "leases",
    "pending_tool_calls",
    "tool_audit",
    "kb_documents",
    "kb_chunks",
    "media",
    "message_media",
}
KB_TABLES = {"kb_documents", "kb_chunks"}
MEDIA_TABLES = {"media", "message_media"}


QUEUE_PREFIXES = ("procrastinate_", "queue_")
"""The turn queue's objects (revision 0008, PostgreSQL only): not the memory store's models."""


def modelled(name: str | None) -> bool:
    """Whether the models describe a schema object (not the knowledge base's keyword search,
    not the turn queue's)."""
    return not name or not (
        name in KB_UNMODELLED
        or name.startswith("kb_chunks_fts_")
        or name.startswith(QUEUE_PREFIXES)
    )


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return modelled(name)


async def schema_diff(url: str) -> list[Any]:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        return list(compare_metadata(context, metadata))

    engine = migrate.migration_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(diff)
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    engine = migrate.migration_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return {name for name in names if modelled(name)} - {"alembic_version"}


async def raw_names(url: str) -> set[str]:
    """The keyword-search objects of 0006 in the database (FTS5 table, triggers, GIN index)."""
    if url.startswith("sqlite"):
        query = "SELECT name FROM sqlite_master WHERE name LIKE 'kb_chunks_fts%'"
    else:
        query = "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_kb_chunks_text_tsv'"
    engine = migrate.migration_engine(url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text(query))).all()
    finally:
        await engine.dispose()
    return {row[0] for row in rows}


async def test_upgrade_head_on_an_empty_database_matches_the_models(db_url: str) -> None:
    assert await migrate.current(db_url) is None
    assert await migrate.pending(db_url)
    await migrate.upgrade(db_url)
    assert await migrate.current(db_url) == migrate.head_revision()
    assert not await migrate.pending(db_url)
    assert await schema_diff(db_url) == []
    assert await table_names(db_url) == TABLES


async def test_revision_0001_lacks_only_the_secondary_indexes(db_url: str) -> None:
    await migrate.upgrade(db_url, "0001")
    assert await migrate.current(db_url) == "0001"
    diff = await schema_diff(db_url)
    assert diff, "0002 must add something"
    # 0002/0003 add indexes; 0004 the instances and leases tables and messages.owner;
    # 0005 the pending tool calls and the audit.
    assert {entry[0] for entry in diff} == {"add_index", "add_table", "add_column"}


async def test_revision_0003_lacks_only_the_owner_leases(db_url: str) -> None:
    await migrate.upgrade(db_url, "0003")
    diff = await schema_diff(db_url)
    added = {entry[-1].name for entry in diff if entry[0] in ("add_table", "add_column")}
    assert (
        added
        == {"instances", "leases", "owner", "pending_tool_calls", "tool_audit"}
        | KB_TABLES
        | MEDIA_TABLES
    )
    assert {entry[0] for entry in diff} <= {"add_table", "add_column", "add_index"}


async def test_revision_0004_lacks_only_the_tool_tables(db_url: str) -> None:
    await migrate.upgrade(db_url, "0004")
    diff = await schema_diff(db_url)
    assert {entry[0] for entry in diff} == {"add_table", "add_index"}
    added = {entry[-1].name for entry in diff if entry[0] == "add_table"}
    assert added == {"pending_tool_calls", "tool_audit"} | KB_TABLES | MEDIA_TABLES


async def test_revision_0005_lacks_only_the_knowledge_base(db_url: str) -> None:
    await migrate.upgrade(db_url, "0005")
    diff = await schema_diff(db_url)
    assert {entry[0] for entry in diff} == {"add_table", "add_index"}
    assert {entry[-1].name for entry in diff if entry[0] == "add_table"} == (
        KB_TABLES | MEDIA_TABLES
    )
    assert await raw_names(db_url) == set()
    await migrate.upgrade(db_url)
    assert await schema_diff(db_url) == []
    if db_url.startswith("sqlite"):
        assert {"kb_chunks_fts", "kb_chunks_fts_insert", "kb_chunks_fts_delete"} <= (
            await raw_names(db_url)
        )
    else:
        assert await raw_names(db_url) == {"ix_kb_chunks_text_tsv"}


async def test_revision_0006_lacks_only_the_media_tables(db_url: str) -> None:
    await migrate.upgrade(db_url, "0006")
    diff = await schema_diff(db_url)
    assert {entry[0] for entry in diff} == {"add_table", "add_index"}
    assert {entry[-1].name for entry in diff if entry[0] == "add_table"} == MEDIA_TABLES
    await migrate.upgrade(db_url)
    assert await migrate.current(db_url) == migrate.head_revision()
    assert await schema_diff(db_url) == []


async def test_0005_down_and_up_keeps_the_history(db_url: str) -> None:
    key = ConversationKey("bot", "telegram", "c1", None, "u1")
    await migrate.upgrade(db_url)
    async with SqlMemoryStore(db_url) as store:
        conv = await store.current_conversation(key)
        await store.append_messages(conv.id, [user_msg("kept", "u1")])
    await migrate.downgrade(db_url, "0004")
    assert await migrate.current(db_url) == "0004"
    assert await table_names(db_url) == (
        TABLES - {"pending_tool_calls", "tool_audit"} - KB_TABLES - MEDIA_TABLES
    )
    assert await schema_diff(db_url) != []
    await migrate.upgrade(db_url)
    assert await schema_diff(db_url) == []
    async with SqlMemoryStore(db_url) as store:
        assert [m.content for m in await store.recent_messages(conv.id, limit=5)] == ["kept"]
        assert await store.audit_entries() == []


async def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    await migrate.upgrade(db_url)
    await migrate.downgrade(db_url)
    assert await migrate.current(db_url) == "0007"
    assert await table_names(db_url) == TABLES
    await migrate.downgrade(db_url)
    assert await migrate.current(db_url) == "0006"
    assert await table_names(db_url) == TABLES - MEDIA_TABLES
    await migrate.downgrade(db_url)
    assert await migrate.current(db_url) == "0005"
    assert await table_names(db_url) == TABLES - KB_TABLES - MEDIA_TABLES
    assert await raw_names(db_url) == set(), "the keyword-search objects go with 0006"
    await migrate.downgrade(db_url)
    assert await migrate.current(db_url) == "0004"
    await migrate.downgrade(db_url)
    assert await migrate.current(db_url) == "0003"
    await migrate.downgrade(db_url)
    assert await migrate.current(db_url) == "0002"
    await migrate.downgrade(db_url, "0001")
    assert await migrate.current(db_url) == "0001"
    await migrate.downgrade(db_url, "base")
    assert await migrate.current(db_url) is None
    assert await table_names(db_url) == set()
    await migrate.upgrade(db_url)
    assert await schema_diff(db_url) == []
    await migrate.upgrade(db_url)  # nothing pending: a no-op
    assert await migrate.current(db_url) == migrate.head_revision()


async def test_conversations_written_at_0001_are_readable_after_upgrading(db_url: str) -> None:
    key = ConversationKey("bot", "telegram", "c1", None, "u1")
    await migrate.upgrade(db_url, "0001")
    # Rows as the code of revision 0001 wrote them (today's store writes today's columns).
    engine = migrate.migration_engine(db_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO conversations (id, bot, platform, chat_id, thread_id, user_id, "
                    "last_seq, created_at) VALUES (1, 'bot', 'telegram', 'c1', '', 'u1', 1, :at)"
                ),
                {"at": datetime.now(UTC)},
            )
            await connection.execute(
                text(
                    "INSERT INTO messages (id, conversation_id, seq, role, author_id, content, "
                    "status, created_at) VALUES (1, 1, 1, 'user', 'u1', 'kept', 'complete', :at)"
                ),
                {"at": datetime.now(UTC)},
            )
            await connection.execute(
                text(
                    "INSERT INTO platform_messages (bot, platform, chat_id, platform_message_id, "
                    "message_id) VALUES ('bot', 'telegram', 'c1', '7', 1)"
                )
            )
    finally:
        await engine.dispose()
    await migrate.upgrade(db_url)
    async with SqlMemoryStore(db_url) as new:
        assert (await new.current_conversation(key)).id == 1
        assert [m.content for m in await new.recent_messages(1, limit=5)] == ["kept"]
        found = await new.find_by_platform_message("bot", "telegram", "c1", "7")
        assert found is not None and found.content == "kept"


async def test_sqlite_file_is_backed_up_before_migrating(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = Path(make_url(sqlite_url).database or "")
    await migrate.upgrade(sqlite_url, "0001")
    assert list(path.parent.glob("*.bak-*")) == []  # a new file has nothing to back up
    # A row as the code of revision 0001 wrote it, left in the WAL (today's store writes
    # today's columns).
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute(
        "INSERT INTO conversations (id, bot, platform, chat_id, thread_id, user_id, last_seq, "
        "created_at) VALUES (1, 'bot', 'console', 'me', '', 'me', 1, '2026-01-01 00:00:00')"
    )
    writer.execute(
        "INSERT INTO messages (id, conversation_id, seq, role, content, status, created_at) "
        "VALUES (1, 1, 1, 'user', 'precious', 'complete', '2026-01-01 00:00:00')"
    )
    writer.commit()

    with caplog.at_level(logging.INFO, logger="adapters.memory.migrate"):
        await migrate.upgrade(sqlite_url)
    backups = list(path.parent.glob("chinwag.db.bak-*"))
    assert len(backups) == 1
    assert any("backed up" in r.getMessage() for r in caplog.records)
    copy = sqlite3.connect(backups[0])
    try:
        assert copy.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert copy.execute("SELECT content FROM messages").fetchall() == [("precious",)]
    finally:
        copy.close()

    writer.close()
    await migrate.upgrade(sqlite_url)  # nothing pending: no second backup
    assert len(list(path.parent.glob("chinwag.db.bak-*"))) == 1


async def test_migrating_an_unreachable_database_raises_store_error_without_password(
    tmp_path: Path,
) -> None:
    from core.errors import StoreError

    url = "postgresql://chinwag:hunter2@127.0.0.1:1/chinwag"
    with pytest.raises(StoreError) as caught:
        await migrate.upgrade(url)
    # One line an operator can act on: the variable, the host and the cause.
    assert str(caught.value) == (
        "DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:1 (connection refused)"
    )
    assert "hunter2" not in str(caught.value)
