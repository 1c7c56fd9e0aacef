"""HOMEASSISTANT_* from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapters.homeassistant import HomeAssistantSettings


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEASSISTANT_URL", "http://ha.local:8123/api/")
    monkeypatch.setenv("HOMEASSISTANT_TOKEN", "abc")
    monkeypatch.setenv("HOMEASSISTANT_ENTITIES", "light.kitchen, Switch.* ,,sensor.t_?")
    settings = HomeAssistantSettings(_env_file=None)
    assert settings.url == "http://ha.local:8123"
    assert settings.entities == ["light.kitchen", "switch.*", "sensor.t_?"]
    assert settings.allows("switch.coffee")
    assert settings.allows("sensor.t_1")
    assert not settings.allows("sensor.t_12")
    assert not settings.allows("light.kitchen_2")
    assert "abc" not in repr(settings)


def test_nothing_is_allowed_by_default() -> None:
    settings = HomeAssistantSettings(_env_file=None)
    assert settings.entities == []
    assert not settings.allows("light.kitchen")


@pytest.mark.parametrize(
    ("field", "value"),
    [("entities", "light kitchen"), ("url", "ha.local:8123"), ("timeout_seconds", "0")],
)
def test_malformed_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        HomeAssistantSettings.model_validate({field: value})


def test_the_shown_url_has_no_credentials() -> None:
    settings = HomeAssistantSettings(_env_file=None, url="https://me:pw@ha.example.com:8443")
    assert settings.shown_url() == "https://ha.example.com:8443"
