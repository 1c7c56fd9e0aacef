"""Apply the Alembic migrations of the memory store, from async code.

All functions are coroutines: they open an async engine on ``url`` and run Alembic's
(synchronous) commands on its connection through ``AsyncConnection.run_sync``, the way
Alembic documents connection sharing with asyncio, so they may be awaited from the running
event loop of the program. They do not depend on the working directory: the Alembic
``Config`` is built here, pointing at the installed ``migrations`` package.

``upgrade`` and ``downgrade`` hold the migration lock from their check to their commit: a
file lock (``flock`` on ``<file>.migrate.lock``) next to a SQLite file, a session-level
advisory lock (:data:`PG_LOCK_KEY`) on PostgreSQL. Two processes starting at once on a new
database therefore migrate it one after the other instead of both creating the tables.

``url`` may be any URL :func:`adapters.memory.settings.normalize_database_url` accepts.
Errors are raised as :class:`core.errors.StoreError` (``ConfigError`` for a bad URL), with
the underlying error's class and message in their text (see :func:`cause`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

import migrations
from adapters.files import private_dir, private_file, private_sqlite
from adapters.memory.backup import copy_sqlite, sqlite_path, timestamped
from adapters.memory.executor import describe_open_failure
from adapters.memory.models import metadata
from adapters.memory.settings import normalize_database_url, render_url
from core.errors import StoreError

_log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 15.0
LOCK_TIMEOUT_S: Final = 600.0
"""How long a migration waits for another process's migration to finish."""
PG_LOCK_KEY: Final = 0x63686E77_6D696772  # "chnwmigr": the advisory lock of migrations
EPHEMERAL: Final = frozenset({"instances", "leases", "messages.owner"})
"""Process bookkeeping (heartbeats, leases, reply owners) that a downgrade may drop freely."""


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


def cause(exc: BaseException) -> str:
    """``"Class: message"`` of the error at the bottom of ``exc``'s chain, for one line.

    For a SQLAlchemy error that is the driver's own error (its first line: no SQL text and
    no parameters, so no message body), never a password: drivers do not quote it.
    """
    inner: BaseException = exc
    for _ in range(8):
        following: BaseException | None = inner.orig if isinstance(inner, DBAPIError) else None
        following = following or inner.__cause__
        if following is None:
            break
        inner = following
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    # asyncpg's errors, adapted by SQLAlchemy, start with "<class '...'>: "
    text = re.sub(r"^<class '[\w.]+'>:\s*", "", text)
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


class MigrationLockTimeout(StoreError):
    """Another process held the migration lock longer than we were willing to wait."""


class DataLossRefused(StoreError):
    """A downgrade would delete stored data and was not allowed to.

    Attributes:
        target: the revision the downgrade would reach (``None``: no schema at all).
        losses: what would be lost: ``"table"`` -> rows, ``"table.column"`` -> values.
    """

    def __init__(self, url: str, target: str | None, losses: dict[str, int]) -> None:
        self.target = target
        self.losses = losses
        super().__init__(
            f"downgrading {render_url(url)} to {target or 'base (no schema)'} would delete "
            f"stored data: {describe_losses(losses)}; nothing was changed"
        )


def describe_losses(losses: dict[str, int]) -> str:
    """``"messages (120 rows), kb_chunks.scope (3 values)"``."""
    parts = []
    for name, count in losses.items():
        unit = ("value" if "." in name else "row") + ("" if count == 1 else "s")
        parts.append(f"{name} ({count} {unit})")
    return ", ".join(parts)


