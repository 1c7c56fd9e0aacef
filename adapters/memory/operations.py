"""The store's operations: each a function of one sync SQLAlchemy ``Connection``.

:class:`adapters.memory.store.SqlMemoryStore` binds a port call's arguments into one of these
and hands it to its executor, which runs it in one thread hop: inside a committed write
transaction (group commit on SQLite) or on a read connection. The SQL comes from
:mod:`adapters.memory.statements`; where a statement has a sqlite3 fast path, the operation
picks it by the connection's dialect. Errors propagate unchanged: the store translates them.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, select
from sqlalchemy.engine import Connection

from adapters.memory import media
from adapters.memory.statements import (
    BUMP_SEQ,
    CONVERSATION_COLUMNS,
    CONVERSATION_PLACE,
    CONVERSATIONS,
    FIND_PLATFORM,
    FINISH_PLACE,
    INSERT_MESSAGE,
    INSERT_MESSAGES,
    INSERT_PLATFORM,
    MESSAGE_COLUMNS,
    MESSAGES,
    META,
    PREFERENCES,
    RAW_BUMP_SEQ,
    RAW_FIND_PLATFORM,
    RAW_FINISH,
    RAW_INSERT_MESSAGE,
    RAW_INSERT_PLATFORM,
    RAW_USAGE_UPSERT,
    USAGE,
    USAGE_SECRET_KEY,
    USAGE_UPSERT,
    Place,
    raw_stored,
    slot,
    slot_filter,
    sqlite_raw,
    sqlite_time,
    to_conversation,
    to_stored,
    upsert,
)
from core.errors import DuplicateMessage, StoreError
from core.types import (
    Conversation,
    ConversationKey,
    MessageStatus,
    NewMessage,
    PlatformStats,
    Preferences,
    Role,
    StoredMessage,
    UsageSummary,
)

_log = logging.getLogger(__name__)


# --- conversations ----------------------------------------------------------------------------


def newest_conversation(conn: Connection, key: ConversationKey) -> Conversation | None:
    """The newest conversation of ``key``'s slot, if any."""
    row = conn.execute(
        select(*CONVERSATION_COLUMNS)
        .where(slot_filter(CONVERSATIONS, key))
        .order_by(CONVERSATIONS.c.id.desc())
        .limit(1)
    ).one_or_none()
    return to_conversation(row) if row is not None else None


def create_conversation(
    conn: Connection, key: ConversationKey, now: Callable[[], datetime], *, only_if_missing: bool
) -> Conversation:
    """Insert a conversation for ``key`` (or, ``only_if_missing``, return the newest one)."""
    if conn.dialect.name == "postgresql":
        # Two processes creating the first conversation of one slot at once would make
        # two; a transaction-scoped lock on the slot serialises them.
        conn.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(json.dumps(slot(key)), 0)))
        )
    if only_if_missing:
        existing = newest_conversation(conn, key)
        if existing is not None:
            return existing
    bot, platform, chat_id, thread_id, user_id = slot(key)
    created_at = now()
    new_id = conn.execute(
        insert(CONVERSATIONS)
        .values(
            bot=bot,
            platform=platform,
            chat_id=chat_id,
            thread_id=thread_id,
            user_id=user_id,
            last_seq=0,
            created_at=created_at,
        )
        .returning(CONVERSATIONS.c.id)
    ).scalar_one()
    return Conversation(id=new_id, key=key, created_at=created_at)


# --- messages ---------------------------------------------------------------------------------


def append(
    conn: Connection,
    conversation_id: int,
    batch: Sequence[NewMessage],
    now: Callable[[], datetime],
) -> list[StoredMessage]:
    """Reserve ``len(batch)`` sequence numbers; insert the messages, platform ids and media links.

    Raises:
        StoreError: the conversation does not exist.
        DuplicateMessage: a platform id is already recorded (the caller's transaction or
            savepoint undoes the sequence bump).
    """
    n = len(batch)
    raw = sqlite_raw(conn)
    if raw is not None:
        row = raw.execute(RAW_BUMP_SEQ, (n, conversation_id)).fetchone()
        row = Place(*row) if row is not None else None
    else:
        row = conn.execute(BUMP_SEQ, {"cid": conversation_id, "n": n}).one_or_none()
    if row is None:
        raise StoreError(f"conversation {conversation_id} does not exist")
    for m in batch:
        chat_id = m.platform_chat_id if m.platform_chat_id is not None else row.chat_id
        for pid in m.platform_message_ids:
            existing = find_platform_message(conn, row.bot, row.platform, chat_id, pid)
            if existing is not None:  # a redelivery: the group's savepoint undoes the update
                raise DuplicateMessage(existing)
    first_seq = row.last_seq - n + 1
    created_at = now()
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
            "created_at": created_at,
            "owner": m.owner,
        }
        for i, m in enumerate(batch)
    ]
    ids = _insert_messages(conn, raw, params, created_at)
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
        insert_platform_ids(conn, platform_rows)
    media_rows = [
        (message_id, position, sha256)
        for m, message_id in zip(batch, ids, strict=True)
        for position, sha256 in enumerate(m.media)
    ]
    if media_rows:
        media.link(conn, media_rows)
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
            created_at=created_at,
        )
        for message_id, p in zip(ids, params, strict=True)
    ]


