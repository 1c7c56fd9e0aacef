"""Fixtures shared by the whole suite.

* Every test runs without chinwag's environment variables (and without ``.env``), with
  ``CHINWAG_DATA_DIR`` pointing at a temporary directory.
* A network connection outside loopback fails loudly (``NetworkBlocked``).
* ``sqlite_url``, ``pg_url`` and ``db_url`` give databases, ``sqlite_store`` (alias
  ``store``) a started SQL store; ``upgrade_head(url)`` migrates a database to the newest
  schema (a new SQLite file becomes a copy of one migrated once per run); ``direct_url`` is
  a migrated PostgreSQL database and ``proxy`` a loopback proxy in front of it that can cut
  it off. PostgreSQL tests need ``CHINWAG_TEST_POSTGRES_URL`` (e.g.
  ``postgresql://postgres@127.0.0.1:5432/postgres``) and skip without it, unless
  ``CHINWAG_TEST_REQUIRE`` names ``postgres``.
* ``redis_url`` and ``redis_prefix`` (a key prefix of the test's own, its keys deleted
  after): Redis tests need ``CHINWAG_TEST_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``)
  and skip without it, unless ``CHINWAG_TEST_REQUIRE`` names ``redis``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from core.settings import ChinwagSettings
from tests._db import UpgradeHead
from tests._require import REQUIRE_VARIABLE, NetworkBlocked, require_or_skip
from tests.fakes.tcp_proxy import TcpProxy

PG_VARIABLE = "CHINWAG_TEST_POSTGRES_URL"
REDIS_VARIABLE = "CHINWAG_TEST_REDIS_URL"

# --- a clean environment per test -------------------------------------------------------------

_ENV_PREFIXES = (
    "OPENAI_",
    "LLM_",
    "TELEGRAM_",
    "DISCORD_",
    "LOCAL_",
    "CONSOLE_",
    "CHINWAG_",
    "STT_",
)
_ENV_NAMES = {
    "DATABASE_URL",
    "DB_AUTO_MIGRATE",
    "BOT_NAME",
    "SYSTEM_PROMPT",
    "MEMORY_SCOPE_GROUPS",
    "ALLOWED_USERS",
    "ALLOWED_CHATS",
    "ADMIN_USERS",
    "RATE_LIMIT_PER_MINUTE",
    "DAILY_TOKEN_QUOTA",
    "MAX_INPUT_CHARS",
    "LOG_LEVEL",
}
# never removed, whatever a settings field is called
_KEEP = {
    PG_VARIABLE,
    REDIS_VARIABLE,
    REQUIRE_VARIABLE,
    "PATH",
    "HOME",
    "USER",
    "SHELL",
    "PWD",
    "LANG",
}
_KEEP |= {"TMPDIR", "TMP", "TEMP", "PYTHONPATH", "VIRTUAL_ENV", "XDG_DATA_HOME"}


def _settings_classes() -> list[type[ChinwagSettings]]:
    found: list[type[ChinwagSettings]] = []
    pending: list[type[ChinwagSettings]] = [ChinwagSettings]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _chinwag_variables() -> set[str]:
    names = set(_ENV_NAMES)
    for cls in _settings_classes():
        prefix = str(cls.model_config.get("env_prefix") or "")
        names.update(f"{prefix}{field}".upper() for field in cls.model_fields)
    return names


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No chinwag variable of the developer's shell or ``.env`` reaches a test."""
    names = _chinwag_variables()
    for variable in list(os.environ):
        upper = variable.upper()
        if upper in _KEEP:
            continue
        if upper in names or upper.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(variable)
    for cls in _settings_classes():
        # pydantic copies model_config into each subclass: patch every one.
        monkeypatch.setitem(cls.model_config, "env_file", None)
    data_dir = tmp_path / "chinwag-data"
    monkeypatch.setenv("CHINWAG_DATA_DIR", str(data_dir))


# --- no network beyond loopback ---------------------------------------------------------------


def _is_local_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]")
    if host in ("", "localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    host = host.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return bool(host.endswith(".localhost"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local_host(address[0]):
        raise NetworkBlocked(f"test tried to connect to {address!r}; only loopback is allowed")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_local_host(host):
        raise NetworkBlocked(f"test tried to resolve {host!r}; only loopback is allowed")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _block_network() -> Iterator[None]:
    """Make any connection or name lookup outside loopback raise ``NetworkBlocked``."""
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _guarded_connect)
    mp.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    mp.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    yield
    mp.undo()


# --- databases ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The async URL of a SQLite file that does not exist yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'chinwag.db'}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest schema by ``migrate.upgrade``, once per run."""
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    _run_in_thread(migrate.upgrade(f"sqlite+aiosqlite:///{path}"))
    # The migration's own lock file (flock) stays beside the database, by design.
    lock = path.with_name(f"{path.name}.migrate.lock")
    leftovers = [p.name for p in path.parent.iterdir() if p not in (path, lock)]
    assert not leftovers, f"the migrated template left {leftovers} beside it"
    return path


