"""Retries and error translation for :class:`adapters.llm.openai.OpenAIBackend`.

Which ``openai`` failures are worth asking again and after how long
(:func:`retry_delay`: exponential backoff with full jitter, ``Retry-After`` honoured), and
the one place where ``openai`` exceptions become ``core.errors`` (:func:`translate`). The
backend owns the retry loop and what is learned from a failure (a text-only model, a
context window); this module only decides.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from typing import Final

import openai

from adapters.llm.openai_server import is_context_overflow
from adapters.llm.openai_wire import parse_retry_after, refuses_images
from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ContextTooLong,
    ImagesRefused,
    RateLimited,
)
from core.types import CompletionRequest, Role

_log = logging.getLogger(__name__)

RETRYABLE_STATUS: Final = frozenset({408, 429})
"""HTTP statuses below 500 that are retried."""


def has_images(request: CompletionRequest) -> bool:
    """Whether a user message of ``request`` carries images."""
    return any(m.images for m in request.messages if m.role is Role.USER)


def retry_delay(
    exc: Exception,
    attempt: int,
    *,
    images: bool,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
    max_retry_after: float,
) -> float | None:
    """Seconds to wait before retrying ``exc``, or ``None`` when it is not retried.

    Args:
        exc: what the request failed with.
        attempt: how many retries were made already.
        images: the request carried images.
        max_retries: the most retries of one request.
        backoff_base: the first backoff ceiling in seconds; it doubles per retry.
        backoff_max: the largest backoff ceiling in seconds.
        max_retry_after: the longest ``Retry-After`` honoured by waiting.
    """
    if isinstance(exc, openai.APITimeoutError):
        return None
    if images and refuses_images(exc):
        return None  # some servers refuse images with a 500: asking again won't help
    retry_after: float | None = None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status not in RETRYABLE_STATUS and status < 500:
            return None
        if exc.code == "insufficient_quota":
            return None
        retry_after = parse_retry_after(exc.response.headers)
    elif not isinstance(exc, openai.APIConnectionError):
        return None
    if attempt >= max_retries:
        return None
    ceiling = min(backoff_max, backoff_base * 2**attempt)
    jitter = random.uniform(0.0, ceiling)
    if retry_after is None:
        return jitter
    if retry_after > max_retry_after:
        return None
    return max(retry_after, jitter)


def translate(
    exc: Exception,
    model: str,
    *,
    images: bool,
    where: str,
    timeout: float,
    detail: str,
    overflow: Callable[[str], ContextTooLong],
) -> BackendError:
    """The one place where ``openai`` exceptions become ``core.errors``.

    Args:
        exc: what the request failed with.
        model: the model asked.
        images: the request carried images.
        where: the server's URL as shown (credentials masked).
        timeout: the wait that ran out, for ``BackendTimeout``.
        detail: what the server said, secrets already redacted.
        overflow: builds the ``ContextTooLong`` from the server's words (the backend learns
            the window they name).
    """
    if images and refuses_images(exc):
        _log.warning(
            "%s refused images for %s (%s); sending it none from now on", where, model, detail
        )
        return ImagesRefused(model, f"images refused: {detail}")
    if isinstance(exc, openai.APITimeoutError):
        return BackendTimeout(timeout)
    if isinstance(exc, openai.APIConnectionError):
        return BackendUnavailable(f"connection to {where} failed: {detail}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            _log.error(
                "the server at %s refused the API key (HTTP %d); check OPENAI_API_KEY",
                where,
                status,
            )
            err: BackendError = BackendUnavailable(f"API key refused by {where} (HTTP {status})")
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
            return RateLimited(retry_after, f"rate limited by {where}: {detail}")
        said = f"{exc.code} {exc.message} {exc.body}"
        if status == 413 or is_context_overflow(said):
            return overflow(said)
        if status == 404:
            err = BackendError(f"model {model!r} not found: {detail}")
            err.user_message = f"The model {model!r} is not available on the server."
            return err
        if status >= 500:
            return BackendUnavailable(f"server error: {detail}")
        return BackendError(f"request refused: {detail}")
    if isinstance(exc, openai.APIError):
        said = f"{exc.code} {exc.message} {exc.body}"
        if is_context_overflow(said):
            return overflow(said)
    if isinstance(exc, json.JSONDecodeError):
        return BackendError(f"malformed stream from {where}: {detail}")
    return BackendError(detail)


__all__ = ["RETRYABLE_STATUS", "has_images", "retry_delay", "translate"]
