"""Users, limits and privacy: allowlists, admins, rate limit, quota, /forget, /stats."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.notices import REFUSAL
from core.settings import AccessSettings
from core.types import IncomingAction
from tests.core.conftest import dm
from tests.fakes.channel import RecordingChannel


async def test_allowlisted_user_passes_stranger_refused_once_and_nothing_stored(
    make_engine, store, backend
):
    engine = make_engine(allowed_users=["test:alice"])
    ok, stranger = RecordingChannel(), RecordingChannel()
    await engine.handle(dm("hi", "alice"), ok)
    for n in range(5):
        await engine.handle(dm(f"let me in {n}", "mallory"), stranger)
    await engine.handle(dm("/help", "mallory"), stranger)
    assert ok.replies == ["echo: hi | remembered: nothing"]
    assert stranger.texts == [REFUSAL]  # one refusal, no reply storm
    assert len(backend.calls) == 1
    assert await store.export_user("testbot", "test", "mallory") == []


async def test_allowed_chat_lets_every_member_in(make_engine):
    engine = make_engine(allowed_chats=["test:club"])
    out = RecordingChannel()
    await engine.handle(dm("hello", "zoe", chat_id="club", is_private=False), out)
    await engine.handle(dm("hello", "zoe"), out)  # her private chat is not listed
    assert out.texts == ["echo: hello | remembered: nothing", REFUSAL]


async def test_allowlist_applies_per_platform(make_engine):
    engine = make_engine(allowed_users=["telegram:42"])
    out = RecordingChannel()
    await engine.handle(dm("hi", "42", platform="discord"), out)
    assert out.texts == [REFUSAL]


def test_malformed_allowlist_entry_is_a_config_error():
    with pytest.raises(ValueError, match="platform:id"):
        AccessSettings(_env_file=None, allowed_users=["12345"])


async def test_admin_only_command_refused_to_others(make_engine):
    engine = make_engine(admin_users=["test:root"])
    out = RecordingChannel()
    await engine.handle(dm("/stats", "alice"), out)
    assert out.notices == ["/stats is for the bot's admins only."]


async def test_stats_for_admin(make_engine):
    engine = make_engine(admin_users=["test:root"])
    out = RecordingChannel()
    await engine.handle(dm("hello", "alice"), out)
    await engine.handle(dm("hello", "bob"), out)
    await engine.handle(dm("hi", "carol", platform="other"), out)
    await engine.handle(dm("/stats", "root"), out)
    stats = out.notices[-1]
    assert stats.startswith("Stats for testbot")
    test_line = next(line for line in stats.splitlines() if line.startswith("test:"))
    assert "users 2 today / 2 total" in test_line
    assert "messages 4 / 4" in test_line and "conversations 2 / 2" in test_line
    assert any(line.startswith("other:") for line in stats.splitlines())


async def test_rate_limit_with_fake_clock(make_engine, clock, backend):
    engine = make_engine(rate_limit_per_minute=3, admin_users=["test:root"])
    out = RecordingChannel()
    for n in range(3):
        await engine.handle(dm(f"m{n}"), out)
        clock.advance(1)
    await engine.handle(dm("too fast"), out)
    await engine.handle(dm("still too fast"), out)
    assert len(out.replies) == 3
    assert out.notices == [
        "You're sending messages too fast (limit: 3 per minute). Please try again in 57 s."
    ]  # one notice per window, not one per message
    clock.advance(57)
    await engine.handle(dm("patient now"), out)
    assert out.replies[-1].startswith("echo: patient now")
    for n in range(5):  # admins are exempt
        await engine.handle(dm(f"admin {n}", "root"), out)
    assert out.replies[-1].startswith("echo: admin 4")


async def test_daily_quota_blocks_until_utc_midnight(make_engine, clock, backend):
    engine = make_engine(daily_token_quota=20)
    out = RecordingChannel()
    await engine.handle(dm("a fairly long message to use tokens"), out)
    await engine.handle(dm("again"), out)
    assert out.notices[-1].startswith("You've used your daily quota of 20 tokens.")
    assert "in 12 h" in out.notices[-1]  # the fake clock says 12:00 UTC
    calls = len(backend.calls)
    clock.advance(12 * 3600)
    await engine.handle(dm("new day"), out)
    assert len(backend.calls) == calls + 1
    assert out.replies[-1].startswith("echo: new day")


async def _all_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]
    finally:
        await engine.dispose()


async def test_forget_deletes_everything_but_pseudonymous_counters(make_engine, store, sqlite_url):
    engine = make_engine(daily_token_quota=1_000_000, memory_scope="chat")
    mine, theirs = RecordingChannel(), RecordingChannel()
    await engine.handle(dm("/system talk like a poet"), mine)
    await engine.handle(dm("my private note", "alice"), mine)
    await engine.handle(dm("bob in the group", "bob", chat_id="g", is_private=False), theirs)
    await engine.handle(dm("in the group", "alice", chat_id="g", is_private=False), mine)
    await engine.handle(dm("/usage"), mine)
    used_before = mine.notices[-1].splitlines()[0]

    await engine.handle(dm("/forget"), mine)
    (prompt, action_id) = mine.confirmations[-1]
    assert "cannot be undone" in prompt
    # someone else pressing the button does nothing
    await engine.handle_action(
        IncomingAction("test", "alice", "bob", action_id, accepted=True), theirs
    )
    assert theirs.notices[-1] == "Only the person who asked can answer this."
    await engine.handle_action(IncomingAction("test", "alice", "alice", action_id, True), mine)
    assert mine.notices[-1].startswith("Done: I deleted everything stored about you")

    url = sqlite_url
    rows = []
    for table in ("conversations", "messages", "platform_messages", "preferences", "usage_daily"):
        rows += await _all_rows(url, f"SELECT * FROM {table}")
    dump = "\n".join(repr(row) for row in rows)
    assert "alice" not in dump
    assert "my private note" not in dump and "'in the group'" not in dump and "poet" not in dump
    # the shared memory keeps other people's messages and the replies to them
    assert "'bob in the group'" in dump and "echo: bob: bob in the group" in dump
    assert await store.export_user("testbot", "test", "alice") == []
    # deleting one's data never resets the quota
    await engine.handle(dm("/usage"), mine)
    assert mine.notices[-1].splitlines()[0] == used_before


async def test_forget_cancelled_or_expired_deletes_nothing(make_engine, store, clock):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("keep me"), out)
    await engine.handle(dm("/forget"), out)
    _, action_id = out.confirmations[-1]
    await engine.handle_action(IncomingAction("test", "alice", "alice", action_id, False), out)
    assert out.notices[-1] == "Cancelled: nothing was deleted."
    await engine.handle(dm("/forget"), out)
    _, action_id = out.confirmations[-1]
    clock.advance(3600)
    await engine.handle_action(IncomingAction("test", "alice", "alice", action_id, True), out)
    assert "expired" in out.notices[-1]
    assert "keep me" in await engine.export("test", "alice")
