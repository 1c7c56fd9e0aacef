"""The SQL operations of the knowledge store: functions of one sync SQLAlchemy ``Connection``.

:class:`adapters.memory.knowledge.SqlKnowledgeStore` binds their arguments and hands them to
the memory store's executor, like :mod:`adapters.memory.operations` for the memory store:
writes run inside a transaction (a SAVEPOINT of a group commit on SQLite), so an operation
that raises ``KbError`` leaves nothing behind.

Keyword search uses what migration 0006 made outside the models: the FTS5 table
``kb_chunks_fts`` (``MATCH`` with each word quoted, ranked by FTS5's ``rank``, bm25) on
SQLite, and the stored generated column ``text_tsv`` (``to_tsvector('simple', text)``) with
its GIN index (``plainto_tsquery`` per word, OR-ed, ranked by ``ts_rank``) on PostgreSQL.
Words are :func:`adapters.memory.kb_words.query_words` (no stop words), bound as parameters
or quoted: no user text can be FTS syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, delete, func, or_, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection, Row

from adapters.memory.kb_search import to_blob
from adapters.memory.kb_words import affordable
from adapters.memory.models import KbChunkRow, KbDocumentRow
from core.errors import KbError
from core.knowledge import ChunkDraft, DocumentInfo, KbScope, NewDocument, ScopeKind

DOCUMENTS: Final = cast(Table, KbDocumentRow.__table__)
CHUNKS: Final = cast(Table, KbChunkRow.__table__)

Signature = tuple[int, int, int]
"""What changes whenever the documents of some scopes do: (count, newest id, versions)."""


def in_scopes(table: Table, scopes: Sequence[KbScope]) -> ColumnElement[bool]:
    """``table``'s rows of one of ``scopes`` (both tables carry the scope columns)."""
    return or_(
        *(
            and_(
                table.c.bot == scope.bot,
                table.c.scope_kind == scope.kind.value,
                table.c.scope_owner == scope.owner,
            )
            for scope in scopes
        )
    )


def to_info(row: Row[Any]) -> DocumentInfo:
    """A ``kb_documents`` row as the port's type."""
    return DocumentInfo(
        id=row.id,
        scope=KbScope(row.bot, ScopeKind(row.scope_kind), row.scope_owner),
        title=row.title,
        source=row.source,
        content_hash=row.content_hash,
        chunks=row.chunks,
        pages=row.pages,
        embedder=row.embedder,
        dimension=row.dimension,
        added_by=row.added_by,
        created_at=row.created_at,
    )


def find_document(
    conn: Connection, scope: KbScope, source: str | None, content_hash: str | None
) -> DocumentInfo | None:
    """The scope's newest document with ``source``, else with ``content_hash``."""
    for column, value in ((DOCUMENTS.c.source, source), (DOCUMENTS.c.content_hash, content_hash)):
        if value is None:
            continue
        query = (
            select(DOCUMENTS)
            .where(in_scopes(DOCUMENTS, [scope]), column == value)
            .order_by(DOCUMENTS.c.id.desc())
            .limit(1)
        )
        row = conn.execute(query).first()
        if row is not None:
            return to_info(row)
    return None


def _delete_documents(conn: Connection, where: ColumnElement[bool]) -> int:
    """Delete the documents ``where`` selects with their chunks; return how many."""
    ids = [row.id for row in conn.execute(select(DOCUMENTS.c.id).where(where))]
    if not ids:
        return 0
    # Explicitly, not through ON DELETE CASCADE: the FTS5 triggers see every chunk go.
    conn.execute(delete(CHUNKS).where(CHUNKS.c.document_id.in_(ids)))
    conn.execute(delete(DOCUMENTS).where(DOCUMENTS.c.id.in_(ids)))
    return len(ids)


