"""End to end, as users chat: fake Telegram <- real PTB Application <- adapter <- real engine."""

from __future__ import annotations

import socket
from itertools import pairwise

import aiohttp
import pytest

from adapters.telegram.render import render_blocks, runs_text
from core.errors import BackendUnavailable
from tests.adapters.telegram.conftest import Harness
from tests.fakes.scripted import ScriptedBackend
from tests.fakes.telegram_server import REAL_LIMITS, FakeUser, FloodLimits


def _no_space(text: str) -> str:
    return "".join(text.split())


async def test_private_round_trip_sends_once_without_edits(bot: Harness) -> None:
    alice = bot.user("Alice")
    chat = bot.private(alice)
    replies = await bot.say(chat, alice, "hello there")
    assert [m.text for m in replies] == ["echo: hello there | remembered: nothing"]
    # An instant reply fits the first flush: one sendMessage, no edit, no typing.
    assert bot.fake.calls_to("editMessageText") == []
    assert bot.fake.calls_to("sendChatAction") == []
    assert replies[0].reply_to is None  # private chats need no quote of the question


async def test_memory_recall_over_several_messages(bot: Harness) -> None:
    alice = bot.user("Alice")
    chat = bot.private(alice)
    await bot.say(chat, alice, "my cat is Tom")
    await bot.say(chat, alice, "I live in Oslo")
    [reply] = await bot.say(chat, alice, "what do you know?")
    assert reply.text == "echo: what do you know? | remembered: my cat is Tom; I live in Oslo"


async def test_two_users_are_kept_apart(bot: Harness) -> None:
    alice, bob = bot.user("Alice"), bot.user("Bob")
    await bot.say(bot.private(alice), alice, "alice secret")
    [reply] = await bot.say(bot.private(bob), bob, "hi")
    assert reply.text == "echo: hi | remembered: nothing"
    [reply] = await bot.say(bot.private(alice), alice, "again")
    assert reply.text == "echo: again | remembered: alice secret"


async def test_group_triggers_and_silence(bot: Harness) -> None:
    alice = bot.user("Alice")
    group = bot.group()
    name = bot.fake.bot.username
    fake = bot.fake

    # Plain chatter, another bot's command: silence.
    fake.send_text(group, alice, "just talking among humans")
    fake.send_text(group, alice, "/help@some_other_bot")
    await fake.wait_idle(quiet=0.4)
    assert fake.bot_messages(group.id) == []

    [reply] = await bot.say(group, alice, f"@{name} what is up")
    assert reply.text == "echo: what is up | remembered: nothing"  # the mention is stripped
    assert reply.reply_to is not None  # in groups the answer quotes the question

    [followup] = await bot.say(group, alice, "and then?", reply_to=reply.message_id)
    assert followup.text.startswith("echo: and then? | remembered: what is up")

    [helped] = await bot.say(group, alice, f"/help@{name}")
    assert "/reset" in helped.text

    [bare] = await bot.say(group, alice, "/help")
    assert "/reset" in bare.text

    fake.send_text(group, alice, "still chatting")
    await fake.wait_idle(quiet=0.4)
    assert len(fake.bot_messages(group.id)) == 4


async def test_group_mode_all_answers_everything(harness_factory) -> None:
    bot: Harness = await harness_factory(group_mode="all")
    alice = bot.user("Alice")
    group = bot.group()
    [reply] = await bot.say(group, alice, "no mention at all")
    assert reply.text == "echo: no mention at all | remembered: nothing"


async def test_forum_topic_reply_lands_in_its_topic(bot: Harness) -> None:
    alice = bot.user("Alice")
    forum = bot.group(forum=True)
    name = bot.fake.bot.username
    [in_topic] = await bot.say(forum, alice, f"@{name} topic one", thread_id=7)
    assert in_topic.thread_id == 7
    [other] = await bot.say(forum, alice, f"@{name} topic two", thread_id=9)
    assert other.thread_id == 9
    # Each topic is its own conversation.
    assert other.text == "echo: topic two | remembered: nothing"


