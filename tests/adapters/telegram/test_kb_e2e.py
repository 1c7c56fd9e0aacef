"""The knowledge base end to end on Telegram, as admins and users see it.

The real python-telegram-bot talks to the fake Telegram, which serves the uploaded file to
``getFile`` and its download URL; the engine runs the real ``OpenAIBackend`` against the
loopback OpenAI server, scripted to cite; the knowledge base is ``bots.app.build_knowledge``
on the SQL store on a migrated SQLite file, with the deterministic hashing embedder. What is
checked is what people see in the chat, what the store holds and what the model was sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.llm.openai import OpenAIBackend, OpenAISettings
from adapters.memory.store import SqlMemoryStore
from adapters.telegram import TelegramAdapter
from core.engine import Engine
from core.kb import KnowledgeBase
from core.kb_chat import FILE_HINT
from core.knowledge import DocumentInfo, KbScope
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests._db import UpgradeHead
from tests.adapters.kb.wiring import PAGE_2, QUESTION, router_pdf, system_prompt, wired_knowledge
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

pytestmark = pytest.mark.timeout(60)

BOT = "tgkb"
ROOT = FakeUser(8001, "Root", "root_8001")  # the admin
BOB = FakeUser(8002, "Bob", "bob_8002")
ANSWER = "Error E-4711 means the cooling fan is stuck; clean it with a soft brush [1]."
ADDED = re.compile(r'Added "router\.pdf" \(#\d+\): 2 pages, 2 chunks in \d+\.\d s\.')
REFUSED = "Only the bot's admins can add documents here."


def private(user: FakeUser) -> FakeChat:
    return FakeChat(user.id, "private")


def model(answer: str) -> Callable[[Mapping[str, Any]], str]:
    """A model that gives ``answer`` when it was given documents, else says it has none."""

    def reply(body: Mapping[str, Any]) -> str:
        if "Documents from the knowledge base:" in system_prompt(body):
            return answer
        return "I have no documents about that."

    return reply


@dataclass
class World:
    telegram: FakeTelegram
    openai: FakeOpenAIServer
    knowledge: KnowledgeBase
    pdf: bytes

    def texts(self, chat: FakeChat) -> list[str]:
        """The bot's visible messages in ``chat``, oldest first."""
        return [m.text for m in self.telegram.bot_messages(chat.id)]

    async def said(self, chat: FakeChat, before: int, replies: int) -> list[str]:
        """The bot's messages after the first ``before``, once ``replies`` came and it is quiet."""
        await self.telegram.wait_for(lambda: len(self.texts(chat)) >= before + replies)
        await self.telegram.wait_idle(quiet=0.3)
        return self.texts(chat)[before:]

    async def say(self, user: FakeUser, text: str, replies: int = 1) -> list[str]:
        """``user`` says ``text`` in their private chat; the bot's new messages."""
        chat = private(user)
        before = len(self.texts(chat))
        self.telegram.send_text(chat, user, text)
        return await self.said(chat, before, replies)

    async def upload(self, user: FakeUser, caption: str | None, replies: int) -> list[str]:
        """``user`` sends the router PDF with ``caption``; the bot's new messages."""
        chat = private(user)
        before = len(self.texts(chat))
        self.telegram.send_document(
            chat, user, "router.pdf", self.pdf, caption=caption, mime_type="application/pdf"
        )
        return await self.said(chat, before, replies)

    async def documents(self) -> list[DocumentInfo]:
        """Every document of the bot's, Root's and Bob's knowledge bases."""
        scopes = [KbScope.of_bot(BOT)]
        scopes += [KbScope.of_user(BOT, "telegram", str(u.id)) for u in (ROOT, BOB)]
        return await self.knowledge.store.documents(scopes)


