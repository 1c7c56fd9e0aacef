"""Types of the database fixtures in conftest.py, for tests to name without importing it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

UpgradeHead = Callable[[str], Coroutine[Any, Any, None]]
"""``await upgrade_head(url)``: the database at ``url`` migrated to the newest schema."""