def add_document(
    conn: Connection, document: NewDocument, replaces: int | None, now: datetime
) -> int:
    """Insert a document and its chunks (deleting ``replaces`` of the same scope first).

    Raises:
        KbError: the scope holds vectors of another embedder or dimension.
    """
    scope = document.scope
    others = select(DOCUMENTS.c.embedder, DOCUMENTS.c.dimension).where(
        in_scopes(DOCUMENTS, [scope]), DOCUMENTS.c.chunks > 0
    )
    if replaces is not None:
        others = others.where(DOCUMENTS.c.id != replaces)
    for row in conn.execute(others.distinct()):
        if (row.embedder, row.dimension) != (document.embedder, document.dimension):
            raise KbError(
                f"this knowledge base holds vectors of {row.embedder} ({row.dimension} "
                f"dimensions), not {document.embedder} ({document.dimension}): "
                "run `chinwag kb reindex` first"
            )
    if replaces is not None:
        _delete_documents(conn, and_(DOCUMENTS.c.id == replaces, in_scopes(DOCUMENTS, [scope])))
    owner = {"bot": scope.bot, "scope_kind": scope.kind.value, "scope_owner": scope.owner}
    inserted = conn.execute(
        DOCUMENTS.insert().returning(DOCUMENTS.c.id),
        {
            **owner,
            "title": document.title,
            "source": document.source,
            "content_hash": document.content_hash,
            "pages": document.pages,
            "chunks": len(document.chunks),
            "embedder": document.embedder,
            "dimension": document.dimension,
            "added_by": document.added_by,
            "version": 1,
            "created_at": now,
        },
    )
    document_id = int(inserted.scalar_one())
    rows = [
        {
            **owner,
            "document_id": document_id,
            "position": chunk.position,
            "text": chunk.text,
            "page": chunk.page,
            "heading": chunk.heading,
            "vector": to_blob(vector),
        }
        for chunk, vector in zip(document.chunks, document.vectors, strict=True)
    ]
    if rows:
        conn.execute(CHUNKS.insert(), rows)
    return document_id


def documents(conn: Connection, scopes: Sequence[KbScope]) -> list[DocumentInfo]:
    """The documents of ``scopes``, oldest first."""
    query = (
        select(DOCUMENTS)
        .where(in_scopes(DOCUMENTS, scopes))
        .order_by(DOCUMENTS.c.created_at, DOCUMENTS.c.id)
    )
    return [to_info(row) for row in conn.execute(query)]


def remove_document(conn: Connection, document_id: int, scopes: Sequence[KbScope]) -> bool:
    """Delete a document of ``scopes`` with its chunks; whether it was there."""
    where = and_(DOCUMENTS.c.id == document_id, in_scopes(DOCUMENTS, scopes))
    return _delete_documents(conn, where) > 0


def forget_owner(conn: Connection, bot: str, owner: str) -> int:
    """Delete the user scope ``owner``'s documents; return how many."""
    return _delete_documents(conn, in_scopes(DOCUMENTS, [KbScope(bot, ScopeKind.USER, owner)]))


def chunks_of(conn: Connection, document_id: int) -> list[tuple[int, ChunkDraft]]:
    """A document's chunks in order."""
    query = (
        select(CHUNKS.c.id, CHUNKS.c.position, CHUNKS.c.text, CHUNKS.c.page, CHUNKS.c.heading)
        .where(CHUNKS.c.document_id == document_id)
        .order_by(CHUNKS.c.position, CHUNKS.c.id)
    )
    return [
        (row.id, ChunkDraft(row.text, row.position, row.page, row.heading))
        for row in conn.execute(query)
    ]


