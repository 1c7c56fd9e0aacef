"""End to end, as a user chats: the real discord.py client through the adapter, the real
engine and ``SqlMemoryStore`` on SQLite, the in-process scripted backend, the fake Discord."""

from __future__ import annotations

import logging

import pytest

from adapters.discord.split import split_message
from core.errors import BackendUnavailable
from tests.adapters.discord.helpers import fences_balanced, idle, same_text
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.scripted import ScriptedBackend


async def test_dm_round_trip(fake: FakeDiscord, make_bot) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "hello there")
    await idle(fake, bot)

    assert fake.bot_texts(dm) == ["echo: hello there | remembered: nothing"]
    (send,) = fake.sends
    assert send.allowed_mentions is not None and send.allowed_mentions["parse"] == []


async def test_mention_in_a_channel_is_answered_as_a_reply(fake: FakeDiscord, make_bot) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot()
    alice = fake.add_user("alice")

    asked = await fake.user_message(channel, alice, "what is up?", mention_bot=True)
    await idle(fake, bot)

    (reply,) = fake.bot_messages(channel)
    assert reply.content == "echo: what is up? | remembered: nothing"  # the mention is stripped
    assert reply.payload["message_reference"]["message_id"] == asked.id
    mentions = fake.sends[0].allowed_mentions
    assert mentions == {"parse": [], "replied_user": True}  # pings the asker, nobody else


async def test_unaddressed_and_bot_messages_are_ignored(fake: FakeDiscord, make_bot) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot()
    alice = fake.add_user("alice")
    other_bot = fake.add_user("otherbot", bot=True)

    await fake.user_message(channel, alice, "just chatting with friends")
    await fake.user_message(channel, other_bot, "hey chinwag, loop with me", mention_bot=True)
    await idle(fake, bot, quiet=0.3)

    assert fake.bot_messages(channel) == []
    assert not [c for c in fake.calls if c.route.startswith("POST /channels")]


async def test_reply_to_the_bot_continues_the_conversation(fake: FakeDiscord, make_bot) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot()
    alice = fake.add_user("alice")

    await fake.user_message(channel, alice, "my cat is Tom", mention_bot=True)
    await idle(fake, bot)
    (first,) = fake.bot_messages(channel)
    await fake.user_message(channel, alice, "what is my cat called?", reply_to=first.id)
    await idle(fake, bot)

    texts = fake.bot_texts(channel)
    assert texts[1] == "echo: what is my cat called? | remembered: my cat is Tom"


async def test_a_thread_keeps_its_own_conversation(fake: FakeDiscord, make_bot) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot()
    alice = fake.add_user("alice")
    await fake.user_message(channel, alice, "in the channel", mention_bot=True)
    await idle(fake, bot)
    thread = await fake.add_thread(channel, "side topic")

    await fake.user_message(thread, alice, "in the thread", mention_bot=True)
    await idle(fake, bot)
    await fake.user_message(thread, alice, "still in the thread", mention_bot=True)
    await idle(fake, bot)

    assert fake.bot_texts(thread) == [
        "echo: in the thread | remembered: nothing",
        "echo: still in the thread | remembered: in the thread",
    ]
    assert fake.bot_texts(channel) == ["echo: in the channel | remembered: nothing"]


async def test_answer_all_channels_answers_without_mention(fake: FakeDiscord, make_bot) -> None:
    guild = fake.add_guild()
    open_channel = fake.add_channel(guild, "ask-the-bot")
    quiet_channel = fake.add_channel(guild, "general")
    bot = await make_bot(answer_all_channels=open_channel)
    alice = fake.add_user("alice")

    await fake.user_message(open_channel, alice, "no mention needed")
    await fake.user_message(quiet_channel, alice, "not for the bot")
    await idle(fake, bot)

    assert fake.bot_texts(open_channel) == ["echo: no mention needed | remembered: nothing"]
    assert fake.bot_texts(quiet_channel) == []


async def test_memory_recall_keeps_two_users_apart(fake: FakeDiscord, make_bot) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot()
    alice, bob = fake.add_user("alice"), fake.add_user("bob")

    await fake.user_message(channel, alice, "I like tea", mention_bot=True)
    await fake.user_message(channel, bob, "I like coffee", mention_bot=True)
    await idle(fake, bot)
    await fake.user_message(channel, alice, "what do I like?", mention_bot=True)
    await fake.user_message(channel, bob, "and me?", mention_bot=True)
    await idle(fake, bot)

    texts = fake.bot_texts(channel)
    assert "echo: what do I like? | remembered: I like tea" in texts
    assert "echo: and me? | remembered: I like coffee" in texts