@contextlib.asynccontextmanager
async def _file_lock(path: Path, wait_s: float) -> AsyncIterator[None]:
    """Hold ``<path>.migrate.lock`` exclusively (``flock``), waiting at most ``wait_s`` s.

    The kernel drops the lock when its holder exits, however it exits: no stale lock.
    """
    lock_path = path.with_name(f"{path.name}.migrate.lock")
    try:
        fd = os.open(private_file(lock_path), os.O_RDWR)
    except OSError as exc:
        raise StoreError(f"cannot open the migration lock {lock_path}: {cause(exc)}") from exc
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MigrationLockTimeout(
                        f"another process has been migrating {path} for over {wait_s:.0f} s "
                        f"(it holds {lock_path}); let it finish, or stop the other chinwag"
                    ) from None
                if not told:
                    _log.info("waiting for another process to finish migrating %s", path)
                    told = True
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def _advisory_lock(connection: AsyncConnection, url: str, wait_s: float) -> None:
    """Take PostgreSQL's session-level advisory migration lock on ``connection``.

    It is released when the connection closes (or the server loses the session).
    """
    await connection.exec_driver_sql(f"SET lock_timeout = {int(wait_s * 1000)}")
    try:
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
    except DBAPIError as exc:
        if "LockNotAvailable" in cause(exc) or "lock timeout" in cause(exc):
            raise MigrationLockTimeout(
                f"another process has been migrating {render_url(url)} for over "
                f"{wait_s:.0f} s (it holds the advisory lock {PG_LOCK_KEY}); let it finish, "
                "or stop the other chinwag"
            ) from exc
        raise
    await connection.exec_driver_sql("SET lock_timeout = 0")
    await connection.commit()


@contextlib.asynccontextmanager
async def _connection(
    url: str, *, lock: bool, lock_timeout: float = LOCK_TIMEOUT_S
) -> AsyncIterator[AsyncConnection]:
    """A connection to ``url`` for migrations; with ``lock``, holding the migration lock.

    The lock (a file lock next to a SQLite file, an advisory lock on PostgreSQL) makes two
    processes that start at once on a new database migrate one after the other: the second
    finds the schema current.

    Raises:
        StoreError: the database cannot be reached or opened (one line naming the host or
            file and the cause), or what runs on the connection failed (with the cause).
        MigrationLockTimeout: the lock stayed taken for ``lock_timeout`` seconds.
    """
    path = sqlite_path(url)
    async with contextlib.AsyncExitStack() as stack:
        if lock and path is not None:
            await stack.enter_async_context(_file_lock(path, lock_timeout))
        engine = migration_engine(url)
        try:
            try:
                connection = await engine.connect()
            except (SQLAlchemyError, OSError, TimeoutError, sqlite3.Error) as exc:
                raise StoreError(describe_open_failure(url, exc)) from exc
            try:
                if lock and path is None:
                    await _advisory_lock(connection, url, lock_timeout)
                yield connection
            finally:
                await connection.close()  # on PostgreSQL this releases the advisory lock
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise StoreError(f"migrating {render_url(url)} failed: {cause(exc)}") from exc
        finally:
            await engine.dispose()


async def _transaction(connection: AsyncConnection, fn: Any, *, commit: bool = True) -> Any:
    """Run ``fn(sync_connection)`` in one transaction; commit it, or roll it back."""
    transaction = await connection.begin()
    try:
        result = await connection.run_sync(fn)
    except BaseException:
        await transaction.rollback()
        raise
    if commit:
        await transaction.commit()
    else:
        await transaction.rollback()
    return result


async def _run(url: str, fn: Any) -> Any:
    """Run ``fn(sync_connection)`` in one committed transaction on ``url``, unlocked."""
    async with _connection(url, lock=False) as connection:
        return await _transaction(connection, fn)


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
    return sqlite_path(url)


def _backup_sqlite(path: Path) -> Path:
    """Copy the SQLite file at ``path`` (WAL content included) next to it; return the copy."""
    target = timestamped(path.parent, f"{path.name}.bak", "")
    copy_sqlite(path, target)
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
    copy = await _backup_before_change(path, "migrating")
    _log.info("backed up %s to %s before migrating it", path, copy)
    return copy


async def _backup_before_change(path: Path, doing: str) -> Path:
    try:
        return await asyncio.to_thread(_backup_sqlite, path)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"could not back up {path} before {doing} it: {cause(exc)}") from exc


def _prepare_sqlite(url: str) -> None:
    path = _sqlite_path(url)
    if path is None:
        return
    try:
        if not path.parent.exists():
            private_dir(path.parent)
        private_sqlite(path)  # 0600 before SQLite creates it (and its WAL) with the umask
    except OSError as exc:
        raise StoreError(describe_open_failure(url, exc)) from exc


