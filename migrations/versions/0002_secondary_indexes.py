"""Secondary indexes for the store's hot and maintenance queries.

* ``ix_conversations_slot``: the newest conversation of a slot (key columns + id).
* ``ix_conversations_user``: a user's conversations, for ``/forget`` and ``/export``.
* ``ix_messages_status``: the crash-recovery sweep for messages left in progress.
* ``ix_messages_author_id``: a user's own messages in shared conversations.
* ``ix_platform_messages_message_id``: deleting messages cascades to their platform ids
  (without it every deleted message would scan the whole table).
* ``ix_usage_daily_bot_day``: ``/stats`` for one day.

The history read (``recent_messages``) is served by the unique key
``uq_messages_conversation_id_seq`` from 0001: a backward range scan on
(conversation_id, seq), whose cost depends on the page size only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 22:00:01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES: list[tuple[str, str, list[str]]] = [
    (
        "ix_conversations_slot",
        "conversations",
        ["bot", "platform", "chat_id", "thread_id", "user_id", "id"],
    ),
    ("ix_conversations_user", "conversations", ["bot", "platform", "user_id"]),
    ("ix_messages_status", "messages", ["status"]),
    ("ix_messages_author_id", "messages", ["author_id"]),
    ("ix_platform_messages_message_id", "platform_messages", ["message_id"]),
    ("ix_usage_daily_bot_day", "usage_daily", ["bot", "day"]),
]


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
