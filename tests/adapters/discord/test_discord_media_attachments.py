"""Images, voice messages, audio and other files users attach on Discord.

The real discord.py client talks to the fake Discord, whose CDN serves the attachments; the
engine double fetches every attachment of every message, as a chat turn does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.adapter import DiscordAdapter
from core.types import Attachment
from tests.adapters.discord.conftest import discord_settings
from tests.fakes.discord_server import FakeDiscord, FakeFile
from tests.fakes.file_engine import MediaEngine

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 5000
OPUS = b"OggS\x00\x02" + b"\x00" * 20 + b"OpusHead\x01\x01" + bytes(range(256)) * 12


@pytest.fixture
async def bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Any]:
    adapters: list[DiscordAdapter] = []

    async def make(*, max_bytes: int | None = None, **kwargs: Any) -> MediaEngine:
        (tmp_path / "files").mkdir(exist_ok=True)
        engine = MediaEngine(tmp_path / "files", max_bytes=max_bytes)
        adapter = DiscordAdapter(
            discord_settings(fake), engine, data_dir=tmp_path / "data", **kwargs
        )
        adapters.append(adapter)
        await adapter.start()
        return engine

    yield make
    for adapter in adapters:
        await adapter.aclose()


async def _answers(fake: FakeDiscord, channel: str, count: int) -> list[str]:
    await fake.wait_for(lambda: len(fake.bot_texts(channel)) >= count)
    return fake.bot_texts(channel)


async def test_an_image_is_a_photo_with_the_message_as_its_caption(fake: FakeDiscord, bot) -> None:
    engine = await bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    image = FakeFile("plant.png", PNG, "image/png", width=640, height=480)
    await fake.user_message(dm, alice, "what is this plant?", files=[image])

    assert await _answers(fake, dm, 1) == [f"saved plant.png: {len(PNG)} bytes"]
    [msg] = engine.messages
    assert msg.text == "what is this plant?" and msg.unsupported is None
    [photo] = msg.attachments
    assert photo == Attachment("photo", "plant.png", len(PNG), "image/png", photo.ref)
    assert engine.saved[0].read_bytes() == PNG
    assert len(fake.downloads) == 1


async def test_a_voice_message_is_voice_with_its_duration(fake: FakeDiscord, bot) -> None:
    engine = await bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "", files=[FakeFile.voice(OPUS, 3.5)], voice=True)

    assert await _answers(fake, dm, 1) == [f"saved voice-message.ogg: {len(OPUS)} bytes"]
    [msg] = engine.messages
    assert msg.text == "" and msg.unsupported is None  # a bare voice message reaches the engine
    [voice] = msg.attachments
    assert voice == Attachment(
        "voice", "voice-message.ogg", len(OPUS), "audio/ogg", voice.ref, duration=3.5
    )
    assert engine.saved[0].read_bytes() == OPUS


async def test_audio_is_voice_and_other_files_are_documents(fake: FakeDiscord, bot) -> None:
    engine = await bot()
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    alice = fake.add_user("alice")
    song = b"ID3\x04" + b"\x02" * 3000
    await fake.user_message(
        channel,
        alice,
        "summarise these",
        mention_bot=True,
        files=[
            ("meeting.mp3", song, "audio/mpeg"),
            ("report.pdf", b"%PDF-1.7\n", "application/pdf"),
            ("notes", b"plain words", None),
        ],
    )

    assert await _answers(fake, channel, 3) == [
        f"saved meeting.mp3: {len(song)} bytes",
        "saved report.pdf: 9 bytes",
        "saved notes: 11 bytes",
    ]
    [msg] = engine.messages
    assert msg.text == "summarise these"
    assert [(a.kind, a.name, a.duration) for a in msg.attachments] == [
        ("voice", "meeting.mp3", None),
        ("document", "report.pdf", None),
        ("document", "notes", None),
    ]
    assert engine.saved[0].read_bytes() == song


async def test_a_bare_image_reaches_the_engine_and_stickers_stay_unsupported(
    fake: FakeDiscord, bot
) -> None:
    engine = await bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "", files=[FakeFile("cat.jpg", PNG, "image/jpeg")])
    await fake.user_message(dm, alice, "", sticker=True)
    await _answers(fake, dm, 2)

    image, sticker = engine.messages
    assert (image.text, image.unsupported) == ("", None)
    assert [a.kind for a in image.attachments] == ["photo"]
    assert (sticker.unsupported, sticker.attachments) == ("sticker", ())


async def test_an_attachment_over_max_file_mb_is_refused_before_the_cdn(
    fake: FakeDiscord, bot
) -> None:
    engine = await bot(max_file_mb=0.001)  # 1048 bytes
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "look", files=[FakeFile("big.png", PNG, "image/png")])
    await fake.user_message(dm, alice, "", files=[FakeFile.voice(OPUS, 2.0)], voice=True)

    assert await _answers(fake, dm, 2) == [
        "refused: This file is 0.1 MB; the limit is 0 MB.",
        "refused: This file is 0.1 MB; the limit is 0 MB.",
    ]
    assert fake.downloads == []
    assert list(engine.directory.iterdir()) == []


async def test_a_callers_own_limit_overrides_max_file_mb(fake: FakeDiscord, bot) -> None:
    # /kb add passes KB_MAX_FILE_MB: a manual bigger than MAX_FILE_MB still comes through.
    engine = await bot(max_file_mb=0.001, max_bytes=100_000)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "", files=[("manual.txt", b"page\n" * 2000, None)])

    assert await _answers(fake, dm, 1) == ["saved manual.txt: 10000 bytes"]
    assert engine.saved[0].stat().st_size == 10_000