async def upgrade(
    url: str, revision: str = "head", *, lock_timeout: float = LOCK_TIMEOUT_S
) -> None:
    """Upgrade the database at ``url`` to ``revision`` (default the newest).

    Holds the migration lock from the check to the commit, so processes starting at once
    on a new database migrate it one after the other. An existing SQLite file is first
    copied to a timestamped backup next to it when migrations are pending.

    Raises:
        StoreError: a migration failed (on SQLite and PostgreSQL it is rolled back as a
            whole), with its cause in the message.
        MigrationLockTimeout: another process kept the lock for ``lock_timeout`` seconds.
    """
    _prepare_sqlite(url)
    config = alembic_config(url)

    def _upgrade(connection: Connection) -> None:
        before = _current_revision(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        after = _current_revision(connection)
        if before != after:
            _log.info("database %s migrated from %s to %s", render_url(url), before, after)

    async with _connection(url, lock=True, lock_timeout=lock_timeout) as connection:
        await backup_if_pending(url, revision)
        await _transaction(connection, _upgrade)


def _columns(connection: Connection) -> dict[str, set[str]]:
    """The modelled tables present and their modelled columns, without bookkeeping ones."""
    present = set(inspect(connection).get_table_names())
    found: dict[str, set[str]] = {}
    for name, table in metadata.tables.items():
        if name in present and name not in EPHEMERAL:
            names = {c["name"] for c in inspect(connection).get_columns(name)}
            found[name] = {
                c.name
                for c in table.columns
                if c.name in names and f"{name}.{c.name}" not in EPHEMERAL
            }
    return found


def _count(connection: Connection, names: list[str]) -> dict[str, int]:
    quote = connection.dialect.identifier_preparer.quote
    counts: dict[str, int] = {}
    for name in names:
        table, _, column = name.partition(".")
        what = f"count({quote(column)})" if column else "count(*)"
        number = connection.exec_driver_sql(f"SELECT {what} FROM {quote(table)}").scalar_one()
        if number:
            counts[name] = int(number)
    return counts


async def downgrade(
    url: str,
    revision: str = "-1",
    *,
    allow_loss: bool = False,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> Path | None:
    """Downgrade the database at ``url`` to ``revision`` (default one step; ``"base"`` = empty).

    The downgrade is first tried in a transaction that is rolled back, to learn which tables
    and columns it drops; those holding rows are stored data it would delete (process
    bookkeeping, :data:`EPHEMERAL`, excepted). An existing SQLite file is backed up next to
    it before anything changes.

    Returns:
        The SQLite backup made (``chinwag.db.bak-YYYYmmdd-HHMMSS``), or ``None``.

    Raises:
        DataLossRefused: stored data would be deleted and ``allow_loss`` is false; the
            database is unchanged.
        StoreError: the downgrade failed (rolled back as a whole), with its cause.
    """
    config = alembic_config(url)

    def _downgrade(connection: Connection) -> str | None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        return _current_revision(connection)

    def _trial(connection: Connection) -> tuple[str | None, list[str]]:
        before = _columns(connection)
        target = _downgrade(connection)
        after = _columns(connection)
        dropped = [table for table in before if table not in after]
        for table, columns in after.items():
            dropped += sorted(f"{table}.{column}" for column in before.get(table, set()) - columns)
        return target, dropped

    path = _sqlite_path(url)
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        raise StoreError(f"there is no database at {path}")
    async with _connection(url, lock=True, lock_timeout=lock_timeout) as connection:
        target, dropped = await _transaction(connection, _trial, commit=False)
        losses = await _transaction(connection, lambda c: _count(c, dropped), commit=False)
        if losses and not allow_loss:
            raise DataLossRefused(url, target, losses)
        copy = None
        if path is not None:
            copy = await _backup_before_change(path, "downgrading")
            _log.info("backed up %s to %s before downgrading it", path, copy)
        await _transaction(connection, _downgrade)
    if losses:
        _log.warning(
            "downgraded %s to %s, deleting %s",
            render_url(url),
            target or "base",
            describe_losses(losses),
        )
    return copy
