"""Alembic environment of chinwag.

Normally driven by :mod:`adapters.memory.migrate`, which passes an open (sync-facing)
connection of an async engine in ``config.attributes["connection"]``. Run through the plain
``alembic`` CLI, the URL comes from ``config.attributes["chinwag_url"]`` or, failing that,
from ``MemorySettings().async_url()`` (``DATABASE_URL`` / the default SQLite file).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from adapters.memory.models import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # migrate.migration_engine has SQLAlchemy emit BEGIN on SQLite, so DDL there is
        # transactional too: a failed upgrade leaves the file as it was.
        transactional_ddl=True,
        compare_type=True,
    )


def _run_with_connection(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.attributes.get("chinwag_url")
    if url:
        return str(url)
    from adapters.memory.settings import MemorySettings

    return MemorySettings().async_url()


async def _run_async() -> None:
    from adapters.memory.migrate import migration_engine

    engine = migration_engine(_url())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_with_connection)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with_connection(connection)
    else:
        # the plain `alembic` CLI: log as alembic.ini says
        if config.config_file_name is not None:
            fileConfig(config.config_file_name, disable_existing_loggers=False)
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