def replace_vectors(
    conn: Connection,
    document_id: int,
    vectors: dict[int, bytes],
    embedder: str,
    dimension: int,
) -> KbScope:
    """Set a document's vectors and embedder, bump its version; return its scope.

    Raises:
        KbError: no such document, or ``vectors`` do not cover exactly its chunks.
    """
    row = conn.execute(select(DOCUMENTS).where(DOCUMENTS.c.id == document_id)).first()
    if row is None:
        raise KbError(f"no document #{document_id}")
    ids = {
        r.id for r in conn.execute(select(CHUNKS.c.id).where(CHUNKS.c.document_id == document_id))
    }
    if ids != set(vectors):
        raise KbError(f"new vectors must cover exactly the chunks of document #{document_id}")
    if vectors:
        conn.execute(
            sql_update(CHUNKS)
            .where(CHUNKS.c.id == bindparam("chunk_id"))
            .values(vector=bindparam("blob")),
            [{"chunk_id": i, "blob": blob} for i, blob in vectors.items()],
        )
    conn.execute(
        sql_update(DOCUMENTS)
        .where(DOCUMENTS.c.id == document_id)
        .values(embedder=embedder, dimension=dimension, version=DOCUMENTS.c.version + 1)
    )
    return to_info(row).scope


def signature(conn: Connection, scopes: Sequence[KbScope]) -> Signature:
    """(documents, newest id, sum of versions) of ``scopes``: changes with every write.

    Ids are never reused and only grow, so an add changes the newest id, a removal the
    count, a re-embedding the versions, whichever process made it.
    """
    query = select(
        func.count(DOCUMENTS.c.id),
        func.coalesce(func.max(DOCUMENTS.c.id), 0),
        func.coalesce(func.sum(DOCUMENTS.c.version), 0),
    ).where(in_scopes(DOCUMENTS, scopes))
    count, newest, versions = conn.execute(query).one()
    return (int(count), int(newest), int(versions))


def vectors(conn: Connection, scopes: Sequence[KbScope], dimension: int) -> list[tuple[int, bytes]]:
    """(chunk id, vector bytes) of ``scopes``' documents whose vectors have ``dimension``."""
    query = (
        select(CHUNKS.c.id, CHUNKS.c.vector)
        .join(DOCUMENTS, DOCUMENTS.c.id == CHUNKS.c.document_id)
        .where(in_scopes(CHUNKS, scopes), DOCUMENTS.c.dimension == dimension)
        .order_by(CHUNKS.c.id)
    )
    return [(row.id, bytes(row.vector)) for row in conn.execute(query)]


def _raw_scopes(scopes: Sequence[KbScope], params: dict[str, Any]) -> str:
    """The scope filter on ``kb_chunks c`` as SQL text, its values added to ``params``."""
    terms = []
    for i, scope in enumerate(scopes):
        params.update({f"b{i}": scope.bot, f"k{i}": scope.kind.value, f"o{i}": scope.owner})
        terms.append(f"(c.bot = :b{i} AND c.scope_kind = :k{i} AND c.scope_owner = :o{i})")
    return " OR ".join(terms)


CANDIDATES: Final = 200
"""Keyword matches ranked by the database before the scope filter (at least; see keyword)."""


def keyword(
    conn: Connection, scopes: Sequence[KbScope], words: Sequence[str], count: int
) -> list[int]:
    """Chunk ids of ``scopes`` containing any of ``words``, best match first (``count``)."""
    if not words or not scopes or count < 1:
        return []
    if conn.dialect.name == "sqlite":
        return _fts5(conn, scopes, words, count)
    return _tsquery(conn, scopes, words, count)


