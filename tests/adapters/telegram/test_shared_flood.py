"""Flood control across processes: two Telegram stacks, one bot, limits shared in Redis.

Each stack is what one worker process holds: its own python-telegram-bot ``Application``,
its own :class:`Transport` and its own Redis client. Both stream replies at once into one
group chat and into private chats of a bot whose per-chat and bot-wide limits are tight.
With the limits shared, the fake records no call made while the chat (or the whole bot)
served a 429 penalty, and every reply arrives complete; with each stack keeping its own
gates, the other stack's calls run into the penalty.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from telegram.ext import Application

from adapters.shared import RedisShared
from adapters.telegram.channel import TelegramReplyChannel
from adapters.telegram.transport import Transport
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser, FloodLimits

pytestmark = pytest.mark.slow


async def _words(reply: str) -> AsyncIterator[str]:
    for word in reply.split(" "):
        await asyncio.sleep(0.01)
        yield word + " "


async def _stack(
    stack: AsyncExitStack, fake: FakeTelegram, redis_url: str, prefix: str
) -> Transport:
    """One worker's Telegram side: an Application, a Transport, limits in its own client."""
    shared = RedisShared(redis_url, "floodbot", prefix=prefix)
    await shared.start()
    stack.push_async_callback(shared.aclose)
    app: Any = (
        Application.builder()
        .token(fake.token)
        .base_url(f"{fake.base_url}/bot")
        .base_file_url(f"{fake.base_url}/file/bot")
        .build()
    )
    await app.initialize()
    stack.push_async_callback(app.shutdown)
    return Transport(app, fast_settings(fake), limits=shared.limits)


async def test_two_stacks_never_call_a_chat_serving_its_penalty(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # as the adapter does: no deprecation warning
    limits = FloodLimits(chat=(3, 1.0), global_=(10, 1.0), bot_wide=True)
    async with FakeTelegram(limits=limits) as fake, AsyncExitStack() as stack:
        transports = [await _stack(stack, fake, redis_url, redis_prefix) for _ in range(2)]
        group = FakeChat(-4242, "supergroup", "Shared group")
        people = [FakeUser(500 + i, f"User{i}", f"user{i}") for i in range(8)]
        fake.send_text(group, people[0], "hello all")
        for person in people:
            fake.send_text(FakeChat(person.id, "private"), person, "hi")

        jobs = []
        expected: dict[int, list[str]] = {}
        for n, transport in enumerate(transports):
            for k in range(2):  # both stacks write into the one group chat
                reply = " ".join(f"g{n}{k}w{i}" for i in range(25))
                expected.setdefault(group.id, []).append(reply.strip())
                channel = TelegramReplyChannel(transport, chat_id=group.id, is_private=False)
                jobs.append(channel.stream_reply(_words(reply)))
            for person in people[n::2]:  # and each into its own users' private chats
                reply = " ".join(f"p{person.id}w{i}" for i in range(25))
                expected[person.id] = [reply]
                channel = TelegramReplyChannel(transport, chat_id=person.id)
                jobs.append(channel.stream_reply(_words(reply)))
        await asyncio.wait_for(asyncio.gather(*jobs), 90)
        await asyncio.sleep(0.3)  # (the users' messages stay unread: no poller here)

        assert any(c.error_code == 429 for c in fake.calls)  # the limits were really reached
        assert [c for c in fake.calls if c.premature] == []
        for chat_id, replies in expected.items():
            shown = sorted(m.text for m in fake.bot_messages(chat_id))
            assert shown == sorted(replies), chat_id  # complete, none lost or doubled
