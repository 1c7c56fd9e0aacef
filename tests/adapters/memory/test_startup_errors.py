"""A database that cannot be opened at start-up is named in one line, with the cause."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from core.errors import StoreError


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_starting_on_an_unreachable_postgresql_names_host_and_cause() -> None:
    port = closed_port()
    store = SqlMemoryStore(f"postgresql://chinwag:hunter2@127.0.0.1:{port}/chinwag")
    with pytest.raises(StoreError) as caught:
        await store.start()
    assert str(caught.value) == (
        f"DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:{port} (connection refused)"
    )
    await store.aclose()


@pytest.mark.postgres
async def test_a_missing_postgresql_database_is_named_in_the_servers_words(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/no_such_chinwag_db"
    with pytest.raises(StoreError) as caught:
        await migrate.upgrade(url)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:")
    assert 'database "no_such_chinwag_db" does not exist' in message
    assert "\n" not in message


async def test_a_sqlite_path_that_is_a_directory_is_named_with_the_cause(tmp_path: Path) -> None:
    folder = tmp_path / "chinwag.db"
    folder.mkdir()
    with pytest.raises(StoreError) as migrating:
        await migrate.upgrade(f"sqlite:///{folder}")
    assert str(migrating.value) == f"cannot open SQLite file {folder} (it is a directory)"
    store = SqlMemoryStore(f"sqlite:///{folder}")
    with pytest.raises(StoreError) as starting:
        await store.start()
    assert str(starting.value) == f"cannot open SQLite file {folder} (it is a directory)"
    await store.aclose()


async def test_a_sqlite_path_under_a_file_is_named_with_the_cause(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    path = tmp_path / "not-a-dir" / "data" / "chinwag.db"
    with pytest.raises(StoreError) as caught:
        await migrate.upgrade(f"sqlite:///{path}")
    assert str(caught.value) == f"cannot open SQLite file {path} (a parent is not a directory)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any file")
async def test_an_unreadable_sqlite_file_is_named_with_the_cause(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    path = locked / "chinwag.db"
    url = f"sqlite:///{path}"
    await migrate.upgrade(url)
    locked.chmod(0o500)
    path.chmod(0o000)
    try:
        with pytest.raises(StoreError) as caught:
            await migrate.upgrade(url)
    finally:
        path.chmod(0o600)
        locked.chmod(0o700)
    assert str(caught.value) == f"cannot open SQLite file {path} (permission denied)"
