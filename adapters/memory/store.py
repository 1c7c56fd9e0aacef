"""``SqlMemoryStore``: the dialogue memory on SQLite (embedded default) or PostgreSQL.

Writes:
    On SQLite every write goes through one writer task. It takes the operations queued while
    the previous transaction committed and commits them together (group commit): a caller's
    awaitable resolves only after the ``COMMIT`` that holds its rows. The group runs on the
    writer's own thread and connection (the sqlite3 driver, as aiosqlite would, but with one
    thread hop per group rather than several per statement, which is what lets one process
    commit thousands of messages a second on two cores). When one operation of a group
    fails, the group is rolled back and replayed with each operation in its own
    ``SAVEPOINT``, so the failure reaches only its own caller.
    Transactions start with ``BEGIN IMMEDIATE`` and the connection has a busy timeout, and
    a group that still finds the file locked (another process writing) is retried with
    backoff, so "database is locked" does not reach a user.
    On PostgreSQL each write is its own transaction from an asyncpg pool, retried on
    deadlock or serialization failure.

Reads:
    On SQLite, pooled sqlite3 connections used from a small pool of reader threads, each read
    in one thread hop; in WAL mode readers never wait for the writer. On PostgreSQL, the
    asyncpg pool.

Every vendor exception is translated into :class:`core.errors.StoreError` in
:meth:`SqlMemoryStore._call`, the one boundary, ``from`` the original.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import random
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, NamedTuple, TypeVar, cast

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from adapters.memory.models import (
    ConversationRow,
    MessageRow,
    MetaRow,
    PlatformMessageRow,
    PreferencesRow,
    UsageDailyRow,
)
from adapters.memory.settings import normalize_database_url, render_url
from core.errors import DuplicateMessage, StoreError
from core.types import (
    Conversation,
    ConversationKey,
    ExportedConversation,
    MessageStatus,
    NewMessage,
    PlatformStats,
    Preferences,
    Role,
    StoredMessage,
    UsageRecord,
    UsageSummary,
)

_log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Op = Callable[[Connection], Any]

_conversations: Final = cast(Table, ConversationRow.__table__)
_messages: Final = cast(Table, MessageRow.__table__)
_platform_messages: Final = cast(Table, PlatformMessageRow.__table__)
_preferences: Final = cast(Table, PreferencesRow.__table__)
_usage: Final = cast(Table, UsageDailyRow.__table__)
_meta: Final = cast(Table, MetaRow.__table__)

_USAGE_SECRET_KEY: Final = "usage_key_secret"
_USABLE: Final = (MessageStatus.COMPLETE.value, MessageStatus.INTERRUPTED.value)

_MAX_GROUP: Final = 512
"""Most operations committed in one SQLite transaction."""
_SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
_LOCKED_RETRY_FOR_S: Final = 60.0
"""How long a group keeps retrying while another process holds the SQLite write lock."""
_SHUTDOWN_WAIT_S: Final = 30.0
_PG_CONNECT_TIMEOUT_S: Final = 15.0
_PG_COMMAND_TIMEOUT_S: Final = 60.0
_PG_RETRIES: Final = 3
_PG_RETRY_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization, deadlock


class _OpFailed(Exception):
    """An operation of a group raised ``error`` (not the transaction around it)."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"operation {index} of the group failed")
        self.index = index
        self.error = error


@dataclass(slots=True)
class _Write:
    op: _Op
    future: asyncio.Future[Any]


def _slot(key: ConversationKey) -> tuple[str, str, str, str, str]:
    return (key.bot, key.platform, key.chat_id, key.thread_id or "", key.user_id or "")


def _slot_filter(table: Table, key: ConversationKey) -> Any:
    bot, platform, chat_id, thread_id, user_id = _slot(key)
    return and_(
        table.c.bot == bot,
        table.c.platform == platform,
        table.c.chat_id == chat_id,
        table.c.thread_id == thread_id,
        table.c.user_id == user_id,
    )


def _conversation(row: Any) -> Conversation:
    key = ConversationKey(
        bot=row.bot,
        platform=row.platform,
        chat_id=row.chat_id,
        thread_id=row.thread_id or None,
        user_id=row.user_id or None,
    )
    return Conversation(id=row.id, key=key, created_at=row.created_at)


_MESSAGE_COLUMNS: Final = (
    _messages.c.id,
    _messages.c.conversation_id,
    _messages.c.seq,
    _messages.c.role,
    _messages.c.content,
    _messages.c.author_id,
    _messages.c.status,
    _messages.c.token_count,
    _messages.c.tokenizer,
    _messages.c.extra,
    _messages.c.created_at,
)

_CONVERSATION_COLUMNS: Final = (
    _conversations.c.id,
    _conversations.c.bot,
    _conversations.c.platform,
    _conversations.c.chat_id,
    _conversations.c.thread_id,
    _conversations.c.user_id,
    _conversations.c.created_at,
)


def _stored(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        role=Role(row.role),
        content=row.content,
        author_id=row.author_id,
        status=MessageStatus(row.status),
        token_count=row.token_count,
        tokenizer=row.tokenizer,
        extra=row.extra,
        created_at=row.created_at,
    )


def _is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked/busy" (another process writes)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text


def _describe(exc: BaseException) -> str:
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


