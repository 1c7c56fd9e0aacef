"""Settings of the SQL memory store: where the database lives and whether to migrate it.

``DATABASE_URL`` takes the URLs users already have (``sqlite:///…``, ``postgres://…``,
``postgresql://…``); :meth:`MemorySettings.async_url` turns them into the async URL the
store and the migrations use. Unset, the store keeps a SQLite file in the user's data
directory (``CHINWAG_DATA_DIR``, default the platform's XDG data dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import platformdirs
from pydantic import Field
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from adapters.files import private_dir
from core.errors import ConfigError
from core.settings import ChinwagSettings

_EXAMPLE_URL = "postgresql://user:pass@host:5432/chinwag"

# scheme as written by the user -> async URL scheme
_SCHEMES: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def render_url(url: str | URL) -> str:
    """Render ``url`` for logs and error messages, with any password replaced by ``***``.

    Never raises: a string that is not a URL at all is reduced to its scheme.
    """
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        scheme = url.split(":", 1)[0] if ":" in url else ""
        return f"{scheme}://…" if scheme else "<unparseable URL>"


def normalize_database_url(url: str) -> str:
    """Return the async SQLAlchemy URL for a user-supplied database URL.

    ``sqlite:///path`` gets ``+aiosqlite``; ``postgres://`` and ``postgresql://`` get
    ``+asyncpg``; URLs already naming ``+aiosqlite`` or ``+asyncpg`` are returned unchanged.

    Raises:
        ConfigError: for ``DATABASE_URL`` when the URL cannot be parsed or names another
            driver or database; the message never contains the password.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ConfigError(
            "DATABASE_URL",
            f"{render_url(text)!s} is not a database URL",
            example=_EXAMPLE_URL,
        )
    target = _SCHEMES.get(scheme.lower())
    if target is None:
        raise ConfigError(
            "DATABASE_URL",
            f"unsupported database or driver {scheme!r}; use sqlite:///path/to/file.db or "
            "postgresql://… (the async drivers aiosqlite and asyncpg are added for you)",
            example=_EXAMPLE_URL,
        )
    normalized = text if scheme == target else f"{target}://{rest}"
    try:
        parsed = make_url(normalized)
    except (ArgumentError, ValueError) as exc:
        # ``from None``: the parser's message quotes the whole URL, password included.
        why = "the port must be 1-65535" if "int()" in str(exc) else "is not a valid URL"
        raise ConfigError(
            "DATABASE_URL", f"{render_url(text)}: {why}", example=_EXAMPLE_URL
        ) from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigError("DATABASE_URL", "the port must be 1-65535", example=_EXAMPLE_URL)
    in_memory = parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
    if target.startswith("sqlite") and in_memory:
        raise ConfigError(
            "DATABASE_URL",
            "a SQLite URL needs a file path (an in-memory database would forget everything)",
            example="sqlite:///var/lib/chinwag/chinwag.db",
        )
    return normalized


class MemorySettings(ChinwagSettings):
    """Where the memory store keeps its data (``DATABASE_URL``, ``CHINWAG_DATA_DIR``).

    Attributes:
        database_url: the database; unset means a SQLite file in ``chinwag_data_dir``.
        chinwag_data_dir: the data directory; default the user's XDG data dir.
        db_auto_migrate: apply pending migrations at start (``DB_AUTO_MIGRATE``).
        db_outage_grace_seconds: how long a call waits for a lost PostgreSQL connection to
            come back before it fails, saying the message was not kept
            (``DB_OUTAGE_GRACE_SECONDS``). A reply the user has already seen is stored
            whenever the database returns, however long that takes.
    """

    EXAMPLES: ClassVar[dict[str, str]] = {
        "database_url": _EXAMPLE_URL,
        "chinwag_data_dir": "/var/lib/chinwag",
        "db_auto_migrate": "true",
        "db_outage_grace_seconds": "30",
    }

    database_url: str | None = None
    chinwag_data_dir: Path | None = None
    db_auto_migrate: bool = True
    db_outage_grace_seconds: float = Field(default=30.0, ge=0, le=86_400)

    def data_dir(self) -> Path:
        """The data directory: ``CHINWAG_DATA_DIR`` or the platform's user data dir."""
        if self.chinwag_data_dir is not None:
            return self.chinwag_data_dir.expanduser()
        return Path(platformdirs.user_data_dir("chinwag"))

    def async_url(self) -> str:
        """The async SQLAlchemy URL of the database, creating the data directory if needed.

        Raises:
            ConfigError: when ``DATABASE_URL`` is malformed or names an unsupported driver,
                or the data directory cannot be created.
        """
        if self.database_url:
            return normalize_database_url(self.database_url)
        directory = self.data_dir()
        try:
            private_dir(directory)  # 0700: the database and exports live here
        except OSError as exc:
            raise ConfigError(
                "CHINWAG_DATA_DIR",
                f"cannot create the data directory {directory}: {exc.strerror}",
                example="/var/lib/chinwag",
            ) from exc
        return f"sqlite+aiosqlite:///{directory / 'chinwag.db'}"