def _long_reply() -> str:
    code = "\n".join(
        f"    total += compute_value({i}, factor={i * 3})  # step {i}" for i in range(40)
    )
    huge = "\n".join(f"row_{i} = [{', '.join(str(i * j) for j in range(12))}]" for i in range(110))
    paragraphs = []
    for i in range(6):
        paragraphs.append(
            f"## Part {i}\n\nThis is **paragraph {i}** with `inline code` and a "
            f"[link](https://example.org/{i}). " + "Words flow on and on. " * 25
        )
        paragraphs.append(
            f"```python\ndef part_{i}():\n    total = 0\n{code}\n    return total\n```"
        )
    paragraphs.append(f"```\n{huge}\n```")  # longer than one message: split and reopened
    paragraphs.append("The end.")
    return "\n\n".join(paragraphs)


async def test_ten_thousand_character_reply_arrives_complete_and_renders(harness_factory) -> None:
    text = _long_reply()
    assert len(text) > 10_000
    bot: Harness = await harness_factory(backend=ScriptedBackend(reply=text, chunk_size=400))
    alice = bot.user("Alice")
    chat = bot.private(alice)
    messages = await bot.say(chat, alice, "write a lot", replies=3)
    assert len(messages) >= 3
    assert all(len(m.text.encode("utf-16-le")) // 2 <= 4096 for m in messages)
    expected = runs_text(run for block in render_blocks(text) for run in block.runs)
    assert _no_space("".join(m.text for m in messages)) == _no_space(expected)
    assert messages[-1].text.endswith("The end.")
    # Every part that shows code shows it as a code block with its language.
    pre_parts = [m for m in messages if "pre" in m.entity_types()]
    assert len(pre_parts) >= 3
    assert any(e.language == "python" for m in pre_parts for e in m.entities if e.type == "pre")
    # The block longer than a message is split, and both halves render as code.
    holders = [m for m in messages if "row_0 =" in m.text or "row_109 =" in m.text]
    assert len(holders) == 2 and all("pre" in m.entity_types() for m in holders)
    assert all("bold" in m.entity_types() for m in messages if "paragraph" in m.text)


@pytest.mark.slow
async def test_flood_control_is_honoured_and_nothing_is_lost(harness_factory) -> None:
    reply = " ".join(f"word{i}" for i in range(120))
    backend = ScriptedBackend(reply=reply, chunk_size=20, delay=0.03)
    bot: Harness = await harness_factory(backend=backend, limits=FloodLimits(chat=(2, 1.0)))
    fake = bot.fake
    alice = bot.user("Alice")
    chat = bot.private(alice)
    fake.send_text(chat, alice, "stream please")
    await fake.wait_for(lambda: any(c.error_code == 429 for c in fake.calls), timeout=10)
    await fake.wait_for(
        lambda: any(m.text == reply for m in fake.bot_messages(chat.id)), timeout=15
    )
    await fake.wait_idle(quiet=0.3)
    assert [m.text for m in fake.bot_messages(chat.id)] == [reply]
    assert [c for c in fake.calls if c.premature] == []


@pytest.mark.slow
async def test_real_telegram_limits_and_edit_interval(harness_factory) -> None:
    reply = " ".join(f"token{i}" for i in range(60))
    backend = ScriptedBackend(reply=reply, chunk_size=24, delay=0.1)
    bot: Harness = await harness_factory(
        backend=backend,
        limits=REAL_LIMITS,
        edit_interval=1.0,
        group_edit_interval=3.0,
        first_flush_delay=0.5,
    )
    fake = bot.fake
    alice = bot.user("Alice")
    chat = bot.private(alice)
    fake.send_text(chat, alice, "go")
    await fake.wait_for(
        lambda: any(m.text == reply for m in fake.bot_messages(chat.id)), timeout=15
    )
    writes = [c for c in fake.calls if c.method in ("sendMessage", "editMessageText")]
    assert len(writes) >= 3  # it streamed: a send and some edits
    gaps = [b.at - a.at for a, b in pairwise(writes)]
    assert min(gaps) >= 0.95
    assert [c for c in fake.calls if c.error_code == 429 or c.premature] == []


async def test_typing_only_when_tokens_stall(harness_factory) -> None:
    backend = ScriptedBackend(reply="slow answer", chunk_size=100, delay=0.9)
    bot: Harness = await harness_factory(backend=backend)
    alice = bot.user("Alice")
    chat = bot.private(alice)
    [reply] = await bot.say(chat, alice, "think hard")
    assert reply.text == "slow answer"
    typing = bot.fake.calls_to("sendChatAction")
    assert len(typing) == 1 and typing[0].params["action"] == "typing"
    [send] = bot.fake.calls_to("sendMessage")
    assert typing[0].at < send.at
    assert bot.fake.calls_to("editMessageText") == []


async def test_llm_failure_gives_plain_notice_and_next_message_works(bot: Harness) -> None:
    alice = bot.user("Alice")
    chat = bot.private(alice)
    bot.backend.failures.append(BackendUnavailable("connection refused"))
    [notice] = await bot.say(chat, alice, "hello?")
    assert notice.text == BackendUnavailable.user_message
    assert notice.entities == []
    assert bot.fake.calls_to("sendMessage")[-1].params.get("parse_mode") is None
    [reply] = await bot.say(chat, alice, "and now?")
    assert reply.text.startswith("echo: and now?")


async def test_html_refused_falls_back_to_plain_text(harness_factory) -> None:
    bot: Harness = await harness_factory(backend=ScriptedBackend(reply="**Bold** and `code`"))
    bot.fake.reject_html = True
    alice = bot.user("Alice")
    [reply] = await bot.say(bot.private(alice), alice, "format it")
    assert reply.text == "Bold and code"


async def test_unsupported_messages_bots_and_blocked_users(bot: Harness) -> None:
    fake = bot.fake
    alice = bot.user("Alice")
    chat = bot.private(alice)
    fake.send_other(chat, alice, "sticker")
    await fake.wait_for(lambda: len(fake.bot_messages(chat.id)) == 1)
    assert "text" in fake.bot_messages(chat.id)[0].text
    assert "sticker" in fake.bot_messages(chat.id)[0].text

    robot = FakeUser(424242, "Robot", "robot_bot", is_bot=True)
    fake.send_text(bot.private(robot), robot, "hello from a bot")
    await fake.wait_idle(quiet=0.4)
    assert fake.bot_messages(robot.id) == []

    carol = bot.user("Carol")
    fake.send_text(bot.private(carol), carol, "hi")  # creates the chat
    await fake.wait_for(lambda: len(fake.bot_messages(carol.id)) == 1)
    fake.block(carol.id)
    fake.send_text(bot.private(carol), carol, "are you there")
    await fake.wait_for(lambda: any(c.error_code == 403 for c in fake.calls))
    [reply] = await bot.say(chat, alice, "still working?")
    assert reply.text.startswith("echo: still working?")


async def test_commands_registered_once_forget_and_export(harness_factory) -> None:
    bot: Harness = await harness_factory()
    fake = bot.fake
    names = [c["command"] for c in fake.commands]
    assert {"help", "reset", "forget", "export", "stop"} <= set(names)
    assert "stats" not in names  # admin only: not in everyone's menu
    await bot.adapter.aclose()
    await harness_factory(fake=fake)
    assert len(fake.calls_to("setMyCommands")) == 1  # unchanged: not set again

    alice = bot.user("Alice")
    chat = bot.private(alice)
    await bot.say(chat, alice, "remember me")
    [doc] = await bot.say(chat, alice, "/export")
    assert doc.kind == "document" and doc.document is not None
    name, data = doc.document
    assert name and b"remember me" in data

    [question] = await bot.say(chat, alice, "/forget")
    keyboard = question.reply_markup["inline_keyboard"]  # type: ignore[index]
    yes = keyboard[0][0]["callback_data"]
    fake.press_button(question, alice, yes)
    await fake.wait_for(lambda: any("Done" in m.text for m in fake.bot_messages(chat.id)))
    await fake.wait_idle(quiet=0.25)
    assert fake.find_message(chat.id, question.message_id).reply_markup is None  # type: ignore[union-attr]
    [reply] = await bot.say(chat, alice, "who am I?")
    assert reply.text == "echo: who am I? | remembered: nothing"


async def test_redelivered_update_is_answered_once_after_restart(harness_factory) -> None:
    first: Harness = await harness_factory()
    fake = first.fake
    alice = first.user("Alice")
    chat = first.private(alice)
    await first.say(chat, alice, "only once please")
    update_id = fake.delivered_update_ids()[-1]
    await first.adapter.aclose()

    second: Harness = await harness_factory(fake=fake)
    fake.redeliver(update_id)
    await fake.wait_for(lambda: fake.pending_updates == 0)
    await fake.wait_idle(quiet=0.5)
    assert [m.text for m in fake.bot_messages(chat.id)] == [
        "echo: only once please | remembered: nothing"
    ]
    [reply] = await second.say(chat, alice, "next")
    assert reply.text == "echo: next | remembered: only once please"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_round_trip_checks_the_secret(harness_factory) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/tg/hook"
    bot: Harness = await harness_factory(
        webhook_url=url, webhook_listen=f"127.0.0.1:{port}", webhook_secret="s3cret_Token-1"
    )
    fake = bot.fake
    assert fake.webhook_url == url and fake.webhook_secret == "s3cret_Token-1"
    alice = bot.user("Alice")
    chat = bot.private(alice)
    [reply] = await bot.say(chat, alice, "via webhook")
    assert reply.text == "echo: via webhook | remembered: nothing"
    assert fake.calls_to("getUpdates") == []  # polling never runs alongside

    forged = {
        "update_id": 999999,
        "message": {
            "message_id": 77,
            "date": 0,
            "chat": {"id": alice.id, "type": "private"},
            "from": alice.to_dict(),
            "text": "forged",
        },
    }
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with session.post(url, json=forged, headers=headers) as response:
                assert response.status == 403
    await fake.wait_idle(quiet=0.4)
    assert len(fake.bot_messages(chat.id)) == 1


@pytest.mark.parametrize("secret", [None, "bad secret!"])
def test_webhook_settings_need_a_valid_secret(secret: str | None) -> None:
    from pydantic import ValidationError

    from adapters.telegram import TelegramSettings

    with pytest.raises(ValidationError, match=r"TELEGRAM_WEBHOOK_SECRET|webhook_secret"):
        TelegramSettings(
            _env_file=None,
            bot_token="1:x",
            webhook_url="https://bot.example.com/hook",
            webhook_secret=secret,
        )


async def test_streamed_reply_overflowing_a_message_continues_in_new_ones(harness_factory) -> None:
    from adapters.telegram.split import render_parts

    text = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor " * 30 for i in range(18))
    backend = ScriptedBackend(reply=text, chunk_size=700, delay=0.04)
    bot: Harness = await harness_factory(backend=backend)
    alice = bot.user("Alice")
    chat = bot.private(alice)
    expected = [p.text for p in render_parts(text)]
    assert len(expected) >= 3
    messages = await bot.say(chat, alice, "stream a lot", replies=len(expected))
    assert [m.text for m in messages] == expected  # nothing stale, lost or doubled
    assert len(bot.fake.calls_to("editMessageText")) >= 2  # it was shown while streaming


@pytest.mark.slow
async def test_bot_wide_flood_wait_is_honoured_in_every_chat(harness_factory) -> None:
    """A 429 for the bot-wide limit pauses calls to every chat, not only the one that got it."""
    reply = " ".join(f"word{i}" for i in range(30))
    backend = ScriptedBackend(reply=reply, chunk_size=30, delay=0.02)
    limits = FloodLimits(global_=(12, 1.0), bot_wide=True)
    bot: Harness = await harness_factory(backend=backend, limits=limits)
    fake = bot.fake
    users = [bot.user(f"User{i}") for i in range(25)]
    for round_ in range(2):
        for user in users:
            fake.send_text(bot.private(user), user, f"hello {round_}")
    expected = 2 * len(users)
    await fake.wait_for(
        lambda: sum(m.text == reply for u in users for m in fake.bot_messages(u.id)) == expected,
        timeout=60,
    )
    await fake.wait_idle(quiet=0.3)
    assert any(c.error_code == 429 for c in fake.calls)  # the limit was really reached
    assert [c for c in fake.calls if c.premature] == []


async def test_nul_and_lone_surrogate_are_answered(bot: Harness) -> None:
    """Telegram's JSON can carry ``\\u0000`` and a lone ``\\ud800``: kept as U+FFFD, answered."""
    alice = bot.user("Alice")
    chat = bot.private(alice)
    [reply] = await bot.say(chat, alice, "a\x00b\ud800c")
    assert reply.text == "echo: a\ufffdb\ufffdc | remembered: nothing"
    [reply] = await bot.say(chat, alice, "next")
    assert reply.text == "echo: next | remembered: a\ufffdb\ufffdc"
