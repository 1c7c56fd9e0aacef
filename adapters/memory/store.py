"""``SqlMemoryStore``: the ``MemoryStore`` port on SQLite (embedded default) or PostgreSQL.

Each port method checks its arguments, binds them into an operation
(:mod:`adapters.memory.operations`, a function of one sync SQLAlchemy ``Connection``) and
hands it to the executor of the URL's runtime (:mod:`adapters.memory.executor`):

* SQLite (:class:`adapters.memory.sqlite.SqliteExecutor`): every write goes to one writer
  thread that commits the writes queued meanwhile as one transaction (group commit); reads
  run on a small pool of reader threads, each in one thread hop. sqlite3 is driven directly
  (the ``sqlite+aiosqlite`` URL only names the file): aiosqlite is not used at run time.
* PostgreSQL (:class:`adapters.memory.postgres.PostgresExecutor`): an asyncpg pool; writes
  group-committed by a few writer lanes (one at a time again after a deadlock), every call
  retried through a brief outage (``outage_grace`` seconds) while the pool reconnects; a
  write whose ``COMMIT`` was cut off is applied exactly once.

Every vendor exception is translated into :class:`core.errors.StoreError` in
:meth:`SqlMemoryStore._call`, the one boundary, ``from`` the original.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.engine import Connection

from adapters.memory import media, privacy
from adapters.memory import operations as ops
from adapters.memory import recovery as rec
from adapters.memory.executor import DATABASE_ERRORS, Executor, Op, describe
from adapters.memory.postgres import PostgresExecutor
from adapters.memory.settings import normalize_database_url, render_url
from adapters.memory.sqlite import SqliteExecutor
from adapters.memory.statements import recent_messages_query, to_stored
from adapters.memory.store_tools import SqlToolMethods
from adapters.memory.tooling import merge_extra
from adapters.memory.validation import (
    check_extra,
    check_hashes,
    check_media,
    check_usage,
    storable,
    usage_pseudonym,
)
from core.errors import StoreError, StoreUnavailable
from core.lifecycle import Lifecycle
from core.media import MediaBlob
from core.text import safe_text
from core.types import (
    Conversation,
    ConversationKey,
    ExportedConversation,
    InstanceInfo,
    MessageStatus,
    NewMessage,
    PlatformStats,
    Preferences,
    ReplyInProgress,
    StoredMessage,
    UsageRecord,
    UsageSummary,
)

_log = logging.getLogger(__name__)

_SHUTDOWN_WAIT_S: Final = 30.0
_OUTAGE_GRACE_S: Final = 30.0
_NAME: Final = "SqlMemoryStore"


def _select_one(connection: Connection) -> None:
    connection.execute(text("SELECT 1"))


class SqlMemoryStore(SqlToolMethods):
    """The ``MemoryStore`` port on a SQL database: SQLite (sqlite3) or PostgreSQL (asyncpg).

    The schema must exist (``adapters.memory.migrate.upgrade(url)``) before ``start()``.
    On SQLite, writes are group-committed by one writer thread and reads run on reader
    threads (see :mod:`adapters.memory.sqlite`); on PostgreSQL writes are group-committed
    too, on the asyncpg pool of SQLAlchemy's async engine (see
    :mod:`adapters.memory.postgres`). Either way a write returns only once it is committed.

    Args:
        url: the database URL; plain ``sqlite:///…`` / ``postgresql://…`` are accepted and
            given their async driver names.
        pool_size: reader threads and read connections (SQLite, default 4) or pool size
            (PostgreSQL, default 10).
        echo: log every SQL statement (debugging only: it shows message bodies).
        clock: the source of "now" (tz-aware; stored as UTC) for timestamps; for tests.
        outage_grace: PostgreSQL only: seconds a call keeps retrying a lost connection
            before it raises ``StoreUnavailable`` (``DB_OUTAGE_GRACE_SECONDS``).
        close_timeout: seconds ``aclose()`` waits for calls still running (a reply being
            stored during an outage, say) before it closes the connections under them.

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
        outage_grace: float = _OUTAGE_GRACE_S,
        close_timeout: float = _SHUTDOWN_WAIT_S,
    ) -> None:
        self._url = normalize_database_url(url)
        if pool_size is not None and pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._executor: Executor
        if self._url.startswith("sqlite"):
            self._executor = SqliteExecutor(self._url, readers=pool_size or 4, echo=echo)
        else:
            self._executor = PostgresExecutor(
                self._url, pool_size=pool_size or 10, echo=echo, outage_grace=outage_grace
            )
        self._close_timeout = close_timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self._state = Lifecycle.NEW
        self._transition = asyncio.Lock()
        self._usage_secret = b""
        self._media_swept_at: datetime | None = None
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

        A start that fails leaves the store closed to calls but startable again.

        Raises:
            RuntimeError: after ``aclose()``.
            StoreError: the database cannot be reached (the message names the host or file
                and the cause, in one line) or has no schema.
        """
        async with self._transition:
            if not self._state.require_startable(_NAME):
                return
            self._state = Lifecycle.STARTING
            try:
                await self._executor.open()
                self._state = Lifecycle.RUNNING  # the secret is read through _call
                self._usage_secret = await self._call(ops.ensure_secret, write=True)
            except BaseException:
                self._state = Lifecycle.NEW
                await self._shutdown()
                raise
            _log.info("memory store connected to %s", render_url(self._url))

    async def aclose(self) -> None:
        """Commit the writes already queued, then close every connection. Idempotent.

        Calls made after ``aclose()`` began raise ``RuntimeError``. Calls still running get
        up to ``close_timeout`` seconds to finish (during an outage, to reach the database
        again); those still retrying then raise ``StoreUnavailable``.
        """
        async with self._transition:
            if self._state is Lifecycle.CLOSED:
                return
            self._state = Lifecycle.CLOSING
            await self._shutdown()
            self._state = Lifecycle.CLOSED

    async def __aenter__(self) -> SqlMemoryStore:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _shutdown(self) -> None:
        await self._executor.close_writes()
        try:  # reads still running finish before their connections go
            await asyncio.wait_for(self._idle.wait(), self._close_timeout)
        except TimeoutError:
            _log.warning("closing the store with %d call(s) still running", self._inflight)
        await self._executor.close()

    async def ping(self, within: float = 2.0) -> bool:
        """Whether the database answers a trivial query within ``within`` seconds.

        For readiness probes: never raises (a stopped store, an outage, a timeout are all
        ``False``); the cause is logged at DEBUG.
        """
        if self._state is not Lifecycle.RUNNING:
            return False
        try:
            async with asyncio.timeout(within):
                await self._call(_select_one, write=False)
        except (StoreError, TimeoutError, RuntimeError, OSError):
            _log.debug("the database did not answer a ping", exc_info=True)
            return False
        return True

    # --- the one boundary ------------------------------------------------------------------

    async def _call(self, op: Op, *, write: bool, until_closed: bool = False) -> Any:
        """Run ``op(sync_connection)`` for reading or in a committed write transaction.

        This is where driver and SQLAlchemy errors become ``StoreError``. ``until_closed``
        (writes only) retries a lost connection past the outage grace period.

        Raises:
            RuntimeError: the store is not running (before ``start()``, after ``aclose()``).
            StoreUnavailable: the database stayed unreachable; nothing was written.
        """
        if self._state is not Lifecycle.RUNNING:
            self._state.require_running(_NAME)
        self._inflight += 1
        self._idle.clear()
        try:
            if write:
                return await self._executor.write(op, until_closed=until_closed)
            return await self._executor.read(op)
        except DATABASE_ERRORS as exc:
            _log.debug("store operation failed", exc_info=True)
            raise StoreError(describe(exc)) from exc
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    # --- conversations and messages ------------------------------------------------------

    async def current_conversation(self, key: ConversationKey) -> Conversation:
        """The newest conversation of ``key``, created if there is none."""
        found: Conversation | None = await self._call(
            lambda c: ops.newest_conversation(c, key), write=False
        )
        if found is not None:
            return found
        created: Conversation = await self._call(
            lambda c: ops.create_conversation(c, key, self._now, only_if_missing=True),
            write=True,
        )
        return created

    async def new_conversation(self, key: ConversationKey) -> Conversation:
        """Start a new conversation for ``key`` (``/reset``); older ones stay stored."""
        created: Conversation = await self._call(
            lambda c: ops.create_conversation(c, key, self._now, only_if_missing=False),
            write=True,
        )
        return created

    async def append_messages(
        self, conversation_id: int, messages: Sequence[NewMessage]
    ) -> list[StoredMessage]:
        """Append ``messages`` in order in one transaction, with consecutive sequence numbers.

        Platform message ids given in a ``NewMessage`` are recorded for it (in its
        ``platform_chat_id``, or the conversation's chat when that is ``None``), and so are
        the media it shows (``NewMessage.media``), in the same transaction.

        Raises:
            DuplicateMessage: one of the platform ids is already recorded (nothing of this
                call is stored); ``existing`` is the stored message it belongs to.
            StoreError: the conversation does not exist.
            ValueError: ``extra`` is not JSON-serialisable, or a media entry is not a hash.
        """
        batch = storable(messages)
        for message in batch:
            check_extra(message.extra)
            check_hashes(message.media)
        if not batch:
            return []
        stored: list[StoredMessage] = await self._call(
            lambda c: ops.append(c, conversation_id, batch, self._now), write=True
        )
        return stored

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
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the final content, status and token count of a message; record its platform ids.

        ``usage`` is added to the user's counters in the same transaction (even when the
        message was deleted meanwhile: the tokens were spent); so are ``extra``'s keys to the
        message's ``extra`` (others kept).

        A message deleted meanwhile (``forget_user`` while the reply streamed) is left
        deleted: nothing is written and no error is raised.

        The user has usually seen this reply already, so it is never given up for an outage:
        while the database is unreachable the call keeps retrying, past the outage grace
        period, until the row is stored (exactly once, even if a ``COMMIT`` was cut off) or
        the store is closed. ``aclose()`` during an outage waits ``close_timeout`` for it,
        then the call logs an ERROR naming the message id (never its text) and raises.

        Raises:
            StoreError: a platform id is already recorded (the message is left unchanged).
            StoreUnavailable: the store closed before the database came back.
        """
        status_value = MessageStatus(status).value
        content = safe_text(content)
        pids = tuple(platform_message_ids)
        usage_row = self._usage_row(usage) if usage is not None else None
        check_extra(extra)
        changes = dict(extra) if extra else None

        def finish(c: Connection) -> None:
            ops.finish(
                c,
                message_id,
                content,
                status_value,
                token_count,
                tokenizer,
                platform_chat_id,
                pids,
                usage_row,
            )
            if changes:
                merge_extra(c, message_id, changes)

        try:
            await self._call(
                finish,
                write=True,
                until_closed=True,
            )
        except StoreUnavailable:
            _log.error(
                "the final state of message %d (status %s) was not stored: the database "
                "stayed unreachable until the store closed",
                message_id,
                status_value,
            )
            raise

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_seq: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` usable messages, newest first, with ``seq < before_seq``.

        Usable means status complete, cut or interrupted with non-empty content, or a tool
        round (``tool_calls``, ``awaiting``) whatever its content. A backward range
        scan of the (conversation_id, seq) key: the cost depends on ``limit`` only.
        """
        if limit <= 0:
            return []
        query = recent_messages_query(conversation_id, limit=limit, before_seq=before_seq)
        result: list[StoredMessage] = await self._call(
            lambda c: [to_stored(r) for r in c.execute(query)], write=False
        )
        return result

    async def find_by_platform_message(
        self, bot: str, platform: str, chat_id: str, platform_message_id: str
    ) -> StoredMessage | None:
        """The stored message a platform message id belongs to, if any."""
        result: StoredMessage | None = await self._call(
            lambda c: ops.find_platform_message(c, bot, platform, chat_id, platform_message_id),
            write=False,
        )
        return result

    async def reply_to(self, message: StoredMessage) -> StoredMessage | None:
        """The first assistant message after ``message`` in its conversation, if any."""
        result: StoredMessage | None = await self._call(
            lambda c: ops.reply_to(c, message), write=False
        )
        return result

    # --- preferences -------------------------------------------------------------------------

    async def get_preferences(self, key: ConversationKey) -> Preferences:
        """The slot's preferences (defaults when none were saved)."""
        result: Preferences = await self._call(lambda c: ops.get_preferences(c, key), write=False)
        return result

    async def save_preferences(self, key: ConversationKey, preferences: Preferences) -> None:
        """Replace the slot's preferences (they survive ``new_conversation``)."""
        await self._call(
            lambda c: ops.save_preferences(c, key, preferences, self._now()), write=True
        )

    # --- usage, privacy, statistics ----------------------------------------------------------

    def _user_key(self, bot: str, platform: str, user_id: str) -> str:
        """The pseudonym of a user in ``usage_daily``: HMAC-SHA256 under the store's secret."""
        return usage_pseudonym(self._usage_secret, bot, platform, user_id)

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

        Raises:
            ValueError: a count is negative.
        """
        row = self._usage_row(
            UsageRecord(bot, platform, user_id, day, prompt_tokens, completion_tokens, messages)
        )
        await self._call(lambda c: ops.add_usage(c, row), write=True)

    def _usage_row(self, usage: UsageRecord) -> dict[str, Any]:
        check_usage(usage)
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
        result: UsageSummary = await self._call(
            lambda c: ops.get_usage(c, bot, platform, user_key, day), write=False
        )
        return result

    async def save_media(self, blob: MediaBlob) -> None:
        """Store an image once per content hash (``blob.sha256``); saving it again is a no-op.

        At most once an hour (:data:`adapters.memory.media.SWEEP_EVERY`) the same
        transaction first deletes the media no message links to that are older than a day
        (saved for a turn that was never stored). Written like a message: group-committed
        on SQLite, retried through a brief outage on PostgreSQL.

        Raises:
            ValueError: ``blob.sha256`` is not the SHA-256 of ``blob.data``.
            StoreUnavailable: the database stayed unreachable; nothing was written.
        """
        check_media(blob)
        now = self._now()
        last = self._media_swept_at
        sweep = last is None or now - last >= media.SWEEP_EVERY
        if sweep:
            self._media_swept_at = now
        swept: int = await self._call(lambda c: media.save(c, blob, now, sweep), write=True)
        if swept:
            _log.info("deleted %d stored image(s) no message showed for a day", swept)

    async def load_media(self, hashes: Sequence[str]) -> Mapping[str, MediaBlob]:
        """The stored media of ``hashes`` (those that exist), by hash."""
        wanted = tuple(dict.fromkeys(hashes))
        if not wanted:
            return {}
        found: dict[str, MediaBlob] = await self._call(lambda c: media.load(c, wanted), write=False)
        return found

    async def forget_user(self, bot: str, platform: str, user_id: str) -> int:
        """Delete everything stored about the user but the pseudonymous usage counters.

        Deletes the conversations keyed by the user (with all their messages and platform
        ids), the user's own messages in shared conversations of this bot and platform
        together with the bot's replies to them (which quote and answer them), the
        preferences of the user's slots, the user's pending tool calls (those of deleted
        conversations go with them) and the images the deleted messages showed that no
        remaining message shows; the user's audit rows keep only the pseudonym. Returns
        the number of messages deleted.

        Raises:
            ValueError: ``user_id`` is empty (it would match every shared conversation).
        """
        if not user_id:
            raise ValueError("forget_user needs a user id")
        deleted: int = await self._call(
            lambda c: privacy.forget_user(c, bot, platform, user_id), write=True
        )
        _log.info("forgot a user of bot %r on %s: %d message(s) deleted", bot, platform, deleted)
        return deleted

    async def export_user(
        self, bot: str, platform: str, user_id: str
    ) -> list[ExportedConversation]:
        """The user's conversations with all messages, and their own messages in shared ones.

        Conversations oldest first, messages in order. Shared conversations where the user
        wrote nothing are left out.

        Raises:
            ValueError: ``user_id`` is empty.
        """
        if not user_id:
            raise ValueError("export_user needs a user id")
        result: list[ExportedConversation] = await self._call(
            lambda c: privacy.export_user(c, bot, platform, user_id), write=False
        )
        return result

    async def stats(self, bot: str, day: date) -> list[PlatformStats]:
        """Counts per platform for ``bot``, in total and on ``day`` (UTC), sorted by platform.

        Users are distinct usage pseudonyms and tokens come from the usage counters (both
        survive ``forget_user``); conversations and messages are what the store holds.
        """
        result: list[PlatformStats] = await self._call(
            lambda c: ops.stats(c, bot, day), write=False
        )
        return result

    # --- replies in progress, instances, leases ----------------------------------------------

    async def save_progress(
        self,
        message_id: int,
        *,
        content: str | None,
        platform_chat_id: str | None = None,
        platform_message_ids: Sequence[str] = (),
    ) -> None:
        """Save a reply in progress: its text so far (unless ``None``) and new message ids.

        A message no longer in progress (finished, deleted) is left as it is.
        """
        pids = tuple(platform_message_ids)
        await self._call(
            lambda c: rec.save_progress(c, message_id, content, platform_chat_id, pids),
            write=True,
        )

    async def register_instance(self, instance: InstanceInfo) -> None:
        """Record a running process (or renew its heartbeat)."""
        await self._call(lambda c: rec.register_instance(c, instance), write=True)

    async def heartbeat(self, instance_id: str, at: datetime) -> bool:
        """Say ``instance_id`` is alive at ``at``; ``False`` if its row is gone."""
        alive: bool = await self._call(lambda c: rec.heartbeat(c, instance_id, at), write=True)
        return alive

    async def retire_instance(self, instance_id: str) -> None:
        """Forget a process and release its leases."""
        await self._call(lambda c: rec.retire_instance(c, instance_id), write=True)

    async def instances(self, bot: str) -> list[InstanceInfo]:
        """The processes recorded for ``bot``, oldest first."""
        result: list[InstanceInfo] = await self._call(lambda c: rec.instances(c, bot), write=False)
        return result

    async def claim_replies(
        self, bot: str, owner: str, live: Sequence[str], *, message_id: int | None = None
    ) -> list[ReplyInProgress]:
        """Take over ``bot``'s replies in progress whose owner is not in ``live``.

        One ``UPDATE`` sets the owner, so two claimants never both get a reply.
        """
        alive = tuple(live)
        result: list[ReplyInProgress] = await self._call(
            lambda c: rec.claim_replies(c, bot, owner, alive, message_id), write=True
        )
        return result

    async def acquire_lease(self, bot: str, platform: str, owner: str, live: Sequence[str]) -> str:
        """Hold the (bot, platform) lease unless a live holder has it; return the holder."""
        alive = tuple(live)
        holder: str = await self._call(
            lambda c: rec.acquire_lease(c, bot, platform, owner, alive, self._now()), write=True
        )
        return holder

    async def release_lease(self, bot: str, platform: str, owner: str) -> None:
        """Give up the (bot, platform) lease if ``owner`` holds it."""
        await self._call(lambda c: rec.release_lease(c, bot, platform, owner), write=True)


__all__ = ["SqlMemoryStore", "recent_messages_query"]
