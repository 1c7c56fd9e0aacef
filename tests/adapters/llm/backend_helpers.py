"""Helpers shared by the backend tests."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from adapters.llm.openai import OpenAIBackend
from core.types import BackendEvent, ChatMessage, CompletionRequest, Role, TextDelta

API_KEY = "sk-test-SECRETKEY-0123456789abcdef"

MakeBackend = Callable[..., Awaitable[OpenAIBackend]]
"""``await make_backend(settings={...}, **backend_kwargs)``: a started backend."""


def request(
    text: str = "hello there", model: str = "gpt-4o-mini", **kwargs: Any
) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, text)],
        model=model,
        **kwargs,
    )


async def collect(
    stream: AsyncIterator[BackendEvent], into: list[BackendEvent] | None = None
) -> list[BackendEvent]:
    """All events of ``stream``; with ``into``, events land there even if it raises."""
    events = into if into is not None else []
    async for event in stream:
        events.append(event)
    return events


def generator(stream: AsyncIterator[BackendEvent]) -> AsyncGenerator[BackendEvent, None]:
    """``stream`` as the async generator both backends return, which the engine closes early
    (``aclose()``) on ``/stop``; fails if a backend returns something that cannot be closed."""
    assert isinstance(stream, AsyncGenerator)
    return stream


def text_of(events: list[BackendEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))
