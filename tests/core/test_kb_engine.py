"""The knowledge base through the engine: prompts, sources, /kb, /why, /forget, export."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.in_memory_knowledge import InMemoryKnowledgeStore
from core.errors import KbError
from core.kb import KB_GUIDANCE, NOTHING_RELEVANT, KnowledgeBase
from core.kb_chat import FILE_HINT
from core.knowledge import AddReport, ChunkDraft, KbScope, NewDocument
from core.settings import KbSettings
from core.types import Attachment, CompletionRequest, IncomingAction, Role
from tests.core.conftest import dm
from tests.core.test_engine import history
from tests.core.tooling import Home, calls, read, rounds
from tests.fakes.channel import RecordingChannel
from tests.fakes.embedder import HashingEmbedder

ROOT = {"admin_users": ["test:root"]}
PUMP = "The pump pressure is 40 bar at full load."


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest):
    """Every test here runs on the in-memory store and on the SQL store (SQLite)."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(256)


@pytest.fixture
def kstore() -> InMemoryKnowledgeStore:
    return InMemoryKnowledgeStore()


def knowledge_base(kstore, embedder, add_file=None, **settings: Any) -> KnowledgeBase:
    return KnowledgeBase(
        kstore, embedder, KbSettings(_env_file=None, **settings), add_file=add_file
    )


async def add_doc(
    kstore,
    embedder,
    title: str,
    texts: Sequence[str],
    *,
    scope: KbScope | None = None,
    page: int | None = None,
    heading: str | None = None,
) -> int:
    """Store a document whose chunks are ``texts`` (all on ``page`` / under ``heading``)."""
    chunks = [ChunkDraft(t, i, page, heading) for i, t in enumerate(texts)]
    vectors = await embedder.embed(list(texts))
    return int(
        await kstore.add_document(
            NewDocument(
                scope=scope or KbScope.of_bot("testbot"),
                title=title,
                source=f"test:{title}",
                content_hash=hashlib.sha256("".join(texts).encode()).hexdigest(),
                chunks=chunks,
                vectors=vectors,
                embedder=embedder.id,
                dimension=embedder.dimension,
                added_by="cli",
                pages=page,
            )
        )
    )


def system_of(request: CompletionRequest) -> str:
    assert request.messages[0].role is Role.SYSTEM
    return request.messages[0].content


def numbered(request: CompletionRequest) -> dict[int, str]:
    """The documents block's headings by number: ``{1: "Pump Manual, p. 12"}``."""
    found = re.findall(r"^\[(\d+)\] (.+)$", system_of(request), flags=re.MULTILINE)
    return {int(n): heading for n, heading in found}


# --- the prompt and the sources ---------------------------------------------------------------


