"""The SQL schema of the memory store (SQLAlchemy 2 typed ORM).

The tables are created and changed by the Alembic revisions in ``migrations/versions``
only; a test proves ``alembic upgrade head`` yields exactly this metadata on SQLite and
PostgreSQL.

Conventions:
    * ``thread_id`` and ``user_id`` of a conversation slot are stored as ``""`` when the
      domain value is ``None``, so the unique keys hold on both databases (``NULL`` never
      equals ``NULL``); :mod:`adapters.memory.statements` maps them back.
    * Message order is ``seq``, assigned per conversation from ``conversations.last_seq``;
      timestamps are informative only. Timestamps are stored in UTC and read back
      tz-aware (SQLite keeps no zone: :class:`UtcDateTime` restores it).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; on SQLite only ``INTEGER PRIMARY KEY`` is the auto-assigned rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as a tz-aware UTC ``datetime``.

    Naive values are refused on write: every timestamp chinwag makes is aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; SQLite stores the naive UTC wall time."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC timestamp column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to SQLite's naive values; convert others to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the naming conventions."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # SQLAlchemy's declarative API: read once per class, never mutated.
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON(none_as_null=True)}  # noqa: RUF012


class ConversationRow(Base):
    """One conversation of a slot (bot, platform, chat, thread, user); ``/reset`` adds one."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_slot", "bot", "platform", "chat_id", "thread_id", "user_id", "id"),
        Index("ix_conversations_user", "bot", "platform", "user_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    bot: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String())
    thread_id: Mapped[str] = mapped_column(String())
    user_id: Mapped[str] = mapped_column(String())
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    created_at: Mapped[datetime]


class MessageRow(Base):
    """One message of a conversation, ordered by ``seq``."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        # Only the crash-recovery sweep's rows: a full status index could lure PostgreSQL's
        # planner away from the history key (see migration 0003).
        Index(
            "ix_messages_in_progress",
            "conversation_id",
            postgresql_where=text("status = 'in_progress'"),
            sqlite_where=text("status = 'in_progress'"),
        ),
        Index("ix_messages_author_id", "author_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        Id, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    role: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[str | None] = mapped_column(String())
    content: Mapped[str] = mapped_column(Text)
    extra: Mapped[dict[str, Any] | None]
    token_count: Mapped[int | None] = mapped_column(Integer)
    tokenizer: Mapped[str | None] = mapped_column(String())
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    # The instance writing a reply in progress (``instances.id``); recovery takes over a
    # reply only once its owner's heartbeat is stale (see migration 0004).
    owner: Mapped[str | None] = mapped_column(String(64))


class PlatformMessageRow(Base):
    """A platform's message id that carried a stored message (a reply may take several)."""

    __tablename__ = "platform_messages"
    __table_args__ = (
        UniqueConstraint("bot", "platform", "chat_id", "platform_message_id"),
        Index("ix_platform_messages_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    bot: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String())
    platform_message_id: Mapped[str] = mapped_column(String())
    message_id: Mapped[int] = mapped_column(Id, ForeignKey("messages.id", ondelete="CASCADE"))


class PreferencesRow(Base):
    """Per-slot preferences that outlive ``/reset``."""

    __tablename__ = "preferences"
    __table_args__ = (UniqueConstraint("bot", "platform", "chat_id", "thread_id", "user_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    bot: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String())
    thread_id: Mapped[str] = mapped_column(String())
    user_id: Mapped[str] = mapped_column(String())
    persona: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String())
    updated_at: Mapped[datetime]


class UsageDailyRow(Base):
    """Pseudonymous daily usage counters; ``user_key`` is an HMAC, never the user id."""

    __tablename__ = "usage_daily"
    __table_args__ = (
        UniqueConstraint("bot", "platform", "user_key", "day"),
        Index("ix_usage_daily_bot_day", "bot", "day"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    bot: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    user_key: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    messages: Mapped[int] = mapped_column(Integer)


class InstanceRow(Base):
    """A running ``chinwag`` process: its identity and its heartbeat (the owner leases)."""

    __tablename__ = "instances"
    __table_args__ = (Index("ix_instances_bot", "bot"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bot: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class LeaseRow(Base):
    """Who serves one (bot, platform): a second process on the same token waits for it."""

    __tablename__ = "leases"

    bot: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime]


class PendingToolCallRow(Base):
    """A tool call waiting for a person's confirmation (or past it); see migration 0005.

    ``slot_user_id`` is the conversation key's user (``""`` in a shared chat); ``user_id``
    is who asked. The claim is one conditional update of ``state``.
    """

    __tablename__ = "pending_tool_calls"
    __table_args__ = (
        Index("ix_pending_tool_calls_conversation_state", "conversation_id", "state"),
        Index(
            "ix_pending_tool_calls_expiry",
            "bot",
            "expires_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index("ix_pending_tool_calls_user", "bot", "platform", "user_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bot: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String())
    thread_id: Mapped[str] = mapped_column(String())
    slot_user_id: Mapped[str] = mapped_column(String())
    user_id: Mapped[str] = mapped_column(String())
    conversation_id: Mapped[int] = mapped_column(
        Id, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[int] = mapped_column(Id)
    call_id: Mapped[str] = mapped_column(String())
    tool: Mapped[str] = mapped_column(String(128))
    arguments: Mapped[str] = mapped_column(Text)
    risk: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    owner: Mapped[str | None] = mapped_column(String(64))
    audit_id: Mapped[int | None] = mapped_column(Id)


class ToolAuditRow(Base):
    """One proposed tool call; ``user_id`` is cleared by ``/forget``, the pseudonym stays."""

    __tablename__ = "tool_audit"
    __table_args__ = (
        Index("ix_tool_audit_bot_at", "bot", "at"),
        Index("ix_tool_audit_user_pseudonym_at", "user_pseudonym", "at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    bot: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String())
    user_id: Mapped[str | None] = mapped_column(String())
    user_pseudonym: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(128))
    arguments: Mapped[str] = mapped_column(Text)
    risk: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    result_status: Mapped[str | None] = mapped_column(String(16))
    duration_ms: Mapped[float | None] = mapped_column(Float)


class MetaRow(Base):
    """Store-wide key/value settings (the usage pseudonym secret)."""

    __tablename__ = "chinwag_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class KbDocumentRow(Base):
    """A knowledge-base document of a scope (bot, kind, owner); see migration 0006.

    Ids are never reused (AUTOINCREMENT on SQLite): a user's ``/kb remove ID`` and the
    knowledge store's vector cache both rely on it. ``version`` counts re-embeddings.
    """

    __tablename__ = "kb_documents"
    __table_args__ = (
        Index("ix_kb_documents_scope", "bot", "scope_kind", "scope_owner"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    bot: Mapped[str] = mapped_column(String(64))
    scope_kind: Mapped[str] = mapped_column(String(8))
    scope_owner: Mapped[str] = mapped_column(String())
    title: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    pages: Mapped[int | None] = mapped_column(Integer)
    chunks: Mapped[int] = mapped_column(Integer)
    embedder: Mapped[str] = mapped_column(String(128))
    dimension: Mapped[int] = mapped_column(Integer)
    added_by: Mapped[str] = mapped_column(String())
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class KbChunkRow(Base):
    """A chunk of a document with its vector (float32, little-endian) and its scope.

    The scope columns are copied from the document so that a search filters chunks by scope
    before it ranks them. Keyword search uses objects the models do not describe, created by
    migration 0006: the FTS5 table ``kb_chunks_fts`` with its triggers and its vocabulary
    ``kb_chunks_fts_vocab`` (SQLite); the stored
    generated column ``text_tsv`` (``to_tsvector('simple', text)``) and its GIN index
    ``ix_kb_chunks_text_tsv`` (PostgreSQL).
    """

    __tablename__ = "kb_chunks"
    __table_args__ = (
        Index("ix_kb_chunks_scope", "bot", "scope_kind", "scope_owner"),
        Index("ix_kb_chunks_document_id_position", "document_id", "position"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(Id, ForeignKey("kb_documents.id", ondelete="CASCADE"))
    bot: Mapped[str] = mapped_column(String(64))
    scope_kind: Mapped[str] = mapped_column(String(8))
    scope_owner: Mapped[str] = mapped_column(String())
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer)
    heading: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class MediaRow(Base):
    """An image stored once per content hash (``sha256`` of ``data``); see migration 0007.

    Messages show it through ``message_media``. ``created_at`` is refreshed when the same
    image is saved again after a while, so that the sweep of media no message links to
    (older than a day) never takes one a message is about to link.
    """

    __tablename__ = "media"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class MessageMediaRow(Base):
    """A message showing a stored image (``position``: its place among the message's media).

    Deleted with its message; ``sha256`` has no foreign key so that linking never fails on
    an image swept meanwhile (the message then shows its caption alone).
    """

    __tablename__ = "message_media"
    __table_args__ = (Index("ix_message_media_sha256", "sha256"),)

    message_id: Mapped[int] = mapped_column(
        Id, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))


KB_UNMODELLED: frozenset[str] = frozenset({"kb_chunks_fts", "ix_kb_chunks_text_tsv", "text_tsv"})
"""Keyword-search objects of migration 0006 the models leave out (and their FTS5 shadow
tables, ``kb_chunks_fts_*``): schema comparisons skip them by name."""


metadata = Base.metadata
"""The metadata Alembic compares against."""
