"""The ingress poller: Telegram gets an update confirmed only once its turn is queued.

An ingress adapter in polling mode (no ``TELEGRAM_WEBHOOK_URL``) against the fake, whose
``getUpdates`` forgets an update only when a later call's ``offset`` passes it, as Telegram
does. The engines record what was queued: every update must reach one, in order, and none
twice unless it was never confirmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.telegram import TelegramAdapter
from core.ports import ReplyChannel
from core.types import IncomingMessage
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.recording_engine import RecordingEngine
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser, PhotoFile

ALICE = FakeUser(7101, "Alice", "alice")
BOB = FakeUser(7102, "Bob", "bob")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


async def _poller(fake: FakeTelegram, engine: RecordingEngine) -> TelegramAdapter:
    engine.answer = False  # ingress answers nothing itself
    adapter = TelegramAdapter(fast_settings(fake), engine, ingress=True)
    await adapter.start()
    assert adapter.leases == ("telegram",) and adapter.connected
    return adapter


class _CountingEngine(RecordingEngine):
    """Counts the turns handed to it, queued or not yet."""

    submitted = 0

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        self.submitted += 1
        return super().submit(msg, out)


def _texts(engine: RecordingEngine) -> list[str]:
    return [m.text for m in engine.messages]


async def test_every_update_is_queued_once_in_order_and_confirmed(fake: FakeTelegram) -> None:
    engine = RecordingEngine("first")
    adapter = await _poller(fake, engine)
    try:
        for n in range(12):
            user = (ALICE, BOB)[n % 2]
            fake.send_text(FakeChat(user.id, "private"), user, f"m{n}")
        await fake.wait_for(lambda: len(engine.messages) == 12)
        await fake.wait_for(lambda: fake.pending_updates == 0)  # confirmed by the next poll
    finally:
        await adapter.aclose()
    assert not adapter.connected
    assert _texts(engine) == [f"m{n}" for n in range(12)]
    # A poller started afterwards gets nothing again.
    later = RecordingEngine("later")
    second = await _poller(fake, later)
    try:
        fake.send_text(FakeChat(ALICE.id, "private"), ALICE, "after")
        await fake.wait_for(lambda: len(later.messages) == 1)
    finally:
        await second.aclose()
    assert _texts(later) == ["after"]


async def test_an_update_that_could_not_be_queued_is_fetched_again(fake: FakeTelegram) -> None:
    engine = RecordingEngine("only")
    engine.fail = True  # the queue's database is down
    adapter = await _poller(fake, engine)
    try:
        chat = FakeChat(ALICE.id, "private")
        for text in ("one", "two", "three"):
            fake.send_text(chat, ALICE, text)
        await fake.wait_for(lambda: len(fake.calls_to("getUpdates")) >= 3)
        assert engine.messages == [] and fake.pending_updates == 3  # Telegram keeps them
        assert adapter.connected  # polling goes on
        engine.fail = False  # the database is back
        await fake.wait_for(lambda: len(engine.messages) == 3, timeout=15)
    finally:
        await adapter.aclose()
    assert _texts(engine) == ["one", "two", "three"]
    assert fake.bot_messages(ALICE.id) == []  # not told to send it again: it was kept


async def test_a_poller_stopped_while_queueing_leaves_the_rest_to_the_next(
    fake: FakeTelegram,
) -> None:
    first = _CountingEngine("first")
    first.block = asyncio.Event()  # the queue is slow to store
    adapter = await _poller(fake, first)
    chat = FakeChat(BOB.id, "private")
    for text in ("a", "b", "c"):
        fake.send_text(chat, BOB, text)
    async with asyncio.timeout(10):
        while first.submitted < 1:  # "a" is being queued
            await asyncio.sleep(0.02)
    closing = asyncio.create_task(adapter.aclose())
    await asyncio.sleep(0.3)
    assert not closing.done()  # it waits for the update at hand to be queued
    first.block.set()
    await asyncio.wait_for(closing, 10)
    assert _texts(first) == ["a"]  # only what was at hand when it stopped
    second = RecordingEngine("second")
    replacement = await _poller(fake, second)
    try:
        await fake.wait_for(lambda: len(second.messages) == 2)
    finally:
        await replacement.aclose()
    assert _texts(second) == ["b", "c"]  # nothing lost, nothing queued twice


async def test_an_album_is_confirmed_once_queued_as_one_turn(fake: FakeTelegram) -> None:
    engine = RecordingEngine("album")
    engine.fail = True
    adapter = await _poller(fake, engine)
    chat = FakeChat(ALICE.id, "private")
    photo = [PhotoFile(90, 90, b"\xff\xd8jpeg")]
    try:
        fake.send_photo(chat, ALICE, photo, caption="two", media_group_id="g1")
        fake.send_photo(chat, ALICE, photo, media_group_id="g1")
        fake.send_text(chat, ALICE, "after")
        await fake.wait_for(lambda: len(fake.calls_to("getUpdates")) >= 3)
        assert fake.pending_updates == 3 and engine.messages == []
        engine.fail = False
        await fake.wait_for(lambda: len(engine.messages) == 2, timeout=15)
    finally:
        await adapter.aclose()
    album, after = engine.messages
    assert (album.text, len(album.attachments)) == ("two", 2)
    assert after.text == "after"


async def test_another_poller_on_the_token_is_a_409_told_once_and_serving_goes_on(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    engine = RecordingEngine("ours")
    adapter = await _poller(fake, engine)
    caplog.set_level(logging.WARNING, logger="adapters.telegram")
    url = f"{fake.base_url}/bot{fake.token}/getUpdates"
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(20):
            while fake.conflicts < 2:  # a stray process polling with the same token
                async with session.post(url, json={"timeout": 0}) as response:
                    assert response.status == 200
                await asyncio.sleep(0.3)
        fake.send_text(FakeChat(BOB.id, "private"), BOB, "still here")
        await fake.wait_for(lambda: len(engine.messages) == 1, timeout=15)
        assert adapter.connected
    finally:
        await adapter.aclose()
    told = [r for r in caplog.records if "409 Conflict" in r.getMessage()]
    assert len(told) == 1