async def test_the_prompt_carries_the_numbered_chunks_and_the_answer_its_cited_sources(
    make_engine, backend, store, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    backend._reply = "It runs at 40 bar [1]."
    engine = make_engine(knowledge=knowledge_base(kstore, embedder))
    out = RecordingChannel()
    await engine.handle(dm("What is the pump pressure?"), out)

    system = system_of(backend.calls[0])
    assert system.startswith("You are a test bot.")
    assert f"[1] Pump Manual, p. 12\n{PUMP}" in system
    assert KB_GUIDANCE in system
    assert out.replies == ["It runs at 40 bar [1]."]
    assert out.notices == ["Sources:\n[1] Pump Manual, p. 12"]
    assert [k for k, _ in out.events] == ["reply", "notice"]  # under the answer
    reply = (await history(store, engine))[-1]
    assert reply.content == "It runs at 40 bar [1]."  # the sources are not in the text
    assert reply.extra["sources"][0]["title"] == "Pump Manual"
    assert reply.extra["sources"][0]["page"] == 12
    assert reply.extra["retrieval"]["used"] is True

    # The sources never go back into a later prompt (the documents block is rebuilt).
    await engine.handle(dm("thanks"), out)
    later = backend.calls[-1]
    assert all("Sources:" not in m.content for m in later.messages)


async def test_an_out_of_range_citation_is_dropped(make_engine, backend, kstore, embedder) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    await add_doc(kstore, embedder, "Valve Guide", ["The pump valve opens at 2 bar."], page=3)
    backend._reply = "40 bar [1], see also [7]."
    engine = make_engine(knowledge=knowledge_base(kstore, embedder, min_score=0.1))
    out = RecordingChannel()
    await engine.handle(dm("What is the pump pressure?"), out)

    shown = numbered(backend.calls[0])
    assert set(shown) == {1, 2}
    assert out.notices == [f"Sources:\n[1] {shown[1]}"]


async def test_without_a_valid_citation_the_chunks_of_the_prompt_are_listed(
    make_engine, backend, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    await add_doc(kstore, embedder, "Setup", ["The pump pressure gauge is red."], heading="Gauges")
    backend._reply = "About 40 bar [9]."
    engine = make_engine(knowledge=knowledge_base(kstore, embedder, min_score=0.1))
    out = RecordingChannel()
    await engine.handle(dm("What is the pump pressure?"), out)

    shown = numbered(backend.calls[0])
    assert sorted(shown.values()) == ["Pump Manual, p. 12", "Setup § Gauges"]
    assert out.notices == [f"Sources:\n[1] {shown[1]}\n[2] {shown[2]}"]


async def test_below_the_threshold_no_chunks_go_into_the_prompt(
    make_engine, backend, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    engine = make_engine(knowledge=knowledge_base(kstore, embedder, min_score=0.99))
    out = RecordingChannel()
    await engine.handle(dm("What is the pump pressure?"), out)

    assert system_of(backend.calls[0]) == "You are a test bot."
    assert out.notices == []  # no Sources under an answer without documents
    await engine.handle(dm("/why"), out)
    assert "no passage reached the relevance threshold (0.99)" in out.notices[-1]
    assert "Pump Manual, p. 12" in out.notices[-1]


async def test_strict_without_anything_relevant_says_so_without_asking_the_model(
    make_engine, backend, store, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    engine = make_engine(knowledge=knowledge_base(kstore, embedder, strict=True))
    out = RecordingChannel()
    await engine.handle(dm("Who won the football cup?"), out)

    assert backend.calls == []
    assert out.notices == [NOTHING_RELEVANT]
    rows = await history(store, engine)
    assert [(r.role, r.content) for r in rows][-1] == (Role.ASSISTANT, NOTHING_RELEVANT)

    # Something relevant is answered by the model, from the documents.
    await engine.handle(dm("What is the pump pressure?"), out)
    assert len(backend.calls) == 1
    assert PUMP in system_of(backend.calls[0])


async def test_strict_never_applies_to_a_bot_with_tools(
    make_engine, backend, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    engine = make_engine(
        knowledge=knowledge_base(kstore, embedder, strict=True), toolbox=Home().toolbox()
    )
    out = RecordingChannel()
    await engine.handle(dm("Who won the football cup?"), out)
    assert len(backend.calls) == 1
    assert NOTHING_RELEVANT not in out.notices


async def test_without_documents_in_scope_nothing_is_embedded(
    make_engine, backend, kstore, embedder
) -> None:
    # Bob's own document is not alice's: she has nothing in scope.
    await add_doc(
        kstore, embedder, "Bob's", [PUMP], scope=KbScope.of_user("testbot", "test", "bob")
    )
    embedded = embedder.calls
    engine = make_engine(knowledge=knowledge_base(kstore, embedder, strict=True))
    out = RecordingChannel()
    await engine.handle(dm("What is the pump pressure?"), out)
    assert embedder.calls == embedded
    assert system_of(backend.calls[0]) == "You are a test bot."  # answered, strict or not


# --- the token budget -------------------------------------------------------------------------


async def test_the_history_is_trimmed_before_the_documents(
    make_engine, backend, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    engine = make_engine(
        knowledge=knowledge_base(kstore, embedder),
        context_window=260,
        max_reply_tokens=60,
    )
    out = RecordingChannel()
    for n in range(4):
        await engine.handle(dm(f"old message {n} " + "blah " * 30), out)
    await engine.handle(dm("What is the pump pressure?"), out)

    request = backend.calls[-1]
    assert PUMP in system_of(request)
    users = [m.content for m in request.messages if m.role is Role.USER]
    assert users[-1] == "What is the pump pressure?"
    assert not any(u.startswith("old message 0") for u in users)  # trimmed, not the chunk


async def test_chunks_that_do_not_fit_even_without_history_are_dropped_whole(
    make_engine, backend, kstore
) -> None:
    embedder = HashingEmbedder(1024)
    texts = [
        f"The pump manual part {i} says " + " ".join(f"w{i}x{j}" for j in range(55))
        for i in range(3)
    ]
    for i, text in enumerate(texts):
        await add_doc(kstore, embedder, f"Part {i}", [text], page=i + 1)
    engine = make_engine(
        knowledge=knowledge_base(kstore, embedder, min_score=0.01),
        context_window=300,
        max_reply_tokens=70,
    )
    out = RecordingChannel()
    await engine.handle(dm("what does the pump manual part say"), out)

    request = backend.calls[-1]
    system = system_of(request)
    assert set(numbered(request)) == {1, 2}
    assert sum(text in system for text in texts) == 2  # two whole chunks, none cut
    assert out.notices[-1].count("\n") == 2  # Sources: [1] and [2]
    await engine.handle(dm("/why"), out)
    assert out.notices[-1].count("(did not fit the prompt)") == 1


# --- tools --------------------------------------------------------------------------------------


async def test_a_tool_bot_retrieves_once_and_lists_sources_after_its_final_answer(
    make_engine, backend, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    home = Home()
    backend._reply = rounds(calls(read(), text="Let me look."), "The pump runs at 40 bar [1].")
    engine = make_engine(knowledge=knowledge_base(kstore, embedder), toolbox=home.toolbox())
    out = RecordingChannel()
    embedded = embedder.calls
    await engine.handle(dm("What is the pump pressure? and the kitchen light?"), out)

    assert home.reads == ["light.kitchen"]
    assert embedder.calls == embedded + 1  # one query, not one per round
    assert len(backend.calls) == 2
    assert all(PUMP in system_of(r) for r in backend.calls)
    assert out.replies == ["Let me look.", "The pump runs at 40 bar [1]."]
    assert out.notices == ["Sources:\n[1] Pump Manual, p. 12"]


# --- /kb, /why, /forget, export ----------------------------------------------------------------


async def test_kb_lists_what_is_in_scope_and_removes_by_permission(
    make_engine, kstore, embedder
) -> None:
    bot_doc = await add_doc(kstore, embedder, "Handbook", [PUMP], page=1)
    alice_doc = await add_doc(
        kstore,
        embedder,
        "Alice notes",
        ["notes"],
        scope=KbScope.of_user("testbot", "test", "alice"),
    )
    engine = make_engine(knowledge=knowledge_base(kstore, embedder), **ROOT)
    alice, bob, root = RecordingChannel(), RecordingChannel(), RecordingChannel()

    await engine.handle(dm("/kb", "alice"), alice)
    assert f'#{bot_doc} "Handbook": 1 chunks, 1 pages (bot)' in alice.notices[-1]
    assert f'#{alice_doc} "Alice notes": 1 chunks (yours)' in alice.notices[-1]
    await engine.handle(dm("/kb", "bob"), bob)
    assert "Handbook" in bob.notices[-1] and "Alice notes" not in bob.notices[-1]

    await engine.handle(dm(f"/kb remove {alice_doc}", "bob"), bob)
    assert bob.notices[-1] == f"There is no document #{alice_doc} here."
    await engine.handle(dm(f"/kb remove {bot_doc}", "bob"), bob)
    assert bob.notices[-1] == f"Only the bot's admins can remove #{bot_doc}."
    await engine.handle(dm(f"/kb remove {alice_doc}", "alice"), alice)
    assert alice.notices[-1] == f'Removed #{alice_doc} "Alice notes".'
    await engine.handle(dm(f"/kb remove #{bot_doc}", "root"), root)
    assert root.notices[-1] == f'Removed #{bot_doc} "Handbook".'
    assert await kstore.documents([KbScope.of_bot("testbot")]) == []
    await engine.handle(dm("/kb", "alice"), alice)
    assert alice.notices[-1] == "There are no documents in the knowledge base here yet."


class FileChannel(RecordingChannel):
    """A reply channel whose platform hands over files (``core.ports.FileSource``)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__()
        self.served = files
        self.downloaded: list[Path] = []

    async def download(
        self, attachment: Attachment, destination: Path, *, max_bytes: int | None = None
    ) -> int:
        data = self.served[attachment.ref]
        destination.write_bytes(data)
        self.downloaded.append(destination)
        return len(data)


class TinyIngestor:
    """An ``add_file``: one chunk per paragraph, page 1, into the knowledge store."""

    def __init__(self, kstore, embedder) -> None:
        self.kstore, self.embedder = kstore, embedder
        self.calls: list[tuple[str, KbScope, str, str]] = []

    async def __call__(self, path: Path, scope: KbScope, added_by: str, name: str) -> AddReport:
        text = path.read_text()
        self.calls.append((text, scope, added_by, name))
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        title = Path(name).stem
        doc = await add_doc(self.kstore, self.embedder, title, paragraphs, scope=scope, page=1)
        return AddReport(title, "added", doc, pages=1, chunks=len(paragraphs), seconds=0.2)


def upload(text: str, user: str = "root", **kw: Any) -> Any:
    manual = Attachment("document", "Pump Manual.txt", 60, "text/plain", "file-1")
    return dm(text, user, attachments=(manual,), **kw)


async def test_kb_add_ingests_an_admins_file_and_users_then_get_cited_answers(
    make_engine, backend, kstore, embedder
) -> None:
    ingest = TinyIngestor(kstore, embedder)
    engine = make_engine(knowledge=knowledge_base(kstore, embedder, add_file=ingest), **ROOT)
    out = FileChannel({"file-1": f"{PUMP}\n\nIt needs oil yearly.".encode()})
    await engine.handle(upload("/kb add"), out)

    ((text, scope, added_by, name),) = ingest.calls
    assert (scope, added_by, name) == (KbScope.of_bot("testbot"), "test:root", "Pump Manual.txt")
    assert text.startswith(PUMP)
    assert out.notices[-1] == 'Added "Pump Manual" (#1): 1 pages, 2 chunks in 0.2 s.'
    assert not out.downloaded[0].exists() and not out.downloaded[0].parent.exists()

    backend._reply = "40 bar [1]."
    user = RecordingChannel()
    await engine.handle(dm("What is the pump pressure?", "alice"), user)
    assert user.notices == ["Sources:\n[1] Pump Manual, p. 1"]


async def test_kb_add_permissions_and_files_sent_without_the_command(
    make_engine, backend, kstore, embedder
) -> None:
    ingest = TinyIngestor(kstore, embedder)
    kb = knowledge_base(kstore, embedder, add_file=ingest)
    engine = make_engine(knowledge=kb, **ROOT)
    out = FileChannel({"file-1": PUMP.encode()})

    await engine.handle(upload("/kb add", "alice"), out)
    assert out.notices[-1] == "Only the bot's admins can add documents here."
    await engine.handle(upload("", "alice"), out)  # a file without a caption
    assert out.notices[-1] == FILE_HINT
    await engine.handle(upload("what is this about?", "alice"), out)  # answered as today
    assert out.replies[-1].startswith("echo: what is this about?")
    await engine.handle(dm("/kb add", "root"), out)  # no file at all
    assert out.notices[-1] == "Send a file with the caption /kb add, or reply /kb add to it."
    assert ingest.calls == [] and out.downloaded == []

    # Users may add to their own scope with KB_USER_UPLOADS, replying to their file.
    kb.settings = KbSettings(_env_file=None, user_uploads=True)
    manual = Attachment("document", "notes.md", 8, "text/markdown", "file-1")
    await engine.handle(dm("/kb add", "alice", reply_attachments=(manual,)), out)
    assert ingest.calls[-1][1] == KbScope.of_user("testbot", "test", "alice")
    assert out.notices[-1].startswith('Added "notes" (#1)')

    # A channel that cannot fetch files, and a file over KB_MAX_FILE_MB.
    plain = RecordingChannel()
    await engine.handle(upload("/kb add"), plain)
    assert plain.notices[-1] == "I can't fetch files on this platform."
    big = Attachment("document", "big.pdf", 30 * 1024 * 1024, "application/pdf", "file-1")
    await engine.handle(dm("/kb add", "root", attachments=(big,)), out)
    assert out.notices[-1] == '"big.pdf" is too big (30.0 MB; at most 20 MB).'
    assert len(ingest.calls) == 1


async def test_why_shows_the_last_answers_chunks_and_scores(
    make_engine, backend, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    engine = make_engine(knowledge=knowledge_base(kstore, embedder))
    out = RecordingChannel()
    await engine.handle(dm("/why"), out)
    assert out.notices[-1] == "My last answer was not given any documents."
    await engine.handle(dm("What is the pump pressure?"), out)
    await engine.handle(dm("/why"), out)
    lines = out.notices[-1].splitlines()
    assert lines[0] == "My last answer was given 1 of 1 passages found:"
    assert re.fullmatch(r"\[1\] Pump Manual, p\. 12: score 0\.\d\d.*", lines[1])
    assert PUMP[:30] in lines[2]


async def test_forget_deletes_the_users_own_documents_only(make_engine, kstore, embedder) -> None:
    await add_doc(kstore, embedder, "Handbook", [PUMP])
    mine = KbScope.of_user("testbot", "test", "alice")
    await add_doc(kstore, embedder, "Alice notes", ["my notes"], scope=mine)
    engine = make_engine(knowledge=knowledge_base(kstore, embedder))
    out = RecordingChannel()
    await engine.handle(dm("/forget"), out)
    (prompt, action_id) = out.confirmations[-1]
    assert "documents" in prompt
    await engine.handle_action(IncomingAction("test", "alice", "alice", action_id, True), out)
    assert out.notices[-1].startswith("Done: I deleted everything stored about you")
    assert "1 document)" in out.notices[-1]
    assert await kstore.documents([mine]) == []
    assert len(await kstore.documents([KbScope.of_bot("testbot")])) == 1


async def test_export_shows_sources_and_the_users_own_documents(
    make_engine, backend, kstore, embedder
) -> None:
    await add_doc(kstore, embedder, "Pump Manual", [PUMP], page=12)
    await add_doc(
        kstore,
        embedder,
        "Alice notes",
        ["Alice keeps spare seals in drawer three."],
        scope=KbScope.of_user("testbot", "test", "alice"),
    )
    backend._reply = "40 bar [1]."
    engine = make_engine(knowledge=knowledge_base(kstore, embedder))
    await engine.handle(dm("What is the pump pressure?"), RecordingChannel())

    markdown = await engine.export("test", "alice", "md")
    assert "40 bar [1].\n\nSources:\n- [1] Pump Manual, p. 12" in markdown
    assert "## Your documents" in markdown
    assert "Alice keeps spare seals in drawer three." in markdown
    assert PUMP not in markdown.split("## Your documents")[1]  # the bot's document is not hers
    doc = json.loads(await engine.export("test", "alice", "json"))
    (reply,) = [m for m in doc["conversations"][0]["messages"] if m["role"] == "assistant"]
    assert reply["sources"] == ["[1] Pump Manual, p. 12"]
    assert doc["documents"][0]["title"] == "Alice notes"
    assert doc["documents"][0]["chunks"][0]["text"] == "Alice keeps spare seals in drawer three."


async def test_kb_add_tells_why_a_file_was_not_added(make_engine, kstore, embedder) -> None:
    async def refuse(path: Path, scope: KbScope, added_by: str, name: str) -> AddReport:
        raise KbError("no extractable text (a scanned PDF?)")

    engine = make_engine(knowledge=knowledge_base(kstore, embedder, add_file=refuse), **ROOT)
    out = FileChannel({"file-1": b"%PDF-1.4"})
    scan = Attachment("document", "../../scan.pdf", 8, "application/pdf", "file-1")
    await engine.handle(dm("/kb add", "root", attachments=(scan,)), out)
    assert out.notices[-1] == 'Nothing added from "scan.pdf": no extractable text (a scanned PDF?).'
    assert out.downloaded[0].name == "scan.pdf"  # never a path outside its private folder
    assert await kstore.documents([KbScope.of_bot("testbot")]) == []


async def test_kb_add_through_the_real_ingestor_then_a_cited_section(
    make_engine, backend, kstore, embedder
) -> None:
    from adapters.kb.ingest import Ingestor

    ingestor = Ingestor(kstore, embedder)

    def add_file(path: Path, scope: KbScope, added_by: str, name: str) -> Any:
        return ingestor.add(path, scope, added_by=added_by, source=f"test upload: {name}")

    engine = make_engine(knowledge=knowledge_base(kstore, embedder, add_file=add_file), **ROOT)
    text = "# Pump Handbook\n\n## Pressure\n\nThe pump pressure is 40 bar at full load.\n"
    out = FileChannel({"file-1": text.encode()})
    guide = Attachment("document", "handbook.md", len(text), "text/markdown", "file-1")
    await engine.handle(dm("/kb add", "root", attachments=(guide,)), out)
    assert re.fullmatch(r'Added "Pump Handbook" \(#1\): 1 chunks in \d+\.\d s\.', out.notices[-1])
    await engine.handle(dm("/kb add", "root", attachments=(guide,)), out)
    assert out.notices[-1] == '"Pump Handbook" (#1) is already in the knowledge base.'

    backend._reply = "40 bar [1]."
    await engine.handle(dm("What is the pump pressure?", "alice"), out)
    assert out.notices[-1].startswith("Sources:\n[1] Pump Handbook § ")
    assert "Pressure" in out.notices[-1]