async def test_shared_memory_scope_shares_the_channel(fake: FakeDiscord, make_bot) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    bot = await make_bot(memory_scope="chat")
    alice, bob = fake.add_user("alice"), fake.add_user("bob")

    await fake.user_message(channel, alice, "the password is swordfish", mention_bot=True)
    await idle(fake, bot)
    await fake.user_message(channel, bob, "what is the password?", mention_bot=True)
    await idle(fake, bot)

    assert fake.bot_texts(channel)[1] == (
        "echo: bob: what is the password? | remembered: alice: the password is swordfish"
    )  # shared memory tells the model who said what


def _long_reply() -> str:
    code = "\n".join(f"    total += compute({i})  # step {i}" for i in range(30))
    sections = []
    for n in range(6):
        sections.append(f"## Part {n}\n\n" + ("Some explanation of the step. " * 12).strip())
        sections.append(f"```python\ndef part_{n}():\n    total = 0\n{code}\n    return total\n```")
    text = "\n\n".join(sections)
    assert len(text) >= 6000
    return text


async def test_a_long_reply_with_code_arrives_complete(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    reply = _long_reply()
    backend._reply = reply
    backend.chunk_size = 200
    backend.delay = 0.01
    bot = await make_bot(edit_interval=0.05)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "explain it all")
    await idle(fake, bot)

    parts = fake.bot_texts(dm)
    assert len(parts) >= 4
    assert all(0 < len(p) <= 2000 for p in parts)
    assert all(fences_balanced(p) for p in parts)
    assert same_text(parts, reply)
    assert parts == split_message(reply)
    # Whole blocks start a message rather than being cut.
    assert sum(p.startswith("```python\ndef part_") for p in parts) >= 2


async def test_tight_limits_429_lose_and_duplicate_nothing(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    reply = _long_reply()
    backend._reply = reply
    backend.chunk_size = 300
    backend.delay = 0.02
    # Discord's hidden limits: the bot learns of them only from 429s.
    fake.set_rate_limit(
        "edits",
        [
            "POST /channels/{channel_id}/messages",
            "PATCH /channels/{channel_id}/messages/{message_id}",
        ],
        limit=3,
        per=0.4,
        headers=False,
    )
    bot = await make_bot(edit_interval=0.0)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "go")
    await idle(fake, bot, quiet=0.5, timeout=30)

    assert fake.rate_limited >= 1
    parts = fake.bot_texts(dm)
    assert parts == split_message(reply)  # nothing lost, no message twice
    creates = [s for s in fake.sends if s.kind == "create"]
    assert len(creates) == len(parts)


@pytest.mark.slow
async def test_streaming_within_discords_real_limits(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    words = " ".join(f"word{i}" for i in range(500))
    backend._reply = words
    backend.chunk_size = 100
    backend.delay = 0.08  # about 3 s of streaming
    fake.real_limits()
    bot = await make_bot(edit_interval=1.0)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "talk a while")
    await idle(fake, bot, quiet=0.5, timeout=30)

    parts = fake.bot_texts(dm)
    assert parts == split_message(words)
    edits = [s for s in fake.sends if s.kind == "edit"]
    assert 2 <= len(edits) <= 6  # throttled to about one a second (unthrottled: ~40)
    assert fake.rate_limited == 0  # the throttle plus discord.py's headers never hit 429


async def test_short_reply_is_one_message_and_no_edit(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    bot = await make_bot(edit_interval=1.0)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "quick one")
    await idle(fake, bot)

    assert [s.kind for s in fake.sends] == ["create"]
    assert fake.typing == []  # the tokens came at once: no typing indicator


async def test_typing_shows_while_the_model_is_silent(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    backend.delay_for = lambda request: 0.8
    backend.chunk_size = 1000
    bot = await make_bot(typing_delay=0.3)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "think hard")
    await idle(fake, bot)

    assert len(fake.typing) == 1
    assert fake.bot_texts(dm) == ["echo: think hard | remembered: nothing"]


async def test_model_pings_notify_nobody(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild)
    victim = fake.add_user("victim")
    backend._reply = f"Attention @everyone and @here, <@{victim.id}> and <@&{guild}>! " * 3
    backend.chunk_size = 20
    backend.delay = 0.01
    bot = await make_bot(edit_interval=0.02)
    alice = fake.add_user("alice")

    await fake.user_message(channel, alice, "ping them all", mention_bot=True)
    await idle(fake, bot)

    assert "@everyone" in fake.bot_texts(channel)[0]  # the text is kept...
    assert len(fake.sends) >= 2
    for send in fake.sends:  # ...but no send or edit allows a notification
        mentions = send.allowed_mentions
        assert mentions is not None
        assert mentions["parse"] == []
        assert not mentions.get("users") and not mentions.get("roles")


