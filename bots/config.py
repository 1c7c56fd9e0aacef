"""Load every component's settings once, and configure logging.

A malformed value stops the program with one clear line naming the variable and an example
(exit status 2, raised here as :class:`core.errors.ConfigError`).

Logs are text lines or, with ``LOG_FORMAT=json``, one JSON object per line for log
collectors; known secrets are replaced with ``***`` in both, tracebacks included. The
terminal chat keeps its screen for the conversation: its log goes to a private, rotating
file in the data directory, and only warnings and errors to standard error.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator

from adapters.files import private_dir, private_file
from adapters.telegram.settings import TelegramSettings
from core.errors import ConfigError
from core.settings import ChinwagSettings

_log = logging.getLogger(__name__)

S = TypeVar("S", bound=ChinwagSettings)


class BotSettings(ChinwagSettings):
    """What only the composition root uses."""

    EXAMPLES: ClassVar[dict[str, str]] = {
        "log_level": "INFO",
        "log_format": "json",
        "chinwag_bot": "assistant",
        "mcp_config": "./mcp.json",
        "chinwag_http_listen": "127.0.0.1:9464",
    }

    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    # text: one readable line per record; json: one JSON object per line (log collectors).
    log_format: str = Field(default="text", pattern=r"(?i)^(text|json)$")
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


LOG_FILE_NAME = "chinwag.log"
"""The terminal chat's log, in the data directory (rotated at 5 MB, three old files kept)."""

# Attributes every LogRecord has; the others were passed with ``extra=`` and are logged too.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class RedactSecrets(logging.Filter):
    """Replace known secrets in every log record with ``***`` (belt and braces).

    The message, the traceback text and the ``extra=`` fields are redacted, so both log
    formats are covered.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = self._redact(text)
        elif record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        for key, value in _extras(record).items():
            shown = value if isinstance(value, str) else str(value)
            if self._redact(shown) != shown:
                setattr(record, key, self._redact(shown))
        return True


class JsonFormatter(logging.Formatter):
    """Log records as JSON lines, for log collectors.

    One object per record: time (UTC, ISO 8601), level, logger, message, the traceback as
    ``exc_info`` text when there is one, and every ``extra=`` field.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (values JSON cannot hold are written as text)."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_text is None:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _PrivateRotatingFile(RotatingFileHandler):
    """A rotating log file created ``0600`` (the new file after each rotation too)."""

    def _open(self) -> Any:
        private_file(Path(self.baseFilename))
        return super()._open()


def configure_logging(
    level: str,
    secrets: list[str],
    *,
    fmt: str = "text",
    log_file: Path | None = None,
) -> Path | None:
    """Log at ``level`` in format ``fmt``; keep vendor loggers that print request URLs quiet.

    Without ``log_file`` every record goes to standard error. With it (the terminal chat),
    records go to that file (made private, rotated at 5 MB) and only warnings and errors to
    standard error; when the file cannot be opened, standard error keeps warnings and errors
    alone and a warning says why.

    python-telegram-bot puts the bot token in its request URLs, which ``httpx`` logs at
    INFO, and openai 3.x logs every request's URL (credentials included) through ``httpx2``;
    message bodies are only ever logged by chinwag at DEBUG.

    Returns:
        The log file in use, or ``None`` when everything goes to standard error.
    """
    formatter: logging.Formatter = (
        JsonFormatter()
        if fmt.lower() == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    redact = RedactSecrets(secrets)
    handlers: list[logging.Handler] = []
    stderr = logging.StreamHandler(sys.stderr)
    handlers.append(stderr)
    problem: OSError | None = None
    if log_file is not None:
        stderr.setLevel(logging.WARNING)
        try:
            private_dir(log_file.parent)
            handlers.append(
                _PrivateRotatingFile(
                    log_file, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8"
                )
            )
        except OSError as exc:
            problem, log_file = exc, None
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, _PrivateRotatingFile):  # ours: others may be put back by a caller
            old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redact)
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
    if problem is not None:
        _log.warning("cannot write the log file (%s); logging warnings to stderr only", problem)
    return log_file
