"""Fixtures of the store tests.

``store``, ``make_store`` and ``new_store`` are parametrised over every implementation of
``core.ports.MemoryStore`` (SQLite, PostgreSQL, ``InMemoryStore``): a test that asks for one
of them is a contract test and runs once per implementation. Tests of SQL behaviour (two
stores on one database, restarts, locks, migrations, query plans) ask for ``sql_store``,
``make_sql_store`` or ``migrated_url`` instead and run on SQLite and PostgreSQL only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.memory.in_memory import InMemoryStore
from adapters.memory.store import SqlMemoryStore
from core.ports import MemoryStore
from tests._db import UpgradeHead


class Clock:
    """A UTC clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- every implementation -----------------------------------------------------------------

NewStore = Callable[..., MemoryStore]
"""``new_store(**kwargs)``: a store not started yet (``clock`` defaults to the test's)."""
MakeStore = Callable[..., Awaitable[MemoryStore]]
"""``await make_store(**kwargs)``: a started store."""


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"],
)
async def new_store(
    request: pytest.FixtureRequest,
    empty_db: Callable[[str], str],
    clock: Clock,
    upgrade_head: UpgradeHead,
) -> AsyncIterator[NewStore]:
    """Unstarted stores of one implementation; all closed at teardown.

    The SQL ones share one migrated database; each ``InMemoryStore`` is on its own.
    """
    build: Callable[..., MemoryStore]
    if request.param == "memory":
        build = InMemoryStore
    else:
        url = empty_db(str(request.param))
        await upgrade_head(url)

        def build(**kwargs: Any) -> MemoryStore:
            return SqlMemoryStore(url, **kwargs)

    made: list[MemoryStore] = []

    def new(**kwargs: Any) -> MemoryStore:
        kwargs.setdefault("clock", clock)
        store = build(**kwargs)
        made.append(store)
        return store

    yield new
    for store in made:
        await store.aclose()


@pytest.fixture
def make_store(new_store: NewStore) -> MakeStore:
    """Started stores of one implementation (see ``new_store``)."""

    async def make(**kwargs: Any) -> MemoryStore:
        store = new_store(**kwargs)
        await store.start()
        return store

    return make


@pytest.fixture
async def store(make_store: MakeStore) -> MemoryStore:
    """A started store, once per implementation."""
    return await make_store()


# --- the SQL store only ---------------------------------------------------------------------

MakeSqlStore = Callable[..., Awaitable[SqlMemoryStore]]


@pytest.fixture
async def migrated_url(db_url: str, upgrade_head: UpgradeHead) -> str:
    """``db_url`` (SQLite, PostgreSQL) upgraded to the newest schema."""
    await upgrade_head(db_url)
    return db_url


@pytest.fixture
async def make_sql_store(migrated_url: str, clock: Clock) -> AsyncIterator[MakeSqlStore]:
    """Started SQL stores on the test's database (``migrated_url``); all closed at teardown."""
    made: list[SqlMemoryStore] = []

    async def make(**kwargs: Any) -> SqlMemoryStore:
        kwargs.setdefault("clock", clock)
        store = SqlMemoryStore(migrated_url, **kwargs)
        made.append(store)
        await store.start()
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
async def sql_store(make_sql_store: MakeSqlStore) -> SqlMemoryStore:
    """A started SQL store on ``migrated_url``."""
    return await make_sql_store()