def _fts5(
    conn: Connection, scopes: Sequence[KbScope], words: Sequence[str], count: int
) -> list[int]:
    """Keyword search on SQLite: FTS5's own ``ORDER BY rank LIMIT``, then the scope filter.

    Words in so many chunks that ranking them would be slow are left out
    (:func:`~adapters.memory.kb_words.affordable`, their counts from the ``fts5vocab`` table
    ``kb_chunks_fts_vocab``). FTS5 ranks the best matches of every scope itself (no join per
    match); the filter keeps
    those of ``scopes``. When that leaves fewer than ``count`` of a full candidate list, the
    matches of other scopes crowded ours out: rank within ours instead (the slow way).
    """
    counts = conn.execute(
        text("SELECT term, doc FROM kb_chunks_fts_vocab WHERE term IN :words").bindparams(
            bindparam("words", expanding=True)
        ),
        {"words": list(words)},
    ).all()
    words = affordable(words, {row[0]: row[1] for row in counts})
    if not words:
        return []
    # Each word is [^\W_]+ text: quoted, it is one FTS5 term whatever it says.
    query = " OR ".join(f'"{word}"' for word in words)
    limit = max(CANDIDATES, 5 * count)
    ranked = conn.execute(
        text(
            "SELECT rowid, rank FROM kb_chunks_fts WHERE kb_chunks_fts MATCH :q "
            "ORDER BY rank LIMIT :m"
        ),
        {"q": query, "m": limit},
    ).all()
    rank = {row[0]: row[1] for row in ranked}
    ours = conn.execute(
        select(CHUNKS.c.id).where(CHUNKS.c.id.in_(list(rank)), in_scopes(CHUNKS, scopes))
    ).scalars()
    found = sorted(ours, key=lambda chunk_id: (rank[chunk_id], chunk_id))
    if len(found) >= count or len(ranked) < limit:
        return found[:count]
    params: dict[str, Any] = {"q": query, "n": count}
    where = _raw_scopes(scopes, params)
    sql = (
        "SELECT c.id FROM kb_chunks_fts JOIN kb_chunks c ON c.id = kb_chunks_fts.rowid "
        f"WHERE kb_chunks_fts MATCH :q AND ({where}) "
        "ORDER BY bm25(kb_chunks_fts), c.id LIMIT :n"
    )
    return [row[0] for row in conn.execute(text(sql), params)]


def _tsquery(
    conn: Connection, scopes: Sequence[KbScope], words: Sequence[str], count: int
) -> list[int]:
    """Keyword search on PostgreSQL: the stored, GIN-indexed ``text_tsv`` matched and ranked.

    No ``to_tsvector`` per row; ``ts_rank`` scores at most ``10 * CANDIDATES`` matches of
    ``scopes`` (those the index scan yields first), which bounds a question of common words.
    """
    params: dict[str, Any] = {"n": count, "m": max(10 * CANDIDATES, 5 * count)}
    where = _raw_scopes(scopes, params)
    terms = []
    for i, word in enumerate(words):
        params[f"w{i}"] = word
        terms.append(f"plainto_tsquery('simple'::regconfig, :w{i})")
        if word.isdigit():
            # The parser reads "E-4711" as "e" and the signed integer "-4711".
            params[f"v{i}"] = f"-{word}"
            terms.append(f"plainto_tsquery('simple'::regconfig, :v{i})")
    sql = (
        f"WITH query AS (SELECT {' || '.join(terms)} AS q), "
        "matches AS (SELECT c.id, c.text_tsv FROM kb_chunks c, query "
        f"WHERE c.text_tsv @@ query.q AND ({where}) LIMIT :m) "
        "SELECT matches.id FROM matches, query "
        "ORDER BY ts_rank(matches.text_tsv, query.q) DESC, matches.id LIMIT :n"
    )
    return [row[0] for row in conn.execute(text(sql), params)]


def hit_rows(
    conn: Connection, scopes: Sequence[KbScope], ids: Sequence[int]
) -> dict[int, Row[Any]]:
    """The chunks ``ids`` of ``scopes`` with their document's title, by id."""
    if not ids:
        return {}
    query = (
        select(
            CHUNKS.c.id,
            CHUNKS.c.document_id,
            CHUNKS.c.position,
            CHUNKS.c.text,
            CHUNKS.c.page,
            CHUNKS.c.heading,
            DOCUMENTS.c.title,
        )
        .join(DOCUMENTS, DOCUMENTS.c.id == CHUNKS.c.document_id)
        .where(CHUNKS.c.id.in_(list(ids)), in_scopes(CHUNKS, scopes))
    )
    return {row.id: cast(Row[Any], row) for row in conn.execute(query)}


__all__ = [
    "CHUNKS",
    "DOCUMENTS",
    "Signature",
    "add_document",
    "chunks_of",
    "documents",
    "find_document",
    "forget_owner",
    "hit_rows",
    "in_scopes",
    "keyword",
    "remove_document",
    "replace_vectors",
    "signature",
    "to_info",
    "vectors",
]
