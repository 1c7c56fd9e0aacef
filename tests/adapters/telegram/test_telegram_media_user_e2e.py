"""Photos, voice notes and files on Telegram as a user sees them, through ``chinwag run``.

The real wiring (``bots.app.serve``: SQL store on a SQLite file, ``OpenAIBackend``, Pillow's
``LocalMediaReader``, ``OpenAITranscriber``) with python-telegram-bot against the fake Bot
API and the loopback OpenAI server for chat and speech to text. What is checked is what the
user sees in the chat, what the model was sent, and what the database and disk keep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._db import UpgradeHead
from tests.adapters.media.serving import Deployment, deployment, jpeg_size, photo, seen_reply
from tests.adapters.media.serving import serving as serving_bot
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser, PhotoFile

pytestmark = pytest.mark.timeout(60)

ALICE = FakeUser(9301, "Alice", "alice_9301")
CHAT = FakeChat(ALICE.id, "private")
CAPTION = "what plant is this?"
HEARD = "what time is it in Tokyo"
# What Telegram offers for a 1600x1200 photo: a thumbnail and the photo itself.
PHOTO = [PhotoFile(90, 68, photo(90, 68)), PhotoFile(1600, 1200, photo(1600, 1200))]


@dataclass
class World:
    telegram: FakeTelegram
    openai: FakeOpenAIServer
    bot: Deployment

    def serving(self, max_file_mb: float = 20.0) -> AbstractAsyncContextManager[None]:
        """The bot running (``chinwag run``) until the block ends."""
        telegram = fast_settings(self.telegram)
        return serving_bot(self.bot.settings(telegram=telegram, max_file_mb=max_file_mb))

    def texts(self) -> list[str]:
        """Everything the bot shows in Alice's chat, oldest first."""
        return [m.text for m in self.telegram.bot_messages(CHAT.id)]

    async def replies(self, before: int, count: int) -> list[str]:
        """The bot's messages after the first ``before``, once ``count`` came and it is quiet."""
        await self.telegram.wait_for(lambda: len(self.texts()) >= before + count)
        await self.telegram.wait_idle(quiet=0.3)
        return self.texts()[before:]

    async def say(self, text: str, count: int = 1) -> list[str]:
        before = len(self.texts())
        self.telegram.send_text(CHAT, ALICE, text)
        return await self.replies(before, count)

    async def send_photo(self, caption: str | None, count: int = 1) -> list[str]:
        before = len(self.texts())
        self.telegram.send_photo(CHAT, ALICE, PHOTO, caption=caption)
        return await self.replies(before, count)

    def request_texts(self, request: int = -1) -> list[str]:
        """The text of each user message of a chat request the model got."""
        body = self.openai.chat_requests[request].body
        texts = []
        for message in body["messages"]:
            if message["role"] == "user":
                content = message["content"]
                if isinstance(content, list):
                    content = "".join(p.get("text", "") for p in content if p["type"] == "text")
                texts.append(content)
        return texts


WorldFactory = Callable[..., Awaitable[World]]


@pytest.fixture
async def make_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upgrade_head: UpgradeHead
) -> AsyncIterator[WorldFactory]:
    async with AsyncExitStack() as stack:

        async def make(model: str = "gpt-4o", text_only: Collection[str] = ()) -> World:
            telegram = await stack.enter_async_context(FakeTelegram())
            openai = await stack.enter_async_context(
                FakeOpenAIServer(
                    reply=seen_reply,
                    api_key="sk-loopback-media",
                    models=("gpt-4o", "gpt-3.5-turbo"),
                    text_only_models=text_only,
                )
            )
            openai.transcript = HEARD
            bot = await deployment(tmp_path, monkeypatch, upgrade_head, openai, model=model)
            return World(telegram, openai, bot)

        yield make


async def test_a_photo_with_its_caption_is_one_vision_turn_and_is_recalled_after_a_restart(
    make_world: WorldFactory,
) -> None:
    world = await make_world()
    async with world.serving():
        assert await world.send_photo(CAPTION) == [f"Seeing 1 image(s). You said: {CAPTION}"]

    [[image]] = world.openai.images_sent
    body: dict[str, Any] = world.openai.chat_requests[0].body
    turn = body["messages"][image.message]
    assert image.message == len(body["messages"]) - 1 and turn["role"] == "user"
    assert [part["type"] for part in turn["content"]] == ["text", "image_url"]
    assert turn["content"][0]["text"] == CAPTION
    assert jpeg_size(image.data) == ("JPEG", (1024, 768))  # downscaled from 1600x1200
    assert world.telegram.downloads == ["photos/file_photo9301_1_1.jpg"]  # the large size only

    async with world.serving():  # a new process on the same database
        [answer] = await world.say("is it poisonous to cats?")
    assert answer == "Seeing 1 image(s). You said: is it poisonous to cats?"
    [_, [recalled]] = world.openai.images_sent
    assert recalled.data == image.data
    assert world.request_texts() == [CAPTION, "is it poisonous to cats?"]


