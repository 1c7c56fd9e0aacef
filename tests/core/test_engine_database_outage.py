"""A 10 s PostgreSQL outage under load loses no message and no seen reply (issue 10).

Several users write about five messages a second to an ``Engine`` whose SQL store reaches
the real PostgreSQL through a loopback proxy (``tests.fakes.tcp_proxy``); for ten seconds in
the middle the proxy cuts every connection and refuses new ones. Only the engine's public
API is used. Afterwards every message has been answered exactly once, without an apology,
and every reply a user saw is stored complete, checked over a direct connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.settings import CoreSettings, LLMSettings
from core.types import IncomingMessage, MessageStatus, Role
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend
from tests.fakes.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOT = "outagebot"
USERS = [f"user{i}" for i in range(6)]
INTERVAL_S = 0.2  # five messages a second in all
BEFORE_S, OUTAGE_S, AFTER_S = 2.0, 10.0, 2.0


@pytest.fixture
async def engine(direct_url: str, proxy: TcpProxy) -> AsyncIterator[Engine]:
    url = make_url(direct_url).set(port=proxy.port).render_as_string(hide_password=False)
    async with SqlMemoryStore(url, outage_grace=30) as store:
        running = Engine(
            backend=ScriptedBackend(chunk_size=8, delay=0.01),
            store=store,
            core=CoreSettings(_env_file=None, bot_name=BOT),
            llm=LLMSettings(_env_file=None, max_concurrency=8),
        )
        await running.start()
        try:
            yield running
        finally:
            proxy.restore()
            await running.aclose(grace=5)


async def test_a_ten_second_outage_under_load_loses_no_message_and_no_seen_reply(
    engine: Engine, proxy: TcpProxy, direct_url: str
) -> None:
    loop = asyncio.get_running_loop()
    sent: list[tuple[IncomingMessage, RecordingChannel, asyncio.Future[None]]] = []
    started = loop.time()
    outage_from, outage_until = started + BEFORE_S, started + BEFORE_S + OUTAGE_S
    during_outage = 0
    n = 0
    while (now := loop.time()) < outage_until + AFTER_S:
        if proxy.down and now >= outage_until:
            proxy.restore()
        elif not proxy.down and outage_from <= now < outage_until:
            proxy.cut()
        user = USERS[n % len(USERS)]
        msg = IncomingMessage(
            platform="test", chat_id=user, user_id=user, text=f"note {n}", message_id=f"m{n}"
        )
        out = RecordingChannel()
        sent.append((msg, out, engine.submit(msg, out)))
        during_outage += proxy.down
        n += 1
        await asyncio.sleep(max(0.0, started + n * INTERVAL_S - loop.time()))
    proxy.restore()
    await asyncio.wait_for(asyncio.gather(*(future for *_, future in sent)), 60)

    assert during_outage >= 40
    assert proxy.refused > 0  # the store really lost its connections
    for msg, out, _ in sent:
        assert out.notices == [], f"{msg.message_id} got {out.notices}"
        assert len(out.replies) == 1, f"{msg.message_id} answered {len(out.replies)} times"
        assert out.replies[0].startswith(f"echo: {msg.text} |")

    async with SqlMemoryStore(direct_url) as check:
        for msg, out, _ in sent:
            assert msg.message_id is not None
            stored = await check.find_by_platform_message(BOT, "test", msg.chat_id, msg.message_id)
            assert stored is not None and stored.role is Role.USER, msg.message_id
            reply = await check.reply_to(stored)
            assert reply is not None, msg.message_id
            assert reply.status is MessageStatus.COMPLETE, msg.message_id
            assert reply.content == out.replies[0]
        for user in USERS:
            history = await check.recent_messages(
                (await check.current_conversation(engine.key_for("test", user, user))).id,
                limit=1000,
            )
            # one user turn and one complete answer per message, nothing twice
            assert len(history) == 2 * sum(1 for msg, *_ in sent if msg.user_id == user)
