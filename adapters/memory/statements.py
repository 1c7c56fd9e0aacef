"""The SQL of the memory store: tables, prebuilt statements, sqlite3 fast-path text, row mappers.

Everything here is pure data or a pure function of a row: the operations
(:mod:`adapters.memory.operations`) execute it, the executors
(:mod:`adapters.memory.sqlite`, :mod:`adapters.memory.postgres`) decide where and when.

Hot statements are built once at import: SQLAlchemy then reuses their cache key and compiled
form, and each call only binds parameters (building them per call cost more than the SQL).

On SQLite the hottest statements (two or three per message) also exist as plain SQL text
(``RAW_*``) that the operations send to sqlite3 directly, on the same connection and
transaction, skipping SQLAlchemy's execution layer (on two cores that layer cost more than
the SQL itself). Values are stored exactly as SQLAlchemy stores them (timestamps as naive UTC
``YYYY-MM-DD HH:MM:SS.ffffff``, dates ISO, JSON as text, ``None`` as ``NULL``), so reads
through SQLAlchemy see no difference; the contract tests run both paths.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, cast

from sqlalchemy import Select, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from adapters.memory.models import (
    ConversationRow,
    MessageRow,
    MetaRow,
    PlatformMessageRow,
    PreferencesRow,
    UsageDailyRow,
)
from core.types import (
    Conversation,
    ConversationKey,
    MessageStatus,
    Role,
    StoredMessage,
)

CONVERSATIONS: Final = cast(Table, ConversationRow.__table__)
MESSAGES: Final = cast(Table, MessageRow.__table__)
PLATFORM_MESSAGES: Final = cast(Table, PlatformMessageRow.__table__)
PREFERENCES: Final = cast(Table, PreferencesRow.__table__)
USAGE: Final = cast(Table, UsageDailyRow.__table__)
META: Final = cast(Table, MetaRow.__table__)

USAGE_SECRET_KEY: Final = "usage_key_secret"
"""The ``meta`` key of the secret that pseudonymises user ids in ``usage_daily``."""
USABLE: Final = (
    MessageStatus.COMPLETE.value,
    MessageStatus.CUT.value,
    MessageStatus.INTERRUPTED.value,
)
"""Statuses of messages usable in a prompt (when their content is not empty)."""
ROUNDS: Final = (MessageStatus.TOOL_CALLS.value, MessageStatus.AWAITING.value)
"""Statuses of tool rounds: usable in a prompt whatever their content (often none)."""

MESSAGE_COLUMNS: Final = (
    MESSAGES.c.id,
    MESSAGES.c.conversation_id,
    MESSAGES.c.seq,
    MESSAGES.c.role,
    MESSAGES.c.content,
    MESSAGES.c.author_id,
    MESSAGES.c.status,
    MESSAGES.c.token_count,
    MESSAGES.c.tokenizer,
    MESSAGES.c.extra,
    MESSAGES.c.created_at,
)

CONVERSATION_COLUMNS: Final = (
    CONVERSATIONS.c.id,
    CONVERSATIONS.c.bot,
    CONVERSATIONS.c.platform,
    CONVERSATIONS.c.chat_id,
    CONVERSATIONS.c.thread_id,
    CONVERSATIONS.c.user_id,
    CONVERSATIONS.c.created_at,
)


# --- slots and row mappers ------------------------------------------------------------------


def slot(key: ConversationKey) -> tuple[str, str, str, str, str]:
    """The stored form of a conversation key: ``None`` parts become ``""`` (NULL != NULL)."""
    return (key.bot, key.platform, key.chat_id, key.thread_id or "", key.user_id or "")


def slot_filter(table: Table, key: ConversationKey) -> Any:
    """``WHERE`` clause matching ``key``'s slot in ``table`` (conversations, preferences)."""
    bot, platform, chat_id, thread_id, user_id = slot(key)
    return and_(
        table.c.bot == bot,
        table.c.platform == platform,
        table.c.chat_id == chat_id,
        table.c.thread_id == thread_id,
        table.c.user_id == user_id,
    )


def to_conversation(row: Any) -> Conversation:
    """A ``conversations`` row (``CONVERSATION_COLUMNS``) as a :class:`Conversation`."""
    key = ConversationKey(
        bot=row.bot,
        platform=row.platform,
        chat_id=row.chat_id,
        thread_id=row.thread_id or None,
        user_id=row.user_id or None,
    )
    return Conversation(id=row.id, key=key, created_at=row.created_at)


def to_stored(row: Any) -> StoredMessage:
    """A ``messages`` row (``MESSAGE_COLUMNS``) read through SQLAlchemy."""
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


def raw_stored(values: tuple[Any, ...]) -> StoredMessage:
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


class Place(NamedTuple):
    """Where a conversation is (``RAW_BUMP_SEQ``'s row): its new ``last_seq`` and its chat."""

    last_seq: int
    bot: str
    platform: str
    chat_id: str


# --- statements -------------------------------------------------------------------------------


