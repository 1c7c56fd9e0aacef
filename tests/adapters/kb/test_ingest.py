"""Adding documents: reports, citations' pages and headings, unchanged, replaced, reindex."""

from __future__ import annotations

import pytest

from adapters.kb.ingest import Ingestor
from adapters.memory.in_memory_knowledge import InMemoryKnowledgeStore
from core.errors import ConfigError, KbError
from core.knowledge import KbScope
from tests.adapters.kb.pdfs import empty_pdf, scanned_pdf, text_pdf
from tests.fakes.embedder import HashingEmbedder, hashed_vector

BOT = KbScope.of_bot("helper")
ALICE = KbScope.of_user("helper", "telegram", "1")


@pytest.fixture
def store():
    return InMemoryKnowledgeStore()


@pytest.fixture
def embedder():
    return HashingEmbedder(dimension=64)


@pytest.fixture
def ingestor(store, embedder):
    return Ingestor(store, embedder, 800, 150)


async def _ask(store, embedder, question, scopes=(BOT,)):
    return await store.search(list(scopes), question, await embedder.embed_query(question))


async def test_a_pdf_is_added_with_its_pages_and_found_with_the_right_page(
    tmp_path, store, embedder, ingestor
):
    path = text_pdf(
        tmp_path / "router.pdf",
        [
            "Unpack the router and connect the antenna.",
            "Error E-4711 means the fan is stuck; clean it.",
            "To reset, hold the button for ten seconds.",
        ],
    )

    report = await ingestor.add(path, BOT, added_by="cli")

    assert report.status == "added"
    assert report.pages == 3
    assert report.chunks == 1  # three short pages fit one chunk, which starts on page 1
    assert report.line().startswith('Added "router.pdf" (#')
    assert "3 pages, 1 chunks" in report.line()
    [info] = await store.documents([BOT])
    assert (info.title, info.pages, info.embedder, info.added_by) == (
        "router.pdf",
        3,
        "hashing-64",
        "cli",
    )
    assert info.source == str(path.resolve())


async def test_long_pdf_pages_keep_their_page_numbers_in_the_chunks(tmp_path, store, embedder):
    pages = [
        " ".join(f"Page {n} sentence {i} about topic{n}." for i in range(40)) for n in (1, 2, 3)
    ]
    path = text_pdf(tmp_path / "long.pdf", pages)

    await Ingestor(store, embedder, 400, 60).add(path, BOT, added_by="cli")

    [info] = await store.documents([BOT])
    chunks = [draft for _, draft in await store.chunks_of(info.id)]
    assert {c.page for c in chunks} == {1, 2, 3}
    for c in chunks:
        # A chunk's new text starts on its page (its overlap may come from the page before).
        assert f"topic{c.page}" in c.text
    hits = await _ask(store, embedder, "topic3")
    assert hits[0].page == 3
    assert hits[0].where == "p. 3"


async def test_markdown_chunks_carry_their_heading_path(tmp_path, store, embedder, ingestor):
    path = tmp_path / "wiki.md"
    path.write_text(
        "# Team Wiki\n\n## Setup\n\n### Network\n\nThe VPN gateway is vpn.example.org.\n\n"
        "## Holidays\n\nAsk your lead two weeks ahead.\n",
        encoding="utf-8",
    )

    report = await ingestor.add(path, BOT, added_by="cli")

    assert (report.title, report.chunks, report.pages) == ("Team Wiki", 2, None)
    hits = await _ask(store, embedder, "VPN gateway")
    assert hits[0].heading == "Team Wiki > Setup > Network"
    assert hits[0].where == "§ Team Wiki > Setup > Network"
    assert "vpn.example.org" in hits[0].text


async def test_html_is_stored_without_script_style_or_navigation(
    tmp_path, store, embedder, ingestor
):
    path = tmp_path / "faq.html"
    path.write_text(
        "<html><head><title>FAQ</title><style>.x{}</style></head><body>"
        "<nav>Home About Login</nav><script>trackVisitor()</script>"
        "<h1>FAQ</h1><p>Returns are free within 30 days.</p></body></html>",
        encoding="utf-8",
    )

    await ingestor.add(path, BOT, added_by="cli")

    [info] = await store.documents([BOT])
    [(_, draft)] = await store.chunks_of(info.id)
    assert draft.text == "Returns are free within 30 days."
    assert (info.title, draft.heading) == ("FAQ", "FAQ")


