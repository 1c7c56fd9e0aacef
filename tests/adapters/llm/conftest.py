"""Fixtures for backend tests: the loopback OpenAI server and backends pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.llm.openai import OpenAIBackend, OpenAISettings
from tests.adapters.llm.backend_helpers import API_KEY, MakeBackend
from tests.fakes.openai_server import FakeOpenAIServer


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_key=API_KEY, models=("gpt-4o-mini", "gpt-4o", "llama3")) as srv:
        yield srv


@pytest.fixture
async def make_backend(server: FakeOpenAIServer) -> AsyncIterator[MakeBackend]:
    """Build started backends against ``server``; all are closed at teardown."""
    made: list[OpenAIBackend] = []

    async def make(**kwargs: Any) -> OpenAIBackend:
        settings_args: dict[str, Any] = {
            "api_key": API_KEY,
            "base_url": server.base_url,
            "model": "gpt-4o-mini",
            "allowed_models": "gpt-4o,llama3",
        }
        settings_args.update(kwargs.pop("settings", {}))
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("backoff_base", 0.01)
        backend = OpenAIBackend(OpenAISettings(_env_file=None, **settings_args), **kwargs)
        made.append(backend)
        await backend.start()
        return backend

    yield make
    for backend in made:
        await backend.aclose()
