from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore


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


@pytest.fixture
async def migrated_url(db_url: str) -> str:
    """``db_url`` upgraded to the newest schema."""
    await migrate.upgrade(db_url)
    return db_url


MakeStore = Callable[..., Awaitable[SqlMemoryStore]]


@pytest.fixture
async def make_store(migrated_url: str, clock: Clock) -> AsyncIterator[MakeStore]:
    """Started stores on the test's database; all closed at teardown."""
    made: list[SqlMemoryStore] = []

    async def make(**kwargs: object) -> SqlMemoryStore:
        kwargs.setdefault("clock", clock)
        store = SqlMemoryStore(migrated_url, **kwargs)  # type: ignore[arg-type]
        made.append(store)
        await store.start()
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
async def store(make_store: MakeStore) -> SqlMemoryStore:
    return await make_store()
