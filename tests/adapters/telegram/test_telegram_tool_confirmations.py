"""Tool confirmations on Telegram, through the real python-telegram-bot and the fake API.

The question shows as plain multi-line text; the buttons carry the ``t:`` action id (and the
asker) in their callback data, so a press reaches the engine after a restart too; a press
by the asker removes the buttons, a stranger's leaves them for the asker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from adapters.telegram import TelegramAdapter, TelegramSettings
from tests.fakes.confirming_engine import PROMPT, ConfirmingEngine
from tests.fakes.telegram_server import FakeChat, FakeMessage, FakeTelegram, FakeUser

pytestmark = pytest.mark.timeout(60)

ALICE = FakeUser(5001, "Alice", "alice_5001")
BOB = FakeUser(5002, "Bob", "bob_5002")
GROUP = FakeChat(-100777, "supergroup", "Home")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def start_adapter(fake: FakeTelegram) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:

        async def start(engine: ConfirmingEngine) -> TelegramAdapter:
            settings = TelegramSettings(
                _env_file=None,
                bot_token=fake.token,
                api_base_url=fake.base_url,
                group_mode="all",
                edit_interval=0.05,
                group_edit_interval=0.05,
                first_flush_delay=0.02,
                poll_timeout=1,
                request_timeout=10,
            )
            adapter = TelegramAdapter(settings, engine)
            await adapter.start()
            stack.push_async_callback(adapter.aclose)
            return adapter

        yield start


def buttons(message: FakeMessage | None) -> list[str]:
    markup = (message.reply_markup if message else None) or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


async def ask(fake: FakeTelegram, chat: FakeChat, user: FakeUser) -> FakeMessage:
    fake.send_text(chat, user, "turn on the kitchen light")
    await fake.wait_for(lambda: any(buttons(m) for m in fake.bot_messages(chat.id)))
    return next(m for m in fake.bot_messages(chat.id) if buttons(m))


async def test_a_press_after_a_restart_reaches_the_engine_and_clears_the_buttons(
    fake: FakeTelegram, start_adapter: Callable[..., Any]
) -> None:
    engine = ConfirmingEngine()
    first = await start_adapter(engine)
    question = await ask(fake, GROUP, ALICE)
    assert question.text == PROMPT  # plain text, every line kept
    yes, no = buttons(question)
    assert yes.startswith("y|t:000000000001") and no.startswith("n|t:000000000001")
    assert all(len(b.encode()) <= 64 for b in (yes, no))
    await first.aclose()

    await start_adapter(engine)  # a new adapter: nothing of the first one's memory
    fake.press_button(question, BOB, yes)
    await fake.wait_for(lambda: len(engine.actions) == 1)
    await fake.wait_idle(quiet=0.25)
    assert buttons(fake.find_message(GROUP.id, question.message_id))  # still Alice's to answer
    assert engine.ran == []

    fake.press_button(question, ALICE, yes)
    await fake.wait_for(lambda: engine.ran == ["t:000000000001"])
    await fake.wait_idle(quiet=0.25)
    pressed = engine.actions[-1]
    assert (pressed.action_id, pressed.accepted, pressed.user_id) == (
        "t:000000000001",
        True,
        "5001",
    )
    assert not pressed.is_private
    assert buttons(fake.find_message(GROUP.id, question.message_id)) == []
    texts = [m.text for m in fake.bot_messages(GROUP.id)]
    assert "Only the person who asked can answer this." in texts
    assert texts[-1] == "✅ light.kitchen → on"


async def test_no_in_a_private_chat_declines_and_clears_the_buttons(
    fake: FakeTelegram, start_adapter: Callable[..., Any]
) -> None:
    engine = ConfirmingEngine()
    await start_adapter(engine)
    chat = FakeChat(ALICE.id, "private")
    question = await ask(fake, chat, ALICE)
    fake.press_button(question, ALICE, buttons(question)[1])
    await fake.wait_for(lambda: bool(engine.actions))
    await fake.wait_idle(quiet=0.25)
    assert [(a.accepted, a.is_private) for a in engine.actions] == [(False, True)]
    assert buttons(fake.find_message(chat.id, question.message_id)) == []
    assert fake.bot_messages(chat.id)[-1].text == "Declined: nothing was done."
    assert engine.ran == []
