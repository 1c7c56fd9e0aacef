"""Skip a test whose optional dependency is missing, unless the run demands it.

Also home of ``NetworkBlocked``, raised by the suite's loopback-only guard (conftest.py), so
that tests can name it without importing conftest.py a second time.

``CHINWAG_TEST_REQUIRE`` is a comma-separated list of names (``postgres``, ``llama``...).
A CI job that must exercise one of them sets it, and a missing dependency then fails the
test instead of skipping it quietly.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_VARIABLE = "CHINWAG_TEST_REQUIRE"


class NetworkBlocked(RuntimeError):
    """A test tried to reach a host outside loopback."""


def required() -> frozenset[str]:
    """The names listed in ``CHINWAG_TEST_REQUIRE`` (lower-case)."""
    raw = os.environ.get(REQUIRE_VARIABLE, "")
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def require_or_skip(name: str, reason: str) -> NoReturn:
    """Skip the current test with ``reason``, or fail it if ``name`` is required."""
    if name.lower() in required():
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE} requires {name!r})", pytrace=False)
    pytest.skip(reason)