@pytest.fixture(scope="session")
def upgrade_head(sqlite_template: Path) -> UpgradeHead:
    """``await upgrade_head(url)``: ``migrate.upgrade(url)``, cheaper for a new SQLite file.

    A SQLite file that does not exist yet becomes a copy (mode ``0600`` kept) of
    ``sqlite_template``, which the real migrations built this run: the same schema and
    Alembic version, without running Alembic once per test (about 0.3 s). Any other URL
    (PostgreSQL, an existing file) goes through ``migrate.upgrade``.
    """

    async def upgrade(url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername.startswith("sqlite") and parsed.database:
            path = Path(parsed.database)
            if path.parent.is_dir() and not path.exists():
                shutil.copy(sqlite_template, path)
                return
        await migrate.upgrade(url)

    return upgrade


@pytest.fixture
def store_clock() -> Callable[[], datetime] | None:
    """What ``sqlite_store`` stamps rows with: the real time (tests/core: its fake clock)."""
    return None


@pytest.fixture
async def sqlite_store(
    sqlite_url: str, upgrade_head: UpgradeHead, store_clock: Callable[[], datetime] | None
) -> AsyncIterator[SqlMemoryStore]:
    """A started SQL store on a migrated SQLite file (``sqlite_url``)."""
    await upgrade_head(sqlite_url)
    memory = SqlMemoryStore(sqlite_url, clock=store_clock)
    await memory.start()
    yield memory
    await memory.aclose()


@pytest.fixture
def store(sqlite_store: SqlMemoryStore) -> SqlMemoryStore:
    """The store of tests that need one: ``sqlite_store`` (tests/core uses ``InMemoryStore``)."""
    return sqlite_store


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """``CHINWAG_TEST_POSTGRES_URL``: a server and a database to create test databases from."""
    url = os.environ.get(PG_VARIABLE, "").strip()
    if not url:
        require_or_skip("postgres", f"PostgreSQL tests need {PG_VARIABLE}")
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(admin_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return (
        make_url(admin_url)
        .set(drivername="postgresql+asyncpg", database=database)
        .render_as_string(hide_password=False)
    )


def _run_in_thread(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion on a fresh loop in another thread.

    Session fixtures may be first requested from inside a running test loop, where
    ``asyncio.run`` is not allowed.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _admin(admin_url: str, sql: str) -> None:
    connection = await asyncpg.connect(
        admin_url.replace("postgres://", "postgresql://", 1), timeout=10
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A database created for this test run (``chinwag_test_<random>``), dropped at the end."""
    name = f"chinwag_test_{secrets.token_hex(6)}"
    try:
        _run_in_thread(_admin(pg_admin_url, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        require_or_skip(
            "postgres", f"PostgreSQL at {PG_VARIABLE} is unusable: {type(exc).__name__}: {exc}"
        )
    try:
        yield _with_database(pg_admin_url, name)
    finally:
        _run_in_thread(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def reset_postgres(url: str) -> None:
    """Empty the database at ``url`` completely: no tables, no Alembic version."""
    _run_in_thread(
        _admin(
            url.replace("postgresql+asyncpg://", "postgresql://", 1),
            "DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
        )
    )


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema), once on SQLite and once on PostgreSQL.

    PostgreSQL reuses the run's database and drops its ``public`` schema before each test:
    as empty as a new database, at a fraction of ``CREATE DATABASE``'s cost.
    """
    return empty_database(request, str(request.param), tmp_path)


@pytest.fixture
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``empty_db(kind)``: the URL of an empty ``"sqlite"`` or ``"postgres"`` database.

    For fixtures parametrised over more than databases (the store contract tests);
    PostgreSQL skips without ``CHINWAG_TEST_POSTGRES_URL``, as ``pg_url`` does.
    """
    return lambda kind: empty_database(request, kind, tmp_path)


def empty_database(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """The URL of an empty database of ``kind`` (``"sqlite"`` or ``"postgres"``) for a test."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'chinwag.db'}"
    url: str = request.getfixturevalue("pg_url")
    reset_postgres(url)
    return url


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """``CHINWAG_TEST_REDIS_URL``: a Redis the test may write keys to (under its prefix)."""
    url = os.environ.get(REDIS_VARIABLE, "").strip()
    if not url:
        require_or_skip("redis", f"Redis tests need {REDIS_VARIABLE}")
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own (``chinwag-test:<random>:``); its keys go after."""
    prefix = f"chinwag-test:{secrets.token_hex(6)}:"
    yield prefix
    _run_in_thread(_delete_keys(redis_url, prefix))


async def _delete_keys(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# --- llama-cpp-python's real server -----------------------------------------------------------


@pytest.fixture
async def llama_cpp_server() -> AsyncIterator[str]:
    """``python -m llama_cpp.server`` on the tiny model with a 256-token context: its URL."""
    from tests.llama_server import llama_cpp_server as serve

    async with serve(n_ctx=256) as base_url:
        yield base_url


# --- PostgreSQL behind a loopback proxy that can cut it off ------------------------------------


@pytest.fixture
async def direct_url(empty_db: Callable[[str], str]) -> str:
    """A migrated PostgreSQL database, reached directly (for checking what was stored)."""
    url = empty_db("postgres")
    await migrate.upgrade(url)
    return url


@pytest.fixture
async def proxy(direct_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the test's PostgreSQL server (``cut()``, ``restore()``)."""
    parsed = make_url(direct_url)
    async with TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as running:
        yield running
