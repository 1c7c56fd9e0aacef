"""``InMemoryStore`` beyond the port's contract (which test_memory_store.py runs on it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_importing_it_loads_no_database_library() -> None:
    # Tests and tools that only need a store must not pay for SQLAlchemy and its drivers.
    code = (
        "import sys, adapters.memory.in_memory; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'sqlalchemy', 'alembic', 'aiosqlite', 'asyncpg'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
