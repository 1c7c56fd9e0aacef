"""Initial schema: conversations, messages, platform ids, preferences, usage, meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as they were at this revision (not imported from the
# models, which may move on).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=False),
        sa.Column("thread_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("last_seq", Id, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    op.create_table(
        "messages",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("seq", Id, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("author_id", sa.String(), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("extra", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("tokenizer", sa.String(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("conversation_id", "seq", name=op.f("uq_messages_conversation_id_seq")),
    )
    op.create_table(
        "platform_messages",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=False),
        sa.Column("platform_message_id", sa.String(), nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_platform_messages_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_messages")),
        sa.UniqueConstraint(
            "bot",
            "platform",
            "chat_id",
            "platform_message_id",
            name=op.f("uq_platform_messages_bot_platform_chat_id_platform_message_id"),
        ),
    )
    op.create_table(
        "preferences",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=False),
        sa.Column("thread_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("persona", sa.Text(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preferences")),
        sa.UniqueConstraint(
            "bot",
            "platform",
            "chat_id",
            "thread_id",
            "user_id",
            name=op.f("uq_preferences_bot_platform_chat_id_thread_id_user_id"),
        ),
    )
    op.create_table(
        "usage_daily",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("user_key", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_daily")),
        sa.UniqueConstraint(
            "bot",
            "platform",
            "user_key",
            "day",
            name=op.f("uq_usage_daily_bot_platform_user_key_day"),
        ),
    )
    op.create_table(
        "chinwag_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_chinwag_meta")),
    )


def downgrade() -> None:
    op.drop_table("chinwag_meta")
    op.drop_table("usage_daily")
    op.drop_table("preferences")
    op.drop_table("platform_messages")
    op.drop_table("messages")
    op.drop_table("conversations")