class SqlMemoryStore:
    """The ``MemoryStore`` port on SQLAlchemy's async engine (aiosqlite or asyncpg).

    The schema must exist (``adapters.memory.migrate.upgrade(url)``) before ``start()``.

    Args:
        url: the database URL; plain ``sqlite:///…`` / ``postgresql://…`` are accepted and
            given their async driver.
        pool_size: read connections (SQLite, default 4) or pool size (PostgreSQL,
            default 10).
        echo: log every SQL statement (debugging only: it shows message bodies).
        clock: the source of "now" (tz-aware; stored as UTC) for timestamps; for tests.

    Raises:
        ConfigError: ``url`` is not a SQLite or PostgreSQL URL (names ``DATABASE_URL``).
        ValueError: ``pool_size`` is below 1.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int | None = None,
        echo: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._url = normalize_database_url(url)
        self._sqlite = self._url.startswith("sqlite")
        if pool_size is not None and pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._pool_size = pool_size
        self._echo = echo
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lifecycle = asyncio.Lock()
        self._started = False
        self._closing = False
        self._closed = False
        self._engine: AsyncEngine | None = None  # PostgreSQL
        self._reader_engine: Engine | None = None  # SQLite reads
        self._reader_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._writer_engine: Engine | None = None
        self._writer_conn: Connection | None = None
        self._writer_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._usage_secret = b""
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def __repr__(self) -> str:
        return f"SqlMemoryStore({render_url(self._url)!r})"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, start the SQLite writer and load the usage pseudonym secret. Idempotent.

        Raises:
            RuntimeError: after ``aclose()``.
            StoreError: the database cannot be reached or has no schema.
        """
        async with self._lifecycle:
            if self._closed or self._closing:
                raise RuntimeError("SqlMemoryStore is closed; create a new one")
            if self._started:
                return
            try:
                await self._open()
                self._started = True
                self._usage_secret = await self._call(self._ensure_secret, write=True)
            except BaseException:
                self._started = False
                await self._shutdown()
                raise
            _log.info("memory store connected to %s", render_url(self._url))

    async def aclose(self) -> None:
        """Commit the writes already queued, then close every connection. Idempotent."""
        async with self._lifecycle:
            if self._closed:
                return
            self._closing = True
            await self._shutdown()
            self._closed = True
            self._started = False

    async def __aenter__(self) -> SqlMemoryStore:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _open(self) -> None:
        if self._sqlite:
            self._writer_engine = self._sqlite_writer_engine()
            readers = self._pool_size or 4
            self._reader_engine = self._sqlite_reader_engine(pool_size=readers)
            self._reader_threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=readers, thread_name_prefix="chinwag-store-reader"
            )
            self._writer_thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="chinwag-store-writer"
            )
            try:
                self._writer_conn = await self._in_writer_thread(self._writer_engine.connect)
            except (SQLAlchemyError, OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot open {render_url(self._url)}: {_describe(exc)}") from exc
            self._queue = asyncio.Queue()
            self._writer_task = asyncio.create_task(
                self._writer_loop(), name="chinwag-store-writer"
            )
            self._writer_task.add_done_callback(self._writer_done)
        else:
            size = self._pool_size or 10
            self._engine = create_async_engine(
                self._url,
                echo=self._echo,
                pool_size=size,
                max_overflow=size,
                pool_timeout=30,
                pool_pre_ping=True,
                connect_args={
                    "timeout": _PG_CONNECT_TIMEOUT_S,
                    "command_timeout": _PG_COMMAND_TIMEOUT_S,
                },
            )

    def _sqlite_writer_engine(self) -> Engine:
        """The writer's sync engine (sqlite3), used only from the writer thread."""
        sync_url = self._url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1)
        engine = create_engine(sync_url, echo=self._echo, poolclass=NullPool)
        _sqlite_transactions(engine, writer=True)
        return engine

    def _sqlite_reader_engine(self, *, pool_size: int) -> Engine:
        """Sync (sqlite3) read connections, used from the reader threads only.

        A whole read runs in one hop to a reader thread, instead of aiosqlite's hop per
        statement and fetch: this is what keeps reads cheap under many conversations.
        """
        sync_url = self._url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1)
        engine = create_engine(
            sync_url,
            echo=self._echo,
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"check_same_thread": False},
        )
        _sqlite_transactions(engine, writer=False)
        return engine

    async def _in_writer_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._writer_thread is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, fn, *args)

    async def _shutdown(self) -> None:
        if self._writer_task is None:  # PostgreSQL: let calls in flight finish their commit
            try:
                await asyncio.wait_for(self._idle.wait(), _SHUTDOWN_WAIT_S)
            except TimeoutError:
                _log.warning("closing the store with %d call(s) still running", self._inflight)
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
            except (SQLAlchemyError, OSError, sqlite3.Error):
                _log.warning("closing the writer connection failed", exc_info=True)
            self._writer_conn = None
        if self._writer_engine is not None:
            self._writer_engine.dispose()
            self._writer_engine = None
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=False)
            self._writer_thread = None
        if self._engine is not None or self._reader_engine is not None:
            try:  # reads still running finish before their connections go
                await asyncio.wait_for(self._idle.wait(), _SHUTDOWN_WAIT_S)
            except TimeoutError:
                _log.warning("closing the store with %d call(s) still running", self._inflight)
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        if self._reader_engine is not None:
            self._reader_engine.dispose()
            self._reader_engine = None
        if self._reader_threads is not None:
            self._reader_threads.shutdown(wait=False)
            self._reader_threads = None

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

    # --- the one boundary ------------------------------------------------------------------

    async def _call(self, op: _Op, *, write: bool) -> Any:
        """Run ``op(sync_connection)`` for reading or in a committed write transaction.

        This is where driver and SQLAlchemy errors become ``StoreError``.
        """
        if not self._started or self._closing:
            state = "closed" if (self._closed or self._closing) else "not started"
            raise RuntimeError(f"SqlMemoryStore is {state}")
        self._inflight += 1
        self._idle.clear()
        try:
            if not write:
                return await self._read(op)
            if self._sqlite:
                if self._writer_task is None or self._writer_task.done():
                    raise StoreError("the store's writer stopped; restart the bot")
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._queue.put_nowait(_Write(op, future))
                return await future
            return await self._pg_write(op)
        except (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError) as exc:
            _log.debug("store operation failed", exc_info=True)
            raise StoreError(_describe(exc)) from exc
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _read(self, op: _Op) -> Any:
        if self._reader_engine is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._reader_threads, self._sync_read, op)
        assert self._engine is not None
        async with self._engine.connect() as conn:
            return await conn.run_sync(op)

    def _sync_read(self, op: _Op) -> Any:
        """Run ``op`` on a pooled SQLite read connection (in a reader thread)."""
        assert self._reader_engine is not None
        with self._reader_engine.connect() as conn:
            return op(conn)

    async def _pg_write(self, op: _Op) -> Any:
        assert self._engine is not None
        for attempt in range(1, _PG_RETRIES + 1):
            try:
                async with self._engine.begin() as conn:
                    return await conn.run_sync(op)
            except DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate not in _PG_RETRY_SQLSTATES or attempt == _PG_RETRIES:
                    raise
                _log.info("retrying a write after %s (attempt %d)", sqlstate, attempt)
                await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the SQLite writer -------------------------------------------------------------------

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
                    _settle(w.future, error=StoreError("cannot open the database for writing"))
                return
            conn = self._writer_conn
            try:
                if isolated:
                    outcomes = await self._in_writer_thread(_run_group_isolated, conn, ops)
                else:
                    results = await self._in_writer_thread(_run_group, conn, ops)
                    outcomes = [(True, result) for result in results]
            except _OpFailed as failed:
                if len(group) == 1:
                    _settle(group[0].future, error=failed.error)
                    return
                _log.debug("operation %d failed; replaying the group isolated", failed.index)
                isolated = True
                continue
            except asyncio.CancelledError:
                for w in group:
                    _settle(w.future, error=StoreError("the store was shut down mid-write"))
                raise
            except Exception as exc:
                if _is_locked(exc) and asyncio.get_running_loop().time() < deadline:
                    _log.warning("database file locked by another process; retrying")
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 2.0)
                    continue
                for w in group:
                    _settle(w.future, error=exc)
                await self._reconnect_writer()
                return
            for w, (ok, value) in zip(group, outcomes, strict=True):
                if ok:
                    _settle(w.future, result=value)
                else:
                    _settle(w.future, error=value)
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
            except (SQLAlchemyError, OSError, sqlite3.Error):
                _log.debug("invalidating the old writer connection failed", exc_info=True)
        try:
            self._writer_conn = await self._in_writer_thread(self._writer_engine.connect)
        except (SQLAlchemyError, OSError, sqlite3.Error):
            _log.error("cannot reopen the SQLite writer connection", exc_info=True)
            return False
        return True

    # --- conversations and messages ------------------------------------------------------

    async def current_conversation(self, key: ConversationKey) -> Conversation:
        """The newest conversation of ``key``, created if there is none."""
        found: Conversation | None = await self._call(
            lambda c: _newest_conversation(c, key), write=False
        )
        if found is not None:
            return found
        created: Conversation = await self._call(
            lambda c: self._create_conversation(c, key, only_if_missing=True), write=True
        )
        return created

    async def new_conversation(self, key: ConversationKey) -> Conversation:
        """Start a new conversation for ``key`` (``/reset``); older ones stay stored."""
        created: Conversation = await self._call(
            lambda c: self._create_conversation(c, key, only_if_missing=False), write=True
        )
        return created

    def _create_conversation(
        self, conn: Connection, key: ConversationKey, *, only_if_missing: bool
    ) -> Conversation:
        if conn.dialect.name == "postgresql":
            # Two processes creating the first conversation of one slot at once would make
            # two; a transaction-scoped lock on the slot serialises them.
            conn.execute(
                select(func.pg_advisory_xact_lock(func.hashtextextended(json.dumps(_slot(key)), 0)))
            )
        if only_if_missing:
            existing = _newest_conversation(conn, key)
            if existing is not None:
                return existing
        bot, platform, chat_id, thread_id, user_id = _slot(key)
        now = self._now()
        new_id = conn.execute(
            insert(_conversations)
            .values(
                bot=bot,
                platform=platform,
                chat_id=chat_id,
                thread_id=thread_id,
                user_id=user_id,
                last_seq=0,
                created_at=now,
            )
            .returning(_conversations.c.id)
        ).scalar_one()
        return Conversation(id=new_id, key=key, created_at=now)

    async def append_messages(
        self, conversation_id: int, messages: Sequence[NewMessage]
    ) -> list[StoredMessage]:
        """Append ``messages`` in order in one transaction, with consecutive sequence numbers.

        Platform message ids given in a ``NewMessage`` are recorded for it (in its
        ``platform_chat_id``, or the conversation's chat when that is ``None``).

        Raises:
            DuplicateMessage: one of the platform ids is already recorded (nothing of this
                call is stored); ``existing`` is the stored message it belongs to.
            StoreError: the conversation does not exist.
            ValueError: ``extra`` is not JSON-serialisable.
        """
        batch = tuple(messages)
        for message in batch:
            _check_extra(message.extra)
        if not batch:
            return []
        stored: list[StoredMessage] = await self._call(
            lambda c: self._append(c, conversation_id, batch), write=True
        )
        return stored

    def _append(
        self, conn: Connection, conversation_id: int, batch: Sequence[NewMessage]
    ) -> list[StoredMessage]:
        n = len(batch)
        raw = _sqlite_raw(conn)
        if raw is not None:
            row = raw.execute(_RAW_BUMP_SEQ, (n, conversation_id)).fetchone()
            row = _Place(*row) if row is not None else None
        else:
            row = conn.execute(_BUMP_SEQ, {"cid": conversation_id, "n": n}).one_or_none()
        if row is None:
            raise StoreError(f"conversation {conversation_id} does not exist")
        for m in batch:
            chat_id = m.platform_chat_id if m.platform_chat_id is not None else row.chat_id
            for pid in m.platform_message_ids:
                existing = _find_platform_message(conn, row.bot, row.platform, chat_id, pid)
                if existing is not None:  # a redelivery: the group's savepoint undoes the update
                    raise DuplicateMessage(existing)
        first_seq = row.last_seq - n + 1
        now = self._now()
        params = [
            {
                "conversation_id": conversation_id,
                "seq": first_seq + i,
                "role": Role(m.role).value,
                "author_id": m.author_id,
                "content": m.content,
                "extra": dict(m.extra) if m.extra is not None else None,
                "token_count": m.token_count,
                "tokenizer": m.tokenizer,
                "status": MessageStatus(m.status).value,
                "created_at": now,
            }
            for i, m in enumerate(batch)
        ]
        if raw is not None:
            stamp = _sqlite_time(now)
            ids = [
                raw.execute(
                    _RAW_INSERT_MESSAGE,
                    (
                        p["conversation_id"],
                        p["seq"],
                        p["role"],
                        p["author_id"],
                        p["content"],
                        json.dumps(p["extra"]) if p["extra"] is not None else None,
                        p["token_count"],
                        p["tokenizer"],
                        p["status"],
                        stamp,
                    ),
                ).fetchone()[0]
                for p in params
            ]
        elif n == 1:
            ids = [conn.execute(_INSERT_MESSAGE, params[0]).scalar_one()]
        else:
            ids = list(conn.execute(_INSERT_MESSAGES, params).scalars())
        platform_rows = [
            {
                "bot": row.bot,
                "platform": row.platform,
                "chat_id": m.platform_chat_id if m.platform_chat_id is not None else row.chat_id,
                "platform_message_id": pid,
                "message_id": message_id,
            }
            for m, message_id in zip(batch, ids, strict=True)
            for pid in m.platform_message_ids
        ]
        if platform_rows:
            _insert_platform_ids(conn, platform_rows)
        return [
            StoredMessage(
                id=message_id,
                conversation_id=conversation_id,
                seq=p["seq"],
                role=Role(p["role"]),
                content=p["content"],
                author_id=p["author_id"],
                status=MessageStatus(p["status"]),
                token_count=p["token_count"],
                tokenizer=p["tokenizer"],
                extra=p["extra"],
                created_at=now,
            )
            for message_id, p in zip(ids, params, strict=True)
        ]

    async def finish_message(
        self,
        message_id: int,
        *,
        content: str,
        status: MessageStatus,
        token_count: int | None = None,
        tokenizer: str | None = None,
        platform_chat_id: str | None = None,
        platform_message_ids: Sequence[str] = (),
        usage: UsageRecord | None = None,
    ) -> None:
        """Set the final content, status and token count of a message; record its platform ids.

        ``usage`` is added to the user's counters in the same transaction (even when the
        message was deleted meanwhile: the tokens were spent).

        A message deleted meanwhile (``forget_user`` while the reply streamed) is left
        deleted: nothing is written and no error is raised.

        Raises:
            StoreError: a platform id is already recorded (the message is left unchanged).
        """
        status_value = MessageStatus(status).value
        pids = tuple(platform_message_ids)
        usage_row = self._usage_row(usage) if usage is not None else None

        def op(conn: Connection) -> None:
            if usage_row is not None:
                _add_usage(conn, usage_row)
            raw = _sqlite_raw(conn)
            if raw is not None:
                found = raw.execute(
                    _RAW_FINISH, (content, status_value, token_count, tokenizer, message_id)
                ).fetchone()
                conversation_id = found[0] if found is not None else None
            else:
                conversation_id = conn.execute(
                    _FINISH,
                    {
                        "mid": message_id,
                        "content": content,
                        "status": status_value,
                        "token_count": token_count,
                        "tokenizer": tokenizer,
                    },
                ).scalar_one_or_none()
            if conversation_id is None:
                _log.info("message %s no longer exists; its final state is dropped", message_id)
                return
            if pids:
                conv = conn.execute(_CONVERSATION_PLACE, {"cid": conversation_id}).one()
                chat_id = platform_chat_id if platform_chat_id is not None else conv.chat_id
                _insert_platform_ids(
                    conn,
                    [
                        {
                            "bot": conv.bot,
                            "platform": conv.platform,
                            "chat_id": chat_id,
                            "platform_message_id": pid,
                            "message_id": message_id,
                        }
                        for pid in pids
                    ],
                )

        await self._call(op, write=True)

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_seq: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` usable messages, newest first, with ``seq < before_seq``.

        Usable means status complete or interrupted with non-empty content. A backward range
        scan of the (conversation_id, seq) key: the cost depends on ``limit`` only.
        """
        if limit <= 0:
            return []

        query = recent_messages_query(conversation_id, limit=limit, before_seq=before_seq)

        def op(conn: Connection) -> list[StoredMessage]:
            return [_stored(r) for r in conn.execute(query)]

        result: list[StoredMessage] = await self._call(op, write=False)
        return result

    async def find_by_platform_message(
        self, bot: str, platform: str, chat_id: str, platform_message_id: str
    ) -> StoredMessage | None:
        """The stored message a platform message id belongs to, if any."""
        result: StoredMessage | None = await self._call(
            lambda conn: _find_platform_message(conn, bot, platform, chat_id, platform_message_id),
            write=False,
        )
        return result

    async def reply_to(self, message: StoredMessage) -> StoredMessage | None:
        """The first assistant message after ``message`` in its conversation, if any."""

        def op(conn: Connection) -> StoredMessage | None:
            row = conn.execute(
                select(*_MESSAGE_COLUMNS)
                .where(
                    _messages.c.conversation_id == message.conversation_id,
                    _messages.c.seq > message.seq,
                    _messages.c.role == Role.ASSISTANT.value,
                )
                .order_by(_messages.c.seq)
                .limit(1)
            ).one_or_none()
            return _stored(row) if row is not None else None

        result: StoredMessage | None = await self._call(op, write=False)
        return result

    async def mark_interrupted(self, bot: str) -> int:
        """Mark ``bot``'s messages left in progress interrupted; return how many.

        Other bots sharing the database are not touched (they may be running).
        """

        def op(conn: Connection) -> int:
            result = conn.execute(
                update(_messages)
                .where(
                    _messages.c.status == MessageStatus.IN_PROGRESS.value,
                    _messages.c.conversation_id.in_(
                        select(_conversations.c.id).where(_conversations.c.bot == bot)
                    ),
                )
                .values(status=MessageStatus.INTERRUPTED.value)
            )
            return int(result.rowcount)

        count: int = await self._call(op, write=True)
        if count:
            _log.info("marked %d message(s) of bot %r interrupted", count, bot)
        return count

    # --- preferences -------------------------------------------------------------------------

    async def get_preferences(self, key: ConversationKey) -> Preferences:
        """The slot's preferences (defaults when none were saved)."""

        def op(conn: Connection) -> Preferences:
            row = conn.execute(
                select(_preferences.c.persona, _preferences.c.model).where(
                    _slot_filter(_preferences, key)
                )
            ).one_or_none()
            if row is None:
                return Preferences()
            return Preferences(persona=row.persona, model=row.model)

        result: Preferences = await self._call(op, write=False)
        return result

    async def save_preferences(self, key: ConversationKey, preferences: Preferences) -> None:
        """Replace the slot's preferences (they survive ``new_conversation``)."""
        bot, platform, chat_id, thread_id, user_id = _slot(key)

        def op(conn: Connection) -> None:
            now = self._now()
            values = {
                "bot": bot,
                "platform": platform,
                "chat_id": chat_id,
                "thread_id": thread_id,
                "user_id": user_id,
                "persona": preferences.persona,
                "model": preferences.model,
                "updated_at": now,
            }
            stmt = _upsert(conn)(_preferences).values(values)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["bot", "platform", "chat_id", "thread_id", "user_id"],
                    set_={
                        "persona": stmt.excluded.persona,
                        "model": stmt.excluded.model,
                        "updated_at": stmt.excluded.updated_at,
                    },
                )
            )

        await self._call(op, write=True)

    # --- usage, privacy, statistics ----------------------------------------------------------

    def _user_key(self, bot: str, platform: str, user_id: str) -> str:
        """The pseudonym of a user in ``usage_daily``: HMAC-SHA256 under the store's secret."""
        message = json.dumps([bot, platform, user_id], ensure_ascii=False).encode()
        return hmac.new(self._usage_secret, message, hashlib.sha256).hexdigest()

    @staticmethod
    def _ensure_secret(conn: Connection) -> bytes:
        existing = conn.execute(
            select(_meta.c.value).where(_meta.c.key == _USAGE_SECRET_KEY)
        ).scalar_one_or_none()
        if existing is None:
            stmt = _upsert(conn)(_meta).values(key=_USAGE_SECRET_KEY, value=secrets.token_hex(32))
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
            existing = conn.execute(
                select(_meta.c.value).where(_meta.c.key == _USAGE_SECRET_KEY)
            ).scalar_one()
        return bytes.fromhex(existing)

    async def add_usage(
        self,
        bot: str,
        platform: str,
        user_id: str,
        day: date,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        messages: int = 1,
    ) -> None:
        """Add to the user's pseudonymous usage counters for ``day`` (UTC).

        The counters are keyed by an HMAC of (bot, platform, user id), never the id itself,
        and survive ``forget_user`` so that deleting one's data never resets a quota.
        """
        row = self._usage_row(
            UsageRecord(bot, platform, user_id, day, prompt_tokens, completion_tokens, messages)
        )
        await self._call(lambda conn: _add_usage(conn, row), write=True)

    def _usage_row(self, usage: UsageRecord) -> dict[str, Any]:
        if min(usage.prompt_tokens, usage.completion_tokens, usage.messages) < 0:
            raise ValueError("usage counts cannot be negative")
        return {
            "bot": usage.bot,
            "platform": usage.platform,
            "user_key": self._user_key(usage.bot, usage.platform, usage.user_id),
            "day": usage.day,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "messages": usage.messages,
        }

    async def get_usage(self, bot: str, platform: str, user_id: str, day: date) -> UsageSummary:
        """The user's tokens on ``day`` and in total (zeros for an unknown user)."""
        user_key = self._user_key(bot, platform, user_id)
        tokens = _usage.c.prompt_tokens + _usage.c.completion_tokens

        def op(conn: Connection) -> UsageSummary:
            row = conn.execute(
                select(
                    func.coalesce(func.sum(tokens), 0).label("total"),
                    func.coalesce(func.sum(case((_usage.c.day == day, tokens), else_=0)), 0).label(
                        "today"
                    ),
                    func.coalesce(
                        func.sum(case((_usage.c.day == day, _usage.c.messages), else_=0)), 0
                    ).label("messages_today"),
                ).where(
                    _usage.c.bot == bot,
                    _usage.c.platform == platform,
                    _usage.c.user_key == user_key,
                )
            ).one()
            return UsageSummary(
                tokens_today=int(row.today),
                tokens_total=int(row.total),
                messages_today=int(row.messages_today),
            )

        result: UsageSummary = await self._call(op, write=False)
        return result

    async def forget_user(self, bot: str, platform: str, user_id: str) -> int:
        """Delete everything stored about the user but the pseudonymous usage counters.

        Deletes the conversations keyed by the user (with all their messages and platform
        ids), the user's own messages in shared conversations of this bot and platform
        together with the bot's replies to them (which quote and answer them), and the
        preferences of the user's slots. Returns the number of messages deleted.

        Raises:
            ValueError: ``user_id`` is empty (it would match every shared conversation).
        """
        if not user_id:
            raise ValueError("forget_user needs a user id")

        def op(conn: Connection) -> int:
            own = select(_conversations.c.id).where(
                _conversations.c.bot == bot,
                _conversations.c.platform == platform,
                _conversations.c.user_id == user_id,
            )
            shared = select(_conversations.c.id).where(
                _conversations.c.bot == bot,
                _conversations.c.platform == platform,
                _conversations.c.user_id == "",
            )
            in_own = conn.execute(
                select(func.count())
                .select_from(_messages)
                .where(_messages.c.conversation_id.in_(own))
            ).scalar_one()
            conn.execute(delete(_conversations).where(_conversations.c.id.in_(own)))
            # The bot's replies to the user's messages quote and answer them: they go too.
            # A reply belongs to the nearest user message before it.
            earlier = _messages.alias("earlier")
            replied_to = (
                select(earlier.c.author_id)
                .where(
                    earlier.c.conversation_id == _messages.c.conversation_id,
                    earlier.c.seq < _messages.c.seq,
                    earlier.c.role == Role.USER.value,
                )
                .order_by(earlier.c.seq.desc())
                .limit(1)
                .scalar_subquery()
            )
            mine = _messages.alias("mine")
            with_user = select(mine.c.conversation_id).where(
                mine.c.author_id == user_id, mine.c.conversation_id.in_(shared)
            )
            replies = conn.execute(
                delete(_messages).where(
                    _messages.c.role.in_((Role.ASSISTANT.value, Role.TOOL.value)),
                    _messages.c.conversation_id.in_(with_user),
                    replied_to == user_id,
                )
            ).rowcount
            in_shared = conn.execute(
                delete(_messages).where(
                    _messages.c.author_id == user_id,
                    _messages.c.conversation_id.in_(shared),
                )
            ).rowcount
            conn.execute(
                delete(_preferences).where(
                    _preferences.c.bot == bot,
                    _preferences.c.platform == platform,
                    _preferences.c.user_id == user_id,
                )
            )
            return int(in_own) + int(replies) + int(in_shared)

        deleted: int = await self._call(op, write=True)
        _log.info("forgot a user of bot %r on %s: %d message(s) deleted", bot, platform, deleted)
        return deleted

    async def export_user(
        self, bot: str, platform: str, user_id: str
    ) -> list[ExportedConversation]:
        """The user's conversations with all messages, and their own messages in shared ones.

        Conversations oldest first, messages in order. Shared conversations where the user
        wrote nothing are left out.
        """
        if not user_id:
            raise ValueError("export_user needs a user id")

        def op(conn: Connection) -> list[ExportedConversation]:
            # One snapshot for all the reads below.
            with conn.begin():
                own = [
                    _conversation(r)
                    for r in conn.execute(
                        select(*_CONVERSATION_COLUMNS).where(
                            _conversations.c.bot == bot,
                            _conversations.c.platform == platform,
                            _conversations.c.user_id == user_id,
                        )
                    )
                ]
                by_conversation: dict[int, list[StoredMessage]] = {c.id: [] for c in own}
                if own:
                    for r in conn.execute(
                        select(*_MESSAGE_COLUMNS)
                        .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
                        .where(
                            _conversations.c.bot == bot,
                            _conversations.c.platform == platform,
                            _conversations.c.user_id == user_id,
                        )
                        .order_by(_messages.c.conversation_id, _messages.c.seq)
                    ):
                        by_conversation[r.conversation_id].append(_stored(r))
                shared: dict[int, Conversation] = {}
                for r in conn.execute(
                    select(
                        *_MESSAGE_COLUMNS,
                        _conversations.c.bot,
                        _conversations.c.platform,
                        _conversations.c.chat_id,
                        _conversations.c.thread_id,
                        _conversations.c.user_id,
                        _conversations.c.created_at.label("conversation_created_at"),
                    )
                    .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
                    .where(
                        _conversations.c.bot == bot,
                        _conversations.c.platform == platform,
                        _conversations.c.user_id == "",
                        _messages.c.author_id == user_id,
                    )
                    .order_by(_messages.c.conversation_id, _messages.c.seq)
                ):
                    if r.conversation_id not in shared:
                        shared[r.conversation_id] = Conversation(
                            id=r.conversation_id,
                            key=ConversationKey(
                                bot=r.bot,
                                platform=r.platform,
                                chat_id=r.chat_id,
                                thread_id=r.thread_id or None,
                                user_id=None,
                            ),
                            created_at=r.conversation_created_at,
                        )
                        by_conversation[r.conversation_id] = []
                    by_conversation[r.conversation_id].append(_stored(r))
            conversations = sorted([*own, *shared.values()], key=lambda c: (c.created_at, c.id))
            return [
                ExportedConversation(conversation=c, messages=by_conversation[c.id])
                for c in conversations
            ]

        result: list[ExportedConversation] = await self._call(op, write=False)
        return result

    async def stats(self, bot: str, day: date) -> list[PlatformStats]:
        """Counts per platform for ``bot``, in total and on ``day`` (UTC), sorted by platform.

        Users are distinct usage pseudonyms and tokens come from the usage counters (both
        survive ``forget_user``); conversations and messages are what the store holds.
        """
        start = datetime.combine(day, time.min, tzinfo=UTC)
        end = start + timedelta(days=1)

        def op(conn: Connection) -> list[PlatformStats]:
            tokens = _usage.c.prompt_tokens + _usage.c.completion_tokens
            counts: dict[str, dict[str, int]] = {}

            def put(platform: str, **values: Any) -> None:
                slot = counts.setdefault(platform, {})
                for name, value in values.items():
                    slot[name] = int(value or 0)

            with conn.begin():
                for r in conn.execute(
                    select(
                        _usage.c.platform,
                        func.count(func.distinct(_usage.c.user_key)).label("users"),
                        func.sum(tokens).label("tokens"),
                    )
                    .where(_usage.c.bot == bot)
                    .group_by(_usage.c.platform)
                ):
                    put(r.platform, users_total=r.users, tokens_total=r.tokens)
                for r in conn.execute(
                    select(
                        _usage.c.platform,
                        func.count(func.distinct(_usage.c.user_key)).label("users"),
                        func.sum(tokens).label("tokens"),
                    )
                    .where(_usage.c.bot == bot, _usage.c.day == day)
                    .group_by(_usage.c.platform)
                ):
                    put(r.platform, users_today=r.users, tokens_today=r.tokens)
                created = _conversations.c.created_at
                for r in conn.execute(
                    select(
                        _conversations.c.platform,
                        func.count().label("total"),
                        func.sum(case((and_(created >= start, created < end), 1), else_=0)).label(
                            "today"
                        ),
                    )
                    .where(_conversations.c.bot == bot)
                    .group_by(_conversations.c.platform)
                ):
                    put(r.platform, conversations_total=r.total, conversations_today=r.today)
                written = _messages.c.created_at
                for r in conn.execute(
                    select(
                        _conversations.c.platform,
                        func.count().label("total"),
                        func.sum(case((and_(written >= start, written < end), 1), else_=0)).label(
                            "today"
                        ),
                    )
                    .select_from(_messages)
                    .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
                    .where(_conversations.c.bot == bot)
                    .group_by(_conversations.c.platform)
                ):
                    put(r.platform, messages_total=r.total, messages_today=r.today)
            return [
                PlatformStats(
                    platform=platform,
                    users_total=c.get("users_total", 0),
                    users_today=c.get("users_today", 0),
                    conversations_total=c.get("conversations_total", 0),
                    conversations_today=c.get("conversations_today", 0),
                    messages_total=c.get("messages_total", 0),
                    messages_today=c.get("messages_today", 0),
                    tokens_total=c.get("tokens_total", 0),
                    tokens_today=c.get("tokens_today", 0),
                )
                for platform, c in sorted(counts.items())
            ]

        result: list[PlatformStats] = await self._call(op, write=False)
        return result


# --- helpers run inside the writer's transaction ----------------------------------------------


def _run_group(conn: Connection, ops: Sequence[_Op]) -> list[Any]:
    """Run ``ops`` in one transaction; the first failing op raises ``_OpFailed``."""
    results: list[Any] = []
    with conn.begin():
        for index, op in enumerate(ops):
            try:
                results.append(op(conn))
            except Exception as exc:
                if _is_locked(exc):
                    raise
                raise _OpFailed(index, exc) from exc
    return results


def _run_group_isolated(conn: Connection, ops: Sequence[_Op]) -> list[tuple[bool, Any]]:
    """Run each op in its own SAVEPOINT of one transaction; a failure undoes only its op."""
    outcomes: list[tuple[bool, Any]] = []
    with conn.begin():
        for op in ops:
            try:
                with conn.begin_nested():
                    outcomes.append((True, op(conn)))
            except Exception as exc:
                if _is_locked(exc):
                    raise
                outcomes.append((False, exc))
    return outcomes


def _sqlite_transactions(engine: Engine, *, writer: bool) -> None:
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
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin)


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def recent_messages_query(
    conversation_id: int, *, limit: int, before_seq: int | None = None
) -> Select[Any]:
    """The history read of ``recent_messages`` (exposed so tests can EXPLAIN it)."""
    query = select(*_MESSAGE_COLUMNS).where(
        _messages.c.conversation_id == conversation_id,
        _messages.c.status.in_(_USABLE),
        _messages.c.content != "",
    )
    if before_seq is not None:
        query = query.where(_messages.c.seq < before_seq)
    return query.order_by(_messages.c.seq.desc()).limit(limit)


def _find_platform_message(
    conn: Connection, bot: str, platform: str, chat_id: str, platform_message_id: str
) -> StoredMessage | None:
    raw = _sqlite_raw(conn)
    if raw is not None:
        found = raw.execute(_RAW_FIND_PLATFORM, (bot, platform, chat_id, platform_message_id))
        values = found.fetchone()
        return _raw_stored(values) if values is not None else None
    row = conn.execute(
        _FIND_PLATFORM,
        {"bot": bot, "platform": platform, "chat_id": chat_id, "pid": platform_message_id},
    ).one_or_none()
    return _stored(row) if row is not None else None


def _usage_upsert(insert_fn: Any) -> Any:
    stmt = insert_fn(_usage)
    return stmt.on_conflict_do_update(
        index_elements=["bot", "platform", "user_key", "day"],
        set_={
            "prompt_tokens": _usage.c.prompt_tokens + stmt.excluded.prompt_tokens,
            "completion_tokens": _usage.c.completion_tokens + stmt.excluded.completion_tokens,
            "messages": _usage.c.messages + stmt.excluded.messages,
        },
    )


# Hot statements are built once: SQLAlchemy then reuses their cache key and compiled form,
# and each call only binds parameters (building them per call cost more than the SQL).
_USAGE_UPSERT: Final = {
    "postgresql": _usage_upsert(pg_dialect.insert),
    "sqlite": _usage_upsert(sqlite_dialect.insert),
}
_BUMP_SEQ: Final = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("cid"))
    .values(last_seq=_conversations.c.last_seq + bindparam("n"))
    .returning(
        _conversations.c.last_seq,
        _conversations.c.bot,
        _conversations.c.platform,
        _conversations.c.chat_id,
    )
)
_INSERT_MESSAGE: Final = insert(_messages).returning(_messages.c.id)
_INSERT_MESSAGES: Final = insert(_messages).returning(_messages.c.id, sort_by_parameter_order=True)
_INSERT_PLATFORM: Final = insert(_platform_messages)
_FINISH: Final = (
    update(_messages)
    .where(_messages.c.id == bindparam("mid"))
    .values(
        content=bindparam("content"),
        status=bindparam("status"),
        token_count=bindparam("token_count"),
        tokenizer=bindparam("tokenizer"),
    )
    .returning(_messages.c.conversation_id)
)
_CONVERSATION_PLACE: Final = select(
    _conversations.c.bot, _conversations.c.platform, _conversations.c.chat_id
).where(_conversations.c.id == bindparam("cid"))
_FIND_PLATFORM: Final = (
    select(*_MESSAGE_COLUMNS)
    .join(_platform_messages, _platform_messages.c.message_id == _messages.c.id)
    .where(
        _platform_messages.c.bot == bindparam("bot"),
        _platform_messages.c.platform == bindparam("platform"),
        _platform_messages.c.chat_id == bindparam("chat_id"),
        _platform_messages.c.platform_message_id == bindparam("pid"),
    )
    .limit(1)
)


def _add_usage(conn: Connection, row: dict[str, Any]) -> None:
    """Add ``row``'s counts to its (bot, platform, user_key, day) counters."""
    raw = _sqlite_raw(conn)
    if raw is not None:
        raw.execute(
            _RAW_USAGE_UPSERT,
            (
                row["bot"],
                row["platform"],
                row["user_key"],
                row["day"].isoformat(),
                row["prompt_tokens"],
                row["completion_tokens"],
                row["messages"],
            ),
        )
        return
    conn.execute(_USAGE_UPSERT[conn.dialect.name], row)


def _insert_platform_ids(conn: Connection, rows: list[dict[str, Any]]) -> None:
    raw = _sqlite_raw(conn)
    if raw is not None:
        raw.executemany(
            _RAW_INSERT_PLATFORM,
            [
                (r["bot"], r["platform"], r["chat_id"], r["platform_message_id"], r["message_id"])
                for r in rows
            ],
        )
        return
    conn.execute(_INSERT_PLATFORM, rows)


# --- the SQLite fast path -----------------------------------------------------------------
# On SQLite the hottest statements (two or three per message) skip SQLAlchemy's statement
# execution layer and go to sqlite3 on the same connection and transaction: on two cores that
# layer cost more than the SQL itself. Values are stored exactly as SQLAlchemy stores them
# (timestamps as naive UTC "YYYY-MM-DD HH:MM:SS.ffffff", dates ISO, JSON as text, None as
# NULL), so reads through SQLAlchemy see no difference; the contract tests run both paths.

_RAW_BUMP_SEQ: Final = (
    "UPDATE conversations SET last_seq = last_seq + ? WHERE id = ? "
    "RETURNING last_seq, bot, platform, chat_id"
)
_RAW_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (conversation_id, seq, role, author_id, content, extra, token_count, "
    "tokenizer, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_RAW_INSERT_PLATFORM: Final = (
    "INSERT INTO platform_messages (bot, platform, chat_id, platform_message_id, message_id) "
    "VALUES (?, ?, ?, ?, ?)"
)
_RAW_FINISH: Final = (
    "UPDATE messages SET content = ?, status = ?, token_count = ?, tokenizer = ? WHERE id = ? "
    "RETURNING conversation_id"
)
_RAW_FIND_PLATFORM: Final = (
    "SELECT m.id, m.conversation_id, m.seq, m.role, m.content, m.author_id, m.status, "
    "m.token_count, m.tokenizer, m.extra, m.created_at FROM messages AS m "
    "JOIN platform_messages AS p ON p.message_id = m.id "
    "WHERE p.bot = ? AND p.platform = ? AND p.chat_id = ? AND p.platform_message_id = ? LIMIT 1"
)
_RAW_USAGE_UPSERT: Final = (
    "INSERT INTO usage_daily (bot, platform, user_key, day, prompt_tokens, completion_tokens, "
    "messages) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (bot, platform, user_key, day) DO UPDATE SET "
    "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens, "
    "messages = messages + excluded.messages"
)


class _Place(NamedTuple):
    last_seq: int
    bot: str
    platform: str
    chat_id: str


def _raw_stored(values: tuple[Any, ...]) -> StoredMessage:
    """A ``messages`` row read through sqlite3, converted as SQLAlchemy's types would."""
    (id_, conversation_id, seq, role, content, author_id, status, tokens, tokenizer, extra, at) = (
        values
    )
    return StoredMessage(
        id=id_,
        conversation_id=conversation_id,
        seq=seq,
        role=Role(role),
        content=content,
        author_id=author_id,
        status=MessageStatus(status),
        token_count=tokens,
        tokenizer=tokenizer,
        extra=json.loads(extra) if extra is not None else None,
        created_at=datetime.fromisoformat(at).replace(tzinfo=UTC),
    )


def _sqlite_raw(conn: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``conn`` (same transaction), or None on PostgreSQL."""
    if conn.dialect.name != "sqlite":
        return None
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def _sqlite_time(value: datetime) -> str:
    """A timestamp as SQLAlchemy stores a ``UtcDateTime`` on SQLite."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _newest_conversation(conn: Connection, key: ConversationKey) -> Conversation | None:
    row = conn.execute(
        select(*_CONVERSATION_COLUMNS)
        .where(_slot_filter(_conversations, key))
        .order_by(_conversations.c.id.desc())
        .limit(1)
    ).one_or_none()
    return _conversation(row) if row is not None else None


def _upsert(conn: Connection) -> Any:
    """The dialect's ``insert`` with ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
    if conn.dialect.name == "postgresql":
        return pg_dialect.insert
    return sqlite_dialect.insert


def _check_extra(extra: Any) -> None:
    if extra is None:
        return
    try:
        json.dumps(dict(extra))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"NewMessage.extra must be JSON-serialisable: {exc}") from exc


__all__ = ["SqlMemoryStore"]
