"""A user's daily token quota holds across three engines sharing one PostgreSQL store.

Quotas need no Redis: each reply's tokens are counted in SQL, and every engine reads the
count before answering. Three engines, each with its own store connection (as three worker
processes have), take the user's messages in turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.types import IncomingMessage
from tests.conftest import reset_postgres
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend

pytestmark = pytest.mark.postgres


@pytest.fixture
async def engines(pg_url: str) -> AsyncIterator[list[Engine]]:
    """Three started engines, each on its own store connection to one migrated database."""
    reset_postgres(pg_url)
    await migrate.upgrade(pg_url)
    made: list[tuple[Engine, SqlMemoryStore]] = []
    for _ in range(3):
        store = SqlMemoryStore(pg_url)
        await store.start()
        engine = Engine(
            backend=ScriptedBackend(),
            store=store,
            core=CoreSettings(_env_file=None, bot_name="quotabot"),
            llm=LLMSettings(_env_file=None),
            access=AccessSettings(_env_file=None, daily_token_quota=60),
            shared=True,
        )
        await engine.start()
        made.append((engine, store))
    yield [engine for engine, _ in made]
    for engine, store in made:
        await engine.aclose(grace=1)
        await store.aclose()


def _msg(n: int, user: str = "alice") -> IncomingMessage:
    return IncomingMessage(
        platform="test",
        chat_id=user,
        user_id=user,
        text=f"message number {n}, long enough to cost a few tokens each time",
        message_id=f"{user}-{n}",
        is_private=True,
    )


async def test_daily_quota_holds_with_messages_spread_over_three_engines(engines: Any) -> None:
    out = RecordingChannel()
    for n in range(12):
        await engines[n % 3].handle(_msg(n), out)
    answered = len(out.replies)
    refused = [t for t in out.notices if t.startswith("You've used your daily quota of 60")]
    assert 1 <= answered < 6  # far fewer than 12: the quota counted every engine's replies
    assert len(refused) == 12 - answered
    usage = await engines[0]._store.get_usage("quotabot", "test", "alice", _today())
    assert usage.tokens_today >= 60
    # Every engine refuses from now on, and another user is not held back.
    for engine in engines:
        await engine.handle(_msg(99), out)
        assert out.notices[-1].startswith("You've used your daily quota")
    other = RecordingChannel()
    await engines[2].handle(_msg(0, "bob"), other)
    assert len(other.replies) == 1


def _today() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC).date()
