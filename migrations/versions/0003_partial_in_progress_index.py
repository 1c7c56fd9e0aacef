"""Replace the status index with a partial index on the messages left in progress.

``ix_messages_status`` covered every message and was rewritten by every status change, yet
the crash-recovery sweep only ever looks for ``in_progress`` rows: a partial index on those
serves it at a fraction of the size and write cost. It also takes away an index PostgreSQL's
planner, before statistics caught up with a fast-growing conversation, combined with the
history key in a bitmap scan of the whole conversation.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IN_PROGRESS = sa.text("status = 'in_progress'")


def upgrade() -> None:
    op.drop_index("ix_messages_status", table_name="messages")
    op.create_index(
        "ix_messages_in_progress",
        "messages",
        ["conversation_id"],
        unique=False,
        postgresql_where=_IN_PROGRESS,
        sqlite_where=_IN_PROGRESS,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_in_progress", table_name="messages")
    op.create_index("ix_messages_status", "messages", ["status"], unique=False)
