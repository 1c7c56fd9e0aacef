"""Tool confirmations on Discord, through the real discord.py and the fake Discord.

The question shows as multi-line text with Yes/No buttons whose custom id carries the asker
and the ``t:`` action id, so a press after a restart (a new adapter instance) still reaches
the engine; the asker's press replaces the buttons by the answer; anyone else's press goes to
the engine as theirs (it refuses strangers, and may let an admin confirm) and leaves the
buttons for the asker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.adapter import DiscordAdapter
from tests.adapters.discord.conftest import discord_settings
from tests.adapters.discord.helpers import idle
from tests.fakes.confirming_engine import PROMPT, ConfirmingEngine
from tests.fakes.discord_server import FakeDiscord, FakeMessage

pytestmark = pytest.mark.timeout(60)


class _Bot:
    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter


@pytest.fixture
async def start_adapter(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    adapters: list[DiscordAdapter] = []

    async def start(engine: ConfirmingEngine) -> _Bot:
        adapter = DiscordAdapter(discord_settings(fake), engine, data_dir=tmp_path / "data")
        adapters.append(adapter)
        await adapter.start()
        return _Bot(adapter)

    yield start
    for adapter in reversed(adapters):
        await adapter.aclose()


def buttons(message: FakeMessage) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row["components"]]


async def test_a_press_after_a_restart_reaches_the_engine(
    fake: FakeDiscord, start_adapter: Callable[..., Any]
) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    engine = ConfirmingEngine()
    first = await start_adapter(engine)
    await fake.user_message(channel, alice, "turn on the kitchen light", mention_bot=True)
    await idle(fake, first)
    [question] = fake.bot_messages(channel)
    assert question.content == PROMPT
    yes = next(b for b in buttons(question) if "|y|" in b)
    assert yes.endswith("|t:000000000001") and alice.id in yes
    await first.adapter.aclose()

    second = await start_adapter(engine)  # a new adapter instance: a restart
    intruder = await fake.press(question.id, yes, bob)
    await idle(fake, second)
    refusal = intruder.responses[0]
    assert refusal["type"] == 4 and refusal["data"]["flags"] & 64  # only bob sees it
    assert refusal["data"]["content"] == "Only the person who asked can answer this."
    assert buttons(question)  # still alice's to answer
    assert engine.ran == []

    press = await fake.press(question.id, yes, alice)
    await idle(fake, second)
    assert press.responses[0]["type"] == 7  # the question updated in place...
    assert question.components == []  # ...without its buttons
    assert question.content.endswith("\n\nYes.")
    assert engine.ran == ["t:000000000001"]
    assert [(a.user_id, a.accepted) for a in engine.actions] == [(bob.id, True), (alice.id, True)]


async def test_a_question_without_a_known_asker_can_be_answered(
    fake: FakeDiscord, start_adapter: Callable[..., Any]
) -> None:
    """A recovered turn asks through a channel that does not know who asked: the engine decides."""
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    engine = ConfirmingEngine()
    bot = await start_adapter(engine)
    engine.asked["t:recovered001"] = alice.id
    await bot.adapter.resume(dm, None, []).ask_confirmation(PROMPT, "t:recovered001")
    await idle(fake, bot)
    [question] = fake.bot_messages(dm)
    no = next(b for b in buttons(question) if "|n|" in b)

    press = await fake.press(question.id, no, alice)
    await idle(fake, bot)
    assert press.responses[0]["type"] == 7
    assert question.components == []
    assert [(a.action_id, a.user_id, a.accepted) for a in engine.actions] == [
        ("t:recovered001", alice.id, False)
    ]
    assert fake.bot_texts(dm)[-1] == "Declined: nothing was done."
