"""The knowledge base end to end on Discord, as admins and users see it.

The real discord.py client talks to the fake Discord, whose CDN serves the attached file;
the engine runs the real ``OpenAIBackend`` against the loopback OpenAI server, scripted to
cite; the knowledge base is ``bots.app.build_knowledge`` on the SQL store on a migrated
SQLite file, with the deterministic hashing embedder. Uploads and questions happen in a
server channel, mentioning the bot; root is an admin, bob is not.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.adapter import DiscordAdapter
from adapters.llm.openai import OpenAIBackend, OpenAISettings
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.kb import KnowledgeBase
from core.kb_chat import FILE_HINT
from core.knowledge import DocumentInfo, KbScope
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests._db import UpgradeHead
from tests.adapters.discord.conftest import discord_settings
from tests.adapters.discord.helpers import idle
from tests.adapters.kb.wiring import PAGE_2, QUESTION, router_pdf, system_prompt, wired_knowledge
from tests.fakes.discord_server import FakeDiscord, FakeUser
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.timeout(90)  # about a second each: not slow

BOT = "dckb"
ANSWER = "Error E-4711 means the cooling fan is stuck; clean it with a soft brush [1]."
ADDED = re.compile(r'Added "router\.pdf" \(#\d+\): 2 pages, 2 chunks in \d+\.\d s\.')
REFUSED = "Only the bot's admins can add documents here."
NO_DOCUMENTS = "I have no documents about that."


def model(answer: str) -> Callable[[Mapping[str, Any]], str]:
    """A model that gives ``answer`` when it was given documents, else says it has none."""

    def reply(body: Mapping[str, Any]) -> str:
        if "Documents from the knowledge base:" in system_prompt(body):
            return answer
        return NO_DOCUMENTS

    return reply


@dataclass
class World:
    discord: FakeDiscord
    openai: FakeOpenAIServer
    knowledge: KnowledgeBase
    adapter: DiscordAdapter  # what ``idle`` watches
    channel: str
    root: FakeUser
    bob: FakeUser
    pdf: bytes

    def texts(self, channel: str) -> list[str]:
        return self.discord.bot_texts(channel)

    async def said(self, channel: str, before: int, replies: int) -> list[str]:
        """The bot's messages after the first ``before``, once ``replies`` came and it is quiet."""
        await self.discord.wait_for(lambda: len(self.texts(channel)) >= before + replies)
        await idle(self.discord, self, quiet=0.3)
        return self.texts(channel)[before:]

    async def say(
        self, user: FakeUser, text: str, replies: int = 1, channel: str | None = None
    ) -> list[str]:
        """``user`` says ``text`` to the bot (in the server channel); its new messages."""
        channel = channel or self.channel
        before = len(self.texts(channel))
        await self.discord.user_message(channel, user, text, mention_bot=True)
        return await self.said(channel, before, replies)

    async def upload(
        self, user: FakeUser, text: str, replies: int, channel: str | None = None
    ) -> list[str]:
        """``user`` sends the router PDF with ``text``; the bot's new messages."""
        channel = channel or self.channel
        before = len(self.texts(channel))
        files = [("router.pdf", self.pdf, "application/pdf")]
        in_dm = channel != self.channel
        await self.discord.user_message(channel, user, text, mention_bot=not in_dm, files=files)
        return await self.said(channel, before, replies)

    async def documents(self) -> list[DocumentInfo]:
        """Every document of the bot's, the channel's, root's and bob's knowledge bases."""
        scopes = [KbScope.of_bot(BOT), KbScope.of_chat(BOT, "discord", self.channel)]
        scopes += [KbScope.of_user(BOT, "discord", u.id) for u in (self.root, self.bob)]
        return await self.knowledge.store.documents(scopes)


@pytest.fixture
async def world(
    fake: FakeDiscord,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    upgrade_head: UpgradeHead,
) -> AsyncIterator[World]:
    await upgrade_head(sqlite_url)
    root, bob = fake.add_user("root"), fake.add_user("bob")
    channel = fake.add_channel(fake.add_guild())
    async with AsyncExitStack() as stack:
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
            access=AccessSettings(_env_file=None, admin_users=[f"discord:{root.id}"]),
            knowledge=knowledge,
        )
        await engine.start()
        stack.push_async_callback(engine.aclose, grace=5)
        adapter = DiscordAdapter(
            discord_settings(fake), engine, data_dir=tmp_path / "data", max_file_mb=20
        )
        engine.use_adapters([adapter])
        await adapter.start()
        stack.push_async_callback(adapter.aclose)
        engine.adapters_ready()
        yield World(fake, openai, knowledge, adapter, channel, root, bob, router_pdf(tmp_path))


async def added(world: World) -> None:
    """Root adds the router PDF with ``/kb add`` in the channel and gets the short report."""
    adding, report = await world.upload(world.root, "/kb add", replies=2)
    assert adding == 'Adding "router.pdf"...'
    assert ADDED.fullmatch(report), report


async def test_an_admins_pdf_is_added_and_an_answer_cites_its_page(world: World) -> None:
    await added(world)
    [document] = await world.documents()
    assert (document.title, document.pages, document.chunks) == ("router.pdf", 2, 2)
    assert document.scope == KbScope.of_bot(BOT)
    assert (document.added_by, document.source) == (
        f"discord:{world.root.id}",
        "discord upload: router.pdf",
    )
    assert len(world.discord.downloads) == 1

    replies = await world.say(world.bob, QUESTION, replies=2)
    assert replies == [ANSWER, "Sources:\n[1] router.pdf, p. 2"]
    system = system_prompt(world.openai.chat_requests[-1].body)
    first, second = system.index("[1] router.pdf, p. 2\n"), system.index("[2] router.pdf, p. 1\n")
    assert first < system.index(PAGE_2[:40]) < second  # page 2's chunk is [1], numbered
    assert "Cite every document you use" in system


async def test_an_out_of_range_citation_is_dropped_from_the_sources(world: World) -> None:
    await added(world)
    cites_nine = "The cooling fan is stuck [1]; the manual says more [9]."
    world.openai.reply = model(cites_nine)

    replies = await world.say(world.bob, QUESTION, replies=2)
    assert replies == [cites_nine, "Sources:\n[1] router.pdf, p. 2"]


async def test_a_file_without_kb_add_is_not_ingested_and_gets_the_hint(world: World) -> None:
    dm = world.discord.dm_channel(world.root)
    assert await world.upload(world.root, "", replies=1, channel=dm) == [FILE_HINT]
    assert await world.documents() == []
    assert world.discord.downloads == []  # not even fetched

    assert await world.say(world.bob, QUESTION) == [NO_DOCUMENTS]  # and no Sources


async def test_a_non_admins_kb_add_is_refused(world: World) -> None:
    assert await world.upload(world.bob, "/kb add", replies=1) == [REFUSED]
    assert await world.documents() == []
    assert world.discord.downloads == []

    assert await world.say(world.bob, QUESTION) == [NO_DOCUMENTS]
    assert "Documents from the knowledge base" not in system_prompt(
        world.openai.chat_requests[-1].body
    )
