"""Backups restore every message; downgrades never delete data unasked; migrations take a lock."""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from adapters.memory import backup, migrate
from adapters.memory.store import SqlMemoryStore
from core.errors import StoreError
from tests.adapters.memory.store_helpers import private, user_msg

ROOT = Path(__file__).resolve().parents[3]


async def store_messages(url: str, count: int) -> list[str]:
    """Migrate ``url`` and store ``count`` messages in one conversation; their texts."""
    await migrate.upgrade(url)
    texts = [f"message {n}: {secrets.token_hex(4)}" for n in range(count)]
    async with SqlMemoryStore(url) as store:
        conversation = await store.current_conversation(private())
        for text in texts:
            await store.append_messages(conversation.id, [user_msg(text)])
    return texts


async def stored_texts(url: str) -> list[str]:
    async with SqlMemoryStore(url) as store:
        conversation = await store.current_conversation(private())
        found = await store.recent_messages(conversation.id, limit=10_000)
    return [message.content for message in reversed(found)]


def sqlite_url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def new_pg_database(pg_admin_url: str) -> AsyncIterator[str]:
    """A new, uniquely named PostgreSQL database (async URL), dropped after the test."""
    name = f"chinwag_safety_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(pg_admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield (
            make_url(pg_admin_url)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        admin = await asyncpg.connect(pg_admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- backup and restore ------------------------------------------------------------------------


async def test_a_sqlite_backup_taken_while_the_store_writes_restores_every_message(
    tmp_path: Path,
) -> None:
    url = sqlite_url_of(tmp_path / "chinwag.db")
    texts = await store_messages(url, 40)
    target = tmp_path / "backup.db"
    async with SqlMemoryStore(url) as running:  # the bot is running: WAL pages not checkpointed
        conversation = await running.current_conversation(private())
        await running.append_messages(conversation.id, [user_msg("the last one")])
        done = await backup.backup(url, target)
    assert done.path == target
    assert done.size == target.stat().st_size > 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    restored = tmp_path / "restored.db"
    shutil.copyfile(target, restored)
    assert await stored_texts(sqlite_url_of(restored)) == [*texts, "the last one"]


async def test_a_backup_never_overwrites_a_file(tmp_path: Path) -> None:
    url = sqlite_url_of(tmp_path / "chinwag.db")
    await store_messages(url, 1)
    target = tmp_path / "precious.db"
    target.write_text("keep me")
    with pytest.raises(StoreError, match="already exists"):
        await backup.backup(url, target)
    assert target.read_text() == "keep me"


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_restore") is None, reason="pg_dump/pg_restore not installed")
async def test_a_pg_dump_restored_into_a_new_database_holds_every_message(
    pg_url: str, new_pg_database: str, tmp_path: Path
) -> None:
    from tests.conftest import reset_postgres

    reset_postgres(pg_url)
    texts = await store_messages(pg_url, 25)
    target = tmp_path / "chinwag.pgdump"
    done = await backup.backup(pg_url, target)
    assert done.size > 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    process = await asyncio.create_subprocess_exec(
        "pg_restore",
        "--no-owner",
        f"--dbname={make_url(new_pg_database).database}",
        str(target),
        env=backup.pg_environment(make_url(new_pg_database)),
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert await stored_texts(new_pg_database) == texts
    assert await migrate.current(new_pg_database) == migrate.head_revision()


async def test_without_pg_dump_the_message_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing in it
    with pytest.raises(StoreError) as caught:
        await backup.backup("postgresql://chinwag:hunter2@127.0.0.1:1/db", tmp_path / "x.pgdump")
    assert "pg_dump is not installed" in str(caught.value)
    assert "apt install postgresql-client" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert not (tmp_path / "x.pgdump").exists()


@pytest.mark.postgres
async def test_a_pg_dump_older_than_the_server_is_named_with_the_version_to_install(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(StoreError, match=r"pg_dump 9 is older than the PostgreSQL \d+ server"):
        await backup.backup(pg_url, tmp_path / "x.pgdump")
    assert not (tmp_path / "x.pgdump").exists()


# --- downgrade ---------------------------------------------------------------------------------


async def test_a_downgrade_that_would_delete_messages_is_refused_and_changes_nothing(
    db_url: str,
) -> None:
    texts = await store_messages(db_url, 3)
    with pytest.raises(migrate.DataLossRefused) as caught:
        await migrate.downgrade(db_url, "base")
    assert "messages (3 rows)" in str(caught.value)
    assert "conversations (1 row)" in str(caught.value)
    assert caught.value.target is None
    assert await migrate.current(db_url) == migrate.head_revision()
    assert await stored_texts(db_url) == texts


async def test_a_downgrade_that_drops_only_empty_tables_needs_no_yes(db_url: str) -> None:
    await store_messages(db_url, 2)  # nothing in the knowledge base that 0006 added
    await migrate.downgrade(db_url, "0005")
    assert await migrate.current(db_url) == "0005"


async def test_an_empty_database_downgrades_without_yes(db_url: str) -> None:
    await migrate.upgrade(db_url)
    await migrate.downgrade(db_url, "base")
    assert await migrate.current(db_url) is None


async def test_a_downgrade_with_yes_backs_the_sqlite_file_up_first(tmp_path: Path) -> None:
    path = tmp_path / "chinwag.db"
    url = sqlite_url_of(path)
    texts = await store_messages(url, 5)
    before = set(tmp_path.glob("chinwag.db.bak-*"))
    copy = await migrate.downgrade(url, "base", allow_loss=True)
    assert copy is not None
    assert set(tmp_path.glob("chinwag.db.bak-*")) - before == {copy}
    assert await migrate.current(url) is None
    assert await stored_texts(sqlite_url_of(copy)) == texts


# --- the migration lock ------------------------------------------------------------------------

STARTER = """
import asyncio, sys
from adapters.memory.settings import MemorySettings
from bots.app import open_store

async def main():
    store = await open_store(MemorySettings(database_url=sys.argv[1], _env_file=None))
    await store.aclose()

asyncio.run(main())
"""


async def start_at_once(url: str, processes: int) -> list[tuple[int, str]]:
    """Open the store (migrating first) from ``processes`` processes started together."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            STARTER,
            url,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results = []
    for process in started:
        _out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        results.append((process.returncode, err.decode()))
    return results


@pytest.mark.slow
async def test_processes_starting_at_once_on_a_new_sqlite_file_all_start(tmp_path: Path) -> None:
    url = sqlite_url_of(tmp_path / "new" / "chinwag.db")
    results = await start_at_once(url, 4)
    assert [status for status, _err in results] == [0] * 4, results
    assert await migrate.current(url) == migrate.head_revision()


@pytest.mark.slow
@pytest.mark.postgres
async def test_processes_starting_at_once_on_a_new_postgres_database_all_start(
    new_pg_database: str,
) -> None:
    results = await start_at_once(new_pg_database, 4)
    assert [status for status, _err in results] == [0] * 4, results
    assert await migrate.current(new_pg_database) == migrate.head_revision()


async def test_a_migration_waits_for_the_sqlite_lock_and_says_who_holds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chinwag.db"
    lock = path.with_name("chinwag.db.migrate.lock")
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(migrate.MigrationLockTimeout) as caught:
            await migrate.upgrade(sqlite_url_of(path), lock_timeout=0.3)
    assert str(lock) in str(caught.value)
    assert await migrate.current(sqlite_url_of(path)) is None  # nothing was migrated
    await migrate.upgrade(sqlite_url_of(path), lock_timeout=0.3)  # free again
    assert await migrate.current(sqlite_url_of(path)) == migrate.head_revision()


@pytest.mark.postgres
async def test_a_migration_waits_for_the_postgres_advisory_lock(new_pg_database: str) -> None:
    holder = await asyncpg.connect(
        new_pg_database.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10
    )
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", migrate.PG_LOCK_KEY)
        with pytest.raises(migrate.MigrationLockTimeout, match="advisory lock"):
            await migrate.upgrade(new_pg_database, lock_timeout=0.3)
        assert await migrate.current(new_pg_database) is None
        waiting = asyncio.create_task(migrate.upgrade(new_pg_database, lock_timeout=30))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", migrate.PG_LOCK_KEY)
        await waiting
    finally:
        await holder.close()
    assert await migrate.current(new_pg_database) == migrate.head_revision()
