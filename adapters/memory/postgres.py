"""The PostgreSQL runtime of the SQL store: an asyncpg pool, group-committed writes.

Writes:
    Every write is queued to a few writer lanes (tasks). A free lane takes the writes queued
    while the others were busy and runs them in order as one transaction (group commit), so
    that many conversations share one ``BEGIN``/``COMMIT``, one connection checkout and one
    WAL flush instead of paying for them each. A caller's future resolves only after the
    ``COMMIT`` that holds its rows. When one operation of a group fails (a duplicate platform
    id, say), the group is rolled back and replayed with each operation in its own
    ``SAVEPOINT``, so the failure reaches only its own caller. A group that meets a deadlock
    or serialization failure (another process wrote the same rows) is committed again one
    write at a time, each retried as such. Reads take a pooled connection each.

Outages:
    A call that loses its connection (refused, reset, closed by a restarting server) is
    retried with exponential backoff and jitter while the pool reconnects: SQLAlchemy
    invalidates the broken connections, and ``pool_pre_ping`` replaces any stale one at the
    next checkout. After ``outage_grace`` seconds the call raises
    :class:`core.errors.StoreUnavailable`; a write given ``until_closed=True`` (a reply the
    user has already seen) keeps trying until it lands or the executor is closed.

The ambiguous commit:
    A connection lost while ``COMMIT`` was in flight may or may not have committed. Every
    transaction of writes records its id first (``txid_current()``); after such a loss the
    executor asks the server, once it is back, what became of that transaction
    (``txid_status``, made for exactly this): committed means each call of the group returns
    the result it had computed, aborted means the group is run again. So a retried write is
    applied exactly once, whatever it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.memory.executor import (
    DATABASE_ERRORS,
    Op,
    OpFailed,
    Outcome,
    describe_open_failure,
    run_group,
    run_group_isolated,
    settle,
)
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
_LANES: Final = 2
"""Writer lanes: groups committing at once (each holds one pooled connection meanwhile)."""
_MAX_GROUP: Final = 256
"""Most writes committed in one PostgreSQL transaction."""
_LANE_STOP_WAIT_S: Final = 10.0


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


def _fatal_to_group(exc: BaseException) -> bool:
    """Whether ``exc`` ends the whole group's transaction (rather than one operation's)."""
    return _is_conflict(exc) or is_connection_failure(exc)


class _CommitUnknown(Exception):
    """The connection was lost during ``COMMIT``: the transaction may have committed."""

    def __init__(self, xid: int, result: Any) -> None:
        super().__init__(f"connection lost while transaction {xid} was committing")
        self.xid = xid
        self.result = result


class _StillCommitting(Exception):
    """The server still shows the transaction in progress; ask again shortly."""


@dataclass(slots=True, eq=False)
class _Queued:
    """A write waiting for its group's ``COMMIT``."""

    op: Op
    future: asyncio.Future[Any]
    until_closed: bool
    since: float
    outcome: Outcome | None = None  # what it came to in a transaction cut off in COMMIT


class _Single:
    """One write run on its own: its operation and what is known of its last attempt."""

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
            return await self._executor.transaction(self._op)
        except _CommitUnknown as unknown:
            self._unknown = unknown
            raise


