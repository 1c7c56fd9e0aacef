"""The OpenAI-compatible LLM backend: OpenAI, Ollama, vLLM, llama.cpp server, LM Studio...

Built on the official ``openai.AsyncOpenAI`` client with its own retries turned off: this
module owns the one retry loop and what the backend learns from a failure (a context window,
a model that takes no images). Beside it: :mod:`adapters.llm.openai_wire` (settings, the
request and chunk formats), :mod:`adapters.llm.openai_server` (what a server says about its
models and context) and :mod:`adapters.llm.openai_errors` (which failures are retried after
how long, and the one place where ``openai`` exceptions become ``core.errors``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletionChunk

from adapters.llm.openai_errors import has_images, retry_delay, translate
from adapters.llm.openai_server import (
    DEFAULT_CONTEXT_WINDOW,
    KNOWN_CONTEXT_WINDOWS,
    ask_server,
    is_context_overflow,
    masked_url,
    table_window,
    window_from_error,
)
from adapters.llm.openai_wire import (
    OPENAI_BASE_URL,
    OPENAI_DEFAULT_MODEL,
    PLACEHOLDER_API_KEY,
    OpenAISettings,
    TextToolCalls,
    completion_events,
    delta_events,
    describe_error,
    loggable,
    message_param,
    parse_retry_after,
    rejects_stream_options,
    request_args,
    tool_param,
    usage_of,
)
from adapters.llm.tokens import TokenCounter, prompt_texts
from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextTooLong,
    ImagesRefused,
)
from core.lifecycle import Lifecycle
from core.media import is_vision_model
from core.types import (
    BackendEvent,
    CompletionRequest,
    Finish,
    Usage,
)

_log = logging.getLogger(__name__)


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
        context_windows: context sizes per model name, overriding the built-in table (what
            the server publishes or says in an overflow error is learned and wins).
        backoff_base: the first backoff ceiling in seconds; it doubles per retry.
        backoff_max: the largest backoff ceiling in seconds.
        max_retry_after: the longest ``Retry-After`` honoured by waiting; a longer one is
            raised at once as ``RateLimited`` / ``BackendUnavailable``.

    Raises:
        ConfigError: no ``OPENAI_API_KEY`` for api.openai.com.

    With ``OPENAI_BASE_URL`` set, ``start()`` asks the server for its models and context sizes
    (see :mod:`adapters.llm.openai_server`): the first listed model is the default when
    ``OPENAI_MODEL`` is unset, and a published window replaces the table's guess.
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
        self._learned: dict[str, int] = {}  # published by the server or named in an overflow
        self._model = settings.model or (
            OPENAI_DEFAULT_MODEL if settings.base_url is None else None
        )
        self._shown_url = masked_url(self.base_url)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._tokens = TokenCounter()
        self._include_usage = True  # cleared for a server that rejects stream_options
        self._text_only: set[str] = set()  # models whose server refused images
        self._client: openai.AsyncOpenAI | None = None  # set while RUNNING
        self._state = Lifecycle.NEW
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None
        self._url_password = urlsplit(self.base_url).password

    # --- identity and models ------------------------------------------------------------

    @property
    def name(self) -> str:
        """``"openai"``."""
        return "openai"

    @property
    def default_model(self) -> str:
        """``OPENAI_MODEL``, else ``gpt-4o-mini`` on OpenAI or the server's first model.

        Raises:
            RuntimeError: the server decides and ``start()`` has not asked it yet.
        """
        if self._model is None:
            raise RuntimeError("OPENAI_MODEL is unset: the server's list decides at start()")
        return self._model

    @property
    def base_url(self) -> str:
        """The server's API root."""
        return self._settings.base_url or OPENAI_BASE_URL

    def models(self) -> Sequence[str]:
        """The default model first, then ``OPENAI_ALLOWED_MODELS`` without duplicates."""
        return list(dict.fromkeys([self.default_model, *self._settings.allowed_models]))

    def supports_images(self, model: str) -> bool:
        """A known vision family or one of ``OPENAI_VISION_MODELS``, unless the server refused.

        See :func:`core.media.is_vision_model`. Once the server refused images for
        ``model`` (``ImagesRefused``), it is text-only for the rest of the process.
        """
        if model in self._text_only:
            return False
        return is_vision_model(model, self._settings.vision_models)

    def supports_tools(self, model: str) -> bool:
        """OpenAI-compatible servers take tools natively (``tools``, streamed call deltas)."""
        return True

    async def check_model(self, model: str) -> None:
        """Raise ``BackendError`` listing the allowed models unless ``model`` is one."""
        if model in self.models():
            return
        err = BackendError(f"model {model!r} is not in OPENAI_ALLOWED_MODELS")
        err.user_message = f"Unknown model {model!r}. Available: {', '.join(self.models())}."
        raise err

    def context_window(self, model: str) -> int:
        """What the server said, else the override, else the known table, else 8192."""
        learned = self._learned.get(model)
        if learned is not None:
            return learned
        if model in self._context_windows:
            return self._context_windows[model]
        return table_window(model)

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
        if self._settings.base_url is not None:
            try:
                self._model, windows = await ask_server(
                    self._client,
                    self.base_url,
                    self._model,
                    self._settings.allowed_models,
                    per_request=min(self._timeout, 10),
                    redact=self._redact,
                )
                self._learned.update(windows)
            except BaseException:
                await self.aclose()
                raise
        self._state = Lifecycle.RUNNING
        _log.info("OpenAI backend ready: %s, model %s", self._shown_url, self.default_model)

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
        """Stream ``request`` as ``TextDelta``, ``ToolCallDelta``, ``Finish`` and ``Usage``.

        ``Finish`` carries the server's ``finish_reason`` (``"length"``: the token limit cut
        the reply); ``Usage`` comes last when the server reports it.

        Failures before the first event are retried (429, 408, 5xx, connection errors);
        once an event was yielded, nothing is retried, so text is never duplicated. Closing
        the iterator early closes the HTTP stream.

        Raises:
            RuntimeError: at call time, before ``start()`` or after ``aclose()``.
            BackendTimeout: no first or next chunk within ``timeout`` (not retried).
            RateLimited: 429 after the retries, or a ``Retry-After`` too long to wait.
            BackendUnavailable: unreachable, 5xx after the retries, or the key refused.
            ContextTooLong: the server says the prompt does not fit.
            ImagesRefused: the request carried images and the server said the model takes
                none (``supports_images(model)`` is false from then on).
            BackendError: anything else the server refused (unknown model, bad request).
        """
        self._require_client()
        return self._stream(request)

    async def _stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        official = self._settings.base_url is None  # elsewhere, a call's content is ""
        messages = [message_param(m, null_content=official) for m in request.messages]
        tools = [tool_param(t) for t in request.tools]
        attempt = 0
        yielded = False
        while True:
            client = self._client
            if client is None:  # aclose() ran while this stream was waiting to retry
                raise BackendUnavailable("the backend was closed")
            include_usage = self._include_usage
            response: openai.AsyncStream[ChatCompletionChunk] | None = None
            usage: Usage | None = None
            finished: str | None = None  # the finish_reason, once the server sent it
            chunks = 0
            text_calls = TextToolCalls(request.tools)
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
                        chunks += 1
                        if chunk.usage is not None:
                            usage = usage_of(chunk.usage)
                        for choice in chunk.choices[:1]:
                            finished = finished or choice.finish_reason
                            for event in text_calls.events(delta_events(choice.delta)):
                                yielded = True
                                yield event
                finally:
                    if response is not None:
                        await response.close()
            except TimeoutError as exc:
                _log.warning(
                    "%s: no chunk from %s within %gs", request.model, self._shown_url, self._timeout
                )
                raise BackendTimeout(self._timeout) from exc
            except (openai.OpenAIError, json.JSONDecodeError) as exc:
                if include_usage and not yielded and rejects_stream_options(exc):
                    _log.warning(
                        "%s rejects stream_options; streaming without usage", self._shown_url
                    )
                    self._include_usage = False
                    continue
                delay = None if yielded else self._retry_delay(exc, attempt, request)
                if delay is None:
                    raise self._translate(exc, request) from exc
                attempt += 1
                _log.warning(
                    "%s: %s; retry %d/%d in %.2fs",
                    request.model,
                    self._redact(describe_error(exc)),
                    attempt,
                    self._max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if not finished and chunks == 0:
                async for event in self._unstreamed(client, request, messages, tools):
                    yield event
                return
            if not finished:
                raise BackendUnavailable("the stream ended before the reply was complete")
            rest, finished = text_calls.finish(finished)
            for event in rest:
                yield event
            yield Finish(finished)
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
        _log.debug("request to %s: %r", request.model, loggable(messages))
        stream: openai.AsyncStream[ChatCompletionChunk] = await client.chat.completions.create(
            stream=True,
            stream_options={"include_usage": True} if include_usage else openai.omit,
            **request_args(request, messages, tools, official=self._settings.base_url is None),
        )
        return stream

    async def _unstreamed(
        self,
        client: openai.AsyncOpenAI,
        request: CompletionRequest,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
    ) -> AsyncIterator[BackendEvent]:
        """Ask once more without streaming, after a stream that ended before its first chunk.

        llama-cpp-python's server answers a streamed request whose prompt does not fit with
        an empty stream (the reason goes only to its own log); asked without streaming, it
        says why, which becomes ``ContextTooLong`` with the window learned. A server that
        cannot stream at all still gets its answer through. The whole reply is one piece
        here, so the wait is four times ``LLM_TIMEOUT_SECONDS``.
        """
        _log.warning(
            "%s: the stream from %s ended before any data; asking again without streaming",
            request.model,
            self._shown_url,
        )
        attempt = 0
        while True:  # the server may have dropped the connection the empty stream came on
            try:
                async with asyncio.timeout(self._timeout * 4):
                    completion = await client.chat.completions.create(
                        stream=False,
                        **request_args(
                            request, messages, tools, official=self._settings.base_url is None
                        ),
                    )
                break
            except TimeoutError as exc:
                raise BackendTimeout(self._timeout * 4) from exc
            except (openai.OpenAIError, json.JSONDecodeError) as exc:
                delay = self._retry_delay(exc, attempt, request)
                if delay is None:
                    raise self._translate(exc, request) from exc
                attempt += 1
                await asyncio.sleep(delay)
        if not completion.choices:
            raise BackendUnavailable("the server answered with no choices")
        for event in completion_events(completion, request.tools):
            yield event

    async def _calibrate(self, request: CompletionRequest, usage: Usage) -> None:
        if request.tools or not self._tokens.is_estimate(request.model):
            return
        if has_images(request):  # the images' tokens are in the count, not in the texts
            return
        # Tool calls in the history cost their names and arguments; counting only the
        # contents would teach the estimate that every word costs more than it does.
        raw = await self._tokens.count_prompt_raw(prompt_texts(request.messages), request.model)
        self._tokens.observe(
            request.model,
            raw_content_tokens=raw,
            messages=len(request.messages),
            reported=usage.prompt_tokens,
        )

    # --- retries and translation (decided in openai_errors) --------------------------------

    def _retry_delay(
        self, exc: Exception, attempt: int, request: CompletionRequest
    ) -> float | None:
        """Seconds to wait before retrying ``exc``, or ``None`` when it is not retried."""
        return retry_delay(
            exc,
            attempt,
            images=has_images(request),
            max_retries=self._max_retries,
            backoff_base=self._backoff_base,
            backoff_max=self._backoff_max,
            max_retry_after=self._max_retry_after,
        )

    def _translate(self, exc: Exception, request: CompletionRequest) -> BackendError:
        """``exc`` as a ``core.errors`` exception; a model that refused images is remembered."""
        model = request.model
        detail = self._redact(describe_error(exc))
        err = translate(
            exc,
            model,
            images=has_images(request),
            where=self._shown_url,
            timeout=self._timeout,
            detail=detail,
            overflow=lambda said: self._overflow(model, said, detail),
        )
        if isinstance(err, ImagesRefused):
            self._text_only.add(model)
        return err

    def _overflow(self, model: str, said: str, detail: str) -> ContextTooLong:
        """``ContextTooLong``, remembering the window the server named for later prompts."""
        window = window_from_error(said)
        if window is not None and window != self._learned.get(model):
            self._learned[model] = window
            _log.warning("%s: the server's context window is %d tokens; remembered", model, window)
        return ContextTooLong(self.context_window(model), detail)

    def _redact(self, text: str) -> str:
        for secret in (self._secret, self._url_password):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "KNOWN_CONTEXT_WINDOWS",
    "OPENAI_DEFAULT_MODEL",
    "PLACEHOLDER_API_KEY",
    "OpenAIBackend",
    "OpenAISettings",
    "is_context_overflow",
    "parse_retry_after",
]