def recent_messages_query(
    conversation_id: int, *, limit: int, before_seq: int | None = None
) -> Select[Any]:
    """The history read of ``recent_messages`` (exposed so tests can EXPLAIN it)."""
    query = select(*MESSAGE_COLUMNS).where(
        MESSAGES.c.conversation_id == conversation_id,
        or_(
            and_(MESSAGES.c.status.in_(USABLE), MESSAGES.c.content != ""),
            MESSAGES.c.status.in_(ROUNDS),
        ),
    )
    if before_seq is not None:
        query = query.where(MESSAGES.c.seq < before_seq)
    return query.order_by(MESSAGES.c.seq.desc()).limit(limit)


def upsert(conn: Connection) -> Any:
    """The dialect's ``insert`` with ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
    if conn.dialect.name == "postgresql":
        return pg_dialect.insert
    return sqlite_dialect.insert


def _usage_upsert(insert_fn: Any) -> Any:
    stmt = insert_fn(USAGE)
    return stmt.on_conflict_do_update(
        index_elements=["bot", "platform", "user_key", "day"],
        set_={
            "prompt_tokens": USAGE.c.prompt_tokens + stmt.excluded.prompt_tokens,
            "completion_tokens": USAGE.c.completion_tokens + stmt.excluded.completion_tokens,
            "messages": USAGE.c.messages + stmt.excluded.messages,
        },
    )


USAGE_UPSERT: Final = {
    "postgresql": _usage_upsert(pg_dialect.insert),
    "sqlite": _usage_upsert(sqlite_dialect.insert),
}
BUMP_SEQ: Final = (
    update(CONVERSATIONS)
    .where(CONVERSATIONS.c.id == bindparam("cid"))
    .values(last_seq=CONVERSATIONS.c.last_seq + bindparam("n"))
    .returning(
        CONVERSATIONS.c.last_seq,
        CONVERSATIONS.c.bot,
        CONVERSATIONS.c.platform,
        CONVERSATIONS.c.chat_id,
    )
)
INSERT_MESSAGE: Final = insert(MESSAGES).returning(MESSAGES.c.id)
INSERT_MESSAGES: Final = insert(MESSAGES).returning(MESSAGES.c.id, sort_by_parameter_order=True)
INSERT_PLATFORM: Final = insert(PLATFORM_MESSAGES)
FINISH_PLACE: Final = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("mid"), CONVERSATIONS.c.id == MESSAGES.c.conversation_id)
    .values(
        content=bindparam("content"),
        status=bindparam("status"),
        token_count=bindparam("token_count"),
        tokenizer=bindparam("tokenizer"),
    )
    .returning(
        MESSAGES.c.conversation_id,
        CONVERSATIONS.c.bot,
        CONVERSATIONS.c.platform,
        CONVERSATIONS.c.chat_id,
    )
)
"""Finish a message and say where its conversation is, in one round trip (PostgreSQL)."""
CONVERSATION_PLACE: Final = select(
    CONVERSATIONS.c.bot, CONVERSATIONS.c.platform, CONVERSATIONS.c.chat_id
).where(CONVERSATIONS.c.id == bindparam("cid"))
FIND_PLATFORM: Final = (
    select(*MESSAGE_COLUMNS)
    .join(PLATFORM_MESSAGES, PLATFORM_MESSAGES.c.message_id == MESSAGES.c.id)
    .where(
        PLATFORM_MESSAGES.c.bot == bindparam("bot"),
        PLATFORM_MESSAGES.c.platform == bindparam("platform"),
        PLATFORM_MESSAGES.c.chat_id == bindparam("chat_id"),
        PLATFORM_MESSAGES.c.platform_message_id == bindparam("pid"),
    )
    .limit(1)
)


# --- the SQLite fast path -----------------------------------------------------------------

RAW_BUMP_SEQ: Final = (
    "UPDATE conversations SET last_seq = last_seq + ? WHERE id = ? "
    "RETURNING last_seq, bot, platform, chat_id"
)
RAW_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (conversation_id, seq, role, author_id, content, extra, token_count, "
    "tokenizer, status, created_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
RAW_INSERT_PLATFORM: Final = (
    "INSERT INTO platform_messages (bot, platform, chat_id, platform_message_id, message_id) "
    "VALUES (?, ?, ?, ?, ?)"
)
RAW_FINISH: Final = (
    "UPDATE messages SET content = ?, status = ?, token_count = ?, tokenizer = ? WHERE id = ? "
    "RETURNING conversation_id"
)
RAW_FIND_PLATFORM: Final = (
    "SELECT m.id, m.conversation_id, m.seq, m.role, m.content, m.author_id, m.status, "
    "m.token_count, m.tokenizer, m.extra, m.created_at FROM messages AS m "
    "JOIN platform_messages AS p ON p.message_id = m.id "
    "WHERE p.bot = ? AND p.platform = ? AND p.chat_id = ? AND p.platform_message_id = ? LIMIT 1"
)
RAW_USAGE_UPSERT: Final = (
    "INSERT INTO usage_daily (bot, platform, user_key, day, prompt_tokens, completion_tokens, "
    "messages) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (bot, platform, user_key, day) DO UPDATE SET "
    "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens, "
    "messages = messages + excluded.messages"
)


def sqlite_raw(conn: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``conn`` (same transaction), or None on PostgreSQL."""
    if conn.dialect.name != "sqlite":
        return None
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def sqlite_time(value: datetime) -> str:
    """A timestamp as SQLAlchemy stores a ``UtcDateTime`` on SQLite."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
