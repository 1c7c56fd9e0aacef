"""``HashingEmbedder``: a deterministic, instant ``core.knowledge.Embedder`` for tests.

Each lower-cased word token (``\\w+``) is hashed (BLAKE2b, stable across processes and
runs) into one of ``dimension`` buckets with a sign; the counts are L2-normalised. Texts
sharing words therefore have a positive cosine, texts sharing none have cosine 0, and the
same text always gets the same vector. A text without a word gets the first unit vector, so
every vector has unit length as the port promises.

Tests read ``calls`` (how many texts were embedded), may set ``failure`` to make the next
calls raise it, and ``started`` / ``closed`` to check the lifecycle.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    """The lower-cased word tokens the fake embeds (``"E-4711 ok"`` -> ``e``, ``4711``, ``ok``)."""
    return _WORD.findall(text.lower())


def hashed_vector(text: str, dimension: int) -> list[float]:
    """The unit vector of ``text`` in ``dimension`` buckets (what ``HashingEmbedder`` gives)."""
    counts = [0.0] * dimension
    for token in tokens(text):
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        counts[value % dimension] += 1.0 if (value >> 63) & 1 else -1.0
    norm = math.sqrt(sum(c * c for c in counts))
    if norm == 0.0:
        return [1.0] + [0.0] * (dimension - 1)
    return [c / norm for c in counts]


class HashingEmbedder:
    """The ``Embedder`` port by feature hashing: deterministic, no model, no network.

    Args:
        dimension: the vectors' length (the id is ``f"hashing-{dimension}"``).
    """

    def __init__(self, dimension: int = 64) -> None:
        if dimension < 1:
            raise ValueError("dimension must be positive")
        self._dimension = dimension
        self.calls = 0
        self.failure: Exception | None = None
        self.started = False
        self.closed = False

    @property
    def id(self) -> str:
        """``hashing-<dimension>``."""
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        """The vectors' length."""
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for ``texts`` in order; raises ``failure`` when a test set one."""
        if self.failure is not None:
            raise self.failure
        self.calls += len(texts)
        return [hashed_vector(text, self._dimension) for text in texts]

    async def embed_query(self, text: str) -> list[float]:
        """The vector of a question (the same function as for documents)."""
        return (await self.embed([text]))[0]

    async def start(self) -> None:
        """Nothing to load; records that it was started."""
        self.started = True

    async def aclose(self) -> None:
        """Nothing to release; records that it was closed."""
        self.closed = True


__all__ = ["HashingEmbedder", "hashed_vector", "tokens"]
