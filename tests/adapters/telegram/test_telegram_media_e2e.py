"""Photos, albums and voice notes from a Telegram user through the real engine to the model.

The real python-telegram-bot against the fake Bot API; the engine with an in-memory store,
the media fakes (no Pillow, a scripted transcript) and a scripted vision backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adapters.memory.in_memory import InMemoryStore
from adapters.telegram import TelegramAdapter
from core.engine import Engine
from core.settings import CoreSettings, LLMSettings
from core.types import Role
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.media import FakeReader, FakeTranscriber, image_bytes
from tests.fakes.scripted import ScriptedBackend
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser, PhotoFile

ALICE = FakeUser(801, "Alice", "alice")
CHAT = FakeChat(ALICE.id, "private")


@dataclass
class World:
    fake: FakeTelegram
    backend: ScriptedBackend
    transcriber: FakeTranscriber

    async def answers(self, count: int) -> list[str]:
        await self.fake.wait_for(lambda: len(self.fake.bot_messages(CHAT.id)) >= count)
        await self.fake.wait_idle(quiet=0.2)
        return [m.text for m in self.fake.bot_messages(CHAT.id)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    backend = ScriptedBackend(reply="Looks like a fern.")
    backend.vision = True
    transcriber = FakeTranscriber("what time is it in Tokyo")
    async with FakeTelegram() as fake, InMemoryStore() as store:
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="tgmedia"),
            llm=LLMSettings(_env_file=None),
            reader=FakeReader(),
            transcriber=transcriber,
        )
        await engine.start()
        adapter = TelegramAdapter(fast_settings(fake), engine, max_file_mb=20)
        await adapter.start()
        try:
            yield World(fake, backend, transcriber)
        finally:
            await adapter.stop_intake()
            await engine.aclose(grace=2)
            await adapter.aclose()


def _photo(width: int, height: int) -> list[PhotoFile]:
    """The sizes Telegram offers for a photo: a thumbnail and the photo itself."""
    return [
        PhotoFile(90, 68, image_bytes(90, 68)),
        PhotoFile(width, height, image_bytes(width, height)),
    ]


async def test_a_photo_without_caption_reaches_the_vision_model(world: World) -> None:
    world.fake.send_photo(CHAT, ALICE, _photo(1280, 960))

    assert (await world.answers(1))[-1] == "Looks like a fern."
    [call] = world.backend.calls
    turn = call.messages[-1]
    assert turn.role is Role.USER
    assert [(image.width, image.height) for image in turn.images] == [(1280, 960)]


async def test_an_album_is_one_turn_with_every_photo_and_the_caption(world: World) -> None:
    world.fake.send_photo(
        CHAT, ALICE, _photo(800, 600), caption="which is ripe?", media_group_id="a"
    )
    world.fake.send_photo(CHAT, ALICE, _photo(640, 480), media_group_id="a")

    assert (await world.answers(1))[-1] == "Looks like a fern."
    [call] = world.backend.calls
    turn = call.messages[-1]
    assert "which is ripe?" in turn.content
    assert [(image.width, image.height) for image in turn.images] == [(800, 600), (640, 480)]


async def test_a_voice_note_is_transcribed_shown_and_answered(world: World) -> None:
    world.fake.send_voice(CHAT, ALICE, b"OggS" + b"\x00" * 2000, 4)

    answers = await world.answers(2)
    assert any("what time is it in Tokyo" in answer for answer in answers[:-1])
    assert answers[-1] == "Looks like a fern."
    assert world.transcriber.heard[0][1] == 2004  # the voice note's bytes, downloaded whole
    assert "what time is it in Tokyo" in world.backend.calls[0].messages[-1].content
