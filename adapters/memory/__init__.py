"""The SQL memory store: SQLAlchemy models, the store, its settings and migrations.

``SqlMemoryStore(url)`` implements ``core.ports.MemoryStore``; the schema comes from
``await adapters.memory.migrate.upgrade(url)``; ``MemorySettings().async_url()`` gives the
URL from ``DATABASE_URL`` or the default SQLite file.
"""

from adapters.memory.settings import MemorySettings, normalize_database_url, render_url
from adapters.memory.store import SqlMemoryStore

__all__ = ["MemorySettings", "SqlMemoryStore", "normalize_database_url", "render_url"]
