"""Images, voice messages and files on Discord as a user sees them, through ``chinwag run``.

The real wiring (``bots.app.serve``: SQL store on a SQLite file, ``OpenAIBackend``, Pillow's
``LocalMediaReader``, ``OpenAITranscriber``) with discord.py against the fake Discord (its
CDN serves the attachments) and the loopback OpenAI server for chat and speech to text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._db import UpgradeHead
from tests.adapters.discord.conftest import discord_settings
from tests.adapters.media.serving import Deployment, deployment, jpeg_size, photo, seen_reply
from tests.adapters.media.serving import serving as serving_bot
from tests.fakes.discord_server import FakeDiscord, FakeFile
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.timeout(60)

HEARD = "remind me to water the plants"


@dataclass
class World:
    discord: FakeDiscord
    openai: FakeOpenAIServer
    bot: Deployment

    def serving(self, max_file_mb: float = 20.0) -> AbstractAsyncContextManager[None]:
        settings = self.bot.settings(
            discord=discord_settings(self.discord), max_file_mb=max_file_mb
        )
        return serving_bot(settings)

    async def shows(self, channel: str, expected: list[str]) -> None:
        """Wait until the bot's messages in ``channel`` are ``expected`` (edits settled)."""
        texts = self.discord.bot_texts
        try:
            await self.discord.wait_for(lambda: texts(channel) == expected, what="the replies")
        except AssertionError:
            assert texts(channel) == expected  # what it showed instead
            raise


@pytest.fixture
async def world(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upgrade_head: UpgradeHead
) -> AsyncIterator[World]:
    async with FakeOpenAIServer(reply=seen_reply, api_key="sk-loopback-media") as openai:
        openai.transcript = HEARD
        bot = await deployment(tmp_path, monkeypatch, upgrade_head, openai, model="gpt-4o")
        yield World(fake, openai, bot)


async def test_an_image_with_text_reaches_the_vision_model_as_one_turn(world: World) -> None:
    alice = world.discord.add_user("alice")
    dm = world.discord.dm_channel(alice)
    image = FakeFile("fern.jpg", photo(1600, 1200), "image/jpeg", width=1600, height=1200)
    async with world.serving():
        await world.discord.user_message(dm, alice, "what plant is this?", files=[image])
        await world.shows(dm, ["Seeing 1 image(s). You said: what plant is this?"])

    [[sent]] = world.openai.images_sent
    turn = world.openai.chat_requests[0].body["messages"][sent.message]
    assert turn["role"] == "user" and turn["content"][0]["text"] == "what plant is this?"
    assert jpeg_size(sent.data) == ("JPEG", (1024, 768))
    assert len(world.discord.downloads) == 1
    assert len(world.bot.rows("media")) == 1


async def test_a_voice_message_is_transcribed_shown_and_answered(world: World) -> None:
    alice = world.discord.add_user("alice")
    dm = world.discord.dm_channel(alice)
    voice = b"OggS" + bytes(range(256)) * 4
    async with world.serving():
        await world.discord.user_message(
            dm, alice, "", files=[FakeFile.voice(voice, 2.5)], voice=True
        )
        await world.shows(
            dm,
            [
                f"🎤 “{HEARD}”",
                f"Seeing 0 image(s). You said: {HEARD}",
            ],
        )
    [request] = world.openai.transcription_requests
    assert request.body["file_bytes"] == voice
    assert world.bot.user_texts() == [HEARD]


async def test_an_attachment_over_max_file_mb_is_refused_before_any_cdn_request(
    world: World,
) -> None:
    alice = world.discord.add_user("alice")
    dm = world.discord.dm_channel(alice)
    big = FakeFile("dump.csv", b"a,b\n" * 393_216, "text/csv")  # 1.5 MB
    async with world.serving(max_file_mb=1):
        await world.discord.user_message(dm, alice, "summarise this", files=[big])
        await world.shows(dm, ['"dump.csv" is too big (1.5 MB; I take files of at most 1 MB).'])
    assert world.discord.downloads == []
    assert world.openai.chat_requests == []
