"""The seam between the SQL store and a database runtime: an :class:`Executor`.

:class:`adapters.memory.store.SqlMemoryStore` turns each port call into an operation (a
function of one sync SQLAlchemy ``Connection``, see :mod:`adapters.memory.operations`) and
hands it to its executor, which decides where it runs:

* :class:`adapters.memory.sqlite.SqliteExecutor`: one writer thread that commits the writes
  queued meanwhile as one transaction (group commit), and a few reader threads;
* :class:`adapters.memory.postgres.PostgresExecutor`: an asyncpg pool, and a few writer
  lanes that each commit the writes queued meanwhile as one transaction (group commit).

Both group-commit the same way (:func:`run_group`, then :func:`run_group_isolated` when one
operation of a group fails, so that the failure reaches only its own caller).

The store owns the lifecycle and the error boundary (:data:`DATABASE_ERRORS` becomes
``StoreError`` there, described by :func:`describe`); an executor only runs operations.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

Op = Callable[[Connection], Any]
"""One store operation: run on a sync connection, inside a transaction for writes."""

DATABASE_ERRORS: Final = (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError)
"""What an executor may raise for a database failure (the store makes it a ``StoreError``)."""


class OpFailed(Exception):
    """Operation ``index`` of a group raised ``error`` (not the transaction around it)."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"operation {index} of the group failed")
        self.index = index
        self.error = error


Outcome = tuple[bool, Any]
"""What one operation of a group came to: ``(True, result)`` or ``(False, exception)``."""


def run_group(
    conn: Connection, ops: Sequence[Op], fatal: Callable[[BaseException], bool]
) -> list[Outcome]:
    """Run ``ops`` in order in one transaction of ``conn`` (group commit's fast path).

    The caller commits. An exception for which ``fatal`` is true (the database locked, the
    connection lost) propagates as it is: the whole group is to be retried. Any other
    failure of an operation raises :class:`OpFailed`, and the group is to be replayed with
    :func:`run_group_isolated`.
    """
    outcomes: list[Outcome] = []
    for index, op in enumerate(ops):
        try:
            outcomes.append((True, op(conn)))
        except Exception as exc:
            if fatal(exc):
                raise
            raise OpFailed(index, exc) from exc
    return outcomes


def run_group_isolated(
    conn: Connection, ops: Sequence[Op], fatal: Callable[[BaseException], bool]
) -> list[Outcome]:
    """Run each of ``ops`` in its own SAVEPOINT: a failure undoes only its own operation.

    The caller commits. An exception for which ``fatal`` is true propagates.
    """
    outcomes: list[Outcome] = []
    for op in ops:
        try:
            with conn.begin_nested():
                outcomes.append((True, op(conn)))
        except Exception as exc:
            if fatal(exc):
                raise
            outcomes.append((False, exc))
    return outcomes


class Executor(Protocol):
    """Runs store operations on one database runtime.

    ``read`` and ``write`` are plain methods that return an awaitable (on SQLite the future
    the writer resolves), so that a call costs no coroutine of its own on the hot path.
    """

    async def open(self) -> None:
        """Connect and start whatever threads or tasks run the operations.

        Raises:
            StoreError: the database cannot be opened.
        """
        ...

    def read(self, op: Op) -> Awaitable[Any]:
        """Run ``op`` on a read connection; the awaitable gives its result."""
        ...

    def write(self, op: Op, *, until_closed: bool = False) -> Awaitable[Any]:
        """Run ``op`` in a write transaction; the awaitable resolves after its ``COMMIT``.

        ``until_closed``: keep retrying a lost connection past the outage grace period,
        until the write lands or the executor closes (a reply the user has already seen).

        Raises:
            StoreError: the runtime can no longer write (its writer stopped).
            StoreUnavailable: the database stayed unreachable (nothing was written).
        """
        ...

    async def close_writes(self) -> None:
        """Commit the writes already handed over, then stop writing. Idempotent."""
        ...

    async def close(self) -> None:
        """Close every connection (reads in flight have finished). Idempotent."""
        ...


def describe(exc: BaseException) -> str:
    """A short, body-free description of a database failure for ``StoreError``."""
    if isinstance(exc, IntegrityError):
        return "a row with the same unique key is already stored (duplicate platform message id?)"
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        if "no such table" in str(orig) or "does not exist" in str(orig):
            return (
                "the database has no chinwag schema; apply the migrations first "
                "(they run at start unless DB_AUTO_MIGRATE=false)"
            )
        return f"{type(orig).__name__} from the database"
    return type(exc).__name__


_CAUSES: Final = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a parent is not a directory",
    errno.EISDIR: "it is a directory",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
}


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, the DBAPI error it wraps and their causes, outermost first."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 8:
        found.append(current)
        if isinstance(current, DBAPIError) and current.orig is not None:
            found.append(current.orig)
        current = current.__cause__ or current.__context__
    return found


def _network_cause(exc: BaseException) -> str:
    for inner in _chain(exc):
        if isinstance(inner, TimeoutError):
            return "timed out"
        if isinstance(inner, OSError):
            code = inner.errno
            if code is None and "Connect call failed" in str(inner):
                return "connection refused"  # asyncpg's summary of several addresses
            if code in _CAUSES:
                return _CAUSES[code]
            if code is not None and code < 0:  # getaddrinfo's codes
                return "unknown host"
            return (inner.strerror or type(inner).__name__).lower()
        message = getattr(inner, "sqlstate", None) and str(inner).splitlines()[0]
        if message:  # the server's own words: never the password
            return str(message)
        if type(inner).__name__ == "InterfaceError" or "closed" in str(inner):
            return "the server closed the connection"
    return type(exc).__name__


def _sqlite_cause(path: Path, exc: BaseException) -> str:
    for inner in _chain(exc):
        if isinstance(inner, OSError) and inner.errno in _CAUSES and inner.errno != errno.ENOENT:
            return _CAUSES[inner.errno]
    parent = ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return _CAUSES[errno.ENOTDIR]
    if ancestor != parent:
        return f"the directory {parent} does not exist"
    if path.is_dir():
        return _CAUSES[errno.EISDIR]
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return _CAUSES[errno.EACCES]
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        return _CAUSES[errno.EACCES]
    for inner in _chain(exc):
        if isinstance(inner, sqlite3.Error):
            return str(inner).splitlines()[0] if str(inner) else type(inner).__name__
    return type(exc).__name__


def describe_open_failure(url: str, exc: BaseException) -> str:
    """One line for an operator: which database could not be opened, and why.

    ``"DATABASE_URL: cannot connect to PostgreSQL at db:5432 (connection refused)"``, or
    ``"cannot open SQLite file /var/lib/chinwag/chinwag.db (permission denied)"``. Never
    contains the password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return f"DATABASE_URL: cannot open the database ({type(exc).__name__})"
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        return f"cannot open SQLite file {path} ({_sqlite_cause(path, exc)})"
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return f"DATABASE_URL: cannot connect to PostgreSQL at {where} ({_network_cause(exc)})"


def settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    """Resolve a caller's future with ``result`` or ``error`` (both runtimes' writers).

    Nothing happens if it is done already: the caller was cancelled meanwhile.
    """
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