def _insert_messages(
    conn: Connection, raw: Any, params: list[dict[str, Any]], created_at: datetime
) -> list[int]:
    """Insert the ``messages`` rows of ``params``; return their ids in order."""
    if raw is not None:
        stamp = sqlite_time(created_at)
        return [
            raw.execute(
                RAW_INSERT_MESSAGE,
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
                    p["owner"],
                ),
            ).fetchone()[0]
            for p in params
        ]
    if len(params) == 1:
        return [conn.execute(INSERT_MESSAGE, params[0]).scalar_one()]
    return list(conn.execute(INSERT_MESSAGES, params).scalars())


def finish(
    conn: Connection,
    message_id: int,
    content: str,
    status: str,
    token_count: int | None,
    tokenizer: str | None,
    platform_chat_id: str | None,
    pids: Sequence[str],
    usage_row: dict[str, Any] | None,
) -> None:
    """Set a message's content, status and token count; record its platform ids.

    ``usage_row`` is added first, even when the message is gone (the tokens were spent).
    """
    if usage_row is not None:
        add_usage(conn, usage_row)
    values = {
        "mid": message_id,
        "content": content,
        "status": status,
        "token_count": token_count,
        "tokenizer": tokenizer,
    }
    raw = sqlite_raw(conn)
    if raw is None:  # PostgreSQL: the update returns the conversation's place as well
        place = conn.execute(FINISH_PLACE, values).one_or_none()
        if place is None:
            _log.info("message %s no longer exists; its final state is dropped", message_id)
            return
    else:
        found = raw.execute(
            RAW_FINISH, (content, status, token_count, tokenizer, message_id)
        ).fetchone()
        if found is None:
            _log.info("message %s no longer exists; its final state is dropped", message_id)
            return
        place = conn.execute(CONVERSATION_PLACE, {"cid": found[0]}).one() if pids else None
    if pids:
        assert place is not None
        chat_id = platform_chat_id if platform_chat_id is not None else place.chat_id
        insert_platform_ids(
            conn,
            [
                {
                    "bot": place.bot,
                    "platform": place.platform,
                    "chat_id": chat_id,
                    "platform_message_id": pid,
                    "message_id": message_id,
                }
                for pid in pids
            ],
        )


def find_platform_message(
    conn: Connection, bot: str, platform: str, chat_id: str, platform_message_id: str
) -> StoredMessage | None:
    """The message a platform message id was recorded for, if any."""
    raw = sqlite_raw(conn)
    if raw is not None:
        found = raw.execute(RAW_FIND_PLATFORM, (bot, platform, chat_id, platform_message_id))
        values = found.fetchone()
        return raw_stored(values) if values is not None else None
    row = conn.execute(
        FIND_PLATFORM,
        {"bot": bot, "platform": platform, "chat_id": chat_id, "pid": platform_message_id},
    ).one_or_none()
    return to_stored(row) if row is not None else None


