"""``SqlKnowledgeStore``: the ``KnowledgeStore`` port on the memory store's SQL database.

It owns no connection: every call is an operation of :mod:`adapters.memory.kb_operations`
run through the :class:`~adapters.memory.store.SqlMemoryStore`'s one boundary (its executor,
lifecycle and ``StoreError`` translation), so SQLite gets the group-committing writer and
reader threads, PostgreSQL the asyncpg pool, and the knowledge base lives and migrates with
the memory (``kb_documents``, ``kb_chunks``, migration 0006).

Search filters by scope first. Dense ranking is cosine over the scope's vectors with numpy;
each scope's (ids, float32 matrix) is cached in process, checked on every search against a
cheap signature of the scope's documents (so a ``chinwag kb add`` from another process is
seen at once) and dropped on this store's own writes. Keyword ranking is FTS5 ``bm25`` on
SQLite and ``ts_rank`` on PostgreSQL; the two are fused by reciprocal rank.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy.engine import Connection, Row

from adapters.memory import kb_operations as kb
from adapters.memory.kb_search import (
    VectorIndex,
    both,
    check_document,
    check_vector,
    depth,
    discard,
    fuse,
    resolve,
    to_blob,
)
from adapters.memory.kb_words import query_words
from adapters.memory.store import SqlMemoryStore
from core.knowledge import (
    ChunkDraft,
    DocumentInfo,
    Hit,
    KbScope,
    NewDocument,
    QueryVector,
    ScopeKind,
)

_CACHED_SCOPES: Final = 256
_Key = tuple[KbScope, int]  # a scope and the dimension of the vectors cached for it


class SqlKnowledgeStore:
    """The ``KnowledgeStore`` port on the tables of migration 0006, through a memory store.

    Cheap to construct; it uses ``memory``'s connections, so ``memory`` must be started
    before the first call and outlive this store (``aclose()`` here only drops the cache).

    Args:
        memory: the SQL memory store whose database and executor it uses.
        clock: the source of "now" (tz-aware) for ``created_at``; for tests.
        cached_scopes: how many scopes' vector matrices stay cached (least recently used go).
    """

    def __init__(
        self,
        memory: SqlMemoryStore,
        *,
        clock: Callable[[], datetime] | None = None,
        cached_scopes: int = _CACHED_SCOPES,
    ) -> None:
        self._memory = memory
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: OrderedDict[_Key, tuple[kb.Signature, VectorIndex]] = OrderedDict()
        self._cache_size = cached_scopes
        self._lock = threading.Lock()  # reader threads (SQLite) share the cache

    async def _run(self, op: Callable[[Connection], Any], *, write: bool) -> Any:
        # The memory store's one boundary: lifecycle checks and StoreError translation.
        return await self._memory._call(op, write=write)

    async def find_document(
        self, scope: KbScope, *, source: str | None = None, content_hash: str | None = None
    ) -> DocumentInfo | None:
        """The scope's newest document with this source, else with these bytes."""
        if source is None and content_hash is None:
            return None
        found: DocumentInfo | None = await self._run(
            lambda conn: kb.find_document(conn, scope, source, content_hash), write=False
        )
        return found

    async def add_document(self, document: NewDocument, *, replaces: int | None = None) -> int:
        """Store a document with its chunks and vectors in one transaction; return its id.

        Raises:
            KbError: the vectors do not match the chunks or the dimension, or the scope
                holds vectors of another embedder or dimension.
            StoreError: the database failed.
        """
        check_document(document)
        now = self._clock()
        try:
            document_id: int = await self._run(
                lambda conn: kb.add_document(conn, document, replaces, now), write=True
            )
        finally:
            self._forget([document.scope])
        return document_id

    async def documents(self, scopes: Sequence[KbScope]) -> list[DocumentInfo]:
        """The documents of ``scopes``, oldest first."""
        if not scopes:
            return []
        found: list[DocumentInfo] = await self._run(
            lambda conn: kb.documents(conn, scopes), write=False
        )
        return found

    async def remove_document(self, document_id: int, scopes: Sequence[KbScope]) -> bool:
        """Delete a document of one of ``scopes`` with its chunks; whether it existed there."""
        if not scopes:
            return False
        removed: bool = await self._run(
            lambda conn: kb.remove_document(conn, document_id, scopes), write=True
        )
        self._forget(scopes)
        return removed

    async def chunks_of(self, document_id: int) -> list[tuple[int, ChunkDraft]]:
        """A document's chunks (id, draft) in order."""
        chunks: list[tuple[int, ChunkDraft]] = await self._run(
            lambda conn: kb.chunks_of(conn, document_id), write=False
        )
        return chunks

    async def replace_vectors(
        self,
        document_id: int,
        vectors: Sequence[tuple[int, Sequence[float]]],
        *,
        embedder: str,
        dimension: int,
    ) -> None:
        """Set new vectors (by chunk id) and the embedder of a document (``kb reindex``).

        Raises:
            KbError: no such document, the vectors do not cover exactly its chunks, or one
                has another dimension.
        """
        for _, vector in vectors:
            check_vector(vector, dimension, embedder)
        blobs = {chunk_id: to_blob(vector) for chunk_id, vector in vectors}
        scope: KbScope = await self._run(
            lambda conn: kb.replace_vectors(conn, document_id, blobs, embedder, dimension),
            write=True,
        )
        self._forget([scope])

    async def search(
        self,
        scopes: Sequence[KbScope],
        query: str,
        vector: QueryVector,
        *,
        limit: int = 5,
    ) -> list[Hit]:
        """The best chunks of ``scopes``: cosine and keyword rankings fused by reciprocal rank.

        Only chunks of ``scopes`` are considered; a ``vector`` of another dimension than a
        scope's vectors finds nothing there by meaning (keywords still do). The keyword
        search (a reader thread on SQLite) runs while ``vector`` is awaited and ranked, and
        the matrix product runs in a thread, so the two overlap.
        """
        wanted = list(dict.fromkeys(scopes))
        if not wanted or limit < 1:
            discard(vector)
            return []
        count = depth(limit)
        words = query_words(query)
        keyword: Awaitable[list[int]] = self._run(
            lambda conn: kb.keyword(conn, wanted, words, count), write=False
        )
        dense, ranked = await both(self._dense(wanted, vector, count), keyword)
        fused = fuse(dense, ranked, limit)
        if not fused:
            return []
        rows: dict[int, Row[Any]] = await self._run(
            lambda conn: kb.hit_rows(conn, wanted, [f.chunk_id for f in fused]), write=False
        )
        found = [f for f in fused if f.chunk_id in rows]  # a chunk deleted since it was cached
        return [
            Hit(
                document_id=rows[f.chunk_id].document_id,
                chunk_id=f.chunk_id,
                title=rows[f.chunk_id].title,
                text=rows[f.chunk_id].text,
                position=rows[f.chunk_id].position,
                page=rows[f.chunk_id].page,
                heading=rows[f.chunk_id].heading,
                score=f.score,
                rank=rank,
                keyword=f.keyword,
            )
            for rank, f in enumerate(found, start=1)
        ]

    async def forget_owner(self, bot: str, owner: str) -> int:
        """Delete the documents of the user scope ``owner`` (``/forget``); return how many."""
        removed: int = await self._run(lambda conn: kb.forget_owner(conn, bot, owner), write=True)
        self._forget([KbScope(bot, ScopeKind.USER, owner)])
        return removed

    async def aclose(self) -> None:
        """Drop the cached vectors (the memory store keeps its connections). Idempotent."""
        with self._lock:
            self._cache.clear()

    # --- search, on a read connection ------------------------------------------------------

    async def _dense(
        self, scopes: list[KbScope], vector: QueryVector, count: int
    ) -> list[tuple[int, float]]:
        """The ``count`` chunks of ``scopes`` nearest ``vector`` (id, cosine), best first."""
        values = await resolve(vector)
        indexes: list[VectorIndex] = await self._run(
            lambda conn: self._indexes(conn, scopes, len(values)), write=False
        )
        if not indexes:
            return []
        return await asyncio.to_thread(_top, indexes, values, count)

    def _indexes(
        self, conn: Connection, scopes: list[KbScope], dimension: int
    ) -> list[VectorIndex]:
        found = (self._index(conn, scope, dimension) for scope in scopes)
        return [index for index in found if index is not None]

    def _index(self, conn: Connection, scope: KbScope, dimension: int) -> VectorIndex | None:
        """The scope's vectors of ``dimension``: cached while its signature holds."""
        if dimension < 1:
            return None
        key = (scope, dimension)
        current = kb.signature(conn, [scope])
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == current:
                self._cache.move_to_end(key)
                return cached[1]
        rows = kb.vectors(conn, [scope], dimension)
        if not rows:
            return None
        index = VectorIndex.build(rows, dimension)
        with self._lock:
            self._cache[key] = (current, index)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return index

    def _forget(self, scopes: Sequence[KbScope]) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] in scopes]:
                del self._cache[key]


def _top(indexes: list[VectorIndex], vector: list[float], count: int) -> list[tuple[int, float]]:
    dense = [hit for index in indexes for hit in index.top(vector, count)]
    return sorted(dense, key=lambda hit: (-hit[1], hit[0]))[:count]


__all__ = ["SqlKnowledgeStore"]
