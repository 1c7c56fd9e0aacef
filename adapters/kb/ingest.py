"""Adding documents to a knowledge base: read, chunk, embed, store; and re-embedding them.

:class:`Ingestor` is what ``chinwag kb add``, ``chinwag kb reindex`` and a chat's ``/kb add``
call. Adding a file:

1. hashes its bytes (SHA-256, streamed); the same bytes already in the scope -> ``unchanged``,
   nothing read or embedded;
2. reads and chunks it in a worker thread (the file is read lazily, never whole);
3. embeds the chunks in batches of 32, sorted by length so a batch pads little, the vectors
   put back in the chunks' order, reporting ``(done, total)`` to a progress callback;
4. stores the document, its chunks and vectors in one transaction; a document of the same
   source with other bytes is replaced in that transaction (its old chunks go).

A document with no text (a scanned PDF, an empty file) stores nothing and reports ``empty``.
Each chunk is embedded with its heading path on a line in front of it: the section a
paragraph sits in is part of what it is about.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters.kb.readers import NoTextError, content_hash, read
from core.chunking import chunk
from core.errors import ConfigError, KbError
from core.knowledge import (
    AddReport,
    ChunkDraft,
    Embedder,
    KbScope,
    KnowledgeStore,
    NewDocument,
)

__all__ = ["BATCH_SIZE", "Ingestor", "Progress", "ReindexReport"]

_log = logging.getLogger(__name__)

BATCH_SIZE: Final = 32

Progress = Callable[[int, int], Awaitable[None] | None]
"""Called with ``(chunks embedded so far, chunks in all)``; may be a coroutine function."""


@dataclass(frozen=True, slots=True)
class ReindexReport:
    """What ``kb reindex`` did."""

    documents: int
    chunks: int
    embedder: str
    seconds: float
    skipped: int = 0  # documents already embedded by this embedder

    def line(self) -> str:
        """One line: ``Re-embedded 3 documents (120 chunks) with minilm-l6-int8 in 4.2 s.``."""
        text = (
            f"Re-embedded {self.documents} documents ({self.chunks} chunks) with "
            f"{self.embedder} in {self.seconds:.1f} s."
        )
        if self.skipped:
            text += f" {self.skipped} already used it."
        return text


class Ingestor:
    """Adds files to a knowledge store with one embedder (see the module's docstring)."""

    def __init__(
        self,
        store: KnowledgeStore,
        embedder: Embedder,
        chunk_chars: int = 800,
        chunk_overlap: int = 150,
        *,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        """Set up adding with these chunk sizes (``KB_CHUNK_CHARS``, ``KB_CHUNK_OVERLAP``).

        Raises:
            ConfigError: the overlap is more than half the chunk size.
        """
        if chunk_overlap * 2 > chunk_chars:
            raise ConfigError(
                "KB_CHUNK_OVERLAP",
                f"{chunk_overlap} is more than half of KB_CHUNK_CHARS ({chunk_chars})",
                str(chunk_chars * 3 // 16),
            )
        self._store = store
        self._embedder = embedder
        self._chars = chunk_chars
        self._overlap = chunk_overlap
        self._batch = max(1, batch_size)

    async def add(
        self,
        path: Path,
        scope: KbScope,
        *,
        added_by: str,
        source: str | None = None,
        title: str | None = None,
        progress: Progress | None = None,
    ) -> AddReport:
        """Add the file at ``path`` to ``scope``'s knowledge base.

        Args:
            path: the file; its extension says how to read it (keep the original name when
                saving an upload).
            scope: whose knowledge base.
            added_by: ``"<platform>:<user id>"`` or ``"cli"``.
            source: what identifies the document for replacing (default: the resolved path);
                an upload passes ``"<platform> upload: <name>"``.
            title: shown in citations (default: the document's own title, else file name).
            progress: called with ``(done, total)`` chunks as they are embedded.

        Returns:
            ``added``, ``replaced``, ``unchanged`` or ``empty`` (no text: nothing stored).

        Raises:
            KbError: an unsupported or unreadable file, an encrypted PDF, the embedder
                failing, or the store refusing another embedder's vectors in the scope.
            StoreError: the store failed.
        """
        started = time.perf_counter()
        digest, resolved = await asyncio.to_thread(_identify, path)
        source = source or resolved
        same = await self._store.find_document(scope, content_hash=digest)
        if same is not None:
            return AddReport(same.title, "unchanged", same.id, pages=same.pages, chunks=same.chunks)
        try:
            doc_title, pages, chunks = await asyncio.to_thread(self._read, path)
        except NoTextError as exc:
            return AddReport(title or path.name, "empty", detail=str(exc))
        title = title or doc_title
        if not chunks:
            return AddReport(title, "empty", detail="no text")
        vectors = await self._embed(chunks, progress)
        previous = await self._store.find_document(scope, source=source)
        document = NewDocument(
            scope=scope,
            title=title,
            source=source,
            content_hash=digest,
            chunks=chunks,
            vectors=vectors,
            embedder=self._embedder.id,
            dimension=self._embedder.dimension,
            added_by=added_by,
            pages=pages,
        )
        replaces = previous.id if previous is not None else None
        document_id = await self._store.add_document(document, replaces=replaces)
        seconds = time.perf_counter() - started
        _log.info(
            "kb: %s document %d (%d chunks, %.1f s) in %s",
            "replaced" if replaces else "added",
            document_id,
            len(chunks),
            seconds,
            scope.kind,
        )
        return AddReport(
            title,
            "replaced" if replaces is not None else "added",
            document_id,
            pages=pages,
            chunks=len(chunks),
            seconds=seconds,
        )

    async def reindex(
        self,
        scopes: Sequence[KbScope],
        progress: Progress | None = None,
        *,
        force: bool = False,
    ) -> ReindexReport:
        """Re-embed the documents of ``scopes`` with this ingestor's embedder.

        Documents already embedded by it (same id and dimension) are left alone unless
        ``force``. ``progress`` gets ``(done, total)`` over all the chunks to re-embed.

        Raises:
            KbError: the embedder failed.
            StoreError: the store failed.
        """
        started = time.perf_counter()
        embedder = self._embedder
        documents = await self._store.documents(scopes)
        stale = [
            d
            for d in documents
            if force or d.embedder != embedder.id or d.dimension != embedder.dimension
        ]
        total = sum(d.chunks for d in stale)
        done = 0
        chunks_done = 0
        for info in stale:
            stored = await self._store.chunks_of(info.id)
            offset = done

            async def step(count: int, _: int, offset: int = offset) -> None:
                await _report(progress, offset + count, total)

            vectors = await self._embed([draft for _, draft in stored], step)
            await self._store.replace_vectors(
                info.id,
                [(chunk_id, vector) for (chunk_id, _), vector in zip(stored, vectors, strict=True)],
                embedder=embedder.id,
                dimension=embedder.dimension,
            )
            done += info.chunks
            chunks_done += len(stored)
        return ReindexReport(
            documents=len(stale),
            chunks=chunks_done,
            embedder=embedder.id,
            seconds=time.perf_counter() - started,
            skipped=len(documents) - len(stale),
        )

    def _read(self, path: Path) -> tuple[str, int | None, list[ChunkDraft]]:
        """Read and chunk a file (in a worker thread)."""
        document = read(path)
        chunks = chunk(document.blocks, chars=self._chars, overlap=self._overlap)
        return document.title, document.pages, chunks

    async def _embed(
        self, chunks: Sequence[ChunkDraft], progress: Progress | None
    ) -> list[Sequence[float]]:
        """The chunks' vectors, in their order, embedded in batches of similar length."""
        texts = [_embedding_text(c) for c in chunks]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[Sequence[float]] = [()] * len(texts)
        await _report(progress, 0, len(texts))
        for start in range(0, len(order), self._batch):
            batch = order[start : start + self._batch]
            embedded = await self._embedder.embed([texts[i] for i in batch])
            if len(embedded) != len(batch):
                raise KbError(
                    f"the embedder returned {len(embedded)} vectors for {len(batch)} texts"
                )
            for index, vector in zip(batch, embedded, strict=True):
                # float32, as stored: a third of a list of floats' memory for a long document.
                vectors[index] = array("f", vector)
            await _report(progress, min(start + len(batch), len(texts)), len(texts))
        return vectors


def _identify(path: Path) -> tuple[str, str]:
    """The file's content hash and its absolute path (in a worker thread: both touch the disk)."""
    return content_hash(path), str(path.resolve())


def _embedding_text(draft: ChunkDraft) -> str:
    """What is embedded for a chunk: its heading path, then its text."""
    return f"{draft.heading}\n{draft.text}" if draft.heading else draft.text


async def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is None:
        return
    result = progress(done, total)
    if inspect.isawaitable(result):
        await result
