"""Discord across processes: ingress acknowledges and queues, a REST-only worker answers.

The ingress adapter runs in front of a recording engine (what the ingress engine does with a
turn is the queue's business); the worker side is :class:`DiscordOutbound`, answering the
recorded turns the way a queue worker does, against the same fake Discord.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.channel import BUTTON_PREFIX
from adapters.discord.outbound import DiscordOutbound
from core.ports import FileSource
from core.queue import message_from, message_payload
from tests.adapters.discord.conftest import discord_settings
from tests.fakes.discord_server import FakeDiscord, FakeMessage
from tests.fakes.recording_engine import RecordingEngine


async def _pieces(*parts: str) -> AsyncIterator[str]:
    for part in parts:
        yield part


@pytest.fixture
def channel(fake: FakeDiscord) -> str:
    """A server channel, there before the bot connects (Discord sends its server at READY)."""
    return fake.add_channel(fake.add_guild())


@pytest.fixture
async def ingress(
    fake: FakeDiscord, channel: str, tmp_path: Path
) -> AsyncIterator[tuple[DiscordAdapter, RecordingEngine]]:
    engine = RecordingEngine("ingress")
    engine.answer = False  # ingress only queues: the worker answers
    adapter = DiscordAdapter(discord_settings(fake), engine, data_dir=tmp_path, ingress=True)
    await adapter.start()
    yield adapter, engine
    await adapter.aclose()


@pytest.fixture
async def worker(fake: FakeDiscord) -> AsyncIterator[DiscordOutbound]:
    outbound = DiscordOutbound(discord_settings(fake))
    await outbound.start_outbound()
    yield outbound
    await outbound.aclose()


async def _until(check: object, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_a_worker_logs_in_over_rest_only(fake: FakeDiscord) -> None:
    outbound = DiscordOutbound(discord_settings(fake))
    await outbound.start_outbound()
    await outbound.start_outbound()  # idempotent
    try:
        assert fake.identifies == 0 and not fake.connected()  # no gateway
        assert fake.command_syncs == 0  # ingress alone registers slash commands
    finally:
        await outbound.aclose()
        await outbound.aclose()


async def test_a_worker_streams_the_reply_to_the_asker_and_fetches_their_file(
    fake: FakeDiscord,
    channel: str,
    ingress: tuple[DiscordAdapter, RecordingEngine],
    worker: DiscordOutbound,
    tmp_path: Path,
) -> None:
    _, engine = ingress
    user = fake.add_user("alice")
    asked = await fake.user_message(
        channel,
        user,
        "read this",
        mention_bot=True,
        files=[("notes.txt", b"hello file", "text/plain")],
    )
    await _until(lambda: engine.messages)
    # The turn crosses the queue as JSON, as it does between processes.
    queued = message_from(message_payload(engine.messages[0]))
    out = worker.channel_for(queued)
    assert isinstance(out, FileSource)
    size = await out.download(queued.attachments[0], tmp_path / "notes.txt")
    assert size == 10 and (tmp_path / "notes.txt").read_bytes() == b"hello file"
    ids = await out.stream_reply(_pieces("Hello ", "Alice, ", "here it is."))
    await fake.settle()
    assert fake.bot_texts(channel) == ["Hello Alice, here it is."]
    first = next(s for s in fake.sends if s.kind == "create")
    assert first.reply_to == asked.id  # a reply to the asker, as in one process
    # A retried turn edits the same message instead of posting a second one.
    await worker.resume(queued.chat_id, queued.thread_id, ids).stream_reply(
        _pieces("Hello Alice, here it is, complete.")
    )
    await fake.settle()
    assert fake.bot_texts(channel) == ["Hello Alice, here it is, complete."]


async def test_a_history_file_reaches_a_server_member_by_direct_message(
    fake: FakeDiscord,
    channel: str,
    ingress: tuple[DiscordAdapter, RecordingEngine],
    worker: DiscordOutbound,
) -> None:
    _, engine = ingress
    user = fake.add_user("carol")
    await fake.user_message(channel, user, "export", mention_bot=True)
    await _until(lambda: engine.messages)
    await worker.channel_for(engine.messages[0]).send_file("history.md", b"# history")
    await fake.settle()
    dm = fake.dm_channel(user)
    assert [f for m in fake.bot_messages(dm) for f in m.files] == [("history.md", b"# history")]
    assert fake.bot_texts(channel) == ["I sent it to you in a direct message."]


def _original(fake: FakeDiscord, token: str) -> FakeMessage:
    record = fake.interactions[token]
    assert record.original_message_id is not None
    return fake.messages[record.original_message_id]


async def test_a_slash_command_is_acknowledged_at_once_and_answered_by_the_worker(
    fake: FakeDiscord,
    channel: str,
    ingress: tuple[DiscordAdapter, RecordingEngine],
    worker: DiscordOutbound,
) -> None:
    _, engine = ingress
    user = fake.add_user("dave")
    record = await fake.slash(channel, user, "help")
    await _until(lambda: engine.messages)
    assert [r["type"] for r in record.responses] == [5]  # deferred: "thinking...", in time
    assert record.responses[0]["data"]["flags"] & 64  # private, as in one process
    queued = message_from(message_payload(engine.messages[0]))
    assert queued.text == "/help" and queued.reply_via == record.token
    assert record.token not in repr(queued)  # the token never reaches a log line
    await worker.channel_for(queued).send_text("Commands: /help")
    await fake.settle()
    answer = _original(fake, record.token)
    assert answer.content == "Commands: /help" and answer.ephemeral
    assert fake.bot_texts(channel) == ["Commands: /help"]  # one message: the answer


async def test_a_message_that_could_not_be_queued_is_answered_send_again(
    fake: FakeDiscord, channel: str, ingress: tuple[DiscordAdapter, RecordingEngine]
) -> None:
    _, engine = ingress
    engine.fail = True  # the queue's database is down: the gateway will not send it again
    user = fake.add_user("ivy")
    asked = await fake.user_message(channel, user, "hello", mention_bot=True)
    await fake.wait_for(lambda: bool(fake.bot_texts(channel)), what="a notice")
    assert fake.bot_texts(channel) == [
        "I couldn't take that message just now. Please send it again in a moment."
    ]
    assert fake.sends[0].reply_to == asked.id


async def test_a_command_that_could_not_be_queued_is_answered_try_again(
    fake: FakeDiscord, channel: str, ingress: tuple[DiscordAdapter, RecordingEngine]
) -> None:
    _, engine = ingress
    engine.fail = True  # the queue's database is down
    user = fake.add_user("erin")
    record = await fake.slash(channel, user, "help")
    await _until(lambda: record.original_message_id is not None)
    await fake.settle()
    assert "try again" in _original(fake, record.token).content


async def _question(
    fake: FakeDiscord, engine: RecordingEngine, worker: DiscordOutbound, channel: str, asker: Any
) -> FakeMessage:
    await fake.user_message(channel, asker, "turn on the light", mention_bot=True)
    await _until(lambda: engine.messages)
    await worker.channel_for(engine.messages[-1]).ask_confirmation("Run this?", "t:000000000001")
    await fake.settle()
    return fake.bot_messages(channel)[-1]


async def test_the_askers_press_is_queued_before_the_buttons_go(
    fake: FakeDiscord,
    channel: str,
    ingress: tuple[DiscordAdapter, RecordingEngine],
    worker: DiscordOutbound,
) -> None:
    _, engine = ingress
    user = fake.add_user("fay")
    question = await _question(fake, engine, worker, channel, user)
    yes = f"{BUTTON_PREFIX}|{user.id}|y|t:000000000001"
    engine.fail = True  # queueing fails: the buttons stay, the user is told to press again
    record = await fake.press(question.id, yes, user)
    await _until(lambda: record.followup_ids)
    await fake.settle()
    assert question.components  # still there
    assert "press again" in fake.messages[record.followup_ids[0]].content
    engine.fail = False
    record = await fake.press(question.id, yes, user)
    await _until(lambda: engine.actions)
    await fake.settle()
    assert [r["type"] for r in record.responses] == [6]  # acknowledged without a change
    action = engine.actions[0]
    assert (action.user_id, action.accepted, action.reply_via) == (user.id, True, None)
    assert question.content.endswith("Yes.") and not question.components
    # The worker goes on in the channel, for everyone who saw the question.
    await worker.channel_for_action(action).send_text("✅ light.kitchen → on")
    await fake.settle()
    assert fake.bot_texts(channel)[-1] == "✅ light.kitchen → on"


async def test_someone_elses_press_is_refused_to_them_alone(
    fake: FakeDiscord,
    channel: str,
    ingress: tuple[DiscordAdapter, RecordingEngine],
    worker: DiscordOutbound,
) -> None:
    _, engine = ingress
    asker, other = fake.add_user("gus"), fake.add_user("hal")
    question = await _question(fake, engine, worker, channel, asker)
    record = await fake.press(question.id, f"{BUTTON_PREFIX}|{asker.id}|y|t:000000000001", other)
    await _until(lambda: engine.actions)
    assert [r["type"] for r in record.responses] == [5]  # deferred, privately
    action = engine.actions[0]
    assert action.user_id == other.id and action.reply_via == record.token
    await worker.channel_for_action(action).send_text("Only the person who asked can answer.")
    await fake.settle()
    refusal = _original(fake, record.token)
    assert refusal.content == "Only the person who asked can answer." and refusal.ephemeral
    assert question.components  # the asker can still answer
