"""Apply the Alembic migrations of the memory store, from async code.

All functions are coroutines: they open an async engine on ``url`` and run Alembic's
(synchronous) commands on its connection through ``AsyncConnection.run_sync``, the way
Alembic documents connection sharing with asyncio, so they may be awaited from the running
event loop of the program. They do not depend on the working directory: the Alembic
``Config`` is built here, pointing at the installed ``migrations`` package.

``url`` may be any URL :func:`adapters.memory.settings.normalize_database_url` accepts.
Errors are raised as :class:`core.errors.StoreError` (``ConfigError`` for a bad URL).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

import migrations
from adapters.files import private_dir, private_file, private_sqlite
from adapters.memory.executor import describe_open_failure
from adapters.memory.settings import normalize_database_url, render_url
from core.errors import StoreError

_log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 15.0


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for the installed ``migrations`` package.

    ``url`` (async form) goes into ``config.attributes["chinwag_url"]``, never into the
    ini options, so a password with ``%`` in it needs no escaping and is never rendered.
    """
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url is not None:
        config.attributes["chinwag_url"] = url
    return config


def migration_engine(url: str) -> AsyncEngine:
    """An async engine for running migrations on ``url``.

    On SQLite, SQLAlchemy emits ``BEGIN`` itself so that DDL is transactional and a failed
    migration leaves the file as it was; foreign keys stay off (SQLite's default) because
    batch mode drops and recreates tables, which would otherwise cascade deletes.
    """
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, poolclass=NullPool)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(
        url, poolclass=NullPool, connect_args={"timeout": _CONNECT_TIMEOUT_S}
    )


def head_revision() -> str:
    """The newest revision shipped with this version of chinwag."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StoreError("no migrations found in the migrations package")
    return head


def is_known_revision(revision: str) -> bool:
    """Whether ``revision`` is one this version of chinwag ships (not a newer one's)."""
    script = ScriptDirectory.from_config(alembic_config())
    return any(rev.revision == revision for rev in script.walk_revisions())


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _run(url: str, fn: Any) -> Any:
    """Run ``fn(sync_connection)`` in one transaction on ``url``; translate errors.

    Raises:
        StoreError: the database cannot be reached or opened (one line naming the host or
            file and the cause), or ``fn`` failed.
    """
    engine = migration_engine(url)
    try:
        try:
            connection = await engine.connect()
        except (SQLAlchemyError, OSError, TimeoutError, sqlite3.Error) as exc:
            raise StoreError(describe_open_failure(url, exc)) from exc
        try:
            async with connection.begin():
                return await connection.run_sync(fn)
        finally:
            await connection.close()
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise StoreError(f"migrating {render_url(url)} failed: {exc.__class__.__name__}") from exc
    finally:
        await engine.dispose()


async def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, ``None`` when it has no schema yet."""
    result: str | None = await _run(url, _current_revision)
    return result


async def pending(url: str) -> bool:
    """Whether the database at ``url`` is behind the newest shipped revision."""
    return await current(url) != head_revision()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ``url``; ``None`` for another database.

    Raises:
        ConfigError: ``url`` is malformed.
    """
    return _sqlite_path(url)


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    return Path(parsed.database)


def _backup_sqlite(path: Path) -> Path:
    """Copy the SQLite file at ``path`` (WAL content included) next to it; return the copy."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    # The backup API copies a consistent snapshot, including pages still in the WAL file,
    # which a plain file copy would miss.
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        destination = sqlite3.connect(private_file(target))
        try:
            source.backup(destination)
        finally:
            destination.close()
    finally:
        source.close()
    return target


async def backup_if_pending(url: str, revision: str = "head") -> Path | None:
    """Back up an existing SQLite file before migrations change it.

    Returns the path of the copy (``chinwag.db.bak-YYYYmmdd-HHMMSS``), or ``None`` when
    ``url`` is not a SQLite file, the file does not exist yet or nothing is pending.
    """
    path = _sqlite_path(url)
    if path is None or not path.exists() or path.stat().st_size == 0:
        return None
    target_revision = head_revision() if revision == "head" else revision
    if await current(url) == target_revision:
        return None
    try:
        copy = await asyncio.to_thread(_backup_sqlite, path)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"could not back up {path} before migrating it: {exc}") from exc
    _log.info("backed up %s to %s before migrating it", path, copy)
    return copy


async def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default the newest).

    An existing SQLite file is first copied to a timestamped backup next to it when
    migrations are pending. Raises ``StoreError`` if a migration fails; on SQLite and
    PostgreSQL the failed migration is rolled back as a whole.
    """
    path = _sqlite_path(url)
    if path is not None:
        try:
            if not path.parent.exists():
                private_dir(path.parent)
            private_sqlite(path)  # 0600 before SQLite creates it (and its WAL) with the umask
        except OSError as exc:
            raise StoreError(describe_open_failure(url, exc)) from exc
    await backup_if_pending(url, revision)
    config = alembic_config(url)

    def _upgrade(connection: Connection) -> None:
        before = _current_revision(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        after = _current_revision(connection)
        if before != after:
            _log.info("database %s migrated from %s to %s", render_url(url), before, after)

    await _run(url, _upgrade)


async def downgrade(url: str, revision: str = "-1") -> None:
    """Downgrade the database at ``url`` to ``revision`` (default one step; ``"base"`` = empty).

    Downgrading discards what the newer schema held; meant for operators and tests.
    """
    config = alembic_config(url)

    def _downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    await _run(url, _downgrade)
