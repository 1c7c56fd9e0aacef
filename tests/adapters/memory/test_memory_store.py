"""Contract tests of the ``MemoryStore`` port, run over every implementation.

Each test runs on SQLite, on PostgreSQL (with ``CHINWAG_TEST_POSTGRES_URL``) and on
``InMemoryStore`` (the ``store`` fixtures are parametrised). SQL-only behaviour is in
``test_sql_memory_store.py``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from core.errors import DuplicateMessage, StoreError
from core.ports import MemoryStore
from core.types import (
    ConversationKey,
    MessageStatus,
    NewMessage,
    Preferences,
    Role,
    UsageRecord,
)
from tests.adapters.memory.conftest import Clock, NewStore
from tests.adapters.memory.store_helpers import BOT, bot_msg, private, shared, user_msg

# --- conversations ------------------------------------------------------------------------


async def test_implements_the_port(store: MemoryStore) -> None:
    assert isinstance(store, MemoryStore)


async def test_current_conversation_is_created_once_and_new_conversation_replaces_it(
    store: MemoryStore, clock: Clock
) -> None:
    first = await store.current_conversation(private())
    assert await store.current_conversation(private()) == first
    assert first.key == private()
    assert first.created_at == clock.now and first.created_at.tzinfo is not None

    clock.advance(minutes=5)
    second = await store.new_conversation(private())
    assert second.id != first.id
    assert await store.current_conversation(private()) == second
    # the old conversation keeps its messages
    await store.append_messages(first.id, [user_msg("old")])
    assert [m.content for m in await store.recent_messages(first.id, limit=5)] == ["old"]
    assert await store.recent_messages(second.id, limit=5) == []


async def test_slots_are_separate_and_none_parts_round_trip(store: MemoryStore) -> None:
    keys = [
        ConversationKey(BOT, "telegram", "c", None, None),
        ConversationKey(BOT, "telegram", "c", "t1", None),
        ConversationKey(BOT, "telegram", "c", None, "u"),
        ConversationKey(BOT, "telegram", "c", "t1", "u"),
        ConversationKey(BOT, "discord", "c", None, None),
    ]
    conversations = [await store.current_conversation(k) for k in keys]
    assert len({c.id for c in conversations}) == len(keys)
    for key, conversation in zip(keys, conversations, strict=True):
        assert conversation.key == key
        assert (await store.current_conversation(key)).id == conversation.id


async def test_concurrent_first_use_of_a_slot_makes_one_conversation(
    store: MemoryStore,
) -> None:
    found = await asyncio.gather(*(store.current_conversation(private("x")) for _ in range(20)))
    assert len({c.id for c in found}) == 1


# --- messages -----------------------------------------------------------------------------


async def test_append_returns_stored_messages_with_consecutive_seq(
    store: MemoryStore, clock: Clock
) -> None:
    conv = await store.current_conversation(private())
    stored = await store.append_messages(
        conv.id,
        [
            NewMessage(
                role=Role.USER,
                content="héllo ✓",
                author_id="u1",
                token_count=3,
                tokenizer="o200k_base",
                extra={"author_name": "Ann", "attachments": [1, 2]},
            ),
            bot_msg("", MessageStatus.IN_PROGRESS),
        ],
    )
    assert [m.seq for m in stored] == [1, 2]
    more = await store.append_messages(conv.id, [bot_msg("a"), bot_msg("b"), bot_msg("c")])
    assert [m.seq for m in more] == [3, 4, 5]

    first = stored[0]
    assert first.role is Role.USER and first.status is MessageStatus.COMPLETE
    assert (first.author_id, first.token_count, first.tokenizer) == ("u1", 3, "o200k_base")
    assert first.extra == {"author_name": "Ann", "attachments": [1, 2]}
    assert first.created_at == clock.now
    # what is read back equals what append returned
    read = await store.recent_messages(conv.id, limit=10)
    assert read[-1] == first
    assert read[-1].created_at.tzinfo is not None
    assert read[-1].created_at.utcoffset() == timedelta(0)


async def test_append_nothing_and_to_unknown_conversation(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    assert await store.append_messages(conv.id, []) == []
    with pytest.raises(StoreError):
        await store.append_messages(987654, [user_msg("lost?")])


async def test_extra_that_is_not_json_is_refused_clearly(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    with pytest.raises(ValueError, match="JSON"):
        await store.append_messages(
            conv.id, [NewMessage(role=Role.USER, content="x", extra={"bad": object()})]
        )
    assert await store.recent_messages(conv.id, limit=5) == []


async def test_seq_is_monotonic_under_50_concurrent_appenders(store: MemoryStore) -> None:
    same = await store.current_conversation(private("same"))
    others = [await store.current_conversation(private(f"o{i}")) for i in range(10)]

    async def append_same(i: int) -> list[int]:
        stored = await store.append_messages(same.id, [user_msg(f"q{i}", "same"), bot_msg(f"a{i}")])
        return [m.seq for m in stored]

    async def append_other(i: int) -> list[int]:
        conv = others[i % len(others)]
        stored = await store.append_messages(conv.id, [user_msg(f"q{i}", conv.key.chat_id)])
        return [m.seq for m in stored]

    results = await asyncio.gather(
        *(append_same(i) for i in range(50)), *(append_other(i) for i in range(50))
    )
    same_seqs = [s for r in results[:50] for s in r]
    for pair in results[:50]:  # one call's messages are consecutive
        assert pair[1] == pair[0] + 1
    assert sorted(same_seqs) == list(range(1, 101))

    history = await store.recent_messages(same.id, limit=200)
    assert [m.seq for m in history] == list(range(100, 0, -1))
    # each call's pair stays together, question before answer
    for newer, older in zip(history[0::2], history[1::2], strict=True):
        assert older.content.replace("q", "") == newer.content.replace("a", "")
    for conv in others:
        msgs = await store.recent_messages(conv.id, limit=100)
        assert [m.seq for m in msgs] == list(range(5, 0, -1))


async def test_duplicate_platform_id_fails_only_its_own_call(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    await store.append_messages(conv.id, [user_msg("first", "u1", "p1")])

    convs = [await store.current_conversation(private(f"c{i}")) for i in range(20)]
    calls = [
        store.append_messages(c.id, [user_msg(f"m{i}", c.key.chat_id, f"x{i}"), bot_msg("r")])
        for i, c in enumerate(convs)
    ]
    # queued together with the others, so committed in the same group
    calls.insert(7, store.append_messages(conv.id, [bot_msg("lost"), user_msg("dup", "u1", "p1")]))
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[7], DuplicateMessage)
    assert results[7].existing == await store.find_by_platform_message(BOT, "telegram", "u1", "p1")
    assert sum(isinstance(r, BaseException) for r in results) == 1
    for i, c in enumerate(convs):
        found = await store.find_by_platform_message(BOT, "telegram", c.key.chat_id, f"x{i}")
        assert found is not None and found.content == f"m{i}"
        assert len(await store.recent_messages(c.id, limit=10)) == 2
    # nothing of the failed call is stored and its seqs were not used up
    assert [m.content for m in await store.recent_messages(conv.id, limit=10)] == ["first"]
    nxt = await store.append_messages(conv.id, [bot_msg("next")])
    assert nxt[0].seq == 2


async def test_a_platform_id_repeated_within_one_call_stores_nothing(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    with pytest.raises(StoreError):
        await store.append_messages(conv.id, [user_msg("a", "u1", "p"), user_msg("b", "u1", "p")])
    assert await store.recent_messages(conv.id, limit=5) == []
    assert await store.find_by_platform_message(BOT, "telegram", "u1", "p") is None
    (stored,) = await store.append_messages(conv.id, [user_msg("c", "u1", "p")])
    assert stored.seq == 1


async def test_nul_and_lone_surrogates_are_stored_as_replacement_characters(
    store: MemoryStore,
) -> None:
    """PostgreSQL refuses NUL and no driver encodes a lone surrogate: every store keeps both
    as U+FFFD, whether they arrive in an appended message or in a finished reply."""
    conv = await store.current_conversation(private())
    _, pending = await store.append_messages(
        conv.id, [user_msg("a\x00b\ud800c"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    await store.finish_message(
        pending.id, content="ok \udfff\x00 \ud83d\ude00", status=MessageStatus.COMPLETE
    )
    contents = [m.content for m in await store.recent_messages(conv.id, limit=5)]
    assert contents == ["ok \ufffd\ufffd \U0001f600", "a\ufffdb\ufffdc"]  # newest first


async def test_finish_message_sets_final_state_and_platform_ids(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    user, pending = await store.append_messages(
        conv.id, [user_msg("q", "u1", "10"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    # in-progress and empty messages are not usable in a prompt
    assert [m.id for m in await store.recent_messages(conv.id, limit=5)] == [user.id]

    await store.finish_message(
        pending.id,
        content="the answer",
        status=MessageStatus.COMPLETE,
        token_count=2,
        tokenizer="tk",
        platform_chat_id="u1",
        platform_message_ids=["11", "12"],
    )
    latest = (await store.recent_messages(conv.id, limit=1))[0]
    assert (latest.id, latest.content, latest.status) == (pending.id, "the answer", "complete")
    assert (latest.token_count, latest.tokenizer) == (2, "tk")
    for pid in ("11", "12"):
        assert await store.find_by_platform_message(BOT, "telegram", "u1", pid) == latest
    assert await store.find_by_platform_message(BOT, "telegram", "u1", "10") == user
    assert await store.find_by_platform_message(BOT, "telegram", "other", "10") is None
    assert await store.find_by_platform_message(BOT, "discord", "u1", "10") is None

    # a platform id already taken: the message stays as it was
    _, other = await store.append_messages(
        conv.id, [user_msg("q2"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    with pytest.raises(StoreError):
        await store.finish_message(
            other.id, content="x", status=MessageStatus.COMPLETE, platform_message_ids=["12"]
        )
    history = await store.recent_messages(conv.id, limit=10)
    assert other.id not in [m.id for m in history]


async def test_finish_message_of_a_forgotten_message_is_dropped(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    _, pending = await store.append_messages(
        conv.id, [user_msg("q"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    await store.forget_user(BOT, "telegram", "u1")
    day = date(2026, 3, 14)
    await store.finish_message(
        pending.id,
        content="late",
        status=MessageStatus.COMPLETE,
        platform_message_ids=["9"],
        usage=UsageRecord(BOT, "telegram", "u1", day, prompt_tokens=4, completion_tokens=2),
    )
    assert await store.find_by_platform_message(BOT, "telegram", "u1", "9") is None
    # the tokens were spent: they count against the quota all the same
    assert (await store.get_usage(BOT, "telegram", "u1", day)).tokens_total == 6


async def test_a_failed_finish_message_adds_no_usage(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    _, pending = await store.append_messages(
        conv.id, [user_msg("q", "u1", "taken"), bot_msg("", MessageStatus.IN_PROGRESS)]
    )
    day = date(2026, 3, 14)
    with pytest.raises(StoreError):
        await store.finish_message(
            pending.id,
            content="answer",
            status=MessageStatus.COMPLETE,
            platform_chat_id="u1",
            platform_message_ids=["taken"],
            usage=UsageRecord(BOT, "telegram", "u1", day, prompt_tokens=4, completion_tokens=2),
        )
    assert (await store.get_usage(BOT, "telegram", "u1", day)).tokens_total == 0
    assert [m.content for m in await store.recent_messages(conv.id, limit=5)] == ["q"]


async def test_recent_messages_filters_orders_and_pages(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    msgs = [user_msg(f"m{i}") for i in range(1, 31)]
    msgs[4] = bot_msg("failed", MessageStatus.FAILED)
    msgs[9] = bot_msg("", MessageStatus.INTERRUPTED)
    msgs[14] = bot_msg("half an answer", MessageStatus.INTERRUPTED)
    msgs[19] = bot_msg("still going", MessageStatus.IN_PROGRESS)
    msgs[24] = bot_msg("cut by the token limit", MessageStatus.CUT)  # kept: "continue" needs it
    await store.append_messages(conv.id, msgs)

    newest = await store.recent_messages(conv.id, limit=5)
    assert [m.seq for m in newest] == [30, 29, 28, 27, 26]

    pages: list[int] = []
    before: int | None = None
    while page := await store.recent_messages(conv.id, limit=7, before_seq=before):
        pages.extend(m.seq for m in page)
        before = page[-1].seq
    assert pages == [s for s in range(30, 0, -1) if s not in (5, 10, 20)]
    assert await store.recent_messages(conv.id, limit=0) == []
    assert await store.recent_messages(conv.id, limit=3, before_seq=1) == []


async def test_reply_to_finds_the_first_assistant_message_after(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    q1, q2, a2, q3 = await store.append_messages(
        conv.id, [user_msg("q1"), user_msg("q2"), bot_msg("a2"), user_msg("q3")]
    )
    assert await store.reply_to(q1) == a2
    assert await store.reply_to(q2) == a2
    assert await store.reply_to(q3) is None


async def test_preferences_default_replace_and_survive_reset(store: MemoryStore) -> None:
    key = private()
    assert await store.get_preferences(key) == Preferences()
    await store.save_preferences(key, Preferences(persona="Be brief.", model="gpt-4o"))
    await store.new_conversation(key)
    assert await store.get_preferences(key) == Preferences(persona="Be brief.", model="gpt-4o")
    await store.save_preferences(key, Preferences(model="llama3"))
    assert await store.get_preferences(key) == Preferences(persona=None, model="llama3")
    assert await store.get_preferences(shared()) == Preferences()
    threaded = ConversationKey(BOT, "telegram", "u1", "t9", "u1")
    assert await store.get_preferences(threaded) == Preferences()


# --- usage, forget, export, stats -----------------------------------------------------------


async def test_usage_counts_per_day_and_in_total(store: MemoryStore) -> None:
    d1, d2 = date(2026, 3, 13), date(2026, 3, 14)
    await store.add_usage(BOT, "telegram", "u1", d1, prompt_tokens=100, completion_tokens=20)
    await store.add_usage(BOT, "telegram", "u1", d2, prompt_tokens=10, completion_tokens=5)
    await store.add_usage(
        BOT, "telegram", "u1", d2, prompt_tokens=1, completion_tokens=2, messages=3
    )
    await store.add_usage(BOT, "telegram", "u2", d2, prompt_tokens=1000, completion_tokens=1)
    usage = await store.get_usage(BOT, "telegram", "u1", d2)
    assert (usage.tokens_today, usage.tokens_total, usage.messages_today) == (18, 138, 4)
    unknown = await store.get_usage(BOT, "telegram", "nobody", d2)
    assert (unknown.tokens_today, unknown.tokens_total, unknown.messages_today) == (0, 0, 0)
    with pytest.raises(ValueError, match="negative"):
        await store.add_usage(BOT, "telegram", "u1", d2, prompt_tokens=-1, completion_tokens=0)


async def test_usage_survives_forget(store: MemoryStore) -> None:
    day = date(2026, 3, 14)
    await store.add_usage(BOT, "telegram", "u1", day, prompt_tokens=7, completion_tokens=3)
    conv = await store.current_conversation(private())
    await store.append_messages(conv.id, [user_msg("q")])
    assert await store.forget_user(BOT, "telegram", "u1") == 1
    assert (await store.get_usage(BOT, "telegram", "u1", day)).tokens_total == 10
    (stats,) = await store.stats(BOT, day)
    assert (stats.users_total, stats.tokens_total, stats.messages_total) == (1, 10, 0)


async def test_forget_user_deletes_their_data_and_only_theirs(store: MemoryStore) -> None:
    own = await store.current_conversation(private("u1"))
    older = await store.new_conversation(private("u1"))
    other = await store.current_conversation(private("u2"))
    group = await store.current_conversation(shared("g1"))
    await store.append_messages(own.id, [user_msg("secret", "u1", "1"), bot_msg("ok")])
    await store.append_messages(older.id, [user_msg("older secret", "u1")])
    await store.append_messages(other.id, [user_msg("u2 private", "u2", "2")])
    await store.append_messages(
        group.id,
        [
            user_msg("u2 first", "u2"),
            bot_msg("reply to u2 first"),
            user_msg("u1 in group", "u1", "3"),
            bot_msg("echo: u1 in group"),
            bot_msg("and more for u1"),
            user_msg("u2 in group", "u2", "4"),
            bot_msg("hi u2"),
        ],
    )
    await store.save_preferences(private("u1"), Preferences(persona="mine"))
    await store.save_preferences(shared("g1"), Preferences(persona="group's"))

    # 3 in own conversations, 1 own message in the group and the 2 replies to it
    assert await store.forget_user(BOT, "telegram", "u1") == 6

    assert await store.export_user(BOT, "telegram", "u1") == []
    assert await store.find_by_platform_message(BOT, "telegram", "u1", "1") is None
    assert await store.find_by_platform_message(BOT, "telegram", "g1", "3") is None
    assert await store.get_preferences(private("u1")) == Preferences()
    assert await store.get_preferences(shared("g1")) == Preferences(persona="group's")
    assert [m.content for m in await store.recent_messages(group.id, limit=10)] == [
        "hi u2",
        "u2 in group",
        "reply to u2 first",
        "u2 first",
    ]
    assert [m.content for m in await store.recent_messages(other.id, limit=10)] == ["u2 private"]
    fresh = await store.current_conversation(private("u1"))
    assert fresh.id not in (own.id, older.id)
    with pytest.raises(ValueError, match="user id"):
        await store.forget_user(BOT, "telegram", "")


async def test_export_user_gives_own_conversations_and_own_shared_messages(
    store: MemoryStore, clock: Clock
) -> None:
    group = await store.current_conversation(shared("g1"))
    clock.advance(minutes=1)
    first = await store.current_conversation(private("u1"))
    clock.advance(minutes=1)
    second = await store.new_conversation(private("u1"))
    quiet_group = await store.current_conversation(shared("g2"))
    await store.append_messages(second.id, [user_msg("s1"), bot_msg("s2")])
    await store.append_messages(first.id, [user_msg("f1"), bot_msg("f2")])
    await store.append_messages(group.id, [user_msg("g-mine"), user_msg("g-theirs", "u2")])
    await store.append_messages(group.id, [bot_msg("g-bot"), user_msg("g-mine-2")])
    await store.append_messages(quiet_group.id, [user_msg("not me", "u3")])
    await store.append_messages(
        (await store.current_conversation(private("u1", platform="discord"))).id,
        [user_msg("other platform")],
    )

    exported = await store.export_user(BOT, "telegram", "u1")
    assert [e.conversation.id for e in exported] == [group.id, first.id, second.id]
    assert [m.content for m in exported[0].messages] == ["g-mine", "g-mine-2"]
    assert exported[0].conversation.key == shared("g1")
    assert [m.content for m in exported[1].messages] == ["f1", "f2"]
    assert [m.content for m in exported[2].messages] == ["s1", "s2"]
    assert await store.export_user(BOT, "telegram", "nobody") == []


async def test_stats_count_per_platform_in_total_and_on_the_day(
    store: MemoryStore, clock: Clock
) -> None:
    yesterday = clock.now.date() - timedelta(days=1)
    today = clock.now.date()
    clock.advance(days=-1)
    old = await store.current_conversation(private("u1"))
    await store.append_messages(old.id, [user_msg("a"), bot_msg("b")])
    await store.add_usage(BOT, "telegram", "u1", yesterday, prompt_tokens=10, completion_tokens=5)
    clock.advance(days=1)
    new = await store.new_conversation(private("u1"))
    await store.append_messages(new.id, [user_msg("c"), bot_msg("d"), user_msg("e")])
    await store.add_usage(BOT, "telegram", "u2", today, prompt_tokens=1, completion_tokens=1)
    dconv = await store.current_conversation(private("d1", platform="discord"))
    await store.append_messages(dconv.id, [user_msg("x", "d1")])
    await store.add_usage(BOT, "discord", "d1", today, prompt_tokens=3, completion_tokens=4)
    await store.add_usage("otherbot", "telegram", "u9", today, prompt_tokens=9, completion_tokens=9)

    stats = {s.platform: s for s in await store.stats(BOT, today)}
    assert list(stats) == ["discord", "telegram"]
    tg = stats["telegram"]
    assert (tg.users_total, tg.users_today) == (2, 1)
    assert (tg.conversations_total, tg.conversations_today) == (2, 1)
    assert (tg.messages_total, tg.messages_today) == (5, 3)
    assert (tg.tokens_total, tg.tokens_today) == (17, 2)
    dc = stats["discord"]
    assert (dc.users_total, dc.messages_today, dc.tokens_today) == (1, 1, 7)
    assert await store.stats("nobot", today) == []


# --- lifecycle and robustness -------------------------------------------------------------


async def test_lifecycle_is_idempotent_and_misuse_is_clear(new_store: NewStore) -> None:
    store = new_store()
    with pytest.raises(RuntimeError, match=r"used before start\(\)"):
        await store.current_conversation(private())
    await store.start()
    await store.start()
    await store.current_conversation(private())
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match=r"used after aclose\(\)"):
        await store.current_conversation(private())
    with pytest.raises(RuntimeError, match=r"start\(\) after aclose\(\)"):
        await store.start()


async def test_timestamps_are_utc_whatever_the_clock_zone(new_store: NewStore) -> None:
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2026, 3, 15, 1, 30, tzinfo=tokyo)
    store = new_store(clock=lambda: moment)
    await store.start()
    conv = await store.current_conversation(private())
    await store.append_messages(conv.id, [user_msg("x")])
    read = (await store.recent_messages(conv.id, limit=1))[0]
    assert read.created_at == moment
    assert read.created_at.tzinfo == UTC
    assert read.created_at.hour == 16


async def test_a_write_cancelled_before_its_turn_stores_nothing(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    tasks = [
        asyncio.create_task(store.append_messages(conv.id, [user_msg(f"m{i}")])) for i in range(20)
    ]
    await asyncio.sleep(0)  # all queued (SQLite) or waiting for a connection (PostgreSQL)
    tasks[-1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[-1], asyncio.CancelledError)
    history = await store.recent_messages(conv.id, limit=50)
    assert sorted(m.content for m in history) == sorted(f"m{i}" for i in range(19))
    assert sorted(m.seq for m in history) == list(range(1, 20))


async def test_every_read_path_sees_the_same_message(store: MemoryStore) -> None:
    # On SQLite the hot writes and the redelivery lookup use sqlite3 directly; the history
    # read uses SQLAlchemy. Both must agree to the microsecond, JSON and timezone included.
    conv = await store.current_conversation(private())
    written = NewMessage(
        role=Role.USER,
        content="Grüße, Zoë 👋",
        author_id="u1",
        token_count=7,
        tokenizer="o200k_base",
        extra={"author_name": "Zoë", "attachments": [{"kind": "photo"}]},
        platform_message_ids=("m-1",),
    )
    (appended,) = await store.append_messages(conv.id, [written])
    (from_history,) = await store.recent_messages(conv.id, limit=5)
    by_platform_id = await store.find_by_platform_message(BOT, "telegram", "u1", "m-1")
    assert appended == from_history == by_platform_id
    assert from_history.created_at.tzinfo is not None
    assert from_history.extra == {"author_name": "Zoë", "attachments": [{"kind": "photo"}]}
