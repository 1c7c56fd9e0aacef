"""The PostgreSQL runtime of the SQL store: an asyncpg pool, one transaction per write.

Outages:
    A call that loses its connection (refused, reset, closed by a restarting server) is
    retried with exponential backoff and jitter while the pool reconnects: SQLAlchemy
    invalidates the broken connections, and ``pool_pre_ping`` replaces any stale one at the
    next checkout. After ``outage_grace`` seconds the call raises
    :class:`core.errors.StoreUnavailable`; a write given ``until_closed=True`` (a reply the
    user has already seen) keeps trying until it lands or the executor is closed.

The ambiguous commit:
    A connection lost while ``COMMIT`` was in flight may or may not have committed. Every
    write records its transaction id first (``txid_current()``); after such a loss the
    executor asks the server, once it is back, what became of that transaction
    (``txid_status``, made for exactly this): committed means the call returns the result it
    had computed, aborted means it is run again. So a retried write is applied exactly once,
    whatever it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.memory.executor import DATABASE_ERRORS, Op, describe_open_failure
from core.errors import StoreError, StoreUnavailable

_log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S: Final = 15.0
_COMMAND_TIMEOUT_S: Final = 60.0
_CONFLICT_RETRIES: Final = 3
_RETRY_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization, deadlock
_FIRST_BACKOFF_S: Final = 0.05
_MAX_BACKOFF_S: Final = 2.0
_DISCONNECT_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03"})  # shutdown, starting
_TXID: Final = text("SELECT txid_current()")
_TXID_STATUS: Final = text("SELECT txid_status(:xid)")


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection to the server was lost or could not be made.

    True for refused, reset or timed-out sockets, asyncpg's connection-class errors (SQLSTATE
    class 08, a server shutting down or starting up, an operation on a closed connection),
    and SQLAlchemy errors that invalidated their connection. False for everything the
    server answered (constraint violations, syntax, permissions): retrying those is useless.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DBAPIError):
            if current.connection_invalidated:
                return True
            pending.append(current.orig)
        if isinstance(current, OSError):  # refused, reset, unreachable, connect timeout
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate.startswith("08") or sqlstate in _DISCONNECT_SQLSTATES
        ):
            return True
        if type(current).__name__ == "InterfaceError" and "closed" in str(current):
            return True
        pending.extend((current.__cause__, current.__context__))
    return False


def _is_conflict(exc: BaseException) -> bool:
    """A serialization failure or deadlock: running the transaction again may succeed."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


class _CommitUnknown(Exception):
    """The connection was lost during ``COMMIT``: the transaction may have committed."""

    def __init__(self, xid: int, result: Any) -> None:
        super().__init__(f"connection lost while transaction {xid} was committing")
        self.xid = xid
        self.result = result


class _StillCommitting(Exception):
    """The server still shows the transaction in progress; ask again shortly."""


class _Write:
    """One write call: its operation and what is known of its last attempt."""

    def __init__(self, executor: PostgresExecutor, op: Op) -> None:
        self._executor = executor
        self._op = op
        self._unknown: _CommitUnknown | None = None

    async def attempt(self) -> Any:
        """Run the write once, or settle a previous attempt whose ``COMMIT`` was cut off."""
        if self._unknown is not None:
            status = await self._executor.transaction_status(self._unknown.xid)
            if status == "committed":
                _log.info("a write cut off during COMMIT had committed; not running it again")
                return self._unknown.result
            if status == "in progress":
                raise _StillCommitting
            # aborted, or too old for the server to know (NULL): it left no trace
            self._unknown = None
        try:
            return await self._executor.write_once(self._op)
        except _CommitUnknown as unknown:
            self._unknown = unknown
            raise


