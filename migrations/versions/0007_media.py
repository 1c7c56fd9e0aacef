"""Media: images stored once per content hash, and the messages that show them.

* ``media``: an image (already downscaled) keyed by the hex SHA-256 of its bytes, with its
  MIME type, size in pixels and bytes, the bytes themselves (``BLOB`` / ``bytea``, so that
  ``chinwag db backup`` and every process on the database have them) and when it was
  stored (refreshed when it is saved again after a while).
* ``message_media``: a message showing an image (``position`` among the message's media),
  deleted with its message. ``/forget`` deletes the images no remaining message links to.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-17 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (not imported from the models).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("mime_type", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_media")),
    )
    op.create_table(
        "message_media",
        sa.Column("message_id", Id, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_media_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "position", name=op.f("pk_message_media")),
    )
    op.create_index("ix_message_media_sha256", "message_media", ["sha256"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_message_media_sha256", table_name="message_media")
    op.drop_table("message_media")
    op.drop_table("media")
