"""Process identities and owner leases, for crash recovery and a second instance.

* ``instances``: every running ``chinwag`` process (id, bot, host, pid, start, heartbeat).
  A process whose heartbeat is older than a few intervals (or whose pid is gone on the same
  host) is dead: what it owned may be taken over.
* ``messages.owner``: the instance writing a reply in progress. Recovery regenerates (or
  marks) only replies whose owner is dead, never one a live process still streams.
* ``leases``: who serves a (bot, platform); a second process on the same token waits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy of the column type at this revision (not imported from the models).
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("heartbeat_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.create_index("ix_instances_bot", "instances", ["bot"], unique=False)
    op.create_table(
        "leases",
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("acquired_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("bot", "platform", name=op.f("pk_leases")),
    )
    # A nullable column: a plain ADD COLUMN on both databases, no table rebuild.
    op.add_column("messages", sa.Column("owner", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("owner")
    op.drop_table("leases")
    op.drop_index("ix_instances_bot", table_name="instances")
    op.drop_table("instances")