async def test_llm_failure_is_told_and_the_next_message_works(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    backend.failures.append(BackendUnavailable("connection refused"))

    await fake.user_message(dm, alice, "first try")
    await idle(fake, bot)
    await fake.user_message(dm, alice, "second try")
    await idle(fake, bot)

    texts = fake.bot_texts(dm)
    assert texts[0] == BackendUnavailable.user_message
    assert texts[1].startswith("echo: second try")


async def test_stickers_and_embeds_get_a_clear_answer(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    # (Images, voice messages and files reach the engine as attachments: the media tests.)
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "", sticker=True)
    await idle(fake, bot)
    await fake.user_message(dm, alice, "", embed=True)
    await idle(fake, bot)

    texts = fake.bot_texts(dm)
    assert len(texts) == 2
    assert "sticker" in texts[0] and "text" in texts[0]
    assert "embed" in texts[1]
    assert backend.calls == []


async def test_a_redelivered_message_is_answered_once(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    asked = await fake.user_message(dm, alice, "only once please")
    await idle(fake, bot)
    await fake.redeliver(asked.id)
    await idle(fake, bot, quiet=0.3)

    assert fake.bot_texts(dm) == ["echo: only once please | remembered: nothing"]
    assert len(backend.calls) == 1


async def test_gateway_resume_delivers_missed_messages_once(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)
    await fake.user_message(dm, alice, "before the outage")
    await idle(fake, bot)

    await fake.drop_connections(code=4000)
    await fake.user_message(dm, alice, "during the outage")  # kept for the RESUME replay
    await fake.wait_for(lambda: fake.resumes == 1, timeout=20, what="a RESUME")
    await fake.wait_for(lambda: len(fake.bot_texts(dm)) == 2, timeout=10, what="the reply")
    await idle(fake, bot)

    assert fake.identifies == 1
    assert fake.bot_texts(dm) == [
        "echo: before the outage | remembered: nothing",
        "echo: during the outage | remembered: before the outage",
    ]


async def test_missing_permissions_are_logged_once_and_break_nothing(
    fake: FakeDiscord, make_bot, caplog: pytest.LogCaptureFixture
) -> None:
    guild = fake.add_guild()
    muted = fake.add_channel(guild, "read-only", deny_bot=1 << 11)  # SEND_MESSAGES denied
    open_channel = fake.add_channel(guild, "general")
    bot = await make_bot()
    alice = fake.add_user("alice")
    caplog.set_level(logging.WARNING, logger="adapters.discord")

    for _ in range(3):
        await fake.user_message(muted, alice, "can you hear me?", mention_bot=True)
    await fake.user_message(open_channel, alice, "and here?", mention_bot=True)
    await idle(fake, bot)

    warnings = [r for r in caplog.records if "missing Discord permissions" in r.getMessage()]
    assert len(warnings) == 1 and muted in warnings[0].getMessage()
    assert fake.bot_texts(open_channel) == ["echo: and here? | remembered: nothing"]
    assert fake.bot_texts(muted) == []


async def test_stop_ends_a_reply_and_keeps_what_was_shown(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    backend._reply = " ".join(f"w{i}" for i in range(400))
    backend.chunk_size = 10
    backend.delay = 0.02
    bot = await make_bot(edit_interval=0.05)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "count for me")
    await fake.wait_for(lambda: bool(fake.bot_texts(dm)), what="the first part")
    await fake.user_message(dm, alice, "/stop")
    await idle(fake, bot)

    shown = fake.bot_texts(dm)[0]
    assert 0 < len(shown) < len(backend._reply)
    assert backend._reply.startswith(shown)


async def test_a_message_deleted_mid_stream_is_posted_again(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    backend._reply = " ".join(f"w{i}" for i in range(200))
    backend.chunk_size = 40
    backend.delay = 0.03
    bot = await make_bot(edit_interval=0.05)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "count")
    await fake.wait_for(lambda: bool(fake.bot_messages(dm)), what="the first part")
    fake.bot_messages(dm)[0].deleted = True  # a moderator removes it while it streams
    await idle(fake, bot)

    assert fake.bot_texts(dm) == [backend._reply]
