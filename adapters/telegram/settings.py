"""Settings of the Telegram adapter (``TELEGRAM_*``)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from core.settings import ChinwagSettings

__all__ = ["TelegramSettings"]


class TelegramSettings(ChinwagSettings):
    """How the bot connects to Telegram and how it shows replies.

    Polling is the default; setting ``TELEGRAM_WEBHOOK_URL`` switches to webhook mode (the
    two never run at once), which then requires ``TELEGRAM_WEBHOOK_SECRET``.
    """

    model_config = SettingsConfigDict(env_prefix="TELEGRAM_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "bot_token": "123456789:AAH...your-token-from-BotFather",
        "api_base_url": "http://localhost:8081",
        "webhook_url": "https://bot.example.com/telegram",
        "webhook_listen": "0.0.0.0:8443",
        "webhook_secret": "a-long-random-string_123",
        "group_mode": "mention",
        "edit_interval": "1.0",
        "group_edit_interval": "3.0",
        "typing_delay": "0.5",
        "first_flush_delay": "0.5",
        "max_concurrent_updates": "256",
        "connection_pool_size": "8",
        "request_timeout": "20",
        "poll_timeout": "30",
    }

    bot_token: SecretStr | None = None
    api_base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    webhook_listen: str = Field(default="0.0.0.0:8443", pattern=r"^[^\s:]*:\d{1,5}$")
    webhook_secret: SecretStr | None = Field(default=None, validate_default=True)
    group_mode: Literal["mention", "all"] = "mention"
    edit_interval: float = Field(default=1.0, ge=0.0, le=60.0)
    group_edit_interval: float = Field(default=3.0, ge=0.0, le=120.0)
    typing_delay: float = Field(default=0.5, gt=0.0, le=10.0)
    first_flush_delay: float = Field(default=0.5, ge=0.0, le=10.0)
    max_concurrent_updates: int = Field(default=256, ge=1, le=4096)
    connection_pool_size: int = Field(default=8, ge=1, le=1024)
    request_timeout: float = Field(default=20.0, gt=0.0, le=300.0)
    poll_timeout: int = Field(default=30, ge=0, le=50)

    @field_validator("api_base_url", "webhook_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("webhook_listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        if not 0 < int(value.rpartition(":")[2]) < 65536:
            raise ValueError("the port must be 1-65535")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # A field validator (not a model one) so that the error names this variable.
        if value is None and info.data.get("webhook_url"):
            raise ValueError("is required when TELEGRAM_WEBHOOK_URL is set")
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @property
    def webhook_mode(self) -> bool:
        """Whether updates arrive by webhook (``TELEGRAM_WEBHOOK_URL`` set) not polling."""
        return bool(self.webhook_url)

    def listen_address(self) -> tuple[str, int]:
        """``webhook_listen`` as (host, port)."""
        host, _, port = self.webhook_listen.rpartition(":")
        return host or "0.0.0.0", int(port)

    def webhook_path(self) -> str:
        """The path part of ``webhook_url`` that the local server listens on (no leading /)."""
        return urlsplit(self.webhook_url or "").path.lstrip("/")
