"""Fixtures of the turn queue's tests: a migrated PostgreSQL database and opened apps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from procrastinate import App

from adapters.queue.app import queue_app


@pytest.fixture
async def open_app(direct_url: str) -> AsyncIterator[Callable[[], App]]:
    """``await``-free factory of procrastinate apps on the test's migrated database.

    Each call opens another app (another connection pool: another process's view); all are
    closed at the end of the test.
    """
    apps: list[App] = []

    def make() -> App:
        app = queue_app(direct_url, max_connections=4)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close_async()
