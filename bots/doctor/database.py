"""Doctor's database check: reachable, migrations current (or ``chinwag run`` migrates)."""

from __future__ import annotations

import asyncio
import logging
import os

from adapters.memory.settings import MemorySettings, render_url
from bots.doctor.check import Check
from core.errors import ChinwagError, ConfigError

_log = logging.getLogger(__name__)


async def check_database(memory: MemorySettings, limit: float) -> Check:
    """The database line: reachable, and its schema current (or migrated at start)."""
    from adapters.memory import migrate

    try:
        url = memory.async_url()
        path = migrate.sqlite_file(url)
    except ConfigError as exc:
        return Check("FAIL", "database", str(exc), f"correct {exc.variable}")
    shown = render_url(url)
    if path is not None and not path.exists():
        if os.access(path.parent, os.W_OK):
            return Check("ok", "database", f"{path} does not exist yet; `chinwag run` creates it")
        return Check(
            "FAIL",
            "database",
            f"cannot create {path}: its directory is not writable",
            "set CHINWAG_DATA_DIR (or DATABASE_URL) to a writable place",
        )
    try:
        async with asyncio.timeout(limit):
            current = await migrate.current(url)
    except TimeoutError:
        return Check(
            "FAIL",
            "database",
            f"{shown} did not answer within {limit:g}s",
            "check the host and port in DATABASE_URL and that the server is up",
        )
    except ChinwagError as exc:
        _log.debug("database check failed", exc_info=True)
        return Check("FAIL", "database", str(exc), "start the database or correct DATABASE_URL")
    head = migrate.head_revision()
    if current == head:
        return Check("ok", "database", f"{shown} reachable, schema current ({head})")
    if current is not None and not migrate.is_known_revision(current):
        return Check(
            "FAIL",
            "database",
            f"{shown} is at revision {current}, which this chinwag does not know (a newer "
            "version wrote it)",
            "run the newer chinwag, or downgrade with it (`chinwag db downgrade`) first",
        )
    state = "has no schema yet" if current is None else f"is at {current}, behind {head}"
    if memory.db_auto_migrate:
        return Check(
            "ok",
            "database",
            f"{shown} reachable; it {state}: `chinwag run` migrates it at start "
            "(DB_AUTO_MIGRATE is on)",
        )
    return Check(
        "FAIL",
        "database",
        f"{shown} {state} and DB_AUTO_MIGRATE is off",
        "run `chinwag db upgrade`",
    )
