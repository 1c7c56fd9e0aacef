"""Settings of the Home Assistant tool pack (``HOMEASSISTANT_*``)."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from core.settings import ChinwagSettings, CsvList

__all__ = ["HomeAssistantSettings"]

# An entity id or a glob over entity ids: lower-case letters, digits, "_" and ".", plus the
# fnmatch characters "*", "?" and "[...]".
_PATTERN = re.compile(r"^[a-z0-9_.*?\[\]!-]+$")


class HomeAssistantSettings(ChinwagSettings):
    """Where Home Assistant is, how the bot signs in, and which entities it may use.

    Attributes:
        url: the instance's base URL, e.g. ``http://homeassistant.local:8123`` (a trailing
            ``/`` or ``/api`` is dropped).
        token: a long-lived access token (Home Assistant: your profile > Security).
        entities: entity ids or glob patterns (``light.*``, ``sensor.kitchen_*``) the bot may
            see and control; empty means none. Anything else is refused before a request.
        timeout_seconds: how long one request to Home Assistant may take.
    """

    model_config = SettingsConfigDict(env_prefix="HOMEASSISTANT_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "url": "http://homeassistant.local:8123",
        "token": "eyJhbGciOi...your-long-lived-access-token",
        "entities": "light.kitchen,switch.*,sensor.living_room_*",
        "timeout_seconds": "10",
    }

    url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    token: SecretStr | None = None
    entities: CsvList = Field(default_factory=list)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return value
        value = value.rstrip("/")
        return value.removesuffix("/api")

    @field_validator("entities")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            pattern = value.strip().lower()
            if not _PATTERN.match(pattern):
                raise ValueError(f"{value!r} is not an entity id or a glob like light.*")
            out.append(pattern)
        return out

    def allows(self, entity_id: str) -> bool:
        """Whether ``entity_id`` matches one of ``HOMEASSISTANT_ENTITIES``."""
        return any(fnmatchcase(entity_id, pattern) for pattern in self.entities)

    def shown_url(self) -> str:
        """The URL without any credentials in it, for logs and messages."""
        parts = urlsplit(self.url or "")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