async def test_a_photo_to_a_text_only_model_gets_the_sentence_and_the_caption_answered(
    make_world: WorldFactory,
) -> None:
    world = await make_world(model="gpt-3.5-turbo")
    async with world.serving():
        assert await world.send_photo(CAPTION, count=2) == [
            "gpt-3.5-turbo can't see images (nor can this bot's other models), "
            "so I'll answer your text only.",
            f"Seeing 0 image(s). You said: {CAPTION}",
        ]
    assert world.openai.images_sent == [[]]
    assert world.request_texts() == [CAPTION]


async def test_a_server_refusing_images_is_answered_without_them_and_told_once(
    make_world: WorldFactory,
) -> None:
    world = await make_world(text_only=["gpt-4o"])  # the name says vision; this server says no
    refused = (
        "gpt-4o turned out not to see images, so I answered your text only. "
        "Switch with /model to one that can, then send the photo again."
    )
    async with world.serving():
        answered = await world.send_photo(CAPTION, count=2)
        assert answered == [f"Seeing 0 image(s). You said: {CAPTION}", refused]
        # From then on the model counts as text-only: no image is offered to it again.
        again = await world.send_photo("and this one?", count=2)
    assert again == [
        "gpt-4o can't see images (nor can this bot's other models), so I'll answer your text only.",
        "Seeing 0 image(s). You said: and this one?",
    ]
    assert [len(images) for images in world.openai.images_sent] == [1, 0, 0]
    assert world.texts().count(refused) == 1


async def test_a_voice_note_is_transcribed_shown_stored_and_answered(
    make_world: WorldFactory,
) -> None:
    world = await make_world()
    voice = b"OggS" + bytes(range(256)) * 8
    async with world.serving():
        world.telegram.send_voice(CHAT, ALICE, voice, 3)
        assert await world.replies(0, 2) == [
            f"🎤 “{HEARD}”",
            f"Seeing 0 image(s). You said: {HEARD}",
        ]
    [request] = world.openai.transcription_requests
    assert request.body["file_bytes"] == voice
    assert request.headers["Authorization"] == "Bearer sk-loopback-media"  # OPENAI_API_KEY
    assert world.request_texts() == [HEARD]
    assert world.bot.user_texts() == [HEARD]


async def test_a_file_over_max_file_mb_is_refused_by_name_and_size_before_any_download(
    make_world: WorldFactory,
) -> None:
    world = await make_world()
    async with world.serving(max_file_mb=1):
        world.telegram.send_document(CHAT, ALICE, "server.log", b"x" * 1_572_864, caption="why?")
        assert await world.replies(0, 1) == [
            '"server.log" is too big (1.5 MB; I take files of at most 1 MB).'
        ]
    assert world.telegram.calls_to("getFile") == []
    assert world.telegram.downloads == []
    assert world.openai.chat_requests == []
    assert world.bot.user_texts() == []


async def test_a_text_files_content_reaches_the_model_fenced_under_its_name(
    make_world: WorldFactory,
) -> None:
    world = await make_world()
    notes = "# Watering\n\n- fern: twice a week\n- cactus: once a month\n"
    async with world.serving():
        world.telegram.send_document(
            CHAT,
            ALICE,
            "plants.md",
            notes.encode(),
            caption="which needs most water?",
            mime_type="text/markdown",
        )
        [answer] = await world.replies(0, 1)
    turn = (
        "which needs most water?\n\nplants.md:\n```\n# Watering\n\n- fern: twice a week\n"
        "- cactus: once a month\n```"
    )
    # The model saw the fenced file (Telegram shows the echoed block as code, fences gone).
    assert answer.startswith("Seeing 0 image(s). You said: which needs most water?\n\nplants.md:")
    assert answer.endswith("- cactus: once a month")
    assert world.request_texts() == [turn]
    assert world.bot.user_texts() == [turn]


async def test_forget_leaves_no_photo_transcript_or_downloaded_file_behind(
    make_world: WorldFactory,
) -> None:
    world = await make_world()
    async with world.serving():
        await world.send_photo(CAPTION)
        world.telegram.send_voice(CHAT, ALICE, b"OggS" + b"\x01" * 3000, 2)
        await world.replies(1, 2)
        assert len(world.bot.rows("media")) == 1
        assert len(world.bot.rows("message_media")) == 1
        assert world.bot.user_texts() == [CAPTION, HEARD]

        [question] = await world.say("/forget")
        assert question.startswith("Delete everything I have stored about you")
        [asking] = [m for m in world.telegram.bot_messages(CHAT.id) if m.text == question]
        yes = asking.reply_markup["inline_keyboard"][0][0]["callback_data"]  # type: ignore[index]
        before = len(world.texts())
        world.telegram.press_button(asking, ALICE, yes)
        [done] = await world.replies(before, 1)
        assert done.startswith("Done: I deleted everything stored about you")

    assert [world.bot.rows(table) for table in ("media", "message_media", "messages")] == [
        [],
        [],
        [],
    ]
    assert world.bot.files() == ["data/chinwag.db", "data/chinwag.db.migrate.lock"]