async def test_a_text_file_title_can_be_given(tmp_path, store, ingestor):
    path = tmp_path / "upload-1234.txt"
    path.write_text("Opening hours: 9 to 5.\n", encoding="utf-8")

    report = await ingestor.add(
        path, ALICE, added_by="telegram:1", source="telegram upload: hours.txt", title="hours"
    )

    [info] = await store.documents([ALICE])
    assert (info.title, info.source, info.added_by) == (
        "hours",
        "telegram upload: hours.txt",
        "telegram:1",
    )
    assert report.title == "hours"
    assert await store.documents([BOT]) == []


@pytest.mark.parametrize("make", [empty_pdf, scanned_pdf], ids=["empty", "scanned"])
async def test_a_pdf_without_text_stores_nothing_and_says_why(tmp_path, store, embedder, make):
    path = make(tmp_path / "scan.pdf")

    report = await Ingestor(store, embedder).add(path, BOT, added_by="cli")

    assert report.status == "empty"
    assert report.line() == 'Nothing added from "scan.pdf": no extractable text (a scanned PDF?).'
    assert await store.documents([BOT]) == []
    assert embedder.calls == 0


async def test_re_adding_the_same_file_changes_nothing(tmp_path, store, embedder, ingestor):
    path = tmp_path / "notes.txt"
    path.write_text("Backups run at 02:00.\n\nRestores need a ticket.\n", encoding="utf-8")
    first = await ingestor.add(path, BOT, added_by="cli")
    calls = embedder.calls

    again = await ingestor.add(path, BOT, added_by="cli")

    assert again.status == "unchanged"
    assert again.document_id == first.document_id
    assert again.line() == f'"notes.txt" (#{first.document_id}) is already in the knowledge base.'
    assert embedder.calls == calls  # nothing read or embedded again
    assert len(await store.documents([BOT])) == 1


async def test_a_changed_file_replaces_its_old_chunks(tmp_path, store, embedder, ingestor):
    path = tmp_path / "policy.txt"
    path.write_text("Refunds take 14 days.\n", encoding="utf-8")
    first = await ingestor.add(path, BOT, added_by="cli")
    path.write_text("Refunds take 3 days now.\n\nExchanges are free.\n", encoding="utf-8")

    second = await ingestor.add(path, BOT, added_by="cli")

    assert second.status == "replaced"
    assert second.line().startswith('Replaced "policy.txt"')
    [info] = await store.documents([BOT])
    assert info.id == second.document_id != first.document_id
    assert await store.chunks_of(first.document_id) == []
    texts = [draft.text for _, draft in await store.chunks_of(info.id)]
    assert texts == ["Refunds take 3 days now.\n\nExchanges are free."]
    hits = await _ask(store, embedder, "refunds days")
    assert all("14" not in hit.text for hit in hits)


async def test_the_same_file_in_another_scope_is_added_there(tmp_path, store, ingestor):
    path = tmp_path / "notes.txt"
    path.write_text("Shared notes.\n", encoding="utf-8")
    await ingestor.add(path, BOT, added_by="cli")

    report = await ingestor.add(path, ALICE, added_by="telegram:1")

    assert report.status == "added"
    assert len(await store.documents([BOT, ALICE])) == 2


