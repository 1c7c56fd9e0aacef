"""The ``KnowledgeStore`` contract, over SQLite, PostgreSQL and the in-memory store."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from adapters.memory.in_memory_knowledge import InMemoryKnowledgeStore
from adapters.memory.knowledge import SqlKnowledgeStore
from adapters.memory.store import SqlMemoryStore
from core.errors import KbError
from core.knowledge import ChunkDraft, KbScope, KnowledgeStore, NewDocument
from tests._db import UpgradeHead
from tests.fakes.embedder import HashingEmbedder, hashed_vector

BOT = KbScope.of_bot("b")
CHAT = KbScope.of_chat("b", "telegram", "c1")
ANN = KbScope.of_user("b", "telegram", "ann")
BOB = KbScope.of_user("b", "telegram", "bob")
EMBED = HashingEmbedder(64)
WORDS = [
    "router",
    "modem",
    "cable",
    "fibre",
    "signal",
    "light",
    "reboot",
    "power",
    "fuse",
    "socket",
    "lamp",
    "switch",
]


def filler(i: int) -> str:
    """A deterministic chunk text of three words from ``WORDS``."""
    return " ".join(WORDS[(i * k + k) % len(WORDS)] for k in (1, 3, 7))


async def add(
    store: KnowledgeStore,
    scope: KbScope,
    texts: list[str],
    *,
    title: str = "Manual",
    source: str = "manual.md",
    embedder: HashingEmbedder = EMBED,
    replaces: int | None = None,
) -> int:
    chunks = [ChunkDraft(t, i, heading=f"Part {i}") for i, t in enumerate(texts)]
    document = NewDocument(
        scope=scope,
        title=title,
        source=source,
        content_hash=f"hash-{title}-{len(texts)}-{embedder.id}",
        chunks=chunks,
        vectors=await embedder.embed(texts),
        embedder=embedder.id,
        dimension=embedder.dimension,
        added_by="cli",
    )
    return await store.add_document(document, replaces=replaces)


async def search(store: KnowledgeStore, scopes: list[KbScope], query: str, **kw: Any) -> list[Any]:
    return await store.search(scopes, query, hashed_vector(query, 64), **kw)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
async def new_kb(
    request: pytest.FixtureRequest, empty_db: Callable[[str], str], upgrade_head: UpgradeHead
) -> AsyncIterator[Callable[[], Any]]:
    """``await new_kb()``: knowledge stores of one implementation (SQL ones share a database)."""
    url = None if request.param == "memory" else empty_db(str(request.param))
    if url is not None:
        await upgrade_head(url)
    memories: list[SqlMemoryStore] = []
    stores: list[KnowledgeStore] = []

    async def make() -> KnowledgeStore:
        store: KnowledgeStore
        if url is None:
            store = InMemoryKnowledgeStore()
        else:
            memory = SqlMemoryStore(url, pool_size=2)
            await memory.start()
            memories.append(memory)
            store = SqlKnowledgeStore(memory)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()
    for memory in memories:
        await memory.aclose()


@pytest.fixture
async def kb(new_kb: Callable[[], Any]) -> KnowledgeStore:
    store: KnowledgeStore = await new_kb()
    return store


async def test_without_keywords_the_top_k_is_the_exact_cosine_order(kb: KnowledgeStore) -> None:
    texts = [filler(i) for i in range(100)]  # more than the 40 candidates fusion takes
    await add(kb, BOT, texts)
    query = "reboot the router power"
    hits = await kb.search([BOT], "", hashed_vector(query, 64), limit=7)
    matrix = np.array([hashed_vector(t, 64) for t in texts])
    cosines = matrix @ np.array(hashed_vector(query, 64))
    expected = sorted(range(100), key=lambda i: (-cosines[i], i))[:7]
    assert [h.position for h in hits] == expected
    assert [h.rank for h in hits] == list(range(1, 8))
    assert [h.score for h in hits] == pytest.approx([cosines[i] for i in expected], abs=1e-5)
    assert not any(h.keyword for h in hits)
    assert hits[0].title == "Manual"
    assert hits[0].where == f"§ Part {expected[0]}"


async def test_keyword_search_finds_an_error_code_the_vectors_miss(kb: KnowledgeStore) -> None:
    texts = [filler(i) for i in range(60)]
    texts[37] = "If the display shows E-4711 the fuse is dry."
    await add(kb, BOT, texts)
    miss = hashed_vector("router modem cable fibre signal", 64)
    dense_only = await kb.search([BOT], "", miss, limit=3)
    assert 37 not in [h.position for h in dense_only]
    hits = await kb.search([BOT], "what does E-4711 mean?", miss, limit=3)
    found = [h for h in hits if h.position == 37]
    assert found, [h.text for h in hits]
    assert found[0].keyword
    assert "E-4711" in found[0].text


async def test_a_question_of_common_words_is_answered_by_meaning_alone(
    kb: KnowledgeStore,
) -> None:
    texts = [filler(i) for i in range(20)]
    texts[5] = "What is it that was there? It is what it is."
    await add(kb, BOT, texts)
    hits = await search(kb, [BOT], "what is it that was there", limit=5)
    assert hits
    assert not any(h.keyword for h in hits)


async def test_keyword_search_is_not_crowded_out_by_another_scopes_matches(
    kb: KnowledgeStore,
) -> None:
    # More matches in Ann's scope than the database ranks before filtering by scope.
    await add(kb, ANN, [f"saffron saffron saffron note {i}" for i in range(260)], title="Ann")
    texts = [filler(i) for i in range(30)]
    texts[12] = "a pinch of saffron in the rice, with fibre"
    bob = await add(kb, BOB, texts, title="Bob")
    miss = hashed_vector("router modem cable signal", 64)
    hits = await kb.search([BOB], "saffron", miss, limit=3)
    assert {h.document_id for h in hits} == {bob}
    found = [h for h in hits if h.position == 12]
    assert found, [h.text for h in hits]
    assert found[0].keyword


async def test_search_never_leaves_the_given_scopes(kb: KnowledgeStore) -> None:
    ann = await add(kb, ANN, ["ann's secret recipe with saffron"], title="Ann")
    bob = await add(kb, BOB, ["bob's secret recipe with saffron"], title="Bob")
    chat = await add(kb, CHAT, ["the group's saffron list"], title="Chat")
    bot = await add(kb, BOT, ["the bot's saffron guide"], title="Bot")
    query = "saffron recipe"
    assert {h.document_id for h in await search(kb, [ANN], query)} == {ann}
    assert {h.document_id for h in await search(kb, [BOB], query)} == {bob}
    assert {h.document_id for h in await search(kb, [BOT], query)} == {bot}
    assert {h.document_id for h in await search(kb, [BOT, CHAT, ANN], query, limit=10)} == {
        bot,
        chat,
        ann,
    }
    assert await search(kb, [KbScope.of_bot("other")], query) == []
    assert await search(kb, [], query) == []
    assert [d.id for d in await kb.documents([ANN, CHAT])] == [ann, chat]


async def test_a_scope_refuses_vectors_of_another_embedder(kb: KnowledgeStore) -> None:
    first = await add(kb, BOT, ["alpha beta"])
    small = HashingEmbedder(32)
    with pytest.raises(KbError, match="reindex"):
        await add(kb, BOT, ["gamma"], title="Other", embedder=small)
    assert [d.id for d in await kb.documents([BOT])] == [first]
    # Another scope is free to use its own model, and replacing the only document is too.
    await add(kb, ANN, ["gamma"], embedder=small)
    replaced = await add(kb, BOT, ["delta"], embedder=small, replaces=first)
    assert [(d.id, d.embedder, d.dimension) for d in await kb.documents([BOT])] == [
        (replaced, "hashing-32", 32)
    ]


async def test_a_refused_replacement_keeps_the_old_document(kb: KnowledgeStore) -> None:
    await add(kb, BOT, ["kept one"], title="One", source="one.md")
    two = await add(kb, BOT, ["kept two"], title="Two", source="two.md")
    with pytest.raises(KbError):
        await add(kb, BOT, ["new"], embedder=HashingEmbedder(32), replaces=two)
    assert [d.title for d in await kb.documents([BOT])] == ["One", "Two"]
    assert [c.text for _, c in await kb.chunks_of(two)] == ["kept two"]


async def test_replacing_a_document_keeps_none_of_its_old_chunks(kb: KnowledgeStore) -> None:
    old = await add(kb, BOT, ["zebra stripes", "zebra herd"], title="Old")
    assert await search(kb, [BOT], "zebra")  # cached before the replacement
    new = await add(kb, BOT, ["giraffe neck"], title="New", replaces=old)
    assert [d.id for d in await kb.documents([BOT])] == [new]
    assert await kb.chunks_of(old) == []
    hits = await search(kb, [BOT], "zebra", limit=10)
    assert {h.document_id for h in hits} == {new}
    assert not any(h.keyword for h in hits)


async def test_remove_document_only_within_the_given_scopes(kb: KnowledgeStore) -> None:
    doc = await add(kb, ANN, ["ann's notes on kayaks"])
    assert not await kb.remove_document(doc, [BOB, BOT])
    assert [h.document_id for h in await search(kb, [ANN], "kayaks")] == [doc]
    assert await kb.remove_document(doc, [BOB, ANN])
    assert await search(kb, [ANN], "kayaks") == []
    assert await kb.documents([ANN]) == []
    assert not await kb.remove_document(doc, [ANN])


async def test_forget_owner_deletes_only_that_users_documents(kb: KnowledgeStore) -> None:
    await add(kb, ANN, ["ann one"], source="1")
    await add(kb, ANN, ["ann two"], source="2")
    bob = await add(kb, BOB, ["bob one"])
    bot = await add(kb, BOT, ["bot one"])
    chat = await add(kb, CHAT, ["chat one"])
    await search(kb, [ANN], "one")
    assert await kb.forget_owner("b", ANN.owner) == 2
    assert await kb.documents([ANN]) == []
    assert await search(kb, [ANN], "one") == []
    assert [d.id for d in await kb.documents([BOT, CHAT, BOB])] == [bob, bot, chat]
    assert await kb.forget_owner("b", ANN.owner) == 0


@pytest.mark.parametrize(
    "query",
    ['"*OR(', "", "   ", "NEAR(a b)", "' OR 1=1 --", "a_b*", "^col:x", "(((", "é-ß 東京 \x00"],
)
async def test_hostile_query_text_is_just_text(kb: KnowledgeStore, query: str) -> None:
    await add(kb, BOT, ["or near col a b", "tokyo 東京 text"])
    hits = await kb.search([BOT], query, hashed_vector(query, 64), limit=5)
    assert len(hits) <= 2
    assert all(h.document_id > 0 for h in hits)


async def test_find_document_by_source_or_bytes(kb: KnowledgeStore) -> None:
    doc = await add(kb, CHAT, ["some text"], source="guide.pdf")
    info = await kb.find_document(CHAT, source="guide.pdf")
    assert info is not None
    assert (info.id, info.chunks, info.scope, info.embedder) == (doc, 1, CHAT, "hashing-64")
    by_hash = await kb.find_document(CHAT, content_hash=info.content_hash)
    assert by_hash is not None
    assert by_hash.id == doc
    assert await kb.find_document(BOT, source="guide.pdf") is None
    assert await kb.find_document(CHAT, source="other.pdf", content_hash="nope") is None


async def test_reindex_replaces_the_vectors_and_the_model(kb: KnowledgeStore) -> None:
    texts = ["apple pie recipe", "engine oil change"]
    doc = await add(kb, BOT, texts)
    assert await search(kb, [BOT], "apple pie")
    small = HashingEmbedder(32)
    chunks = await kb.chunks_of(doc)
    assert [c.text for _, c in chunks] == texts
    new = await small.embed([c.text for _, c in chunks])
    with pytest.raises(KbError):
        await kb.replace_vectors(doc, [(chunks[0][0], new[0])], embedder=small.id, dimension=32)
    pairs = [(i, v) for (i, _), v in zip(chunks, new, strict=True)]
    await kb.replace_vectors(doc, pairs, embedder=small.id, dimension=32)
    hits = await kb.search([BOT], "", hashed_vector("engine oil", 32), limit=1)
    assert [h.text for h in hits] == ["engine oil change"]
    assert hits[0].score > 0.5
    assert await kb.search([BOT], "", hashed_vector("engine oil", 64), limit=1) == []
    with pytest.raises(KbError):
        await add(kb, BOT, ["more"], title="More")


async def test_mismatched_vectors_are_refused(kb: KnowledgeStore) -> None:
    document = NewDocument(BOT, "T", "s", "h", [ChunkDraft("a", 0)], [], "hashing-64", 64, "cli")
    with pytest.raises(KbError):
        await kb.add_document(document)
    document = NewDocument(
        BOT, "T", "s", "h", [ChunkDraft("a", 0)], [[1.0]], "hashing-64", 64, "cli"
    )
    with pytest.raises(KbError):
        await kb.add_document(document)
    assert await kb.documents([BOT]) == []


async def test_a_second_store_sees_documents_added_by_another(new_kb: Callable[[], Any]) -> None:
    # Two stores on one database are two processes (a bot and `chinwag kb add`).
    reader: KnowledgeStore = await new_kb()
    if isinstance(reader, InMemoryKnowledgeStore):
        pytest.skip("an in-memory store has no other process")
    writer: KnowledgeStore = await new_kb()
    first = await add(writer, BOT, ["walrus tusks"], source="1")
    assert [h.document_id for h in await search(reader, [BOT], "walrus")] == [first]
    second = await add(writer, BOT, ["walrus colony"], source="2")
    assert {h.document_id for h in await search(reader, [BOT], "walrus")} == {first, second}
    assert await writer.remove_document(first, [BOT])
    assert {h.document_id for h in await search(reader, [BOT], "walrus")} == {second}


async def later(vector: list[float]) -> list[float]:
    """``vector`` as an embedding still running (one event-loop turn away)."""
    await asyncio.sleep(0)
    return vector


async def test_a_vector_still_being_computed_finds_what_the_vector_finds(
    kb: KnowledgeStore,
) -> None:
    texts = [filler(i) for i in range(60)]
    texts[11] = "If the display shows E-4711 the fuse is dry."
    await add(kb, BOT, texts)
    question = "what does E-4711 mean on the router?"
    vector = hashed_vector(question, 64)
    now = await kb.search([BOT], question, vector, limit=6)
    pending = await kb.search([BOT], question, later(vector), limit=6)
    assert [(h.chunk_id, h.rank, h.keyword) for h in pending] == [
        (h.chunk_id, h.rank, h.keyword) for h in now
    ]
    assert [h.score for h in pending] == pytest.approx([h.score for h in now])
    assert any(h.position == 11 and h.keyword for h in pending)


async def test_an_embedding_that_fails_fails_the_search(kb: KnowledgeStore) -> None:
    await add(kb, BOT, [filler(i) for i in range(10)])

    async def broken() -> list[float]:
        await asyncio.sleep(0)
        raise KbError("the embedder is gone")

    with pytest.raises(KbError, match="the embedder is gone"):
        await kb.search([BOT], "reboot the router", broken())


async def test_an_embedding_not_needed_is_closed_unawaited(kb: KnowledgeStore) -> None:
    await add(kb, BOT, [filler(i) for i in range(10)])
    for scopes, limit in (([], 5), ([BOT], 0)):
        vector = later(hashed_vector("router", 64))
        assert await kb.search(scopes, "router", vector, limit=limit) == []
        assert inspect.getcoroutinestate(vector) == inspect.CORO_CLOSED
