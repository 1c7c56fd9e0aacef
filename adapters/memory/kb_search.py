"""What every knowledge store shares: vector checks, the dense index, and rank fusion.

Vendor-free apart from numpy (no database library), so the in-memory and the SQL knowledge
stores rank in exactly the same way: cosine over the scope's unit vectors (a matrix product),
keyword ranking by the store's own means, the two fused by reciprocal rank (k = 60).
:func:`both` runs a store's keyword search while the question is still being embedded.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from core.errors import KbError
from core.knowledge import NewDocument

RRF_K: Final = 60
"""The reciprocal-rank-fusion constant: a chunk at rank r of a list scores 1 / (RRF_K + r)."""

Matrix = npt.NDArray[np.float32]
_A = TypeVar("_A")
_B = TypeVar("_B")


def depth(limit: int) -> int:
    """How many candidates each ranking contributes to the fusion for ``limit`` results."""
    return max(4 * limit, 40)


def check_document(document: NewDocument) -> None:
    """Raise ``KbError`` unless ``document`` has one finite vector of its dimension per chunk."""
    if document.dimension < 1:
        raise KbError(f"embedder {document.embedder!r} reports dimension {document.dimension}")
    if len(document.vectors) != len(document.chunks):
        raise KbError(
            f"{len(document.chunks)} chunks but {len(document.vectors)} vectors for "
            f'"{document.title}"'
        )
    for vector in document.vectors:
        check_vector(vector, document.dimension, document.embedder)


def check_vector(vector: Sequence[float], dimension: int, embedder: str) -> None:
    """Raise ``KbError`` unless ``vector`` has ``dimension`` finite numbers."""
    if len(vector) != dimension:
        raise KbError(
            f"embedder {embedder!r} gave a vector of {len(vector)} numbers, expected {dimension}"
        )
    if not all(math.isfinite(x) for x in vector):
        raise KbError(f"embedder {embedder!r} gave a vector with a non-finite number")


def to_blob(vector: Sequence[float]) -> bytes:
    """A vector as stored in SQL: float32, little-endian."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> list[float]:
    """The vector :func:`to_blob` stored."""
    return [float(x) for x in np.frombuffer(blob, dtype="<f4")]


async def both(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Await ``first`` and ``second`` concurrently; both results, or the first failure.

    When one fails (or the caller is cancelled) the other is cancelled, so no task outlives
    the call; the exception raised is the failure itself, never an exception group.
    """
    tasks: tuple[asyncio.Future[_A], asyncio.Future[_B]] = (
        asyncio.ensure_future(first),
        asyncio.ensure_future(second),
    )
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
    if pending:
        await asyncio.wait(pending)
    # Every failure is retrieved (none is logged as unretrieved); a cancelled partner's
    # CancelledError is not the cause.
    failures = [None if task.cancelled() else task.exception() for task in tasks]
    for failure in failures:
        if failure is not None:
            raise failure
    return tasks[0].result(), tasks[1].result()


def discard(vector: Sequence[float] | Awaitable[Sequence[float]]) -> None:
    """Close a query vector's coroutine a search will not need (no "never awaited" warning)."""
    if inspect.iscoroutine(vector):
        vector.close()
    elif isinstance(vector, asyncio.Future):
        vector.cancel()


async def resolve(vector: Sequence[float] | Awaitable[Sequence[float]]) -> list[float]:
    """The query vector, awaited first when a search was given it still being computed."""
    if inspect.isawaitable(vector):
        return list(await vector)
    return list(vector)


@dataclass(frozen=True, slots=True)
class VectorIndex:
    """The chunk ids of some scopes with their vectors as rows of a normalised matrix.

    Build it with :meth:`build`; a store caches one per set of scopes and drops it when a
    document of those scopes is added, removed or re-embedded.
    """

    ids: npt.NDArray[np.int64]
    matrix: Matrix

    @staticmethod
    def build(rows: Sequence[tuple[int, bytes | Sequence[float]]], dimension: int) -> VectorIndex:
        """An index of ``rows`` (chunk id, vector or its blob) of ``dimension``, ids ascending."""
        ordered = sorted(rows, key=lambda row: row[0])
        blobs = [vector for _, vector in ordered if isinstance(vector, bytes)]
        if len(blobs) == len(ordered) and all(len(b) == 4 * dimension for b in blobs):
            flat = np.frombuffer(b"".join(blobs), dtype="<f4")
            matrix = flat.astype(np.float32).reshape(len(ordered), dimension)
        else:
            matrix = np.zeros((len(ordered), dimension), dtype=np.float32)
            for i, (_, vector) in enumerate(ordered):
                if isinstance(vector, bytes):
                    matrix[i] = np.frombuffer(vector, dtype="<f4")
                else:
                    matrix[i] = np.asarray(vector, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.where(norms == 0, 1.0, norms).astype(np.float32)
        ids = np.fromiter((row[0] for row in ordered), dtype=np.int64, count=len(ordered))
        return VectorIndex(ids, matrix)

    @property
    def dimension(self) -> int:
        """The vectors' length."""
        return int(self.matrix.shape[1])

    def top(self, vector: Sequence[float], count: int) -> list[tuple[int, float]]:
        """The ``count`` chunks most similar to ``vector``: (chunk id, cosine), best first.

        Equal cosines keep id order. A vector of another length or of zero length finds
        nothing.
        """
        if len(self.ids) == 0 or len(vector) != self.dimension or count < 1:
            return []
        query = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        if norm == 0.0 or not math.isfinite(norm):
            return []
        scores = self.matrix @ (query / norm)
        if count < len(scores):
            # argpartition picks the candidates; the stable sort orders them (ties by id).
            picked = np.sort(np.argpartition(-scores, count - 1)[:count])  # in id order
            order = picked[np.argsort(-scores[picked], kind="stable")]
            threshold = scores[order[-1]]
            # Rows tied with the last one may sit outside the partition: take the lowest ids.
            tied = np.flatnonzero(scores == threshold)
            kept = [int(i) for i in order if scores[i] > threshold]
            kept += [int(i) for i in tied[: count - len(kept)]]
        else:
            kept = [int(i) for i in np.argsort(-scores, kind="stable")]
        return [(int(self.ids[i]), float(scores[i])) for i in kept]


@dataclass(frozen=True, slots=True)
class Fused:
    """One chunk of a fused ranking: its id, its cosine (0 unless dense found it), rank."""

    chunk_id: int
    score: float
    rank: int
    keyword: bool


def fuse(dense: Sequence[tuple[int, float]], keyword: Sequence[int], limit: int) -> list[Fused]:
    """Reciprocal-rank fusion of a dense ranking (id, cosine) and a keyword ranking (ids).

    Returns the best ``limit`` chunks; equal fused scores go to the better cosine, then to
    the lower id, so the order is deterministic.
    """
    fused: dict[int, float] = {}
    cosine: dict[int, float] = {}
    for rank, (chunk_id, score) in enumerate(dense, start=1):
        fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
        cosine[chunk_id] = score
    found = set(keyword)
    for rank, chunk_id in enumerate(keyword, start=1):
        fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    best = sorted(fused, key=lambda c: (-fused[c], -cosine.get(c, 0.0), c))[: max(limit, 0)]
    return [
        Fused(chunk_id, cosine.get(chunk_id, 0.0), rank, chunk_id in found)
        for rank, chunk_id in enumerate(best, start=1)
    ]


__all__ = [
    "RRF_K",
    "Fused",
    "VectorIndex",
    "both",
    "check_document",
    "check_vector",
    "depth",
    "discard",
    "from_blob",
    "fuse",
    "resolve",
    "to_blob",
]
