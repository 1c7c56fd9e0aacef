"""The memory stores: the SQL store (models, settings, migrations) and the in-memory store.

``SqlMemoryStore(url)`` implements ``core.ports.MemoryStore`` on SQLite or PostgreSQL; the
schema comes from ``await adapters.memory.migrate.upgrade(url)``; ``MemorySettings().async_url()``
gives the URL from ``DATABASE_URL`` or the default SQLite file. ``InMemoryStore()`` implements
the same port in process memory (for tests; nothing persists).

The names are imported on first use, so that importing ``adapters.memory.in_memory`` does not
load SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.memory.in_memory import InMemoryStore
    from adapters.memory.settings import MemorySettings, normalize_database_url, render_url
    from adapters.memory.store import SqlMemoryStore

_HOMES = {
    "InMemoryStore": "adapters.memory.in_memory",
    "MemorySettings": "adapters.memory.settings",
    "SqlMemoryStore": "adapters.memory.store",
    "normalize_database_url": "adapters.memory.settings",
    "render_url": "adapters.memory.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "InMemoryStore",
    "MemorySettings",
    "SqlMemoryStore",
    "normalize_database_url",
    "render_url",
]