class PostgresExecutor:
    """Runs operations on pooled asyncpg connections (through SQLAlchemy's async engine).

    Each read takes a pooled connection; each write is its own transaction, retried up to
    three times with jitter on a serialization failure or deadlock. Concurrency comes from
    the pool; nothing is grouped. A call that loses its connection is retried (see the
    module docstring).

    Args:
        url: the ``postgresql+asyncpg://`` URL.
        pool_size: pooled connections (as many again may overflow under load).
        echo: log every SQL statement.
        outage_grace: seconds a call keeps retrying a lost connection before it raises
            ``StoreUnavailable``.
    """

    def __init__(self, url: str, *, pool_size: int, echo: bool, outage_grace: float) -> None:
        self._url = url
        self._pool_size = pool_size
        self._echo = echo
        self._grace = outage_grace
        self._engine: AsyncEngine | None = None
        self._closed = asyncio.Event()
        self._outage_since: float | None = None  # when a call first lost its connection

    async def open(self) -> None:
        """Create the pool and make one connection, so that start-up fails fast and clearly.

        Raises:
            StoreError: the server cannot be reached; the message names the host and cause.
        """
        self._closed = asyncio.Event()
        self._engine = create_async_engine(
            self._url,
            echo=self._echo,
            pool_size=self._pool_size,
            max_overflow=self._pool_size,
            pool_timeout=30,
            pool_pre_ping=True,
            connect_args={"timeout": _CONNECT_TIMEOUT_S, "command_timeout": _COMMAND_TIMEOUT_S},
        )
        try:
            async with self._engine.connect():
                pass
        except DATABASE_ERRORS as exc:
            await self._engine.dispose()
            self._engine = None
            raise StoreError(describe_open_failure(self._url, exc)) from exc

    def read(self, op: Op) -> Awaitable[Any]:
        """Run ``op`` on a pooled connection, retried through a brief outage."""
        return self._retrying(lambda: self._read_once(op), until_closed=False)

    def write(self, op: Op, *, until_closed: bool = False) -> Awaitable[Any]:
        """Run ``op`` in its own transaction; the result comes after its ``COMMIT``.

        Retried on serialization failure or deadlock, and through an outage: for the grace
        period, or with ``until_closed`` until it lands or :meth:`close` is called.

        Raises:
            StoreUnavailable: the database stayed unreachable (nothing was written).
        """
        return self._retrying(_Write(self, op).attempt, until_closed=until_closed)

    async def close_writes(self) -> None:
        """Nothing to flush: every write commits before its call returns."""

    async def close(self) -> None:
        """Stop the calls still retrying an outage (they raise), then dispose of the pool."""
        self._closed.set()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    # --- one attempt --------------------------------------------------------------------

    def _live_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreUnavailable(0.0, "the store closed while the database was unreachable")
        return self._engine

    async def _read_once(self, op: Op) -> Any:
        async with self._live_engine().connect() as conn:
            return await conn.run_sync(op)

    async def write_once(self, op: Op) -> Any:
        """Run ``op`` in one transaction.

        Raises:
            _CommitUnknown: the connection was lost during ``COMMIT`` (with the result and
                the transaction id, to ask the server what became of it).
        """

        def run(conn: Connection) -> tuple[int, Any]:
            xid = int(conn.execute(_TXID).scalar_one())
            return xid, op(conn)

        async with self._live_engine().connect() as conn:
            transaction = await conn.begin()
            xid, result = await conn.run_sync(run)
            try:
                await transaction.commit()
            except DATABASE_ERRORS as exc:
                if is_connection_failure(exc):
                    raise _CommitUnknown(xid, result) from exc
                raise
            return result

    async def transaction_status(self, xid: int) -> str | None:
        """``committed``, ``aborted``, ``in progress``, or ``None`` when the server forgot."""
        async with self._live_engine().connect() as conn:
            status: str | None = (await conn.execute(_TXID_STATUS, {"xid": xid})).scalar_one()
            return status

    # --- retrying -----------------------------------------------------------------------

    async def _retrying(self, attempt: Callable[[], Awaitable[Any]], *, until_closed: bool) -> Any:
        loop = asyncio.get_running_loop()
        started = loop.time()
        backoff = _FIRST_BACKOFF_S
        conflicts = 0
        while True:
            try:
                result = await attempt()
            except _StillCommitting:
                pass
            except (*DATABASE_ERRORS, _CommitUnknown) as exc:
                if _is_conflict(exc) and conflicts < _CONFLICT_RETRIES - 1:
                    conflicts += 1
                    _log.info("retrying a write after a conflict (attempt %d)", conflicts)
                    await asyncio.sleep(random.uniform(0.01, 0.05) * conflicts)
                    continue
                if not isinstance(exc, _CommitUnknown) and not is_connection_failure(exc):
                    raise
                self._log_outage(exc)
            else:
                if self._outage_since is not None:
                    _log.warning(
                        "the database is reachable again after %.1fs",
                        loop.time() - self._outage_since,
                    )
                    self._outage_since = None
                return result
            waited = loop.time() - started
            left = None if until_closed else self._grace - waited
            if self._closed.is_set() or (left is not None and left <= 0):
                raise StoreUnavailable(waited)
            delay = backoff * random.uniform(0.5, 1.5)
            if left is not None:
                delay = min(delay, left)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            with contextlib.suppress(TimeoutError):  # close() wakes it: the call gives up
                await asyncio.wait_for(self._closed.wait(), delay)

    def _log_outage(self, exc: BaseException) -> None:
        if self._outage_since is not None:
            _log.debug("still no database connection", exc_info=exc)
            return
        self._outage_since = asyncio.get_running_loop().time()
        _log.warning(
            "lost the database connection (%s); retrying calls for up to %gs",
            _cause(exc),
            self._grace,
        )


def _cause(exc: BaseException) -> str:
    """A short, body-free name for a connection failure, for the log."""
    inner = exc
    for _ in range(8):  # the driver's own exception is at the end of the chain
        following: BaseException | None = inner.orig if isinstance(inner, DBAPIError) else None
        following = following or inner.__cause__
        if following is None:
            break
        inner = following
    return type(inner).__name__