class PostgresExecutor:
    """Runs operations on pooled asyncpg connections (through SQLAlchemy's async engine).

    Each read takes a pooled connection. Writes are group-committed by a few writer lanes
    (see the module docstring); a group meeting a serialization failure or deadlock is
    committed again one write at a time, each retried up to three times with jitter. A call
    that loses its connection is retried through the outage.

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
        self._queue: asyncio.Queue[_Queued | None] = asyncio.Queue()
        self._lanes: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        """Create the pool, make one connection (start-up fails fast and clearly), start lanes.

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
        self._queue = asyncio.Queue()
        self._lanes = [
            asyncio.create_task(self._lane(), name=f"chinwag-store-writer-{n}")
            for n in range(_LANES)
        ]
        for lane in self._lanes:
            lane.add_done_callback(self._lane_done)

    def read(self, op: Op) -> Awaitable[Any]:
        """Run ``op`` on a pooled connection, retried through a brief outage."""
        return self._retrying(lambda: self._read_once(op), until_closed=False)

    def write(self, op: Op, *, until_closed: bool = False) -> Awaitable[Any]:
        """Queue ``op`` for a writer lane; the future resolves after its group's ``COMMIT``.

        Retried through an outage: for the grace period, or with ``until_closed`` until it
        lands or :meth:`close` is called.

        Raises:
            StoreError: the writer lanes stopped.
            StoreUnavailable: the database stayed unreachable (nothing was written).
        """
        if not any(not lane.done() for lane in self._lanes):
            raise StoreError("the store's writer stopped; restart the bot")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put_nowait(_Queued(op, future, until_closed, loop.time()))
        return future

    async def close_writes(self) -> None:
        """Let the lanes commit what is queued, then stop them (without waiting here).

        The store waits for its calls in flight (``close_timeout``) before :meth:`close`,
        which ends the retries of any group still waiting out an outage.
        """
        if self._lanes:
            self._queue.put_nowait(None)

    async def close(self) -> None:
        """Stop the calls still retrying an outage (they raise), then dispose of the pool."""
        self._closed.set()
        lanes, self._lanes = self._lanes, []
        if lanes:
            self._queue.put_nowait(None)
            _, running = await asyncio.wait(lanes, timeout=_LANE_STOP_WAIT_S)
            for lane in running:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        self._fail_queued(StoreError("SqlMemoryStore is closed"))
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

    async def transaction(self, body: Op) -> Any:
        """Run ``body`` in one transaction and commit it; its result after the ``COMMIT``.

        Raises:
            _CommitUnknown: the connection was lost during ``COMMIT`` (with the result and
                the transaction id, to ask the server what became of it).
        """

        def run(conn: Connection) -> tuple[int, Any]:
            xid = int(conn.execute(_TXID).scalar_one())
            return xid, body(conn)

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

    # --- the writer lanes ---------------------------------------------------------------

    async def _lane(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            if item is None:  # stopping: commit what is still queued, then tell the next lane
                rest = [w for w in _drain(queue) if w is not None]
                for start in range(0, len(rest), _MAX_GROUP):
                    await self._commit(rest[start : start + _MAX_GROUP])
                queue.put_nowait(None)
                return
            group = [item]
            while len(group) < _MAX_GROUP and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    queue.put_nowait(None)  # after this group, in this lane or another
                    break
                group.append(nxt)
            await self._commit(group)

    def _lane_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._fail_queued(StoreError("the store's writer was cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            _log.error("a writer lane of the store died", exc_info=exc)
            self._fail_queued(StoreError("the store's writer stopped"))

    def _fail_queued(self, error: BaseException) -> None:
        for item in _drain(self._queue):
            if item is not None:
                settle(item.future, error=error)

    async def _commit(self, group: list[_Queued]) -> None:
        """Commit ``group`` in one transaction; settle each caller after the ``COMMIT``.

        Never raises (but ``CancelledError``): every caller gets its result or its error.
        """
        loop = asyncio.get_running_loop()
        isolated = False
        backoff = _FIRST_BACKOFF_S
        unknown: int | None = None  # the id of an attempt whose COMMIT was cut off
        outcomes: Sequence[Outcome | None]
        try:
            while True:
                group = [w for w in group if not w.future.done()]  # a cancelled caller
                if not group:
                    return
                try:
                    if unknown is not None and await self._committed(unknown):
                        _log.info("a group cut off during COMMIT had committed; not rerunning it")
                        outcomes = [w.outcome for w in group]
                    else:
                        unknown = None
                        outcomes = await self._group_once(group, isolated=isolated)
                except OpFailed as failed:
                    if len(group) == 1:
                        settle(group[0].future, error=failed.error)
                        return
                    _log.debug("operation %d failed; replaying the group isolated", failed.index)
                    isolated = True
                    continue
                except _StillCommitting:
                    pass
                except (*DATABASE_ERRORS, _CommitUnknown) as exc:
                    if isinstance(exc, _CommitUnknown):
                        unknown = exc.xid
                        for w, outcome in zip(group, exc.result, strict=True):
                            w.outcome = outcome
                    elif _is_conflict(exc):
                        _log.info("a group of %d writes met a conflict; one by one", len(group))
                        await self._one_by_one(group)
                        return
                    elif not is_connection_failure(exc):
                        for w in group:
                            settle(w.future, error=exc)
                        return
                    self._log_outage(exc)
                except Exception as exc:  # the store closed under it, say
                    for w in group:
                        settle(w.future, error=exc)
                    return
                else:
                    self._reachable()
                    for w, outcome in zip(group, outcomes, strict=True):
                        _settle_outcome(w.future, outcome)
                    return
                group, left = self._give_up_expired(group, loop.time())
                if not group:
                    return
                delay = backoff * random.uniform(0.5, 1.5)
                if left is not None:
                    delay = min(delay, left)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                with contextlib.suppress(TimeoutError):  # close() wakes it: the calls give up
                    await asyncio.wait_for(self._closed.wait(), delay)
        except asyncio.CancelledError:
            for w in group:
                settle(w.future, error=StoreError("the store was shut down mid-write"))
            raise

    async def _group_once(self, group: list[_Queued], *, isolated: bool) -> list[Outcome]:
        ops = [w.op for w in group]
        runner = run_group_isolated if isolated else run_group
        outcomes: list[Outcome] = await self.transaction(
            lambda conn: runner(conn, ops, _fatal_to_group)
        )
        return outcomes

    async def _committed(self, xid: int) -> bool:
        """Whether transaction ``xid`` committed (``False``: it left no trace)."""
        status = await self.transaction_status(xid)
        if status == "in progress":
            raise _StillCommitting
        return status == "committed"  # else aborted, or too old for the server to know

    async def _one_by_one(self, group: list[_Queued]) -> None:
        """Commit each write of ``group`` in its own transaction, in order."""
        for w in group:
            if w.future.done():
                continue
            try:
                result = await self._retrying(
                    _Single(self, w.op).attempt, until_closed=w.until_closed
                )
            except Exception as exc:
                settle(w.future, error=exc)
            else:
                settle(w.future, result=result)

    def _give_up_expired(
        self, group: list[_Queued], now: float
    ) -> tuple[list[_Queued], float | None]:
        """Fail the writes whose grace ran out (all once closed); keep the others.

        Returns the writes kept, and the seconds until the next one's grace runs out.
        """
        kept: list[_Queued] = []
        left: float | None = None
        for w in group:
            waited = now - w.since
            if self._closed.is_set() or (not w.until_closed and waited >= self._grace):
                settle(w.future, error=StoreUnavailable(waited))
                continue
            kept.append(w)
            if not w.until_closed:
                remaining = self._grace - waited
                left = remaining if left is None else min(left, remaining)
        return kept, left

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
                self._reachable()
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

    def _reachable(self) -> None:
        if self._outage_since is not None:
            _log.warning(
                "the database is reachable again after %.1fs",
                asyncio.get_running_loop().time() - self._outage_since,
            )
            self._outage_since = None

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


def _drain(queue: asyncio.Queue[_Queued | None]) -> list[_Queued | None]:
    items: list[_Queued | None] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _settle_outcome(future: asyncio.Future[Any], outcome: Outcome | None) -> None:
    if outcome is None:  # cannot happen: a committed group computed every outcome
        settle(future, error=StoreError("a write's result was lost"))
    elif outcome[0]:
        settle(future, result=outcome[1])
    else:
        settle(future, error=outcome[1])