def insert_platform_ids(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record ``platform_messages`` rows (a taken id raises ``IntegrityError``)."""
    raw = sqlite_raw(conn)
    if raw is not None:
        raw.executemany(
            RAW_INSERT_PLATFORM,
            [
                (r["bot"], r["platform"], r["chat_id"], r["platform_message_id"], r["message_id"])
                for r in rows
            ],
        )
        return
    conn.execute(INSERT_PLATFORM, rows)


def reply_to(conn: Connection, message: StoredMessage) -> StoredMessage | None:
    """The first assistant message after ``message`` in its conversation, if any."""
    row = conn.execute(
        select(*MESSAGE_COLUMNS)
        .where(
            MESSAGES.c.conversation_id == message.conversation_id,
            MESSAGES.c.seq > message.seq,
            MESSAGES.c.role == Role.ASSISTANT.value,
        )
        .order_by(MESSAGES.c.seq)
        .limit(1)
    ).one_or_none()
    return to_stored(row) if row is not None else None


# --- preferences ------------------------------------------------------------------------------


def get_preferences(conn: Connection, key: ConversationKey) -> Preferences:
    """The slot's preferences, or the defaults."""
    row = conn.execute(
        select(PREFERENCES.c.persona, PREFERENCES.c.model).where(slot_filter(PREFERENCES, key))
    ).one_or_none()
    if row is None:
        return Preferences()
    return Preferences(persona=row.persona, model=row.model)


def save_preferences(
    conn: Connection, key: ConversationKey, preferences: Preferences, now: datetime
) -> None:
    """Insert or replace the slot's preferences."""
    bot, platform, chat_id, thread_id, user_id = slot(key)
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
    stmt = upsert(conn)(PREFERENCES).values(values)
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


# --- usage ------------------------------------------------------------------------------------


def ensure_secret(conn: Connection) -> bytes:
    """The usage pseudonym secret from ``meta``, created on first use."""
    existing = conn.execute(
        select(META.c.value).where(META.c.key == USAGE_SECRET_KEY)
    ).scalar_one_or_none()
    if existing is None:
        stmt = upsert(conn)(META).values(key=USAGE_SECRET_KEY, value=secrets.token_hex(32))
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
        existing = conn.execute(
            select(META.c.value).where(META.c.key == USAGE_SECRET_KEY)
        ).scalar_one()
    return bytes.fromhex(existing)


def add_usage(conn: Connection, row: dict[str, Any]) -> None:
    """Add ``row``'s counts to its (bot, platform, user_key, day) counters."""
    raw = sqlite_raw(conn)
    if raw is not None:
        raw.execute(
            RAW_USAGE_UPSERT,
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
    conn.execute(USAGE_UPSERT[conn.dialect.name], row)


def get_usage(conn: Connection, bot: str, platform: str, user_key: str, day: date) -> UsageSummary:
    """A pseudonym's tokens on ``day`` and in total (zeros when unknown)."""
    tokens = USAGE.c.prompt_tokens + USAGE.c.completion_tokens
    row = conn.execute(
        select(
            func.coalesce(func.sum(tokens), 0).label("total"),
            func.coalesce(func.sum(case((USAGE.c.day == day, tokens), else_=0)), 0).label("today"),
            func.coalesce(func.sum(case((USAGE.c.day == day, USAGE.c.messages), else_=0)), 0).label(
                "messages_today"
            ),
        ).where(
            USAGE.c.bot == bot,
            USAGE.c.platform == platform,
            USAGE.c.user_key == user_key,
        )
    ).one()
    return UsageSummary(
        tokens_today=int(row.today),
        tokens_total=int(row.total),
        messages_today=int(row.messages_today),
    )


# --- statistics ----------------------------------------------------------------------------


def stats(conn: Connection, bot: str, day: date) -> list[PlatformStats]:
    """Counts per platform for ``bot``, in total and on ``day`` (UTC); one snapshot."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)
    counts: dict[str, dict[str, int]] = {}

    def put(platform: str, **values: Any) -> None:
        slot = counts.setdefault(platform, {})
        for name, value in values.items():
            slot[name] = int(value or 0)

    tokens = USAGE.c.prompt_tokens + USAGE.c.completion_tokens
    users = func.count(func.distinct(USAGE.c.user_key)).label("users")
    with conn.begin():
        for r in conn.execute(
            select(USAGE.c.platform, users, func.sum(tokens).label("tokens"))
            .where(USAGE.c.bot == bot)
            .group_by(USAGE.c.platform)
        ):
            put(r.platform, users_total=r.users, tokens_total=r.tokens)
        for r in conn.execute(
            select(USAGE.c.platform, users, func.sum(tokens).label("tokens"))
            .where(USAGE.c.bot == bot, USAGE.c.day == day)
            .group_by(USAGE.c.platform)
        ):
            put(r.platform, users_today=r.users, tokens_today=r.tokens)
        created = CONVERSATIONS.c.created_at
        for r in conn.execute(
            select(
                CONVERSATIONS.c.platform, func.count().label("total"), _on_day(created, start, end)
            )
            .where(CONVERSATIONS.c.bot == bot)
            .group_by(CONVERSATIONS.c.platform)
        ):
            put(r.platform, conversations_total=r.total, conversations_today=r.today)
        for r in conn.execute(
            select(
                CONVERSATIONS.c.platform,
                func.count().label("total"),
                _on_day(MESSAGES.c.created_at, start, end),
            )
            .select_from(MESSAGES)
            .join(CONVERSATIONS, CONVERSATIONS.c.id == MESSAGES.c.conversation_id)
            .where(CONVERSATIONS.c.bot == bot)
            .group_by(CONVERSATIONS.c.platform)
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


def _on_day(column: Any, start: datetime, end: datetime) -> Any:
    """``SUM(start <= column < end)`` labelled ``today``."""
    return func.sum(case((and_(column >= start, column < end), 1), else_=0)).label("today")
