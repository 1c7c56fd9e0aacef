"""``InMemoryKnowledgeStore``: the ``KnowledgeStore`` port in process memory.

For tests and throwaway bots: documents, chunks and vectors live in dicts and are lost at
exit; no database library is imported (numpy ranks the vectors). Search ranks exactly as the
SQL store does (:mod:`adapters.memory.kb_search`): cosine over the scopes' vectors, fused by
reciprocal rank with a keyword ranking, here the IDF-weighted overlap of the question's words
with a chunk's words. The knowledge-store contract tests run over both.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from adapters.memory.kb_search import (
    VectorIndex,
    check_document,
    check_vector,
    depth,
    discard,
    fuse,
    resolve,
)
from adapters.memory.kb_words import all_words, query_words
from core.errors import KbError
from core.knowledge import (
    ChunkDraft,
    DocumentInfo,
    Hit,
    KbScope,
    NewDocument,
    QueryVector,
    ScopeKind,
)


@dataclass(slots=True)
class _Chunk:
    id: int
    document_id: int
    draft: ChunkDraft
    vector: list[float]
    words: frozenset[str]


def _model(document: DocumentInfo | NewDocument) -> tuple[str, int]:
    return (document.embedder, document.dimension)


class InMemoryKnowledgeStore:
    """The ``KnowledgeStore`` port on dicts: same contract as the SQL store, no persistence.

    Like a database, every call suspends once before it acts; each call then acts atomically.

    Args:
        clock: the source of "now" (tz-aware) for ``created_at``; for tests.
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._documents: dict[int, DocumentInfo] = {}
        self._chunks: dict[int, _Chunk] = {}
        self._by_document: dict[int, list[int]] = {}
        self._next_document = 1
        self._next_chunk = 1
        self._indexes: dict[frozenset[KbScope], dict[int, VectorIndex]] = {}

    async def find_document(
        self, scope: KbScope, *, source: str | None = None, content_hash: str | None = None
    ) -> DocumentInfo | None:
        """The scope's newest document with this source, else with these bytes."""
        await asyncio.sleep(0)
        mine = [d for d in self._documents.values() if d.scope == scope]
        for wanted in (
            (lambda d: d.source == source) if source is not None else None,
            (lambda d: d.content_hash == content_hash) if content_hash is not None else None,
        ):
            if wanted is not None:
                found = [d for d in mine if wanted(d)]
                if found:
                    return max(found, key=lambda d: d.id)
        return None

    async def add_document(self, document: NewDocument, *, replaces: int | None = None) -> int:
        """Store a document with its chunks; with ``replaces``, delete that one at once.

        Raises:
            KbError: the vectors do not match the chunks or the dimension, or the scope holds
                vectors of another embedder or dimension.
        """
        await asyncio.sleep(0)
        check_document(document)
        for other in self._documents.values():
            same_scope = other.scope == document.scope and other.id != replaces
            if same_scope and other.chunks and _model(other) != _model(document):
                raise KbError(
                    f"this knowledge base holds vectors of {other.embedder} "
                    f"({other.dimension} dimensions), not {document.embedder} "
                    f"({document.dimension}): run `chinwag kb reindex` first"
                )
        if replaces is not None:
            self._delete(replaces)
        document_id = self._next_document
        self._next_document += 1
        self._documents[document_id] = DocumentInfo(
            id=document_id,
            scope=document.scope,
            title=document.title,
            source=document.source,
            content_hash=document.content_hash,
            chunks=len(document.chunks),
            pages=document.pages,
            embedder=document.embedder,
            dimension=document.dimension,
            added_by=document.added_by,
            created_at=self._clock(),
        )
        ids: list[int] = []
        for draft, vector in zip(document.chunks, document.vectors, strict=True):
            chunk_id = self._next_chunk
            self._next_chunk += 1
            words = frozenset(all_words(draft.text))
            self._chunks[chunk_id] = _Chunk(chunk_id, document_id, draft, list(vector), words)
            ids.append(chunk_id)
        self._by_document[document_id] = ids
        self._invalidate(document.scope)
        return document_id

    async def documents(self, scopes: Sequence[KbScope]) -> list[DocumentInfo]:
        """The documents of ``scopes``, oldest first."""
        await asyncio.sleep(0)
        wanted = set(scopes)
        found = [d for d in self._documents.values() if d.scope in wanted]
        return sorted(found, key=lambda d: (d.created_at, d.id))

    async def remove_document(self, document_id: int, scopes: Sequence[KbScope]) -> bool:
        """Delete a document of one of ``scopes``; whether it existed there."""
        await asyncio.sleep(0)
        info = self._documents.get(document_id)
        if info is None or info.scope not in set(scopes):
            return False
        self._delete(document_id)
        return True

    async def chunks_of(self, document_id: int) -> list[tuple[int, ChunkDraft]]:
        """A document's chunks (id, draft) in order."""
        await asyncio.sleep(0)
        chunks = [self._chunks[i] for i in self._by_document.get(document_id, [])]
        return [(c.id, c.draft) for c in sorted(chunks, key=lambda c: (c.draft.position, c.id))]

    async def replace_vectors(
        self,
        document_id: int,
        vectors: Sequence[tuple[int, Sequence[float]]],
        *,
        embedder: str,
        dimension: int,
    ) -> None:
        """Set new vectors (by chunk id) and the embedder of a document.

        Raises:
            KbError: no such document, a chunk id not of it, a chunk left without a new
                vector, or a vector of another dimension.
        """
        await asyncio.sleep(0)
        info = self._documents.get(document_id)
        if info is None:
            raise KbError(f"no document #{document_id}")
        new = dict(vectors)
        if set(new) != set(self._by_document.get(document_id, [])):
            raise KbError(f"new vectors must cover exactly the chunks of document #{document_id}")
        for vector in new.values():
            check_vector(vector, dimension, embedder)
        for chunk_id, vector in new.items():
            self._chunks[chunk_id].vector = list(vector)
        self._documents[document_id] = replace(info, embedder=embedder, dimension=dimension)
        self._invalidate(info.scope)

    async def search(
        self,
        scopes: Sequence[KbScope],
        query: str,
        vector: QueryVector,
        *,
        limit: int = 5,
    ) -> list[Hit]:
        """The best chunks of ``scopes``, dense and keyword rankings fused by reciprocal rank.

        A ``vector`` still being computed is awaited after the keyword ranking.
        """
        await asyncio.sleep(0)
        wanted = frozenset(scopes)
        if limit < 1 or not wanted:
            discard(vector)
            return []
        try:
            keyword = self._keyword(wanted, query, depth(limit))
        except BaseException:
            discard(vector)
            raise
        values = await resolve(vector)
        dense: list[tuple[int, float]] = []
        index = self._index(wanted, len(values))
        if index is not None:
            dense = index.top(values, depth(limit))
        fused = fuse(dense, keyword, limit)
        hits: list[Hit] = []
        for f in fused:
            chunk = self._chunks[f.chunk_id]
            info = self._documents[chunk.document_id]
            hits.append(
                Hit(
                    document_id=info.id,
                    chunk_id=chunk.id,
                    title=info.title,
                    text=chunk.draft.text,
                    position=chunk.draft.position,
                    page=chunk.draft.page,
                    heading=chunk.draft.heading,
                    score=f.score,
                    rank=f.rank,
                    keyword=f.keyword,
                )
            )
        return hits

    async def forget_owner(self, bot: str, owner: str) -> int:
        """Delete the documents of the user scope ``owner``; return how many."""
        await asyncio.sleep(0)
        scope = KbScope(bot, ScopeKind.USER, owner)
        doomed = [d.id for d in self._documents.values() if d.scope == scope]
        for document_id in doomed:
            self._delete(document_id)
        return len(doomed)

    async def aclose(self) -> None:
        """Drop the cached vector indexes (the documents stay). Idempotent."""
        self._indexes.clear()

    def _delete(self, document_id: int) -> None:
        info = self._documents.pop(document_id, None)
        for chunk_id in self._by_document.pop(document_id, []):
            del self._chunks[chunk_id]
        if info is not None:
            self._invalidate(info.scope)

    def _invalidate(self, scope: KbScope) -> None:
        for key in [k for k in self._indexes if scope in k]:
            del self._indexes[key]

    def _index(self, scopes: frozenset[KbScope], dimension: int) -> VectorIndex | None:
        """The cached index of ``scopes``' vectors of ``dimension`` (others cannot compare)."""
        by_dimension = self._indexes.setdefault(scopes, {})
        if dimension not in by_dimension:
            rows = [
                (c.id, c.vector)
                for c in self._chunks.values()
                if self._documents[c.document_id].scope in scopes
                and self._documents[c.document_id].dimension == dimension
            ]
            if not rows:
                return None
            by_dimension[dimension] = VectorIndex.build(rows, dimension)
        return by_dimension[dimension]

    def _keyword(self, scopes: frozenset[KbScope], query: str, count: int) -> list[int]:
        """Chunk ids by the IDF-weighted share of the question's words they contain."""
        words = query_words(query)
        if not words:
            return []
        chunks = [
            c for c in self._chunks.values() if self._documents[c.document_id].scope in scopes
        ]
        total = len(chunks)
        weight = {}
        for word in words:
            df = sum(1 for c in chunks if word in c.words)
            if df:
                weight[word] = math.log(1.0 + total / df)
        scored = [(sum(weight.get(w, 0.0) for w in c.words & weight.keys()), c.id) for c in chunks]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))
        return [chunk_id for _, chunk_id in ranked[:count]]


__all__ = ["InMemoryKnowledgeStore"]
