"""Settings for the Home Assistant pack pointed at the fake."""

from __future__ import annotations

from typing import Any

from adapters.homeassistant import HomeAssistantSettings
from tests.fakes.homeassistant_server import FakeHomeAssistant

ENTITIES = "light.kitchen,light.hall,switch.*,lock.front_door,cover.garage,climate.*,script.*"


def make_settings(fake: FakeHomeAssistant, **overrides: Any) -> HomeAssistantSettings:
    """Settings for ``fake`` (its token, :data:`ENTITIES`), with ``overrides``."""
    values: dict[str, Any] = {
        "url": fake.base_url,
        "token": fake.token,
        "entities": ENTITIES,
        "timeout_seconds": 5,
    }
    values.update(overrides)
    return HomeAssistantSettings(_env_file=None, **values)
