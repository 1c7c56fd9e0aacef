"""Two engines racing for one confirmation on PostgreSQL run the action once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from tests.conftest import reset_postgres
from tests.core.test_tool_confirmations import _race


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[SqlMemoryStore]:
    """A started SQL store on a new, migrated PostgreSQL database (the engines' store here).

    Emptied first: the run's database may hold what an earlier test of this worker left,
    such as the migration tests' rows inserted with explicit ids behind the sequences.
    """
    reset_postgres(pg_url)
    await migrate.upgrade(pg_url)
    memory = SqlMemoryStore(pg_url)
    await memory.start()
    yield memory
    await memory.aclose()


async def test_two_engines_racing_on_postgres_run_the_action_once(make_engine, backend) -> None:
    await _race(make_engine, backend, None)