@pytest.fixture
async def world(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, upgrade_head: UpgradeHead
) -> AsyncIterator[World]:
    await upgrade_head(sqlite_url)
    async with AsyncExitStack() as stack:
        telegram = await stack.enter_async_context(FakeTelegram())
        openai = await stack.enter_async_context(FakeOpenAIServer(reply=model(ANSWER)))
        store = SqlMemoryStore(sqlite_url)
        await store.start()
        stack.push_async_callback(store.aclose)
        knowledge, embedder = wired_knowledge(store, monkeypatch)
        stack.push_async_callback(knowledge.store.aclose)
        stack.push_async_callback(embedder.aclose)
        backend = OpenAIBackend(
            OpenAISettings(_env_file=None, base_url=openai.base_url, api_key="sk-loopback"),
            timeout=10,
        )
        await backend.start()
        stack.push_async_callback(backend.aclose)
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name=BOT),
            llm=LLMSettings(_env_file=None),
            access=AccessSettings(_env_file=None, admin_users=[f"telegram:{ROOT.id}"]),
            knowledge=knowledge,
        )
        await engine.start()
        stack.push_async_callback(engine.aclose, grace=1)
        adapter = TelegramAdapter(fast_settings(telegram), engine, max_file_mb=20)
        engine.use_adapters([adapter])
        await adapter.start()
        stack.push_async_callback(adapter.aclose)
        engine.adapters_ready()
        yield World(telegram, openai, knowledge, router_pdf(tmp_path))


async def added(world: World) -> None:
    """Root adds the router PDF with ``/kb add`` and gets the short report."""
    adding, report = await world.upload(ROOT, "/kb add", replies=2)
    assert adding == 'Adding "router.pdf"...'
    assert ADDED.fullmatch(report), report


async def test_an_admins_pdf_is_added_and_an_answer_cites_its_page(world: World) -> None:
    await added(world)
    [document] = await world.documents()
    assert (document.title, document.pages, document.chunks) == ("router.pdf", 2, 2)
    assert document.scope == KbScope.of_bot(BOT)
    assert (document.added_by, document.source) == (
        f"telegram:{ROOT.id}",
        "telegram upload: router.pdf",
    )
    assert len(world.telegram.downloads) == 1

    assert await world.say(BOB, QUESTION, replies=2) == [ANSWER, "Sources:\n[1] router.pdf, p. 2"]
    system = system_prompt(world.openai.chat_requests[-1].body)
    first, second = system.index("[1] router.pdf, p. 2\n"), system.index("[2] router.pdf, p. 1\n")
    assert first < system.index(PAGE_2[:40]) < second  # page 2's chunk is [1], numbered
    assert "Cite every document you use" in system


async def test_an_out_of_range_citation_is_dropped_from_the_sources(world: World) -> None:
    await added(world)
    cites_nine = "The cooling fan is stuck [1]; the manual says more [9]."
    world.openai.reply = model(cites_nine)

    replies = await world.say(BOB, QUESTION, replies=2)
    assert replies == [cites_nine, "Sources:\n[1] router.pdf, p. 2"]


async def test_a_file_without_kb_add_is_not_ingested_and_gets_the_hint(world: World) -> None:
    assert await world.upload(ROOT, None, replies=1) == [FILE_HINT]
    assert await world.documents() == []
    assert world.telegram.calls_to("getFile") == []  # not even fetched

    assert await world.say(BOB, QUESTION) == ["I have no documents about that."]  # no Sources


async def test_replying_kb_add_to_the_hinted_file_adds_it(world: World) -> None:
    chat = private(ROOT)
    sent = world.telegram.send_document(
        chat, ROOT, "router.pdf", world.pdf, mime_type="application/pdf"
    )
    assert await world.said(chat, 0, 1) == [FILE_HINT]
    world.telegram.send_text(chat, ROOT, "/kb add", reply_to=sent.message_id)
    adding, report = await world.said(chat, 1, 2)
    assert adding == 'Adding "router.pdf"...'
    assert ADDED.fullmatch(report), report

    [document] = await world.documents()
    assert await world.say(ROOT, "/kb") == [
        f'Documents I answer from here:\n#{document.id} "router.pdf": 2 chunks, 2 pages (bot)\n'
        "Remove one with /kb remove ID."
    ]
    assert await world.say(BOB, QUESTION, replies=2) == [ANSWER, "Sources:\n[1] router.pdf, p. 2"]


async def test_a_non_admins_kb_add_is_refused(world: World) -> None:
    assert await world.upload(BOB, "/kb add", replies=1) == [REFUSED]
    assert await world.documents() == []
    assert world.telegram.downloads == []

    assert await world.say(BOB, QUESTION) == ["I have no documents about that."]
    assert "Documents from the knowledge base" not in system_prompt(
        world.openai.chat_requests[-1].body
    )
