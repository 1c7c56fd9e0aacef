"""The OpenAI-compatible LLM backend: OpenAI, Ollama, vLLM, llama.cpp server, LM Studio...

Built on the official ``openai.AsyncOpenAI`` client with its own retries turned off: this
module owns the one retry loop (exponential backoff with full jitter, ``Retry-After``
honoured) and the one place where ``openai`` exceptions become ``core.errors``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Final, cast
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from adapters.llm.tokens import TokenCounter
from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextTooLong,
    RateLimited,
)
from core.lifecycle import Lifecycle
from core.settings import ChinwagSettings, CsvList
from core.types import (
    BackendEvent,
    ChatMessage,
    CompletionRequest,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

_log = logging.getLogger(__name__)

OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
PLACEHOLDER_API_KEY: Final = "sk-no-key-required"
"""Sent to servers that need no key (Ollama, llama.cpp, LM Studio) when none is set."""

DEFAULT_CONTEXT_WINDOW: Final = 8192
"""Assumed for a model the table does not know: small enough to be safe on local servers."""

# Longest prefix wins, so dated snapshots ("gpt-4o-2024-08-06") find their family.
KNOWN_CONTEXT_WINDOWS: Final[Mapping[str, int]] = {
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-1106": 128_000,
    "gpt-4-0125": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo-instruct": 4_096,
    "gpt-3.5-turbo": 16_385,
    "gpt-35-turbo": 16_385,
    "gpt-oss": 131_072,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
}

_CONTEXT_MARKERS: Final = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "exceeds the context window",
    "exceeds the maximum context",
    "exceeds the available context size",
    "exceed_context_size",
    "context window exceeded",
)
_RETRYABLE_STATUS: Final = frozenset({408, 429})


class OpenAISettings(ChinwagSettings):
    """How to reach an OpenAI-compatible server (``OPENAI_*``).

    ``OPENAI_BASE_URL`` unset means api.openai.com, which needs ``OPENAI_API_KEY``; local
    servers (``http://localhost:11434/v1`` for Ollama) take any key or none.
    """

    model_config = SettingsConfigDict(env_prefix="OPENAI_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "api_key": "sk-proj-...",
        "base_url": "http://localhost:11434/v1",
        "model": "gpt-4o-mini",
        "allowed_models": "gpt-4o-mini,gpt-4o",
    }

    api_key: SecretStr | None = None
    base_url: str | None = None
    model: str = Field(default="gpt-4o-mini", min_length=1)
    allowed_models: CsvList = Field(default_factory=list)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL such as http://localhost:11434/v1")
        return value.rstrip("/")

    @field_validator("model")
    @classmethod
    def _strip_model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a model, e.g. gpt-4o-mini")
        return value


def is_context_overflow(text: str) -> bool:
    """Whether an error text is a server's way of saying the prompt is too long."""
    lowered = text.lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAIBackend:
    """An ``LLMBackend`` speaking the OpenAI chat-completions API.

    Built once by the composition root from :class:`OpenAISettings`; ``start()`` opens the
    HTTP client and ``aclose()`` releases it. Both are idempotent; ``stream()`` raises
    ``RuntimeError`` before ``start()`` and after ``aclose()``.

    Args:
        settings: where the server is, the key, the default and allowed models.
        timeout: the longest wait in seconds for the first chunk and for each next one
            (``LLM_TIMEOUT_SECONDS``); exceeding it raises ``BackendTimeout`` at once.
        max_retries: retries of a request that failed with 429, 408, 5xx or a connection
            error before anything was streamed to the caller.
        context_windows: context sizes per model name, overriding the built-in table.
        backoff_base: the first backoff ceiling in seconds; it doubles per retry.
        backoff_max: the largest backoff ceiling in seconds.
        max_retry_after: the longest ``Retry-After`` honoured by waiting; a longer one is
            raised at once as ``RateLimited`` / ``BackendUnavailable``.

    Raises:
        ConfigError: no ``OPENAI_API_KEY`` for api.openai.com.
    """

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        context_windows: Mapping[str, int] | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
    ) -> None:
        if settings.api_key is None and settings.base_url is None:
            raise ConfigError(
                "OPENAI_API_KEY",
                "is not set; api.openai.com needs a key (or set OPENAI_BASE_URL to a local "
                "server such as Ollama)",
                "sk-proj-...",
            )
        if timeout <= 0 or max_retries < 0:
            raise ValueError("timeout must be positive and max_retries not negative")
        self._settings = settings
        self._timeout = timeout
        self._max_retries = max_retries
        self._context_windows = dict(context_windows or {})
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._tokens = TokenCounter()
        self._include_usage = True  # cleared for a server that rejects stream_options
        self._client: openai.AsyncOpenAI | None = None  # set while RUNNING
        self._state = Lifecycle.NEW
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None

    # --- identity and models ------------------------------------------------------------

    @property
    def name(self) -> str:
        """``"openai"``."""
        return "openai"

    @property
    def default_model(self) -> str:
        """``OPENAI_MODEL``."""
        return self._settings.model

    @property
    def base_url(self) -> str:
        """The server's API root."""
        return self._settings.base_url or OPENAI_BASE_URL

    def models(self) -> Sequence[str]:
        """The default model first, then ``OPENAI_ALLOWED_MODELS`` without duplicates."""
        return list(dict.fromkeys([self.default_model, *self._settings.allowed_models]))

    async def check_model(self, model: str) -> None:
        """Raise ``BackendError`` listing the allowed models unless ``model`` is one."""
        if model in self.models():
            return
        err = BackendError(f"model {model!r} is not in OPENAI_ALLOWED_MODELS")
        err.user_message = f"Unknown model {model!r}. Available: {', '.join(self.models())}."
        raise err

    def context_window(self, model: str) -> int:
        """The constructor's override, else the known table, else 8192 (conservative)."""
        if model in self._context_windows:
            return self._context_windows[model]
        bare = model.rsplit("/", 1)[-1].lower()
        for prefix in sorted(KNOWN_CONTEXT_WINDOWS, key=len, reverse=True):
            if bare == prefix or bare.startswith(prefix + "-"):
                return KNOWN_CONTEXT_WINDOWS[prefix]
        return DEFAULT_CONTEXT_WINDOW

    # --- tokens ---------------------------------------------------------------------------

    def tokenizer_name(self, model: str) -> str:
        """``"o200k_base"``, ``"cl100k_base"``, or ``"o200k_base~est"`` (see ``tokens``)."""
        return self._tokens.tokenizer_name(model)

    async def count_tokens(self, text: str, model: str) -> int:
        """Count ``text``: exact for OpenAI models, a calibrated estimate for others.

        Big texts are counted in a worker thread. See :mod:`adapters.llm.tokens`.
        """
        return await self._tokens.count(text, model)

    def message_overhead(self, model: str) -> int:
        """4 tokens per message (role and boundary markers of the chat format)."""
        return self._tokens.message_overhead(model)

    def calibration(self, model: str) -> float:
        """The learned factor on ``o200k_base`` counts for an estimated model (else 1.0)."""
        return self._tokens.calibration(model)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the HTTP client. Idempotent; ``RuntimeError`` after ``aclose()``."""
        if self._state.closed:
            raise RuntimeError("OpenAIBackend is closed; build a new one")
        if self._state is Lifecycle.RUNNING:
            return
        self._client = openai.AsyncOpenAI(
            api_key=self._secret or PLACEHOLDER_API_KEY,
            base_url=self.base_url,
            timeout=self._timeout,
            max_retries=0,  # retries live in _stream, one place
        )
        self._state = Lifecycle.RUNNING
        _log.info("OpenAI backend ready: %s, model %s", self.base_url, self.default_model)

    async def aclose(self) -> None:
        """Close the HTTP client; streams in flight fail. Idempotent."""
        self._state = Lifecycle.CLOSED
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _require_client(self) -> openai.AsyncOpenAI:
        if self._state is Lifecycle.NEW:
            raise RuntimeError("OpenAIBackend is not started; call start() first")
        if self._state is not Lifecycle.RUNNING or self._client is None:
            raise RuntimeError("OpenAIBackend is closed; build a new one")
        return self._client

    # --- streaming ------------------------------------------------------------------------

    def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        """Stream ``request`` as ``TextDelta``, ``ToolCallDelta`` and a final ``Usage``.

        Failures before the first event are retried (429, 408, 5xx, connection errors);
        once an event was yielded, nothing is retried, so text is never duplicated. Closing
        the iterator early closes the HTTP stream.

        Raises:
            RuntimeError: at call time, before ``start()`` or after ``aclose()``.
            BackendTimeout: no first or next chunk within ``timeout`` (not retried).
            RateLimited: 429 after the retries, or a ``Retry-After`` too long to wait.
            BackendUnavailable: unreachable, 5xx after the retries, or the key refused.
            ContextTooLong: the server says the prompt does not fit.
            BackendError: anything else the server refused (unknown model, bad request).
        """
        self._require_client()
        return self._stream(request)

    async def _stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        messages = [_message_param(m) for m in request.messages]
        tools = [_tool_param(t) for t in request.tools]
        attempt = 0
        yielded = False
        while True:
            client = self._client
            if client is None:  # aclose() ran while this stream was waiting to retry
                raise BackendUnavailable("the backend was closed")
            include_usage = self._include_usage
            response: openai.AsyncStream[ChatCompletionChunk] | None = None
            usage: Usage | None = None
            finished = False
            try:
                try:
                    async with asyncio.timeout(self._timeout):
                        response = await self._create(
                            client, request, messages, tools, include_usage
                        )
                    while True:
                        try:
                            async with asyncio.timeout(self._timeout):
                                chunk = await response.__anext__()
                        except StopAsyncIteration:
                            break
                        if chunk.usage is not None:
                            usage = Usage(
                                prompt_tokens=chunk.usage.prompt_tokens,
                                completion_tokens=chunk.usage.completion_tokens,
                            )
                        for choice in chunk.choices[:1]:
                            finished = finished or choice.finish_reason is not None
                            for event in _delta_events(choice.delta):
                                yielded = True
                                yield event
                finally:
                    if response is not None:
                        await response.close()
            except TimeoutError as exc:
                _log.warning(
                    "%s: no chunk from %s within %gs", request.model, self.base_url, self._timeout
                )
                raise BackendTimeout(self._timeout) from exc
            except (openai.OpenAIError, json.JSONDecodeError) as exc:
                if include_usage and not yielded and _rejects_stream_options(exc):
                    _log.warning(
                        "%s rejects stream_options; streaming without usage", self.base_url
                    )
                    self._include_usage = False
                    continue
                delay = None if yielded else self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._translate(exc, request.model) from exc
                attempt += 1
                _log.warning(
                    "%s: %s; retry %d/%d in %.2fs",
                    request.model,
                    self._redact(_describe(exc)),
                    attempt,
                    self._max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if not finished:
                raise BackendUnavailable("the stream ended before the reply was complete")
            if usage is not None:
                await self._calibrate(request, usage)
                yield usage
            return

    async def _create(
        self,
        client: openai.AsyncOpenAI,
        request: CompletionRequest,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        include_usage: bool,
    ) -> openai.AsyncStream[ChatCompletionChunk]:
        _log.debug("request to %s: %r", request.model, messages)
        # api.openai.com wants max_completion_tokens (o-series refuse max_tokens); most
        # compatible servers only know max_tokens.
        limit = request.max_tokens if request.max_tokens is not None else openai.omit
        official = self._settings.base_url is None
        return await client.chat.completions.create(
            model=request.model,
            messages=cast("list[ChatCompletionMessageParam]", messages),
            stream=True,
            stream_options={"include_usage": True} if include_usage else openai.omit,
            temperature=request.temperature if request.temperature is not None else openai.omit,
            max_completion_tokens=limit if official else openai.omit,
            max_tokens=openai.omit if official else limit,
            tools=cast(Any, tools) if tools else openai.omit,
        )

    async def _calibrate(self, request: CompletionRequest, usage: Usage) -> None:
        if request.tools or not self._tokens.is_estimate(request.model):
            return
        raw = await self._tokens.count_prompt_raw(
            [m.content for m in request.messages], request.model
        )
        self._tokens.observe(
            request.model,
            raw_content_tokens=raw,
            messages=len(request.messages),
            reported=usage.prompt_tokens,
        )

    # --- retries and the one translation boundary -----------------------------------------

    def _retry_delay(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to wait before retrying ``exc``, or ``None`` when it is not retried."""
        if isinstance(exc, openai.APITimeoutError):
            return None
        retry_after: float | None = None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status not in _RETRYABLE_STATUS and status < 500:
                return None
            if exc.code == "insufficient_quota":
                return None
            retry_after = parse_retry_after(exc.response.headers)
        elif not isinstance(exc, openai.APIConnectionError):
            return None
        if attempt >= self._max_retries:
            return None
        ceiling = min(self._backoff_max, self._backoff_base * 2**attempt)
        jitter = random.uniform(0.0, ceiling)
        if retry_after is None:
            return jitter
        if retry_after > self._max_retry_after:
            return None
        return max(retry_after, jitter)

    def _translate(self, exc: Exception, model: str) -> BackendError:
        """The one place where ``openai`` exceptions become ``core.errors``."""
        detail = self._redact(_describe(exc))
        if isinstance(exc, openai.APITimeoutError):
            return BackendTimeout(self._timeout)
        if isinstance(exc, openai.APIConnectionError):
            return BackendUnavailable(f"connection to {self.base_url} failed: {detail}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status in (401, 403):
                _log.error(
                    "the server at %s refused the API key (HTTP %d); check OPENAI_API_KEY",
                    self.base_url,
                    status,
                )
                err: BackendError = BackendUnavailable(
                    f"API key refused by {self.base_url} (HTTP {status})"
                )
                err.user_message = (
                    "The language model server refused this bot's API key. "
                    "The bot's operator needs to fix its configuration."
                )
                return err
            if status == 429 and exc.code == "insufficient_quota":
                err = BackendUnavailable(f"quota exhausted: {detail}")
                err.user_message = (
                    "The bot's language model account has run out of quota. "
                    "The bot's operator needs to top it up."
                )
                return err
            if status == 429:
                retry_after = parse_retry_after(exc.response.headers)
                return RateLimited(retry_after, f"rate limited by {self.base_url}: {detail}")
            if status == 413 or is_context_overflow(f"{exc.code} {exc.message}"):
                return ContextTooLong(self.context_window(model), detail)
            if status == 404:
                err = BackendError(f"model {model!r} not found: {detail}")
                err.user_message = f"The model {model!r} is not available on the server."
                return err
            if status >= 500:
                return BackendUnavailable(f"server error: {detail}")
            return BackendError(f"request refused: {detail}")
        if isinstance(exc, openai.APIError) and is_context_overflow(f"{exc.code} {exc.message}"):
            return ContextTooLong(self.context_window(model), detail)
        if isinstance(exc, json.JSONDecodeError):
            return BackendError(f"malformed stream from {self.base_url}: {detail}")
        return BackendError(detail)

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        return text


def _describe(exc: Exception) -> str:
    """A short operator-facing summary of a vendor error (may quote the server)."""
    message = exc.message if isinstance(exc, openai.APIError) else str(exc)
    message = re.sub(r"\s+", " ", message)[:300]
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {message}"
    return f"{type(exc).__name__}: {message}"


def _rejects_stream_options(exc: Exception) -> bool:
    return (
        isinstance(exc, openai.APIStatusError)
        and exc.status_code in (400, 422)
        and "stream_options" in f"{exc.message} {exc.body}"
    )


def _delta_events(delta: Any) -> list[BackendEvent]:
    events: list[BackendEvent] = []
    if delta.content:
        events.append(TextDelta(delta.content))
    for call in delta.tool_calls or ():
        function = call.function
        events.append(
            ToolCallDelta(
                index=call.index,
                id=call.id,
                name=function.name if function is not None else None,
                arguments=(function.arguments or "") if function is not None else "",
            )
        )
    return events


def _message_param(message: ChatMessage) -> dict[str, Any]:
    param: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.name:
        # OpenAI accepts ^[a-zA-Z0-9_-]{1,64}$ as a participant name.
        name = re.sub(r"[^A-Za-z0-9_-]", "_", message.name)[:64]
        if name.strip("_"):
            param["name"] = name
    if message.tool_calls:
        param["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
        if not message.content:
            param["content"] = None
    if message.tool_call_id is not None:
        param["tool_call_id"] = message.tool_call_id
        param.pop("name", None)
    return param


def _tool_param(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "KNOWN_CONTEXT_WINDOWS",
    "OpenAIBackend",
    "OpenAISettings",
    "is_context_overflow",
    "parse_retry_after",
]
