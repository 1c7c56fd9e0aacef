"""Files users attach on Discord: attachments on the incoming message, downloads, limits.

The real discord.py client talks to the fake Discord, whose CDN serves the attachment URLs
on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.adapter import DiscordAdapter
from core.types import Attachment
from tests.adapters.discord.conftest import discord_settings
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.file_engine import FileEngine

MANUAL = b"Chapter 1\n\nThe pump restarts after error E-4711.\n" * 40


@pytest.fixture
async def bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Any]:
    adapters: list[DiscordAdapter] = []

    async def make(**kwargs: Any) -> FileEngine:
        (tmp_path / "files").mkdir(exist_ok=True)
        engine = FileEngine(tmp_path / "files")
        adapter = DiscordAdapter(
            discord_settings(fake), engine, data_dir=tmp_path / "data", **kwargs
        )
        await adapter.start()
        adapters.append(adapter)
        return engine

    yield make
    for adapter in adapters:
        await adapter.aclose()


async def _answers(fake: FakeDiscord, channel: str, count: int) -> list[str]:
    await fake.wait_for(lambda: len(fake.bot_texts(channel)) >= count)
    return fake.bot_texts(channel)


async def test_an_attachment_with_kb_add_arrives_and_downloads(fake: FakeDiscord, bot) -> None:
    engine = await bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "/kb add", files=[("manual.txt", MANUAL, "text/plain")])

    assert await _answers(fake, dm, 1) == [f"saved manual.txt: {len(MANUAL)} bytes"]
    [msg] = engine.messages
    [attachment] = msg.attachments
    assert attachment == Attachment(
        "document", "manual.txt", len(MANUAL), "text/plain", attachment.ref
    )
    assert engine.saved[0].read_bytes() == MANUAL
    assert len(fake.downloads) == 1


async def test_a_bare_file_or_image_reaches_the_engine_undownloaded(fake: FakeDiscord, bot) -> None:
    engine = await bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "", files=[("notes.md", b"# Notes\n", None)])
    await fake.user_message(dm, alice, "", attachments=1)
    await _answers(fake, dm, 2)

    bare, image = engine.messages
    assert bare.unsupported is None and bare.attachments[0].name == "notes.md"
    assert bare.attachments[0].mime_type is None
    assert image.unsupported is None and image.attachments[0].kind == "photo"
    assert fake.downloads == []


async def test_replying_kb_add_to_ones_own_file_adds_it(fake: FakeDiscord, bot) -> None:
    engine = await bot()
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    alice = fake.add_user("alice")
    bob = fake.add_user("bob")
    mine = await fake.user_message(
        channel, alice, "the guide", mention_bot=True, files=[("guide.txt", MANUAL, None)]
    )
    theirs = await fake.user_message(
        channel, bob, "bob's", mention_bot=True, files=[("bob.txt", b"bob", None)]
    )
    await fake.user_message(channel, alice, "/kb add", mention_bot=True, reply_to=mine.id)
    await fake.user_message(channel, alice, "/kb add", mention_bot=True, reply_to=theirs.id)

    answers = await _answers(fake, channel, 4)
    assert answers[2] == f"saved guide.txt: {len(MANUAL)} bytes"
    assert answers[3] == "noted"  # someone else's file is not handed over
    assert [a.name for a in engine.messages[2].reply_attachments] == ["guide.txt"]
    assert engine.messages[3].reply_attachments == ()


async def test_an_attachment_over_kb_max_file_mb_is_refused_before_download(
    fake: FakeDiscord, bot
) -> None:
    engine = await bot(max_file_mb=0.001)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "/kb add", files=[("big.txt", MANUAL, "text/plain")])

    assert await _answers(fake, dm, 1) == ["refused: This file is 0.1 MB; the limit is 0 MB."]
    assert fake.downloads == []
    assert list(engine.directory.iterdir()) == []


async def test_an_expired_attachment_url_fails_cleanly(fake: FakeDiscord, bot) -> None:
    engine = await bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    fake.cdn_expired = True
    await fake.user_message(dm, alice, "/kb add", files=[("gone.txt", MANUAL, None)])

    [answer] = await _answers(fake, dm, 1)
    assert answer.startswith("refused: ")
    assert list(engine.directory.iterdir()) == []
