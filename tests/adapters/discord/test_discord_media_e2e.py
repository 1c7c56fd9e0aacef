"""Images and voice messages from a Discord user through the real engine to the model.

The real discord.py client against the fake Discord; the engine with an in-memory store,
the media fakes (no Pillow, a scripted transcript) and a scripted vision backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.discord.adapter import DiscordAdapter
from adapters.memory.in_memory import InMemoryStore
from core.engine import Engine
from core.settings import CoreSettings, LLMSettings
from tests.adapters.discord.conftest import discord_settings
from tests.fakes.discord_server import FakeDiscord, FakeFile
from tests.fakes.media import FakeReader, FakeTranscriber, image_bytes
from tests.fakes.scripted import ScriptedBackend


@dataclass
class World:
    fake: FakeDiscord
    backend: ScriptedBackend
    transcriber: FakeTranscriber


@pytest.fixture
async def world(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[World]:
    backend = ScriptedBackend(reply="A tabby cat.")
    backend.vision = True
    transcriber = FakeTranscriber("remind me to water the plants")
    async with InMemoryStore() as store:
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="dcmedia"),
            llm=LLMSettings(_env_file=None),
            reader=FakeReader(),
            transcriber=transcriber,
        )
        await engine.start()
        adapter = DiscordAdapter(discord_settings(fake), engine, data_dir=tmp_path, max_file_mb=20)
        await adapter.start()
        try:
            yield World(fake, backend, transcriber)
        finally:
            await adapter.stop_intake()
            await engine.aclose(grace=2)
            await adapter.aclose()


async def test_an_image_with_text_is_one_turn_for_the_vision_model(world: World) -> None:
    fake = world.fake
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    image = FakeFile("cat.png", image_bytes(1024, 768), "image/png", width=1024, height=768)
    await fake.user_message(dm, alice, "what breed?", files=[image])

    await fake.wait_for(lambda: "A tabby cat." in fake.bot_texts(dm))
    [call] = world.backend.calls
    turn = call.messages[-1]
    assert "what breed?" in turn.content
    assert [(i.width, i.height) for i in turn.images] == [(1024, 768)]


async def test_a_voice_message_is_transcribed_shown_and_answered(world: World) -> None:
    fake = world.fake
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(
        dm, alice, "", files=[FakeFile.voice(b"OggS" + b"\0" * 900, 2.5)], voice=True
    )

    await fake.wait_for(lambda: "A tabby cat." in fake.bot_texts(dm))
    texts = fake.bot_texts(dm)
    assert any("remind me to water the plants" in text for text in texts[:-1])
    assert world.transcriber.heard == [("voice-message.ogg", 904)]
