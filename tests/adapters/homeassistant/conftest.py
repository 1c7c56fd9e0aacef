"""A fake Home Assistant and the tool pack pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.homeassistant.tools import HomeAssistantTools
from tests.adapters.homeassistant.helpers import make_settings
from tests.fakes.homeassistant_server import FakeHomeAssistant


@pytest.fixture
async def fake() -> AsyncIterator[FakeHomeAssistant]:
    async with FakeHomeAssistant(token="s3cret-ha-token-value") as server:
        yield server


@pytest.fixture
async def make_pack(fake: FakeHomeAssistant) -> AsyncIterator[Callable[..., Any]]:
    """Build (and start) a pack against the fake; closed at the end of the test."""
    packs: list[HomeAssistantTools] = []

    async def build(**overrides: Any) -> HomeAssistantTools:
        pack = HomeAssistantTools(make_settings(fake, **overrides))
        packs.append(pack)
        await pack.start()
        return pack

    yield build
    for pack in packs:
        await pack.aclose()


@pytest.fixture
async def pack(make_pack: Callable[..., Any]) -> HomeAssistantTools:
    return await make_pack()
