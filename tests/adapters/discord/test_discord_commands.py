"""Slash commands and buttons, through the real discord.py client and the real engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.adapters.discord.helpers import idle
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.scripted import ScriptedBackend


async def test_engine_commands_become_slash_commands(fake: FakeDiscord, make_bot) -> None:
    bot = await make_bot()

    assert fake.command_names() == sorted(c.name for c in bot.engine.commands())
    model = next(c for c in fake.commands if c["name"] == "model")
    (option,) = model["options"]
    assert [c["value"] for c in option["choices"]] == ["scripted", "scripted-large"]
    assert option["required"] is False
    assert all(1 <= len(c["description"]) <= 100 for c in fake.commands)


async def test_reset_by_slash_command_starts_afresh(fake: FakeDiscord, make_bot) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "remember the number 42")
    await idle(fake, bot)

    reset = await fake.slash(dm, alice, "reset")
    await idle(fake, bot)
    await fake.user_message(dm, alice, "what number?")
    await idle(fake, bot)

    assert reset.responses and reset.responses[0]["type"] == 4  # answered at once
    assert reset.acked_at is not None and reset.acked_at - reset.created < 3
    texts = fake.bot_texts(dm)
    assert texts[-1] == "echo: what number? | remembered: nothing"


async def test_export_arrives_as_a_file(fake: FakeDiscord, make_bot) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "a thing worth keeping")
    await idle(fake, bot)

    export = await fake.slash(dm, alice, "export", {"format": "json"})
    await idle(fake, bot)

    message = fake.messages[export.original_message_id or ""]
    ((filename, data),) = message.files
    assert filename.endswith(".json")
    document = json.loads(data)
    assert "a thing worth keeping" in json.dumps(document)


async def test_model_choice_switches_the_model(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.slash(dm, alice, "model", {"name": "scripted-large"})
    await idle(fake, bot)
    await fake.user_message(dm, alice, "which model?")
    await idle(fake, bot)

    assert backend.calls[-1].model == "scripted-large"


async def test_forget_asks_with_buttons_only_the_asker_may_press(
    fake: FakeDiscord, make_bot
) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot()
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    await fake.user_message(channel, alice, "my secret is 1234", mention_bot=True)
    await idle(fake, bot)

    forget = await fake.slash(channel, alice, "forget")
    await idle(fake, bot)
    prompt = fake.messages[forget.original_message_id or ""]
    buttons = [c["custom_id"] for row in prompt.components for c in row["components"]]
    assert len(buttons) == 2
    yes = next(b for b in buttons if "|y|" in b)

    intruder = await fake.press(prompt.id, yes, bob)
    await idle(fake, bot)
    refusal = intruder.responses[0]
    assert refusal["type"] == 4 and refusal["data"]["flags"] & 64  # only bob sees it
    assert prompt.components  # still waiting for alice

    await fake.press(prompt.id, yes, alice)
    await idle(fake, bot)
    assert prompt.components == []  # the buttons are gone once answered
    assert any(t.startswith("Done: I deleted everything") for t in fake.bot_texts(channel))

    await fake.user_message(channel, alice, "what is my secret?", mention_bot=True)
    await idle(fake, bot)
    assert fake.bot_texts(channel)[-1] == "echo: what is my secret? | remembered: nothing"


async def test_a_slow_command_is_deferred_within_three_seconds(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    bot = await make_bot(ack_after=0.3)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    backend.gate = asyncio.Event()
    await fake.user_message(dm, alice, "a long question")  # holds the conversation busy
    await fake.wait_for(lambda: backend.active == 1, what="the reply to start")

    usage = await fake.slash(dm, alice, "usage")  # queued behind the reply
    await fake.wait_for(lambda: usage.acked_at is not None, timeout=3, what="an acknowledgement")
    assert usage.deferred  # "thinking..." shown, well inside Discord's window
    backend.gate.set()
    await idle(fake, bot)

    original = fake.messages[usage.original_message_id or ""]
    assert "token" in original.content.lower()  # the usage report replaced "thinking..."


async def test_commands_are_not_registered_again_when_unchanged(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = await make_bot(data_dir=data_dir)
    assert first.adapter.commands_synced
    await first.aclose()

    second = await make_bot(data_dir=data_dir)  # a restart with the same commands
    assert not second.adapter.commands_synced
    await second.aclose()
    assert fake.command_syncs == 1

    backend._models = ("scripted", "scripted-large", "scripted-new")  # /model choices change
    third = await make_bot(data_dir=data_dir)
    assert third.adapter.commands_synced
    assert fake.command_syncs == 2
    stored = json.loads((data_dir / "discord-commands.json").read_text())
    assert list(stored) == [fake.application_id]


async def test_discord_sync_forces_registration(
    fake: FakeDiscord, make_bot, tmp_path: Path
) -> None:
    from adapters.discord.adapter import sync_commands
    from tests.adapters.discord.conftest import discord_settings

    data_dir = tmp_path / "data"
    bot = await make_bot(data_dir=data_dir)
    assert fake.command_syncs == 1

    count = await sync_commands(discord_settings(fake), bot.engine, data_dir=data_dir)

    assert count == len(bot.engine.commands())
    assert fake.command_syncs == 2


async def test_forget_typed_in_a_dm_can_be_cancelled(fake: FakeDiscord, make_bot) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "keep this")
    await idle(fake, bot)

    await fake.user_message(dm, alice, "/forget")
    await idle(fake, bot)
    prompt = fake.bot_messages(dm)[-1]
    no = next(
        c["custom_id"]
        for row in prompt.components
        for c in row["components"]
        if "|n|" in c["custom_id"]
    )
    press = await fake.press(prompt.id, no, alice)
    await idle(fake, bot)
    await fake.user_message(dm, alice, "still there?")
    await idle(fake, bot)

    assert press.responses[0]["type"] == 7  # the prompt was updated in place, buttons removed
    assert prompt.components == []
    texts = fake.bot_texts(dm)
    assert "Cancelled: nothing was deleted." in texts
    assert texts[-1] == "echo: still there? | remembered: keep this"


async def test_admin_only_stats_checks_the_discord_user(fake: FakeDiscord, make_bot) -> None:
    admin, alice = fake.add_user("admin"), fake.add_user("alice")
    bot = await make_bot(admins=f"discord:{admin.id}")
    dm_admin, dm_alice = fake.dm_channel(admin), fake.dm_channel(alice)
    await fake.user_message(dm_alice, alice, "hello")
    await idle(fake, bot)

    await fake.slash(dm_alice, alice, "stats")
    await fake.slash(dm_admin, admin, "stats")
    await idle(fake, bot)

    assert fake.bot_texts(dm_alice)[-1] == "/stats is for the bot's admins only."
    assert any(t.startswith("Stats for chinwag") for t in fake.bot_texts(dm_admin))


async def test_export_typed_in_a_server_goes_to_direct_messages(
    fake: FakeDiscord, make_bot
) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot()
    alice = fake.add_user("alice")
    await fake.user_message(channel, alice, "a private thought", mention_bot=True)
    await idle(fake, bot)

    await fake.user_message(channel, alice, "/export", mention_bot=True)
    await idle(fake, bot)

    assert fake.bot_texts(channel)[-1] == "I sent it to you in a direct message."
    assert not any(m.files for m in fake.bot_messages(channel))  # nothing public
    (delivered,) = [m for m in fake.bot_messages(fake.dm_channel(alice)) if m.files]
    ((filename, data),) = delivered.files
    assert filename.endswith(".md") and b"a private thought" in data
