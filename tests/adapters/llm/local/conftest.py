"""Fixtures for the local (llama-cpp-python) backend tests: the tiny GGUF and backends on it."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.llm.local import LocalBackend, LocalSettings, local_backend_available
from tests._require import require_or_skip

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"
TINY = FIXTURES / "tiny-chat.gguf"
TINY_TOOLS = FIXTURES / "tiny-tools.gguf"
"""A tiny model whose template handles tools and which calls ``light_on`` when offered tools."""


def _load_generator():
    """The fixture's generator module (it lives outside any package), for its ``EXPECTED``."""
    spec = importlib.util.spec_from_file_location("make_tiny_gguf", FIXTURES / "make_tiny_gguf.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPECTED: list[tuple[str | None, list[str], str]] = _load_generator().EXPECTED
"""(system prompt, turns, the exact reply) cases the tiny model was built to answer."""

__all__ = ["EXPECTED", "TINY", "TINY_TOOLS"]


@pytest.fixture(autouse=True)
def _llama_installed() -> None:
    reason = local_backend_available()
    if reason is not None:
        require_or_skip("llama", reason)


def local_settings(**values: Any) -> LocalSettings:
    """Settings built explicitly: never the developer's environment or ``.env``."""
    values.setdefault("model_path", TINY)
    return LocalSettings(_env_file=None, **values)


@pytest.fixture
async def make_backend() -> AsyncIterator[Callable[..., LocalBackend]]:
    made: list[LocalBackend] = []

    def factory(**values: Any) -> LocalBackend:
        backend = LocalBackend(local_settings(**values))
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.aclose()


@pytest.fixture
async def tiny(make_backend: Callable[..., LocalBackend]) -> LocalBackend:
    backend = make_backend()
    await backend.start()
    return backend
