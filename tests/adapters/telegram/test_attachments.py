"""Documents users send on Telegram: attachments on the incoming message, downloads, limits.

The real python-telegram-bot talks to the fake Bot API, which serves ``getFile`` and the
file URLs with Telegram's 20 MB download limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.telegram import TelegramAdapter
from core.types import Attachment
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.file_engine import FileEngine
from tests.fakes.telegram_server import FakeChat, FakeMessage, FakeTelegram, FakeUser

MANUAL = b"Chapter 1\n\nThe pump restarts after error E-4711.\n" * 40


@dataclass
class Bot:
    fake: FakeTelegram
    engine: FileEngine

    def replies(self, chat: FakeChat) -> list[str]:
        return [m.text for m in self.fake.bot_messages(chat.id)]

    async def answer(self, chat: FakeChat, count: int) -> str:
        await self.fake.wait_for(lambda: len(self.fake.bot_messages(chat.id)) >= count)
        return self.replies(chat)[count - 1]


@pytest.fixture
async def make_bot(tmp_path: Path) -> AsyncIterator[Any]:
    adapters: list[TelegramAdapter] = []
    fakes: list[FakeTelegram] = []

    async def make(**kwargs: Any) -> Bot:
        fake = FakeTelegram()
        await fake.start()
        fakes.append(fake)
        engine = FileEngine(tmp_path)
        adapter = TelegramAdapter(fast_settings(fake), engine, **kwargs)
        await adapter.start()
        adapters.append(adapter)
        return Bot(fake, engine)

    yield make
    for adapter in adapters:
        await adapter.aclose()
    for fake in fakes:
        await fake.aclose()


ALICE = FakeUser(501, "Alice", "alice")
BOB = FakeUser(502, "Bob", "bob")


async def test_a_document_with_kb_add_arrives_as_an_attachment_and_downloads(make_bot) -> None:
    bot = await make_bot()
    chat = FakeChat(ALICE.id, "private")
    bot.fake.send_document(chat, ALICE, "manual.txt", MANUAL, caption="/kb add")

    assert await bot.answer(chat, 1) == f"saved manual.txt: {len(MANUAL)} bytes"
    [msg] = bot.engine.messages
    assert msg.text == "/kb add"
    assert msg.unsupported is None
    assert msg.attachments == (
        Attachment("document", "manual.txt", len(MANUAL), "text/plain", msg.attachments[0].ref),
    )
    assert bot.engine.saved[0].read_bytes() == MANUAL
    assert len(bot.fake.downloads) == 1


async def test_a_document_without_caption_carries_its_file_but_no_text(make_bot) -> None:
    bot = await make_bot()
    chat = FakeChat(ALICE.id, "private")
    bot.fake.send_document(chat, ALICE, "notes.md", b"# Notes\n", mime_type="text/markdown")

    assert await bot.answer(chat, 1) == "noted"
    [msg] = bot.engine.messages
    assert msg.text == ""
    assert msg.unsupported is None  # the engine decides what a bare file gets
    assert [a.name for a in msg.attachments] == ["notes.md"]
    assert bot.fake.calls_to("getFile") == []  # nothing fetched without /kb add


async def test_replying_kb_add_to_ones_own_document_adds_it(make_bot) -> None:
    bot = await make_bot()
    chat = FakeChat(ALICE.id, "private")
    sent = bot.fake.send_document(chat, ALICE, "guide.txt", MANUAL)
    await bot.answer(chat, 1)
    bot.fake.send_text(chat, ALICE, "/kb add", reply_to=sent.message_id)

    assert await bot.answer(chat, 2) == f"saved guide.txt: {len(MANUAL)} bytes"
    reply = bot.engine.messages[-1]
    assert reply.attachments == ()
    assert [a.name for a in reply.reply_attachments] == ["guide.txt"]


async def test_a_reply_to_someone_elses_document_carries_no_file(make_bot) -> None:
    bot = await make_bot()
    group = FakeChat(-9001, "supergroup", "Team")
    sent = bot.fake.send_document(group, BOB, "secret.txt", MANUAL, caption="/kb add")
    await bot.answer(group, 1)
    bot.fake.send_text(group, ALICE, "/kb add", reply_to=sent.message_id)

    assert await bot.answer(group, 2) == "noted"
    assert bot.engine.messages[-1].reply_attachments == ()
    assert bot.engine.messages[0].attachments[0].name == "secret.txt"  # the caption addressed it


async def test_a_file_over_kb_max_file_mb_is_refused_before_getfile(make_bot) -> None:
    bot = await make_bot(max_file_mb=0.001)  # 1048 bytes
    chat = FakeChat(ALICE.id, "private")
    bot.fake.send_document(chat, ALICE, "big.txt", MANUAL, caption="/kb add")

    answer = await bot.answer(chat, 1)
    assert answer == "refused: This file is 0.1 MB; the limit is 0 MB."
    assert bot.fake.calls_to("getFile") == []
    assert list(bot.engine.directory.iterdir()) == []


async def test_a_file_over_the_bot_api_limit_is_refused_before_getfile(make_bot) -> None:
    bot = await make_bot()
    chat = FakeChat(ALICE.id, "private")
    big = b"x" * (20 * 1024 * 1024 + 1)
    bot.fake.send_document(chat, ALICE, "huge.pdf", big, caption="/kb add")

    answer = await bot.answer(chat, 1)
    assert answer == "refused: This file is 20.1 MB; the limit is 20 MB."
    assert bot.fake.calls_to("getFile") == []


async def test_getfile_refusing_a_big_file_of_unknown_size_is_explained(make_bot) -> None:
    bot = await make_bot()
    chat = FakeChat(ALICE.id, "private")
    big = b"x" * (20 * 1024 * 1024 + 1)
    bot.fake.send_document(chat, ALICE, "huge.pdf", big, caption="/kb add", size_known=False)

    answer = await bot.answer(chat, 1)
    assert (
        answer == "refused: Telegram lets bots download files of up to 20 MB; this one is bigger."
    )
    [call] = bot.fake.calls_to("getFile")
    assert call.description == "Bad Request: file is too big"
    assert bot.fake.downloads == []
    assert list(bot.engine.directory.iterdir()) == []


async def test_getfile_size_is_checked_when_the_update_had_none(make_bot) -> None:
    bot = await make_bot(max_file_mb=0.001)
    chat = FakeChat(ALICE.id, "private")
    bot.fake.send_document(chat, ALICE, "big.txt", MANUAL, caption="/kb add", size_known=False)

    assert (await bot.answer(chat, 1)).startswith("refused: This file is")
    assert len(bot.fake.calls_to("getFile")) == 1
    assert bot.fake.downloads == []  # refused on getFile's size, before the download


def _document(message: FakeMessage) -> dict[str, Any]:
    return message.to_dict(FakeTelegram())["document"]


def test_the_fake_omits_file_size_only_when_asked() -> None:
    chat = FakeChat(1, "private")
    known = FakeMessage(1, chat, ALICE, "", kind="document", document=("a.txt", b"abc"))
    unknown = FakeMessage(
        2, chat, ALICE, "", kind="document", document=("a.txt", b"abc"), size_known=False
    )
    assert _document(known)["file_size"] == 3
    assert "file_size" not in _document(unknown)