async def test_vectors_come_back_in_chunk_order_and_progress_is_reported(tmp_path, store, embedder):
    # Paragraphs of very different lengths: the batches are sorted by length, the stored
    # vectors must still belong to their own chunks.
    paragraphs = [f"topic{i} " + "filler " * ((i * 37) % 90) for i in range(80)]
    path = tmp_path / "mixed.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    seen: list[tuple[int, int]] = []

    async def progress(done, total):
        seen.append((done, total))

    report = await Ingestor(store, embedder, 200, 0).add(
        path, BOT, added_by="cli", progress=progress
    )

    assert report.chunks > 64
    total = report.chunks
    assert seen[0] == (0, total)
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) == 1 + -(-total // 32)  # batches of 32
    for i in (0, 17, 55, 79):
        hits = await _ask(store, embedder, f"topic{i}")
        assert f"topic{i} " in hits[0].text + " "
        assert hits[0].score == pytest.approx(
            sum(
                a * b
                for a, b in zip(
                    hashed_vector(hits[0].text, 64), hashed_vector(f"topic{i}", 64), strict=True
                )
            ),
            abs=1e-5,
        )


async def test_a_sync_progress_callback_works_too(tmp_path, store, embedder):
    path = tmp_path / "a.txt"
    path.write_text("One.\n\nTwo.\n", encoding="utf-8")
    seen = []

    await Ingestor(store, embedder).add(
        path, BOT, added_by="cli", progress=lambda done, total: seen.append((done, total))
    )

    assert seen == [(0, 1), (1, 1)]


async def test_an_unsupported_file_is_refused_before_anything_is_stored(tmp_path, store, ingestor):
    path = tmp_path / "sheet.xlsx"
    path.write_bytes(b"PK")

    with pytest.raises(KbError, match="supported are"):
        await ingestor.add(path, BOT, added_by="cli")
    assert await store.documents([BOT]) == []


async def test_an_embedder_failure_stores_nothing(tmp_path, store, embedder, ingestor):
    path = tmp_path / "a.txt"
    path.write_text("Text.\n", encoding="utf-8")
    embedder.failure = KbError("the embedding server is down")

    with pytest.raises(KbError, match="down"):
        await ingestor.add(path, BOT, added_by="cli")
    assert await store.documents([BOT]) == []


def test_an_overlap_over_half_the_chunk_is_a_config_error(store, embedder):
    with pytest.raises(ConfigError, match="KB_CHUNK_OVERLAP"):
        Ingestor(store, embedder, 400, 300)


async def test_reindex_re_embeds_every_chunk_with_the_current_embedder(tmp_path, store):
    old = HashingEmbedder(dimension=32)
    for name, text in (("a.txt", "Alpha one.\n\nAlpha two."), ("b.md", "# B\n\nBeta.")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        await Ingestor(store, old).add(tmp_path / name, BOT, added_by="cli")
    new = HashingEmbedder(dimension=64)
    seen = []

    report = await Ingestor(store, new).reindex([BOT], lambda d, t: seen.append((d, t)))

    assert (report.documents, report.chunks, report.embedder) == (2, 2, "hashing-64")
    assert seen[-1] == (2, 2)
    assert {(d.embedder, d.dimension) for d in await store.documents([BOT])} == {("hashing-64", 64)}
    hits = await _ask(store, new, "Beta")
    assert hits[0].title == "B"
    assert hits[0].score == pytest.approx(
        sum(
            a * b
            for a, b in zip(hashed_vector("B\nBeta.", 64), hashed_vector("Beta", 64), strict=True)
        ),
        abs=1e-5,
    )
    # A second run has nothing left to do; a forced one re-embeds again.
    again = await Ingestor(store, new).reindex([BOT])
    assert (again.documents, again.skipped) == (0, 2)
    forced = await Ingestor(store, new).reindex([BOT], force=True)
    assert forced.documents == 2


async def test_adding_with_another_embedder_is_refused_until_reindexed(tmp_path, store):
    (tmp_path / "a.txt").write_text("Alpha.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Beta.\n", encoding="utf-8")
    await Ingestor(store, HashingEmbedder(32)).add(tmp_path / "a.txt", BOT, added_by="cli")

    with pytest.raises(KbError, match="reindex"):
        await Ingestor(store, HashingEmbedder(64)).add(tmp_path / "b.txt", BOT, added_by="cli")

    await Ingestor(store, HashingEmbedder(64)).reindex([BOT])
    report = await Ingestor(store, HashingEmbedder(64)).add(tmp_path / "b.txt", BOT, added_by="cli")
    assert report.status == "added"
