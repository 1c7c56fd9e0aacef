"""Photos, voice notes, audio and image documents users send on Telegram.

The real python-telegram-bot talks to the fake Bot API, which offers each photo in several
sizes, serves ``getFile`` (refusing files over the Bot API's 20 MB) and the file downloads.
The engine double fetches every attachment of every message, as a chat turn does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.telegram import TelegramAdapter, albums
from core.types import Attachment
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.file_engine import MediaEngine
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser, PhotoFile

ALICE = FakeUser(601, "Alice", "alice")
# Bytes that look like what Telegram stores; the adapter never decodes them.
THUMB = PhotoFile(90, 68, b"\xff\xd8\xff\xe0thumb" + b"\x01" * 900)
MEDIUM = PhotoFile(320, 240, b"\xff\xd8\xff\xe0medium" + b"\x02" * 9_000)
LARGE = PhotoFile(1280, 960, b"\xff\xd8\xff\xe0large" + b"\x03" * 90_000)
OPUS = b"OggS\x00\x02" + b"\x00" * 20 + b"OpusHead\x01\x01" + bytes(range(256)) * 12


@dataclass
class Bot:
    fake: FakeTelegram
    engine: MediaEngine
    adapter: TelegramAdapter

    async def answers(self, chat: FakeChat, count: int) -> list[str]:
        await self.fake.wait_for(lambda: len(self.fake.bot_messages(chat.id)) >= count)
        return [m.text for m in self.fake.bot_messages(chat.id)]


@pytest.fixture
async def make_bot(tmp_path: Path) -> AsyncIterator[Any]:
    opened: list[tuple[FakeTelegram, TelegramAdapter]] = []

    async def make(*, max_bytes: int | None = None, **kwargs: Any) -> Bot:
        fake = FakeTelegram()
        await fake.start()
        engine = MediaEngine(tmp_path, max_bytes=max_bytes)
        adapter = TelegramAdapter(fast_settings(fake), engine, **kwargs)
        opened.append((fake, adapter))
        await adapter.start()
        return Bot(fake, engine, adapter)

    yield make
    for fake, adapter in opened:
        await adapter.aclose()
        await fake.aclose()


def _private() -> FakeChat:
    return FakeChat(ALICE.id, "private")


async def test_a_photo_arrives_as_its_largest_size_with_the_caption_as_text(make_bot) -> None:
    bot = await make_bot()
    chat = _private()
    bot.fake.send_photo(chat, ALICE, [THUMB, MEDIUM, LARGE], caption="What plant is this?")

    [answer] = await bot.answers(chat, 1)
    [msg] = bot.engine.messages
    assert msg.text == "What plant is this?"
    assert msg.unsupported is None
    [photo] = msg.attachments
    assert photo.kind == "photo"
    assert photo.name.startswith("photo_") and photo.name.endswith(".jpg")
    assert (photo.size, photo.mime_type, photo.duration) == (len(LARGE.data), "image/jpeg", None)
    assert answer == f"saved {photo.name}: {len(LARGE.data)} bytes"
    assert bot.engine.saved[0].read_bytes() == LARGE.data
    assert len(bot.fake.calls_to("getFile")) == 1 and len(bot.fake.downloads) == 1


async def test_the_largest_photo_size_within_max_file_mb_is_taken(make_bot) -> None:
    bot = await make_bot(max_file_mb=50_000 / 1024 / 1024)  # LARGE is over, MEDIUM fits
    chat = _private()
    bot.fake.send_photo(chat, ALICE, [THUMB, MEDIUM, LARGE])

    [answer] = await bot.answers(chat, 1)
    [photo] = bot.engine.messages[0].attachments
    assert photo.size == len(MEDIUM.data)
    assert answer == f"saved {photo.name}: {len(MEDIUM.data)} bytes"
    assert bot.engine.saved[0].read_bytes() == MEDIUM.data


async def test_a_photo_without_caption_reaches_the_engine_with_no_text(make_bot) -> None:
    bot = await make_bot()
    chat = _private()
    bot.fake.send_photo(chat, ALICE, [THUMB, LARGE])

    await bot.answers(chat, 1)
    [msg] = bot.engine.messages
    assert msg.text == "" and msg.unsupported is None
    assert [a.kind for a in msg.attachments] == ["photo"]


async def test_a_voice_note_is_voice_with_its_duration_and_opus_bytes(make_bot) -> None:
    bot = await make_bot()
    chat = _private()
    bot.fake.send_voice(chat, ALICE, OPUS, 7)

    [answer] = await bot.answers(chat, 1)
    [msg] = bot.engine.messages
    assert msg.text == "" and msg.unsupported is None
    [voice] = msg.attachments
    assert voice == Attachment("voice", voice.name, len(OPUS), "audio/ogg", voice.ref, duration=7.0)
    assert voice.name.startswith("voice_") and voice.name.endswith(".ogg")
    assert answer == f"saved {voice.name}: {len(OPUS)} bytes"
    assert bot.engine.saved[0].read_bytes() == OPUS
    assert bot.fake.downloads[0].startswith("voice/")


async def test_an_audio_file_is_voice_with_its_name_and_duration(make_bot) -> None:
    bot = await make_bot()
    chat = _private()
    song = b"ID3\x04" + b"\x05" * 4000
    bot.fake.send_audio(chat, ALICE, "meeting.mp3", song, 95, caption="summarise please")
    bot.fake.send_audio(chat, ALICE, None, song, 3, mime_type="audio/mp4")

    assert await bot.answers(chat, 2) == [
        f"saved meeting.mp3: {len(song)} bytes",
        f"saved {bot.engine.messages[1].attachments[0].name}: {len(song)} bytes",
    ]
    named, unnamed = (m.attachments[0] for m in bot.engine.messages)
    assert bot.engine.messages[0].text == "summarise please"
    assert named == Attachment("voice", "meeting.mp3", len(song), "audio/mpeg", named.ref, 95.0)
    assert (unnamed.kind, unnamed.duration, unnamed.mime_type) == ("voice", 3.0, "audio/mp4")
    assert unnamed.name.startswith("audio_") and unnamed.name.endswith(".m4a")
    assert bot.engine.saved[0].read_bytes() == song


async def test_an_image_document_is_a_photo_and_other_documents_stay_documents(make_bot) -> None:
    bot = await make_bot()
    chat = _private()
    png = b"\x89PNG\r\n\x1a\n" + b"\x06" * 3000
    bot.fake.send_document(chat, ALICE, "diagram.png", png, mime_type="image/png", caption="hm?")
    bot.fake.send_document(chat, ALICE, "notes.md", b"# Notes\n", mime_type="text/markdown")

    await bot.answers(chat, 2)
    image, notes = (m.attachments[0] for m in bot.engine.messages)
    assert image == Attachment("photo", "diagram.png", len(png), "image/png", image.ref)
    assert bot.engine.messages[0].text == "hm?"
    assert (notes.kind, notes.name) == ("document", "notes.md")
    assert bot.engine.saved[0].read_bytes() == png


async def test_a_voice_note_over_max_file_mb_is_refused_before_getfile(make_bot) -> None:
    bot = await make_bot(max_file_mb=0.001)  # 1048 bytes
    chat = _private()
    bot.fake.send_voice(chat, ALICE, OPUS, 4)
    bot.fake.send_photo(chat, ALICE, [MEDIUM, LARGE])  # no size fits

    assert await bot.answers(chat, 2) == [
        "refused: This file is 0.1 MB; the limit is 0 MB.",
        "refused: This file is 0.1 MB; the limit is 0 MB.",
    ]
    assert bot.engine.messages[1].attachments[0].size == len(MEDIUM.data)  # the smallest
    assert bot.fake.calls_to("getFile") == []
    assert bot.fake.downloads == []
    assert list(bot.engine.directory.iterdir()) == []


async def test_a_photo_over_the_bot_api_limit_is_refused_before_getfile(make_bot) -> None:
    bot = await make_bot(max_file_mb=100)  # MAX_FILE_MB above Telegram's own 20 MB
    chat = _private()
    huge = PhotoFile(8000, 6000, b"\xff\xd8" + b"\x07" * (20 * 1024 * 1024))
    bot.fake.send_photo(chat, ALICE, [huge])

    assert await bot.answers(chat, 1) == ["refused: This file is 20.1 MB; the limit is 20 MB."]
    assert bot.fake.calls_to("getFile") == []


async def test_a_callers_own_limit_overrides_max_file_mb(make_bot) -> None:
    # /kb add passes KB_MAX_FILE_MB: a manual bigger than MAX_FILE_MB still comes through.
    bot = await make_bot(max_file_mb=0.001, max_bytes=100_000)
    chat = _private()
    bot.fake.send_document(chat, ALICE, "manual.txt", b"page\n" * 2000)

    assert await bot.answers(chat, 1) == ["saved manual.txt: 10000 bytes"]


async def test_stickers_and_video_notes_stay_unsupported(make_bot) -> None:
    bot = await make_bot()
    chat = _private()
    bot.fake.send_other(chat, ALICE, "sticker")
    bot.fake.send_other(chat, ALICE, "video_note")

    await bot.answers(chat, 2)
    assert [(m.unsupported, m.attachments) for m in bot.engine.messages] == [
        ("sticker", ()),
        ("video_note", ()),
    ]


async def test_a_photo_in_a_group_is_addressed_by_a_mention_in_its_caption(make_bot) -> None:
    bot = await make_bot()
    group = FakeChat(-7001, "supergroup", "Garden club")
    bot.fake.send_photo(group, ALICE, [THUMB])  # not for the bot
    bot.fake.send_photo(group, ALICE, [MEDIUM], caption="@chinwag_test_bot which rose is it?")

    await bot.answers(group, 1)
    [msg] = bot.engine.messages
    assert msg.text == "which rose is it?"
    assert msg.attachments[0].size == len(MEDIUM.data)


async def test_an_album_is_one_message_with_all_its_photos_before_the_next(make_bot) -> None:
    bot = await make_bot()
    chat = _private()
    bot.fake.send_photo(chat, ALICE, [THUMB], caption="which is ripe?", media_group_id="g1")
    bot.fake.send_photo(chat, ALICE, [MEDIUM], media_group_id="g1")
    bot.fake.send_photo(chat, ALICE, [LARGE], media_group_id="g1")
    bot.fake.send_text(chat, ALICE, "and the next one?")

    answers = await bot.answers(chat, 4)
    album, text = bot.engine.messages
    assert album.text == "which is ripe?"
    assert [a.size for a in album.attachments] == [len(p.data) for p in (THUMB, MEDIUM, LARGE)]
    assert text.text == "and the next one?"  # after the album, as it was sent
    assert answers[3] == "noted"


async def test_an_album_in_a_group_joins_the_files_after_the_addressed_one(make_bot) -> None:
    bot = await make_bot()
    group = FakeChat(-7002, "supergroup", "Garden club")
    bot.fake.send_photo(
        group, ALICE, [THUMB], caption="@chinwag_test_bot compare", media_group_id="g2"
    )
    bot.fake.send_photo(group, ALICE, [MEDIUM], media_group_id="g2")

    await bot.answers(group, 2)
    [album] = bot.engine.messages
    assert album.text == "compare" and len(album.attachments) == 2


async def test_an_album_still_gathering_is_handed_over_when_intake_stops(
    make_bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The album's own wait would outlast the test: only stop_intake can hand it over.
    monkeypatch.setattr(albums, "ALBUM_WAIT", 3600.0)
    bot = await make_bot()
    chat = _private()
    bob = FakeUser(602, "Bob", "bob")
    bot.fake.send_photo(chat, ALICE, [THUMB], caption="which is ripe?", media_group_id="g3")
    bot.fake.send_photo(chat, ALICE, [MEDIUM], media_group_id="g3")
    bot.fake.send_text(FakeChat(bob.id, "private"), bob, "hello")  # taken after the album
    await bot.fake.wait_for(lambda: len(bot.fake.bot_messages(bob.id)) == 1)
    assert [m.user_id for m in bot.engine.messages] == [str(bob.id)]  # the album is waiting

    await bot.adapter.stop_intake()

    answers = await bot.answers(chat, 2)  # the bot still answers until aclose()
    _, album = bot.engine.messages
    assert album.text == "which is ripe?"
    assert [a.size for a in album.attachments] == [len(THUMB.data), len(MEDIUM.data)]
    assert answers == [f"saved {a.name}: {a.size} bytes" for a in album.attachments]
