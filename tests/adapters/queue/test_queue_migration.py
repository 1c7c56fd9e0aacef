"""Revision 0008: the queue's schema on PostgreSQL (applied once, however many processes
start at once), nothing on SQLite; the downgrade leaves no queue object behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.memory import migrate

_QUEUE_OBJECTS = """
SELECT 'table:' || relname FROM pg_class
  WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
    AND (relname LIKE 'procrastinate%' OR relname LIKE 'queue%')
UNION ALL SELECT 'function:' || proname FROM pg_proc
  WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'procrastinate%'
UNION ALL SELECT 'type:' || typname FROM pg_type
  WHERE typnamespace = 'public'::regnamespace AND typname LIKE 'procrastinate%'
"""


async def _queue_objects(url: str) -> set[str]:
    engine = migrate.migration_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text(_QUEUE_OBJECTS))
            return {row[0] for row in rows}
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_processes_starting_at_once_apply_the_queue_once(direct_url: str) -> None:
    await migrate.downgrade(direct_url, "0007")  # a deployment upgrading to the queue
    assert await _queue_objects(direct_url) == set()
    await asyncio.gather(*(migrate.upgrade(direct_url) for _ in range(4)))
    assert await migrate.current(direct_url) == "0008"
    objects = await _queue_objects(direct_url)
    assert {
        "table:procrastinate_jobs",
        "table:procrastinate_workers",
        "table:queue_inbound",
        "table:queue_failures",
        "function:procrastinate_fetch_job_v2",
        "type:procrastinate_job_status",
    } <= objects


@pytest.mark.postgres
async def test_downgrade_drops_every_queue_object(direct_url: str) -> None:
    await migrate.downgrade(direct_url, "0007")
    assert await _queue_objects(direct_url) == set()
    await migrate.upgrade(direct_url)
    assert "table:procrastinate_jobs" in await _queue_objects(direct_url)


async def test_sqlite_gets_no_queue(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chinwag.db'}"
    await migrate.upgrade(url)
    assert await migrate.current(url) == "0008"
    engine = migrate.migration_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE name LIKE 'procrastinate%' "
                    "OR name LIKE 'queue%'"
                )
            )
            assert rows.all() == []
    finally:
        await engine.dispose()
    await migrate.downgrade(url, "0007")
    assert await migrate.current(url) == "0007"
