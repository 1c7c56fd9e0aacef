"""What an OpenAI-compatible server says about itself: its models, its context, its overflows.

Every server speaks the chat-completions API, but each says in its own words that a prompt
does not fit and each publishes its context size somewhere else. This module is the one place
that knows those forms, so :mod:`adapters.llm.openai` can shrink a prompt and remember the
window whichever server it talks to:

* **Overflow texts** (:func:`is_context_overflow`): OpenAI (``context_length_exceeded``,
  "maximum context length is N tokens"), vLLM (the same sentence), llama.cpp's server
  ("the request exceeds the available context size", type ``exceed_context_size_error`` with
  ``n_ctx``), llama-cpp-python's server ("maximum context length is N tokens" before a stream;
  "Requested tokens (N) exceed context window of M" in its log), Ollama ("exceeds the
  maximum context length"), LM Studio ("context the overflows ... context length of only N").
* **The window in those texts** (:func:`window_from_error`).
* **The window the server publishes** (:func:`discover`): ``/v1/models`` metadata (vLLM's
  ``max_model_len``, OpenRouter's and LM Studio's ``context_length``...), llama.cpp's
  ``/props`` (``n_ctx``), Ollama's ``/api/show`` (``num_ctx``, else the model's own length
  capped at Ollama's default context).
* **The default model** (:func:`ask_server`, at start): ``OPENAI_MODEL``, else the server's
  first listed model.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import openai

from adapters.llm.openai_wire import describe_error
from core.errors import ConfigError

_log = logging.getLogger(__name__)

_OVERFLOW_MARKERS: Final = (
    "context_length_exceeded",
    "maximum context length",
    "max context length",
    "prompt is too long",
    "exceeds the context window",
    "exceed context window",
    "exceeds the maximum context",
    "exceeds the available context size",
    "exceed_context_size",
    "context window exceeded",
    "context length exceeded",
    "context the overflows",
    "context length of only",
    "input length exceeds the context length",
)

_WINDOW_PATTERNS: Final = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"maximum context length is (\d+)",
        r"max context length (?:is |of )?(\d+)",
        r"context window of (\d+)",
        r"context length of only (\d+)",
        r"context length \(?(\d+)\)? tokens",
        r"n_ctx[\"']?\s*[=:]\s*(\d+)",  # llama.cpp's body, as JSON or as a Python dict
    )
)

_MODEL_WINDOW_KEYS: Final = (
    "max_model_len",  # vLLM
    "context_length",  # OpenRouter, LM Studio, Together
    "max_context_length",  # LM Studio's /api/v0
    "context_window",  # Groq
    "max_context_window",
)

OLLAMA_DEFAULT_CONTEXT: Final = 4096
"""Ollama's context when a model sets no ``num_ctx`` (it truncates silently past it)."""

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


def table_window(model: str) -> int:
    """The window of a well-known model family (longest prefix wins), else 8192."""
    bare = model.rsplit("/", 1)[-1].lower()
    for prefix in sorted(KNOWN_CONTEXT_WINDOWS, key=len, reverse=True):
        if bare == prefix or bare.startswith(prefix + "-"):
            return KNOWN_CONTEXT_WINDOWS[prefix]
    return DEFAULT_CONTEXT_WINDOW


MIN_WINDOW: Final = 64
"""Smaller numbers in an error text are not a context size."""


def is_context_overflow(text: str) -> bool:
    """Whether an error text is a server's way of saying the prompt is too long."""
    lowered = text.lower()
    return any(marker in lowered for marker in _OVERFLOW_MARKERS)


def window_from_error(text: str) -> int | None:
    """The context size an overflow error names ("maximum context length is 2048"), if any."""
    for pattern in _WINDOW_PATTERNS:
        match = pattern.search(text)
        if match:
            value = int(match.group(1))
            if value >= MIN_WINDOW:
                return value
    return None


def window_from_model_entry(entry: Mapping[str, Any]) -> int | None:
    """The context size a ``/v1/models`` entry publishes, if it publishes one."""
    for source in (entry, entry.get("meta"), entry.get("top_provider")):
        if not isinstance(source, Mapping):
            continue
        for key in _MODEL_WINDOW_KEYS:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= MIN_WINDOW:
                return value
    return None


