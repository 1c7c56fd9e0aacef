"""The OpenAI chat-completions wire format: settings, requests, chunks and error texts.

Pure translation between chinwag's types and what an OpenAI-compatible server sends and
receives; :class:`adapters.llm.openai.OpenAIBackend` does the talking.
"""

from __future__ import annotations

import base64
import email.utils
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, cast
from urllib.parse import urlsplit

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from adapters.llm.tool_markup import ToolCallParser
from core.settings import ChinwagSettings, CsvList
from core.types import (
    BackendEvent,
    ChatMessage,
    CompletionRequest,
    Finish,
    ImagePart,
    Role,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL: Final = "gpt-4o-mini"
"""The model used with api.openai.com when ``OPENAI_MODEL`` is unset."""
PLACEHOLDER_API_KEY: Final = "sk-no-key-required"
"""Sent to servers that need no key (Ollama, llama.cpp, LM Studio) when none is set."""


def http_base_url(value: str | None, example: str) -> str | None:
    """A server's base URL setting, checked: http(s) with a host, no trailing slash.

    Raises:
        ValueError: naming ``example`` (pydantic turns it into the setting's error).
    """
    if value is None:
        return None
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL such as {example}")
    return value.rstrip("/")


class OpenAISettings(ChinwagSettings):
    """How to reach an OpenAI-compatible server (``OPENAI_*``).

    ``OPENAI_BASE_URL`` unset means api.openai.com, which needs ``OPENAI_API_KEY``; local
    servers (``http://localhost:11434/v1`` for Ollama) take any key or none. ``OPENAI_MODEL``
    unset means ``gpt-4o-mini`` on api.openai.com, and the first model a server lists at
    ``/v1/models`` elsewhere.
    """

    model_config = SettingsConfigDict(env_prefix="OPENAI_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "api_key": "sk-proj-...",
        "base_url": "http://localhost:11434/v1",
        "model": "gpt-4o-mini",
        "allowed_models": "gpt-4o-mini,gpt-4o",
        "vision_models": "my-vlm,acme/*",
    }

    api_key: SecretStr | None = None
    base_url: str | None = None
    model: str | None = None
    allowed_models: CsvList = Field(default_factory=list)
    # Models that accept images besides the built-in families (core.media.VISION_FAMILIES):
    # exact ids, or prefixes ending in "*".
    vision_models: CsvList = Field(default_factory=list)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_base_url(value, "http://localhost:11434/v1")

    @field_validator("model")
    @classmethod
    def _strip_model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None


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


def describe_error(exc: Exception) -> str:
    """A short operator-facing summary of a vendor error (may quote the server)."""
    message = exc.message if isinstance(exc, openai.APIError) else str(exc)
    message = re.sub(r"\s+", " ", message)[:300]
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {message}"
    return f"{type(exc).__name__}: {message}"


# How servers refuse images for a text-only model: OpenAI ("image_url is only supported by
# certain models"), vLLM ("... is not a multimodal model", "At most 0 image(s) may be
# provided"), llama.cpp's server ("image input is not supported - hint: ... mmproj"),
# Ollama ("this model is missing data required for image input", a 500) and LM Studio
# ("Model does not support images"), servers that take only string contents ("content must
# be a string"), OpenRouter ("No endpoints found that support image input"), and
# llama-cpp-python's server, whose text-only chat formats fail on content parts with a 500
# ("can only concatenate str (not "list") to str").
_IMAGES_REFUSED = re.compile(
    r"image input is not supported|image_url is only supported|not a multimodal model"
    r"|missing data required for image input|content must be a string"
    r"|can only concatenate str \(not .list.\) to str"
    r"|at most 0 image|does not support (image|vision)|support image input"
    r"|(images?|vision|multimodal)( input)? (is |are )?not (supported|enabled)",
    re.IGNORECASE,
)


def refuses_images(exc: Exception) -> bool:
    """Whether a server refused a request with images because the model does not take them.

    Only meaningful for a request that carried images.
    """
    if not isinstance(exc, openai.APIStatusError) or exc.status_code in (401, 403, 404, 429):
        return False
    return _IMAGES_REFUSED.search(f"{exc.message} {exc.body}") is not None


def loggable(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` for a debug log: each image's data URL shortened to its type and size."""
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts: list[Any] = []
            for part in content:
                url = part.get("image_url", {}).get("url", "") if isinstance(part, dict) else ""
                if url.startswith("data:"):
                    head, _, data = url.partition(",")
                    part = {"type": "image_url", "image_url": f"{head},<{len(data)} chars>"}
                parts.append(part)
            message = {**message, "content": parts}
        out.append(dict(message))
    return out


def rejects_stream_options(exc: Exception) -> bool:
    """Whether a server refused the request because it does not know ``stream_options``."""
    return (
        isinstance(exc, openai.APIStatusError)
        and exc.status_code in (400, 422)
        and "stream_options" in f"{exc.message} {exc.body}"
    )


def delta_events(delta: Any) -> list[BackendEvent]:
    """The backend events of one streamed chunk's delta: text, then tool-call pieces."""
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


def image_url(image: ImagePart) -> str:
    """``image`` as a ``data:`` URL: its own bytes, never a link a server would fetch."""
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def user_content(message: ChatMessage) -> str | list[dict[str, Any]]:
    """A user turn's ``content``: a plain string, or content parts when it has images.

    The parts are the text first (left out when empty), then one ``image_url`` part per
    image with a ``data:`` URL and ``detail: auto``, as OpenAI documents vision input.
    """
    if not message.images:
        return message.content
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"type": "text", "text": message.content})
    parts += [
        {"type": "image_url", "image_url": {"url": image_url(image), "detail": "auto"}}
        for image in message.images
    ]
    return parts


def message_param(message: ChatMessage, *, null_content: bool = True) -> dict[str, Any]:
    """One stored chat message as the API's message object.

    A user message with images has content parts (:func:`user_content`); only user turns
    carry images (the API refuses them elsewhere). An assistant message that only calls
    tools has ``content`` null, as OpenAI documents it; with ``null_content`` false it is
    ``""``, which every compatible server takes (llama-cpp-python's refuses null).
    """
    content = user_content(message) if message.role is Role.USER else message.content
    param: dict[str, Any] = {"role": message.role.value, "content": content}
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
            param["content"] = None if null_content else ""
    if message.tool_call_id is not None:
        param["tool_call_id"] = message.tool_call_id
        param.pop("name", None)
    return param


class TextToolCalls:
    """Tool calls a server left in the reply's text, parsed out as the local backend does.

    Servers that render a GGUF's own chat template without a tool-call parser
    (llama-cpp-python's ``llama_cpp.server``, llama.cpp's without ``--jinja``) pass a
    model's ``<tool_call>`` markup through as text. When tools were offered, that text is
    parsed (see :mod:`adapters.llm.tool_markup`); once the server sends native tool-call
    deltas, it parses calls itself and the text is left alone.
    """

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        """Parse only when ``tools`` were offered."""
        schemas = {tool.name: tool.parameters for tool in tools}
        self._parser = ToolCallParser(schemas) if tools else None
        self._found = 0

    def events(self, events: list[BackendEvent]) -> list[BackendEvent]:
        """``events`` with calls parsed out of their text."""
        out: list[BackendEvent] = []
        for event in events:
            parser = self._parser
            if parser is None:
                out.append(event)
            elif isinstance(event, TextDelta):
                out += parser.feed(event.text)
            else:
                if isinstance(event, ToolCallDelta) and not parser.calls:
                    out += parser.close()  # native calls: the server parses them itself
                    self._parser = None
                out.append(event)
        return out

    def finish(self, reason: str) -> tuple[list[BackendEvent], str]:
        """Text still held back, and the finish reason (``tool_calls`` if calls were parsed)."""
        parser = self._parser
        if parser is None:
            return [], reason
        rest: list[BackendEvent] = list(parser.close())
        return rest, "tool_calls" if parser.calls and reason == "stop" else reason


def tool_param(tool: ToolSpec) -> dict[str, Any]:
    """A tool offered to the model, as the API's ``tools`` entry."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


def request_args(
    request: CompletionRequest,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    official: bool,
) -> dict[str, Any]:
    """What a chat-completions request carries besides the streaming switches.

    ``official``: the server is api.openai.com, which wants ``max_completion_tokens``
    (o-series models refuse ``max_tokens``); most compatible servers only know ``max_tokens``.
    """
    limit = request.max_tokens if request.max_tokens is not None else openai.omit
    return {
        "model": request.model,
        "messages": cast("list[ChatCompletionMessageParam]", messages),
        "temperature": request.temperature if request.temperature is not None else openai.omit,
        "max_completion_tokens": limit if official else openai.omit,
        "max_tokens": openai.omit if official else limit,
        "tools": cast(Any, tools) if tools else openai.omit,
    }


def completion_events(completion: ChatCompletion, tools: Sequence[ToolSpec]) -> list[BackendEvent]:
    """An unstreamed reply as the events a stream would have carried, ``Finish`` included.

    ``Usage`` comes last when the server reports it. ``completion`` has at least one choice.
    """
    choice = completion.choices[0]
    message = choice.message
    text_calls = TextToolCalls(() if message.tool_calls else tools)
    events = text_calls.events([TextDelta(message.content)] if message.content else [])
    for index, call in enumerate(message.tool_calls or ()):
        function = getattr(call, "function", None)
        if function is not None:
            events.append(
                ToolCallDelta(
                    index=index, id=call.id, name=function.name, arguments=function.arguments
                )
            )
    rest, reason = text_calls.finish(choice.finish_reason or "stop")
    out: list[BackendEvent] = [*events, *rest, Finish(reason)]
    if completion.usage is not None:
        out.append(usage_of(completion.usage))
    return out


def usage_of(usage: CompletionUsage) -> Usage:
    """Our :class:`Usage` of a response's ``usage``, with the prompt tokens the server cached."""
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=cached,
    )


__all__ = [
    "OPENAI_BASE_URL",
    "OPENAI_DEFAULT_MODEL",
    "PLACEHOLDER_API_KEY",
    "OpenAISettings",
    "TextToolCalls",
    "completion_events",
    "delta_events",
    "describe_error",
    "image_url",
    "loggable",
    "message_param",
    "parse_retry_after",
    "refuses_images",
    "rejects_stream_options",
    "request_args",
    "tool_param",
    "usage_of",
    "user_content",
]
