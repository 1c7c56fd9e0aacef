"""An instant, in-process LLM backend for engine, adapter and benchmark tests.

It implements ``core.ports.LLMBackend`` for real: replies are a function of the prompt, streamed
in chunks, with optional delays, a gate to hold replies open, injectable failures, and counters
tests read (calls, concurrency peak, streams closed early). Tokens are counted as
whitespace-separated words, which keeps budgets easy to reason about in tests; a request's
``max_tokens`` cuts the reply after that many words, ending it with ``Finish("length")``.

A reply function may return a list of events instead of a string: text deltas and
``ToolCallDelta`` pieces, streamed as given and ended with ``Finish("tool_calls")`` when the
list holds a tool call (see :func:`tool_call`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

from core.errors import BackendError
from core.types import (
    BackendEvent,
    CompletionRequest,
    Finish,
    Role,
    TextDelta,
    ToolCallDelta,
    Usage,
)

Scripted = str | Sequence[TextDelta | ToolCallDelta]
"""What a reply function returns: the reply's text, or the events of a round."""


def tool_call(
    name: str, arguments: Mapping[str, Any] | str, *, id: str = "call_1", index: int = 0
) -> list[ToolCallDelta]:
    """A tool call as a model streams it: the name first, then the arguments in two pieces."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    half = len(text) // 2
    return [
        ToolCallDelta(index=index, id=id, name=name, arguments=text[:half]),
        ToolCallDelta(index=index, arguments=text[half:]),
    ]


def default_reply(request: CompletionRequest) -> str:
    """``echo: <last user text> | remembered: <earlier user texts, oldest first>``."""
    users = [m.content for m in request.messages if m.role is Role.USER]
    last = users[-1] if users else ""
    return f"echo: {last} | remembered: {'; '.join(users[:-1]) or 'nothing'}"


class ScriptedBackend:
    """A deterministic backend.

    Args:
        reply: a fixed reply, or a function of the request; defaults to :func:`default_reply`.
        chunk_size: characters per streamed ``TextDelta``.
        delay: seconds to sleep before each chunk (0 = no sleep at all).
        models: the models offered; the first is the default.
        context_window: tokens (words) the model accepts.
    """

    name = "scripted"

    def __init__(
        self,
        reply: str | Callable[[CompletionRequest], Scripted] | None = None,
        *,
        chunk_size: int = 16,
        delay: float = 0.0,
        models: Sequence[str] = ("scripted", "scripted-large"),
        context_window: int = 4096,
    ) -> None:
        self._reply = reply if reply is not None else default_reply
        self.chunk_size = chunk_size
        self.delay = delay
        self._models = tuple(models)
        self.window = context_window
        self.calls: list[CompletionRequest] = []
        self.tools = True  # whether the model can be offered tools
        # whether the models accept images: all or none, or the names of those that do
        self.vision: bool | Collection[str] = False
        self.failures: list[BaseException] = []  # raised by the next calls, in order
        self.mid_stream_failures: list[BaseException] = []  # raised after the first chunk
        self.gate: asyncio.Event | None = None  # when set to an unset Event, replies wait
        self.delay_for: Callable[[CompletionRequest], float] | None = None
        self.active = 0
        self.peak = 0
        self.closed_early = 0
        self.completed = 0
        self.started = False
        self.closed = False

    @property
    def default_model(self) -> str:
        return self._models[0]

    def models(self) -> Sequence[str]:
        return self._models

    def context_window(self, model: str) -> int:
        return self.window

    def tokenizer_name(self, model: str) -> str:
        return "words"

    async def count_tokens(self, text: str, model: str) -> int:
        return len(text.split())

    def supports_images(self, model: str) -> bool:
        if isinstance(self.vision, bool):
            return self.vision
        return model in self.vision

    def supports_tools(self, model: str) -> bool:
        return self.tools

    def message_overhead(self, model: str) -> int:
        return 3

    async def check_model(self, model: str) -> None:
        if model not in self._models:
            raise BackendError(f"unknown model {model}")

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    def reply_for(self, request: CompletionRequest) -> Scripted:
        """The full reply this backend gives to ``request`` (text, or a round's events)."""
        return self._reply if isinstance(self._reply, str) else self._reply(request)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        self.calls.append(request)
        if self.failures:
            raise self.failures.pop(0)
        self.active += 1
        self.peak = max(self.peak, self.active)
        finished = False
        try:
            if self.gate is not None:
                await self.gate.wait()
            scripted = self.reply_for(request)
            if not isinstance(scripted, str):
                for event in scripted:
                    yield event
                calls = any(isinstance(e, ToolCallDelta) for e in scripted)
                yield Finish("tool_calls" if calls else "stop")
                yield Usage(prompt_tokens=1, completion_tokens=1)
                finished = True
                self.completed += 1
                return
            text = scripted
            reason = "stop"
            words = re.findall(r"\s*\S+\s*", text)
            if request.max_tokens is not None and len(words) > request.max_tokens:
                text, reason = "".join(words[: request.max_tokens]).rstrip(), "length"
            delay = self.delay_for(request) if self.delay_for else self.delay
            for start in range(0, len(text), self.chunk_size):
                if delay:
                    await asyncio.sleep(delay)
                yield TextDelta(text[start : start + self.chunk_size])
                if start == 0 and self.mid_stream_failures:
                    raise self.mid_stream_failures.pop(0)
            yield Finish(reason)
            prompt = sum(len(m.content.split()) + 3 for m in request.messages)
            yield Usage(prompt_tokens=prompt, completion_tokens=len(text.split()))
            finished = True
            self.completed += 1
        finally:
            self.active -= 1
            if not finished:
                self.closed_early += 1
