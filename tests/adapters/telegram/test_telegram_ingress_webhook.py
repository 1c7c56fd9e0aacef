"""Telegram ingress replicas behind a load balancer: acknowledged only once queued.

Two ingress adapters (each its own webhook server, the same public URL: the balancer's)
take turns; Telegram (the fake) sends an update again until a delivery is answered 2xx.
The engines record what was queued: every update must reach one, and a second time only
as a redelivery of the same update.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from adapters.telegram import TelegramAdapter
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.http_balancer import HttpBalancer
from tests.fakes.recording_engine import RecordingEngine
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

SECRET = "ingress_Secret-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


async def _replica(
    fake: FakeTelegram, engine: RecordingEngine, port: int, url: str
) -> TelegramAdapter:
    settings = fast_settings(
        fake, webhook_url=url, webhook_listen=f"127.0.0.1:{port}", webhook_secret=SECRET
    )
    adapter = TelegramAdapter(settings, engine, ingress=True)
    await adapter.start()
    return adapter


def _taken(*engines: RecordingEngine) -> Counter[tuple[str, str | None]]:
    return Counter((m.chat_id, m.message_id) for e in engines for m in e.messages)


async def test_an_update_that_could_not_be_queued_is_sent_again(fake: FakeTelegram) -> None:
    port = _free_port()
    engine = RecordingEngine("only")
    engine.answer = False
    engine.fail = True  # the queue's database is down
    adapter = await _replica(fake, engine, port, f"http://127.0.0.1:{port}/tg/hook")
    try:
        assert adapter.leases == ()  # webhook replicas need no election
        user = FakeUser(7001, "Alice", "alice")
        sent = fake.send_text(FakeChat(user.id, "private"), user, "hello")
        await fake.wait_for(lambda: len(fake.webhook_refusals) >= 2)
        assert set(fake.webhook_refusals) == {503} and engine.messages == []
        assert fake.pending_updates == 1  # Telegram keeps it
        engine.fail = False  # the database is back
        await fake.wait_for(lambda: fake.pending_updates == 0)
        assert _taken(engine) == Counter({(str(user.id), str(sent.message_id)): 1})
        assert fake.bot_messages(user.id) == []  # ingress answers nothing itself
    finally:
        await adapter.aclose()


async def test_two_replicas_share_the_load_and_lose_nothing_when_one_dies(
    fake: FakeTelegram,
) -> None:
    ports = [_free_port(), _free_port()]
    async with HttpBalancer([("127.0.0.1", p) for p in ports]) as balancer:
        url = balancer.url("/tg/hook")
        first, second = RecordingEngine("first"), RecordingEngine("second")
        for engine in (first, second):
            engine.answer = False
        replicas = [
            await _replica(fake, first, ports[0], url),
            await _replica(fake, second, ports[1], url),
        ]
        assert fake.webhook_url == url
        users = [FakeUser(8000 + i, f"U{i}", f"u{i}") for i in range(5)]
        sent: list[tuple[str, str]] = []

        def say(count: int) -> None:
            for n in range(count):
                user = users[n % len(users)]
                message = fake.send_text(FakeChat(user.id, "private"), user, f"m{len(sent)}")
                sent.append((str(user.id), str(message.message_id)))

        try:
            say(10)
            await fake.wait_for(lambda: fake.pending_updates == 0)
            served = balancer.by_backend()
            assert served.get(0, 0) >= 3 and served.get(1, 0) >= 3  # both take turns
            # The first replica stores its next turn and dies before answering Telegram.
            first.hold = asyncio.Event()
            say(10)
            async with asyncio.timeout(10):
                while len(first.messages) <= served.get(0, 0):
                    await asyncio.sleep(0.02)
            held = (first.messages[-1].chat_id, first.messages[-1].message_id)
            await replicas[0].aclose()  # its in-flight delivery gets no answer
            await fake.wait_for(lambda: fake.pending_updates == 0, timeout=20)
        finally:
            for replica in replicas:
                await replica.aclose()
        taken = _taken(first, second)
        assert set(taken) == set(sent)  # nothing lost
        twice = {key for key, count in taken.items() if count > 1}
        assert twice == {held} and taken[held] == 2  # only the unacknowledged one, once more
        assert 502 in {s.status for s in balancer.served}  # Telegram saw the death
