"""The PostgreSQL runtime of the SQL store: an asyncpg pool, one transaction per write."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Final

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.memory.executor import Op

_log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S: Final = 15.0
_COMMAND_TIMEOUT_S: Final = 60.0
_RETRIES: Final = 3
_RETRY_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization, deadlock


class PostgresExecutor:
    """Runs operations on pooled asyncpg connections (through SQLAlchemy's async engine).

    Each read takes a pooled connection; each write is its own transaction, retried up to
    three times with jitter on a serialization failure or deadlock. Concurrency comes from
    the pool; nothing is grouped.

    Args:
        url: the ``postgresql+asyncpg://`` URL.
        pool_size: pooled connections (as many again may overflow under load).
        echo: log every SQL statement.
    """

    def __init__(self, url: str, *, pool_size: int, echo: bool) -> None:
        self._url = url
        self._pool_size = pool_size
        self._echo = echo
        self._engine: AsyncEngine | None = None

    async def open(self) -> None:
        """Create the pool (connections are made on first use)."""
        self._engine = create_async_engine(
            self._url,
            echo=self._echo,
            pool_size=self._pool_size,
            max_overflow=self._pool_size,
            pool_timeout=30,
            pool_pre_ping=True,
            connect_args={"timeout": _CONNECT_TIMEOUT_S, "command_timeout": _COMMAND_TIMEOUT_S},
        )

    async def read(self, op: Op) -> Any:
        """Run ``op`` on a pooled connection."""
        assert self._engine is not None
        async with self._engine.connect() as conn:
            return await conn.run_sync(op)

    async def write(self, op: Op) -> Any:
        """Run ``op`` in its own transaction; retry on serialization failure or deadlock."""
        assert self._engine is not None
        for attempt in range(1, _RETRIES + 1):
            try:
                async with self._engine.begin() as conn:
                    return await conn.run_sync(op)
            except DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate not in _RETRY_SQLSTATES or attempt == _RETRIES:
                    raise
                _log.info("retrying a write after %s (attempt %d)", sqlstate, attempt)
                await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def close_writes(self) -> None:
        """Nothing to flush: every write commits before its call returns."""

    async def close(self) -> None:
        """Dispose of the pool."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
