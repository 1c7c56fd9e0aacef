"""The knowledge base: documents, their chunks with vectors, and keyword search.

* ``kb_documents``: a document of a scope (``bot``, ``scope_kind`` bot/chat/user,
  ``scope_owner`` "" / "platform:chat" / "platform:user") with its title, source, content
  hash, pages, chunk count, the embedder and dimension of its vectors, who added it, when,
  and ``version`` (bumped by each re-embedding). Ids are never reused.
* ``kb_chunks``: a document's chunks (position, text, page, heading) with the vector as
  float32 little-endian bytes, and the document's scope columns copied so that a search
  filters by scope before ranking. Deleted with their document.
* Keyword search, not described by the models: on SQLite the FTS5 table ``kb_chunks_fts``
  (external content ``kb_chunks``, kept in sync by triggers) and its ``fts5vocab`` table
  ``kb_chunks_fts_vocab`` (how many chunks hold each word); on PostgreSQL the stored
  generated column ``kb_chunks.text_tsv`` (``to_tsvector('simple', text)``) and its GIN index
  ``ix_kb_chunks_text_tsv``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (not imported from the models).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE kb_chunks_fts USING fts5(text, content='kb_chunks', content_rowid='id')",
    "CREATE TRIGGER kb_chunks_fts_insert AFTER INSERT ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER kb_chunks_fts_delete AFTER DELETE ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "END",
    "CREATE TRIGGER kb_chunks_fts_update AFTER UPDATE OF text ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO kb_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    # How many chunks hold a word: a search leaves out words too common to rank quickly.
    "CREATE VIRTUAL TABLE kb_chunks_fts_vocab USING fts5vocab('kb_chunks_fts', 'row')",
)
_POSTGRES_FTS = (
    # Stored, so that a search reads and ranks it rather than recomputing it for every row.
    "ALTER TABLE kb_chunks ADD COLUMN text_tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED",
    "CREATE INDEX ix_kb_chunks_text_tsv ON kb_chunks USING gin (text_tsv)",
)


def _scope_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("bot", sa.String(length=64), nullable=False),
        sa.Column("scope_kind", sa.String(length=8), nullable=False),
        sa.Column("scope_owner", sa.String(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "kb_documents",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        *_scope_columns(),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("embedder", sa.String(length=128), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("added_by", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_documents")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_kb_documents_scope", "kb_documents", ["bot", "scope_kind", "scope_owner"], unique=False
    )
    op.create_table(
        "kb_chunks",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("document_id", Id, nullable=False),
        *_scope_columns(),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("heading", sa.Text(), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["kb_documents.id"],
            name=op.f("fk_kb_chunks_document_id_kb_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_chunks")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_kb_chunks_scope", "kb_chunks", ["bot", "scope_kind", "scope_owner"], unique=False
    )
    op.create_index(
        "ix_kb_chunks_document_id_position",
        "kb_chunks",
        ["document_id", "position"],
        unique=False,
    )
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_FTS if dialect == "sqlite" else _POSTGRES_FTS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS kb_chunks_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS kb_chunks_fts_vocab")
        op.execute("DROP TABLE IF EXISTS kb_chunks_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_kb_chunks_text_tsv")
        op.execute("ALTER TABLE kb_chunks DROP COLUMN IF EXISTS text_tsv")
    op.drop_index("ix_kb_chunks_document_id_position", table_name="kb_chunks")
    op.drop_index("ix_kb_chunks_scope", table_name="kb_chunks")
    op.drop_table("kb_chunks")
    op.drop_index("ix_kb_documents_scope", table_name="kb_documents")
    op.drop_table("kb_documents")