def server_root(base_url: str) -> str:
    """``http://host:8080/v1`` -> ``http://host:8080`` (where ``/props`` and ``/api`` live)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def masked_url(url: str) -> str:
    """``url`` with any password (``http://user:pass@host``) shown as ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(slots=True)
class ServerInfo:
    """What :func:`discover` learned: the model ids listed and the windows published."""

    models: list[str] = field(default_factory=list)
    windows: dict[str, int] = field(default_factory=dict)


async def discover(
    client: openai.AsyncOpenAI, base_url: str, wanted: Sequence[str], *, per_request: float
) -> ServerInfo:
    """Ask the server for its models and context sizes; never raises for a server's silence.

    Args:
        client: an open client on ``base_url``.
        base_url: the API root (``.../v1``).
        wanted: the models whose windows matter (asked of llama.cpp and Ollama one by one).
        per_request: the longest wait for each request, in seconds.

    Returns:
        The models the server lists (in its order) and every window it published.

    Raises:
        openai.APIConnectionError: the server cannot be reached at all (the caller decides
            whether that is fatal).
    """
    info = ServerInfo()
    try:
        async with asyncio.timeout(per_request):
            listing = await client.get("/models", cast_to=object)
    except openai.APIStatusError as exc:
        _log.debug("%s/models answered HTTP %d", masked_url(base_url), exc.status_code)
        listing = None
    except TimeoutError:
        listing = None
    entries = listing.get("data") if isinstance(listing, Mapping) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            info.models.append(entry["id"])
            window = window_from_model_entry(entry)
            if window is not None:
                info.windows[entry["id"]] = window
    root = server_root(base_url)
    props_window = await _llama_cpp_window(client, root, per_request)
    for model in dict.fromkeys([*wanted, *info.models[:1]]):
        if model in info.windows:
            continue
        window = props_window or await _ollama_window(client, root, model, per_request)
        if window is not None:
            info.windows[model] = window
    return info


async def ask_server(
    client: openai.AsyncOpenAI,
    base_url: str,
    model: str | None,
    allowed: Sequence[str],
    *,
    per_request: float,
    redact: Callable[[str], str],
) -> tuple[str, dict[str, int]]:
    """At start: the default model and the windows the server publishes (see :func:`discover`).

    Args:
        client: an open client on ``base_url``.
        base_url: the API root (``OPENAI_BASE_URL``).
        model: ``OPENAI_MODEL``; ``None`` lets the server's first listed model be the default.
        allowed: ``OPENAI_ALLOWED_MODELS``, whose windows matter too.
        per_request: the longest wait for each request, in seconds.
        redact: hides secrets in what the error says.

    Returns:
        ``model``, else the server's first model, and the windows learned (none when the
        server could not be reached).

    Raises:
        ConfigError: ``model`` is ``None`` and the server lists no model, or cannot be
            reached to ask.
    """
    shown = masked_url(base_url)
    wanted = [m for m in (model, *allowed) if m]
    try:
        info = await discover(client, base_url, wanted, per_request=per_request)
    except openai.APIConnectionError as exc:
        if model is None:
            raise ConfigError(
                "OPENAI_MODEL",
                f"is not set, and the server at {shown} could not be asked for "
                f"its models ({redact(describe_error(exc))})",
                "llama3.1:8b",
            ) from exc
        _log.warning("could not reach %s to learn its context size; assuming the table's", shown)
        return model, {}
    if model is None:
        if not info.models:
            raise ConfigError(
                "OPENAI_MODEL",
                f"is not set, and the server at {shown} lists no models",
                "llama3.1:8b",
            )
        model = info.models[0]
        _log.info("OPENAI_MODEL is unset: using %s, the server's first model", model)
    for name, window in info.windows.items():
        _log.info("%s: context window %d tokens (from the server)", name, window)
    return model, info.windows


async def _quiet_get(client: openai.AsyncOpenAI, url: str, per_request: float) -> Any:
    try:
        async with asyncio.timeout(per_request):
            return await client.get(url, cast_to=object)
    except (openai.APIError, TimeoutError):
        return None


async def _llama_cpp_window(
    client: openai.AsyncOpenAI, root: str, per_request: float
) -> int | None:
    """llama.cpp's ``/props``: ``default_generation_settings.n_ctx`` (or top-level ``n_ctx``)."""
    props = await _quiet_get(client, f"{root}/props", per_request)
    if not isinstance(props, Mapping):
        return None
    settings = props.get("default_generation_settings")
    for source in (settings, props):
        if isinstance(source, Mapping):
            value = source.get("n_ctx")
            if isinstance(value, int) and value >= MIN_WINDOW:
                return value
    return None


async def _ollama_window(
    client: openai.AsyncOpenAI, root: str, model: str, per_request: float
) -> int | None:
    """Ollama's ``/api/show``: ``num_ctx`` when the model sets it, else its own length capped.

    Ollama answers a longer prompt by silently dropping its start, so the conservative
    reading (its default context) is the safe one when the model sets none.
    """
    try:
        async with asyncio.timeout(per_request):
            shown = await client.post(f"{root}/api/show", body={"model": model}, cast_to=object)
    except (openai.APIError, TimeoutError):
        return None
    if not isinstance(shown, Mapping):
        return None
    parameters = shown.get("parameters")
    if isinstance(parameters, str):
        match = re.search(r"^\s*num_ctx\s+(\d+)", parameters, re.MULTILINE)
        if match:
            return int(match.group(1))
    model_info = shown.get("model_info")
    if isinstance(model_info, Mapping):
        for key, value in model_info.items():
            if key.endswith(".context_length") and isinstance(value, int):
                return min(value, OLLAMA_DEFAULT_CONTEXT)
    return None


__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "KNOWN_CONTEXT_WINDOWS",
    "OLLAMA_DEFAULT_CONTEXT",
    "ServerInfo",
    "ask_server",
    "discover",
    "is_context_overflow",
    "masked_url",
    "server_root",
    "table_window",
    "window_from_error",
    "window_from_model_entry",
]
