"""Load every component's settings once, and configure logging.

A malformed value stops the program with one clear line naming the variable and an example
(exit status 2, raised here as :class:`core.errors.ConfigError`).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import ClassVar, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator

from adapters.telegram.settings import TelegramSettings
from core.errors import ConfigError
from core.settings import ChinwagSettings

_log = logging.getLogger(__name__)

S = TypeVar("S", bound=ChinwagSettings)


class BotSettings(ChinwagSettings):
    """What only the composition root uses."""

    EXAMPLES: ClassVar[dict[str, str]] = {
        "log_level": "INFO",
        "chinwag_bot": "assistant",
        "mcp_config": "./mcp.json",
        "chinwag_http_listen": "127.0.0.1:9464",
    }

    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    # The bot to run (`--bot` wins): bundled name, package.module or a .py file.
    chinwag_bot: str | None = None
    # A JSON file of MCP servers ({"mcpServers": {...}}) whose tools every bot gets.
    mcp_config: Path | None = None
    # Where /healthz, /readyz and /metrics are served (host:port, [::1]:port); unset = off.
    chinwag_http_listen: str | None = Field(
        default=None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):\d{1,5}$"
    )

    @field_validator("chinwag_http_listen")
    @classmethod
    def _listen_port(cls, value: str | None) -> str | None:
        if value is not None and not 0 < int(value.rpartition(":")[2]) < 65536:
            raise ValueError("the port must be 1-65535")
        return value

    def http_listen(self) -> tuple[str, int] | None:
        """``CHINWAG_HTTP_LISTEN`` as (host, port), brackets off; ``None`` when unset.

        An empty host means every interface (``:9464``), as for the Telegram webhook.
        """
        if self.chinwag_http_listen is None:
            return None
        host, _, port = self.chinwag_http_listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


def check_http_listen(settings: BotSettings, telegram: TelegramSettings) -> None:
    """Refuse a health/metrics listener on the Telegram webhook's port.

    The webhook port faces the internet; health and metrics must never be served there.

    Raises:
        ConfigError: naming ``CHINWAG_HTTP_LISTEN``, when both use the same port.
    """
    listen = settings.http_listen()
    if listen is None or not telegram.webhook_mode:
        return
    if listen[1] == telegram.listen_address()[1]:
        raise ConfigError(
            "CHINWAG_HTTP_LISTEN",
            f"uses port {listen[1]}, the Telegram webhook's (TELEGRAM_WEBHOOK_LISTEN); "
            "health and metrics never share the public webhook port",
            example="127.0.0.1:9464",
        )


def load(cls: type[S], env_file: Path | None) -> S:
    """Build ``cls`` from the environment, then ``env_file``.

    Raises:
        ConfigError: naming the first malformed variable, with an example value. The value
            itself is never echoed (it may be a secret).
    """
    try:
        return cls(_env_file=env_file)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        prefix = str(cls.model_config.get("env_prefix") or "")
        # A model-level error has no field: name the settings group rather than a bare prefix.
        variable = f"{prefix}{field}".upper() if field else f"{prefix}*"
        problem = re.sub(r"^Value error, ", "", str(error["msg"]))
        raise ConfigError(variable, problem, example=cls.EXAMPLES.get(field)) from None


def secrets_of(*settings: ChinwagSettings) -> list[str]:
    """The secrets in ``settings``, for the log redaction filter.

    That is every ``SecretStr`` value, and every password inside a URL setting
    (``OPENAI_BASE_URL=http://user:pass@host/v1``).
    """
    found: list[str] = []
    for model in settings:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
            elif isinstance(value, str) and "://" in value:
                try:
                    password = urlsplit(value).password
                except ValueError:  # a malformed URL is its setting's own error to report
                    continue
                if password:
                    found.append(password)
    return found


class RedactSecrets(logging.Filter):
    """Replace known secrets in every log record with ``***`` (belt and braces)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self._secrets:
                if secret in text:
                    record.exc_text = text.replace(secret, "***")
                    break
        return True


def configure_logging(level: str, secrets: list[str]) -> None:
    """Log to stderr at ``level``; keep vendor loggers that print request URLs quiet.

    python-telegram-bot puts the bot token in its request URLs, which ``httpx`` logs at
    INFO, and openai 3.x logs every request's URL (credentials included) through ``httpx2``;
    message bodies are only ever logged by chinwag at DEBUG.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in (
        "httpx",
        "httpcore",
        "httpx2",  # openai 3.x's HTTP client: logs every request's URL at INFO
        "httpcore2",
        "openai",
        "telegram.ext",
        "discord.http",
        "aiosqlite",
        "alembic",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("discord").setLevel(max(logging.INFO, root.level))
