"""Tool calls waiting for a confirmation, and the audit of every proposed tool call.

* ``pending_tool_calls``: an ``act`` or ``dangerous`` call the model proposed, waiting for
  the person who asked (or an admin) to press a button. The row outlives a restart; the
  claim is one conditional ``UPDATE ... WHERE state = 'pending'``, so a double press, a
  redelivered button or two replicas racing run it once. Deleted with its conversation.
  ``slot_user_id`` is the conversation key's user (``""`` in a shared chat); ``user_id`` is
  who asked.
* ``tool_audit``: every proposed call (time, bot, platform, chat, user, tool, source,
  redacted arguments, risk, decision, result status, duration). ``/forget`` clears
  ``user_id``; ``user_pseudonym`` (the usage counters' HMAC) stays.

The tool rounds themselves live in ``messages.extra`` (no schema change).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 15:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (not imported from the models).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
_PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.create_table(
        "pending_tool_calls",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=False),
        sa.Column("thread_id", sa.String(), nullable=False),
        sa.Column("slot_user_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("tool", sa.String(length=128), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("risk", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("audit_id", Id, nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_pending_tool_calls_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_tool_calls")),
    )
    op.create_index(
        "ix_pending_tool_calls_conversation_state",
        "pending_tool_calls",
        ["conversation_id", "state"],
        unique=False,
    )
    # Only the expiry sweep's rows: calls still waiting, per bot, by expiry.
    op.create_index(
        "ix_pending_tool_calls_expiry",
        "pending_tool_calls",
        ["bot", "expires_at"],
        unique=False,
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
    op.create_index(
        "ix_pending_tool_calls_user",
        "pending_tool_calls",
        ["bot", "platform", "user_id"],
        unique=False,
    )
    op.create_table(
        "tool_audit",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("user_pseudonym", sa.String(length=64), nullable=False),
        sa.Column("tool", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("risk", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("result_status", sa.String(length=16), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_audit")),
    )
    op.create_index("ix_tool_audit_bot_at", "tool_audit", ["bot", "at"], unique=False)
    op.create_index(
        "ix_tool_audit_user_pseudonym_at", "tool_audit", ["user_pseudonym", "at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_tool_audit_user_pseudonym_at", table_name="tool_audit")
    op.drop_index("ix_tool_audit_bot_at", table_name="tool_audit")
    op.drop_table("tool_audit")
    op.drop_index("ix_pending_tool_calls_user", table_name="pending_tool_calls")
    op.drop_index("ix_pending_tool_calls_expiry", table_name="pending_tool_calls")
    op.drop_index("ix_pending_tool_calls_conversation_state", table_name="pending_tool_calls")
    op.drop_table("pending_tool_calls")
