"""The seam between the SQL store and a database runtime: an :class:`Executor`.

:class:`adapters.memory.store.SqlMemoryStore` turns each port call into an operation (a
function of one sync SQLAlchemy ``Connection``, see :mod:`adapters.memory.operations`) and
hands it to its executor, which decides where it runs:

* :class:`adapters.memory.sqlite.SqliteExecutor`: one writer thread that commits the writes
  queued meanwhile as one transaction (group commit), and a few reader threads;
* :class:`adapters.memory.postgres.PostgresExecutor`: an asyncpg pool, one transaction per
  write, retried on deadlock or serialization failure.

The store owns the lifecycle and the error boundary (:data:`DATABASE_ERRORS` becomes
``StoreError`` there, described by :func:`describe`); an executor only runs operations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

Op = Callable[[Connection], Any]
"""One store operation: run on a sync connection, inside a transaction for writes."""

DATABASE_ERRORS: Final = (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError)
"""What an executor may raise for a database failure (the store makes it a ``StoreError``)."""


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

    def write(self, op: Op) -> Awaitable[Any]:
        """Run ``op`` in a write transaction; the awaitable resolves after its ``COMMIT``.

        Raises:
            StoreError: the runtime can no longer write (its writer stopped).
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
