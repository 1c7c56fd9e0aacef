"""The SQLite runtime of the SQL store: one writer thread with group commit, reader threads.

Writes:
    Every write is queued to one writer task. It takes the operations queued while the
    previous transaction committed and runs them as one transaction (group commit) on the
    writer's own thread and sqlite3 connection: one thread hop per group, rather than
    aiosqlite's several per statement, which is what lets one process commit thousands of
    messages a second on two cores. A caller's future resolves only after the ``COMMIT``
    that holds its rows. When one operation of a group fails, the group is rolled back and
    replayed with each operation in its own ``SAVEPOINT``, so the failure reaches only its
    own caller. Transactions start with ``BEGIN IMMEDIATE`` and the connection has a busy
    timeout, and a group that still finds the file locked (another process writing) is
    retried with backoff, so "database is locked" does not reach a user.

Reads:
    Pooled sqlite3 connections used from a small pool of reader threads, each read in one
    thread hop; in WAL mode readers never wait for the writer.

aiosqlite is not used at run time: the ``sqlite+aiosqlite`` URL only names the database
(and is what Alembic and the tests use); both engines here are SQLAlchemy's sync engine on
the sqlite3 module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, create_engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool, QueuePool

from adapters.files import private_sqlite
from adapters.memory.executor import (
    Op,
    OpFailed,
    Outcome,
    describe_open_failure,
    run_group,
    run_group_isolated,
    settle,
)
from core.errors import StoreError

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_MAX_GROUP: Final = 512
"""Most operations committed in one SQLite transaction."""
_BUSY_TIMEOUT_MS: Final = 10_000
_LOCKED_RETRY_FOR_S: Final = 60.0
"""How long a group keeps retrying while another process holds the SQLite write lock."""
_CONNECT_ERRORS: Final = (SQLAlchemyError, OSError, sqlite3.Error)


@dataclass(slots=True)
class _Write:
    op: Op
    future: asyncio.Future[Any]


class SqliteExecutor:
    """Runs operations on a SQLite file: group-committed writes, threaded reads.

    Args:
        url: the ``sqlite+aiosqlite:///`` URL of the file (the schema must exist).
        readers: reader threads and pooled read connections.
        echo: log every SQL statement.
    """

    def __init__(self, url: str, *, readers: int, echo: bool) -> None:
        self._sync_url = url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1)
        self._readers = readers
        self._echo = echo
        self._reader_engine: Engine | None = None
        self._reader_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._writer_engine: Engine | None = None
        self._writer_conn: Connection | None = None
        self._writer_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the writer connection (WAL) and the read pool; start the writer task.

        Raises:
            StoreError: the file cannot be opened.
        """
        database = make_url(self._sync_url).database
        if database and database != ":memory:":
            try:  # 0600 before SQLite opens it: its WAL and SHM files take the same mode
                private_sqlite(Path(database))
            except OSError as exc:
                raise StoreError(describe_open_failure(self._sync_url, exc)) from exc
        self._writer_engine = create_engine(self._sync_url, echo=self._echo, poolclass=NullPool)
        _configure(self._writer_engine, writer=True)
        self._reader_engine = create_engine(
            self._sync_url,
            echo=self._echo,
            poolclass=QueuePool,
            pool_size=self._readers,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"check_same_thread": False},
        )
        _configure(self._reader_engine, writer=False)
        self._reader_threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._readers, thread_name_prefix="chinwag-store-reader"
        )
        self._writer_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="chinwag-store-writer"
        )
        try:
            self._writer_conn = await self._in_writer_thread(self._writer_engine.connect)
        except _CONNECT_ERRORS as exc:
            raise StoreError(describe_open_failure(self._sync_url, exc)) from exc
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._writer_loop(), name="chinwag-store-writer")
        self._writer_task.add_done_callback(self._writer_done)

    async def close_writes(self) -> None:
        """Let the writer commit what is queued, then close the writer connection."""
        if self._writer_task is not None:
            if not self._writer_task.done():
                self._queue.put_nowait(None)
                with contextlib.suppress(Exception):  # already logged by _writer_done
                    await self._writer_task
            self._writer_task = None
        self._fail_queued(RuntimeError("SqlMemoryStore is closed"))
        if self._writer_conn is not None:
            try:
                await self._in_writer_thread(self._writer_conn.close)
            except _CONNECT_ERRORS:
                _log.warning("closing the writer connection failed", exc_info=True)
            self._writer_conn = None
        if self._writer_engine is not None:
            self._writer_engine.dispose()
            self._writer_engine = None
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=False)
            self._writer_thread = None

    async def close(self) -> None:
        """Close the read pool and its threads (after ``close_writes``)."""
        await self.close_writes()
        if self._reader_engine is not None:
            self._reader_engine.dispose()
            self._reader_engine = None
        if self._reader_threads is not None:
            self._reader_threads.shutdown(wait=False)
            self._reader_threads = None

    # --- running operations -------------------------------------------------------------

    def read(self, op: Op) -> asyncio.Future[Any]:
        """Run ``op`` on a pooled read connection, in one hop to a reader thread."""
        return asyncio.get_running_loop().run_in_executor(self._reader_threads, self._read, op)

    def _read(self, op: Op) -> Any:
        assert self._reader_engine is not None
        with self._reader_engine.connect() as conn:
            return op(conn)

    def write(self, op: Op, *, until_closed: bool = False) -> asyncio.Future[Any]:
        """Queue ``op`` for the writer; the future resolves after the group's ``COMMIT``.

        ``until_closed`` changes nothing here: a SQLite file has no outages to wait out (a
        file locked by another process is retried anyway, see :meth:`_commit_group`).

        Raises:
            StoreError: the writer task stopped.
        """
        if self._writer_task is None or self._writer_task.done():
            raise StoreError("the store's writer stopped; restart the bot")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(op, future))
        return future

    async def _in_writer_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._writer_thread is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, fn, *args)

    def _fail_queued(self, error: BaseException) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item.future.done():
                item.future.set_exception(error)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._fail_queued(StoreError("the store's writer was cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            _log.error("the store's writer task died", exc_info=exc)
            self._fail_queued(StoreError("the store's writer stopped"))

    # --- the writer ---------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        queue = self._queue
        stopping = False
        while not stopping:
            item = await queue.get()
            if item is None:
                break
            group = [item]
            while len(group) < _MAX_GROUP and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            # A caller cancelled before its turn gets nothing written.
            group = [w for w in group if not w.future.done()]
            if group:
                await self._commit_group(group)
            if stopping:
                # Flush what was queued behind the stop marker by callers already waiting.
                rest: list[_Write] = []
                while not queue.empty():
                    nxt = queue.get_nowait()
                    if nxt is not None and not nxt.future.done():
                        rest.append(nxt)
                for start in range(0, len(rest), _MAX_GROUP):
                    await self._commit_group(rest[start : start + _MAX_GROUP])

    async def _commit_group(self, group: list[_Write]) -> None:
        """Commit ``group`` in one transaction; resolve each future after the commit.

        If an operation fails, the group is replayed with each operation in a SAVEPOINT so
        that only the failing caller gets the error. While another process holds the write
        lock (beyond the busy timeout) the group is retried with backoff.
        """
        ops = [w.op for w in group]
        isolated = False
        deadline = asyncio.get_running_loop().time() + _LOCKED_RETRY_FOR_S
        delay = 0.05
        while True:
            if self._writer_conn is None and not await self._reconnect_writer():
                for w in group:
                    settle(w.future, error=StoreError("cannot open the database for writing"))
                return
            conn = self._writer_conn
            try:
                outcomes = await self._in_writer_thread(_run_group, conn, ops, isolated)
            except OpFailed as failed:
                if len(group) == 1:
                    settle(group[0].future, error=failed.error)
                    return
                _log.debug("operation %d failed; replaying the group isolated", failed.index)
                isolated = True
                continue
            except asyncio.CancelledError:
                for w in group:
                    settle(w.future, error=StoreError("the store was shut down mid-write"))
                raise
            except Exception as exc:
                if _is_locked(exc) and asyncio.get_running_loop().time() < deadline:
                    _log.warning("database file locked by another process; retrying")
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 2.0)
                    continue
                for w in group:
                    settle(w.future, error=exc)
                await self._reconnect_writer()
                return
            for w, (ok, value) in zip(group, outcomes, strict=True):
                if ok:
                    settle(w.future, result=value)
                else:
                    settle(w.future, error=value)
            return

    async def _reconnect_writer(self) -> bool:
        """Replace the writer connection after a failure outside any single operation.

        Returns whether a connection is open; never raises (the next group tries again).
        """
        assert self._writer_engine is not None
        old, self._writer_conn = self._writer_conn, None
        if old is not None:
            try:
                await self._in_writer_thread(old.invalidate)
            except _CONNECT_ERRORS:
                _log.debug("invalidating the old writer connection failed", exc_info=True)
        try:
            self._writer_conn = await self._in_writer_thread(self._writer_engine.connect)
        except _CONNECT_ERRORS:
            _log.error("cannot reopen the SQLite writer connection", exc_info=True)
            return False
        return True


# --- run in the writer thread -----------------------------------------------------------------


def _run_group(conn: Connection, ops: Sequence[Op], isolated: bool) -> list[Outcome]:
    """Run ``ops`` in one transaction (each in a SAVEPOINT if ``isolated``) and commit."""
    with conn.begin():
        if isolated:
            return run_group_isolated(conn, ops, _is_locked)
        return run_group(conn, ops, _is_locked)


def _configure(engine: Engine, *, writer: bool) -> None:
    """Configure SQLite connections of ``engine``: WAL, pragmas, SQLAlchemy-emitted BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, decides where transactions begin, so that
        # SAVEPOINTs nest properly and the writer takes the lock up front (BEGIN IMMEDIATE:
        # a deferred transaction upgrading to a writer could fail without waiting).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if writer:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin)


def _is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked/busy" (another process writes)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text
