"""Settings the core owns, and the base every component's settings derive from.

Each component owns one pydantic-settings model with a flat, conventional prefix
(``OPENAI_``, ``TELEGRAM_``, ``LLM_``...). ``bots/`` builds them once at start, from the
environment first and then ``.env``, and passes them down; nothing reads settings at import
time. An empty value counts as unset. Lists are comma-separated.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.types import MemoryScope


def split_csv(value: Any) -> Any:
    """Turn ``"a, b,,c"`` into ``["a", "b", "c"]``; lists pass through."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(split_csv)]
"""A ``list[str]`` read from a comma-separated variable."""


class ChinwagSettings(BaseSettings):
    """Base of every component's settings: environment first, then ``.env``.

    ``EXAMPLES`` maps a field name to an example value, used in the one-line error that
    stops the program when a value is malformed.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )
    EXAMPLES: ClassVar[dict[str, str]] = {}


DEFAULT_SYSTEM_PROMPT = "You are a helpful, concise assistant."
"""The persona when neither ``SYSTEM_PROMPT`` nor the bot definition sets one."""


class CoreSettings(ChinwagSettings):
    """The bot's identity and the conversation engine's behaviour."""

    EXAMPLES: ClassVar[dict[str, str]] = {
        "bot_name": "chinwag",
        "system_prompt": "You are a helpful assistant.",
        "memory_scope_groups": "user",
        "recover_within_seconds": "600",
        "shutdown_grace_seconds": "10",
    }

    bot_name: str = Field(default="chinwag", min_length=1, max_length=64)
    # The default persona; unset, the bot definition's persona (else DEFAULT_SYSTEM_PROMPT).
    # A slot's own /system overrides either.
    system_prompt: str | None = None
    memory_scope_groups: MemoryScope = MemoryScope.USER
    # A reply a crash or restart left unfinished is produced again into its messages if it
    # began less than this long ago; an older one is marked interrupted.
    recover_within_seconds: float = Field(default=600.0, ge=0, le=86400 * 30)
    # How long a stop (SIGTERM) waits for replies in flight; the rest are finished by
    # recovery at the next start.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=3600)


class LLMSettings(ChinwagSettings):
    """Generation settings shared by every backend (``LLM_*``)."""

    model_config = SettingsConfigDict(env_prefix="LLM_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "backend": "openai",
        "temperature": "0.7",
        "max_reply_tokens": "1024",
        "context_window": "8192",
        "timeout_seconds": "30",
        "max_concurrency": "8",
    }

    backend: str | None = Field(default=None, pattern=r"^(openai|local)$")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_reply_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    context_window: int | None = Field(default=None, ge=256)
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_concurrency: int = Field(default=8, ge=1, le=1024)


def _check_subjects(values: list[str]) -> list[str]:
    for value in values:
        platform, sep, ident = value.partition(":")
        if not sep or not platform.strip() or not ident.strip():
            raise ValueError(f"{value!r} is not of the form platform:id")
    return values


Subjects = Annotated[
    list[str], NoDecode, BeforeValidator(split_csv), AfterValidator(_check_subjects)
]
"""Comma-separated ``platform:id`` entries, e.g. ``telegram:123,discord:456,console:alice``."""


class AccessSettings(ChinwagSettings):
    """Who may use the bot, who administers it, and the per-user limits."""

    EXAMPLES: ClassVar[dict[str, str]] = {
        "allowed_users": "telegram:123456,discord:987654,console:alice",
        "allowed_chats": "telegram:-1001234567890",
        "admin_users": "telegram:123456",
        "rate_limit_per_minute": "20",
        "daily_token_quota": "50000",
        "max_input_chars": "8000",
    }

    allowed_users: Subjects = Field(default_factory=list)
    allowed_chats: Subjects = Field(default_factory=list)
    admin_users: Subjects = Field(default_factory=list)
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    daily_token_quota: int | None = Field(default=None, ge=1)
    max_input_chars: int = Field(default=16000, ge=1)


class ToolSettings(ChinwagSettings):
    """Who may use tools, and how the tool loop runs (``TOOL_*``, ``TOOLS_IN_GROUPS``)."""

    EXAMPLES: ClassVar[dict[str, str]] = {
        "tool_timeout_seconds": "20",
        "tool_max_rounds": "5",
        "tool_confirm_seconds": "120",
        "tool_users": "telegram:123456,discord:987654",
        "tool_dangerous_users": "telegram:123456",
        "tools_in_groups": "false",
    }

    # One tool call's time limit; a call past it comes back to the model as an error.
    tool_timeout_seconds: float = Field(default=20.0, gt=0, le=3600)
    # Model rounds with tool calls per user message; then the bot says it stopped.
    tool_max_rounds: int = Field(default=5, ge=1, le=50)
    # How long an `act` or `dangerous` call waits for its confirmation.
    tool_confirm_seconds: float = Field(default=120.0, ge=5, le=86400)
    # Who may use `act` tools (admins always may); `read` tools follow ALLOWED_USERS.
    tool_users: Subjects = Field(default_factory=list)
    # Who may use `dangerous` tools besides the admins.
    tool_dangerous_users: Subjects = Field(default_factory=list)
    # Tools in group chats (off: tools only in private chats).
    tools_in_groups: bool = False


class KbSettings(ChinwagSettings):
    """The knowledge base: chunking, embeddings and retrieval (``KB_*``)."""

    model_config = SettingsConfigDict(env_prefix="KB_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "embeddings": "local",
        "embedding_model": "text-embedding-3-small",
        "chunk_chars": "800",
        "chunk_overlap": "150",
        "top_k": "5",
        "min_score": "0.3",
        "strict": "false",
        "user_uploads": "false",
        "max_file_mb": "20",
    }

    # Where vectors come from: "local" (the bundled MiniLM ONNX model, offline) or "openai"
    # (any OpenAI-compatible /v1/embeddings endpoint, OPENAI_BASE_URL/OPENAI_API_KEY).
    embeddings: str = Field(default="local", pattern=r"^(local|openai)$")
    embedding_model: str | None = None  # for "openai" (default text-embedding-3-small)
    chunk_chars: int = Field(default=800, ge=200, le=8000)
    chunk_overlap: int = Field(default=150, ge=0, le=2000)
    top_k: int = Field(default=5, ge=1, le=20)  # chunks put into the prompt
    # Below this cosine similarity of the best hit, no documents go into the prompt.
    min_score: float = Field(default=0.3, ge=-1.0, le=1.0)
    # Say "nothing relevant in the documents" (no LLM call) instead of answering without
    # them; never for a bot with tools.
    strict: bool = False
    # Users may add documents to their own knowledge base from a chat (admins always may).
    user_uploads: bool = False
    max_file_mb: float = Field(default=20.0, gt=0, le=2000)


class MediaSettings(ChinwagSettings):
    """Photos, voice notes and files users send in chats."""

    EXAMPLES: ClassVar[dict[str, str]] = {
        "max_file_mb": "20",
        "max_file_chars": "50000",
        "stt_max_seconds": "600",
    }

    # The largest file (photo, voice note, document) a chat user may send, checked before
    # downloading; Telegram's own limit for bots is 20 MB.
    max_file_mb: float = Field(default=20.0, gt=0, le=2000)
    # The most characters of a text file read into a turn (MAX_INPUT_CHARS keeps applying
    # to the typed text alone); a longer file is refused with the limit.
    max_file_chars: int = Field(default=50_000, ge=1, le=2_000_000)
    # The longest voice note or audio file transcribed, in seconds.
    stt_max_seconds: float = Field(default=600.0, gt=0, le=86_400)


class ScaleSettings(ChinwagSettings):
    """Many processes, one bot: ingress and queue workers on PostgreSQL, limits in Redis."""

    EXAMPLES: ClassVar[dict[str, str]] = {
        "chinwag_mode": "worker",
        "redis_url": "redis://127.0.0.1:6379/0",
        "worker_heartbeat_timeout_seconds": "10",
        "worker_concurrency": "8",
    }

    # What `chinwag run` does: run (one process does everything), ingress (take platform
    # events and queue them) or worker (answer queued turns); the last two need PostgreSQL.
    chinwag_mode: str = Field(default="run", pattern=r"(?i)^(run|ingress|worker)$")
    # Redis for what all processes share: flood control, rate limits, /stop. Required by
    # ingress and workers; `chinwag run` uses it when set, else keeps it all in memory.
    redis_url: SecretStr | None = Field(default=None)
    # A worker silent this long is dead: its turns are retried by another worker.
    worker_heartbeat_timeout_seconds: float = Field(default=10.0, ge=2, le=600)
    # How many turns (different conversations) one worker answers at once.
    worker_concurrency: int = Field(default=8, ge=1, le=256)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @property
    def mode(self) -> str:
        """``CHINWAG_MODE`` in lower case."""
        return self.chinwag_mode.lower()
