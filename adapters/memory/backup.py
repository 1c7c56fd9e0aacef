"""Back up the memory store's database: ``chinwag db backup``, and before migrations.

* SQLite: SQLite's online backup API (:meth:`sqlite3.Connection.backup`) copies a consistent
  snapshot, pages still in the WAL file included, while the bot keeps running and writing.
* PostgreSQL: ``pg_dump --format=custom`` (restore with ``pg_restore``). The password
  reaches ``pg_dump`` through the ``PGPASSWORD`` environment variable of that one process,
  never its command line (which every user of the machine can read in ``ps``).

Every backup is written ``0600`` under a temporary name and renamed into place once it is
complete, so a failed backup never leaves a half-written file where a good one is expected.
Errors are raised as :class:`core.errors.StoreError`, one line saying what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import asyncpg
from sqlalchemy.engine import URL, make_url

from adapters.files import private_file
from adapters.memory.executor import describe_open_failure
from adapters.memory.settings import normalize_database_url, render_url
from core.errors import StoreError

PG_CLIENT_PACKAGE: Final = "postgresql-client"
"""The Debian/Ubuntu package that ships ``pg_dump`` and ``pg_restore``."""
_PG_DUMP_TIMEOUT_S: Final = 6 * 3600.0
_CONNECT_TIMEOUT_S: Final = 15.0


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: where it is and how many bytes it holds."""

    path: Path
    size: int


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite ``url``; ``None`` for PostgreSQL (or an in-memory database)."""
    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    return Path(parsed.database)


def timestamped(directory: Path, stem: str, suffix: str) -> Path:
    """``directory/stem-YYYYmmdd-HHMMSS{suffix}``, with ``-2``, ``-3``... if that exists."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = directory / f"{stem}-{stamp}{suffix}"
    n = 1
    while target.exists():
        n += 1
        target = directory / f"{stem}-{stamp}-{n}{suffix}"
    return target


def default_target(url: str, data_dir: Path) -> Path:
    """Where ``chinwag db backup`` writes without a PATH: the data dir, timestamped."""
    suffix = ".db" if sqlite_path(url) is not None else ".pgdump"
    return timestamped(data_dir, "chinwag-backup", suffix)


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` to the new file ``target`` (``0600``), online.

    Raises:
        sqlite3.Error, OSError: the source cannot be read or the target written; nothing
            is left at ``target`` then.
    """
    partial = target.with_name(f".{target.name}.partial")
    # The backup API copies a consistent snapshot, including pages still in the WAL file,
    # which a plain file copy would miss; read-only, so a backup never writes the source.
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        writer = sqlite3.connect(private_file(partial))
        try:
            reader.backup(writer)
        finally:
            writer.close()
        partial.replace(target)
    finally:
        reader.close()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


async def backup(url: str, target: Path) -> Backup:
    """Back up the database at ``url`` to the new file ``target``; return where and how big.

    Raises:
        StoreError: ``target`` exists, the database cannot be read, ``pg_dump`` is missing
            or older than the server, or it failed (its own last words in the message).
    """
    await asyncio.to_thread(_check_target, target)
    path = sqlite_path(url)
    if path is not None:
        await asyncio.to_thread(_backup_sqlite_file, path, target)
    else:
        await _pg_dump(make_url(normalize_database_url(url)), target)
    return Backup(target, await asyncio.to_thread(lambda: target.stat().st_size))


def _check_target(target: Path) -> None:
    if target.exists():
        raise StoreError(f"{target} already exists; name a new file")
    if not target.parent.is_dir():
        raise StoreError(f"cannot write {target}: the directory {target.parent} does not exist")


def _backup_sqlite_file(path: Path, target: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        raise StoreError(f"there is no database to back up at {path}")
    try:
        copy_sqlite(path, target)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(
            f"backing up {path} to {target} failed: {type(exc).__name__}: {exc}"
        ) from exc


def pg_environment(url: URL) -> dict[str, str]:
    """The libpq environment that points ``pg_dump``/``pg_restore`` at ``url``.

    The password travels here (``PGPASSWORD``), never on a command line.
    """
    env = dict(os.environ)
    values = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    ssl = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(ssl, str):
        values["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(ssl, ssl)
    env.update({name: value for name, value in values.items() if value})
    return env


def _missing_client(program: str) -> StoreError:
    return StoreError(
        f"{program} is not installed (or not on PATH): install the PostgreSQL client tools "
        f"of your server's major version (Debian/Ubuntu: apt install {PG_CLIENT_PACKAGE}; "
        "Fedora: dnf install postgresql; macOS: brew install libpq), then run this again"
    )


async def _run(program: str, *args: str, env: dict[str, str], limit_s: float) -> tuple[int, str]:
    """Run ``program args``; return its exit status and its standard error, decoded."""
    process = await asyncio.create_subprocess_exec(
        program,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    return process.returncode or 0, (out + err).decode(errors="replace")


def _major(version_text: str) -> int | None:
    found = re.search(r"(\d+)(?:\.\d+)?", version_text)
    return int(found.group(1)) if found else None


async def _server_major(url: URL) -> int:
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StoreError(describe_open_failure(url.render_as_string(False), exc)) from exc
    try:
        number = int(await connection.fetchval("SHOW server_version_num"))
    finally:
        await connection.close()
    return number // 10000


async def _pg_dump(url: URL, target: Path) -> None:
    program = shutil.which("pg_dump")
    if program is None:
        raise _missing_client("pg_dump")
    env = pg_environment(url)
    _status, version = await _run(program, "--version", env=env, limit_s=30)
    client = _major(version.rsplit(")", 1)[-1])
    server = await _server_major(url)
    if client is not None and client < server:
        raise StoreError(
            f"pg_dump {client} is older than the PostgreSQL {server} server at "
            f"{render_url(url)} and cannot dump it: install pg_dump {server} or newer "
            f"(Debian/Ubuntu: apt install postgresql-client-{server} from apt.postgresql.org)"
        )
    partial = target.with_name(f".{target.name}.partial")
    try:
        private_file(partial)  # 0600 from the start: pg_dump keeps the mode it finds
        status, output = await _run(
            program,
            "--format=custom",
            "--no-password",
            f"--file={partial}",
            env=env,
            limit_s=_PG_DUMP_TIMEOUT_S,
        )
        if status != 0:
            lines = [line for line in output.splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit status {status}"
            raise StoreError(f"pg_dump of {render_url(url)} failed: {why}")
        partial.replace(target)
    except OSError as exc:
        raise StoreError(f"writing {target} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
