"""The procrastinate ``App`` of a bot: its jobs live in the bot's own PostgreSQL database.

``DATABASE_URL`` is SQLAlchemy's (``postgresql+asyncpg://``); procrastinate talks to the
same database through psycopg, which takes a libpq URL: :func:`libpq_url` turns one into the
other. The password travels in the URL only; :func:`safe_url` is what logs show.
"""

from __future__ import annotations

import logging
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from procrastinate import App, PsycopgConnector
from psycopg_pool import AsyncConnectionPool

from core.errors import ConfigError, StoreError

TURN_TASK: Final = "chinwag.turn"
"""The task name of every queued turn (messages and button presses)."""
QUEUE_NAME: Final = "chinwag"
"""The procrastinate queue chinwag's turns go to."""

_SCHEMES: Final = ("postgresql", "postgres", "postgresql+asyncpg", "postgres+asyncpg")
_EXAMPLE: Final = "postgresql://chinwag:secret@db:5432/chinwag"
_ASYNCPG_SSL: Final = {"ssl": "sslmode"}

_log = logging.getLogger(__name__)

OPEN_TIMEOUT_S: Final = 10.0
"""Seconds the queue's database has to answer when a process opens it."""


class _Pool(AsyncConnectionPool):
    """psycopg's pool, whose ``open(wait=True)`` (procrastinate's) gives up sooner than 30 s."""

    async def open(
        self,
        wait: bool = False,
        timeout: float = OPEN_TIMEOUT_S,  # noqa: ASYNC109 - psycopg's own signature
    ) -> None:
        await super().open(wait=wait, timeout=min(timeout, OPEN_TIMEOUT_S))


def libpq_url(database_url: str) -> str:
    """``database_url`` (SQLAlchemy's form) as the libpq URL psycopg connects with.

    ``+asyncpg`` goes; asyncpg's ``ssl=`` becomes libpq's ``sslmode=``.

    Raises:
        ConfigError: for ``DATABASE_URL`` when it is not PostgreSQL (the queue needs it);
            the message never contains the password.
    """
    parts = urlsplit(database_url.strip())
    if parts.scheme.lower() not in _SCHEMES or (not parts.netloc and not parts.path):
        raise ConfigError(
            "DATABASE_URL",
            f"the turn queue needs PostgreSQL, not {safe_url(database_url)}",
            example=_EXAMPLE,
        )
    query = [(_ASYNCPG_SSL.get(name, name), value) for name, value in parse_qsl(parts.query)]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))


def safe_url(url: str) -> str:
    """``url`` for logs: scheme, host, port and database, never the user's password."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}:***@" if parts.password else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"
    except ValueError:
        return "<unparseable URL>"


async def check_database(database_url: str) -> None:
    """Connect once, to say in one line why the queue's database cannot be reached.

    Raises:
        StoreError: with libpq's first line (it never contains the password).
    """
    try:
        connection = await psycopg.AsyncConnection.connect(
            libpq_url(database_url), connect_timeout=int(OPEN_TIMEOUT_S)
        )
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"cannot reach the turn queue's database {safe_url(database_url)}: {first}"
        ) from exc
    await connection.close()


def queue_app(database_url: str, *, max_connections: int = 10) -> App:
    """The procrastinate ``App`` on ``database_url`` (open it with ``open_async()``).

    Raises:
        ConfigError: ``database_url`` is not PostgreSQL.
    """
    connector = PsycopgConnector(
        pool_factory=_Pool,
        conninfo=libpq_url(database_url),
        min_size=1,
        max_size=max(2, max_connections),
        kwargs={"connect_timeout": 10, "application_name": "chinwag-queue"},
    )
    return App(connector=connector)


__all__ = [
    "OPEN_TIMEOUT_S",
    "QUEUE_NAME",
    "TURN_TASK",
    "check_database",
    "libpq_url",
    "queue_app",
    "safe_url",
]
