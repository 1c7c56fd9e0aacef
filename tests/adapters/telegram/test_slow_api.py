"""A Telegram slower than the request timeout that did apply the call: one answer, stored.

The fake applies a call at once and answers only after the client gave up; the real PTB
client raises ``TimedOut``. The reply must not be shown twice nor stored as failed.
"""

from __future__ import annotations

import pytest

from core.types import ConversationKey, MessageStatus, StoredMessage
from tests.adapters.telegram.conftest import Harness
from tests.fakes.scripted import ScriptedBackend
from tests.fakes.telegram_server import FakeUser

pytestmark = pytest.mark.slow  # each waits out a client timeout or two

TIMEOUT = 0.5  # TELEGRAM_REQUEST_TIMEOUT in these tests
LATE = 1.2  # how late the fake answers


async def _stored_reply(bot: Harness, user: FakeUser) -> StoredMessage:
    key = ConversationKey("tgtest", "telegram", str(user.id), None, str(user.id))
    conversation = await bot.store.current_conversation(key)
    [latest] = await bot.store.recent_messages(conversation.id, limit=1)
    return latest


async def _ask(bot: Harness, text: str, reply: str) -> FakeUser:
    user = bot.user("Ada")
    chat = bot.private(user)
    bot.fake.send_text(chat, user, text)
    await bot.fake.wait_for(
        lambda: any(m.text == reply for m in bot.fake.bot_messages(chat.id)), timeout=20
    )
    await bot.fake.wait_idle(quiet=LATE + 0.5, timeout=30)
    return user


async def test_a_send_that_timed_out_but_arrived_is_not_sent_again(harness_factory) -> None:
    bot: Harness = await harness_factory(request_timeout=TIMEOUT)
    bot.fake.answer_late("sendMessage", LATE)
    user = await _ask(bot, "hello", "echo: hello | remembered: nothing")
    assert [m.text for m in bot.fake.bot_messages(user.id)] == ["echo: hello | remembered: nothing"]
    stored = await _stored_reply(bot, user)
    assert (stored.content, stored.status) == (
        "echo: hello | remembered: nothing",
        MessageStatus.COMPLETE,
    )


async def test_edits_that_timed_out_but_arrived_leave_one_complete_answer(
    harness_factory,
) -> None:
    reply = " ".join(f"word{i}" for i in range(80))
    backend = ScriptedBackend(reply=reply, chunk_size=40, delay=0.05)
    bot: Harness = await harness_factory(backend=backend, request_timeout=TIMEOUT)
    bot.fake.answer_late("editMessageText", LATE, times=20)  # every edit, the final ones too
    user = await _ask(bot, "stream please", reply)
    assert [m.text for m in bot.fake.bot_messages(user.id)] == [reply]
    stored = await _stored_reply(bot, user)
    assert (stored.content, stored.status) == (reply, MessageStatus.COMPLETE)
