"""The ``LLMBackend`` contract, run against every implementation.

To put another backend under contract, append a :class:`BackendCase` to ``BACKEND_CASES``:
its ``open`` is an async context manager yielding a :class:`ContractSubject` whose backend
is *not yet started* (the tests start it) and is closed on exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.llm.openai import OpenAIBackend, OpenAISettings
from core.errors import BackendError
from core.ports import LLMBackend
from core.types import ChatMessage, CompletionRequest, Finish, Role, TextDelta, Usage
from tests.adapters.llm.backend_helpers import collect, generator, text_of
from tests.fakes.openai_server import FakeOpenAIServer


@dataclass(frozen=True)
class ContractSubject:
    """A backend under test and how to observe it.

    Attributes:
        backend: the backend, not started.
        wait_released: returns once the stream last closed early released its connection
            or worker (raise or hang if it never does; the test bounds the wait).
    """

    backend: LLMBackend
    wait_released: Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class BackendCase:
    name: str
    open: Callable[[], AbstractAsyncContextManager[ContractSubject]]


def _story_or_echo(body: Mapping[str, Any]) -> str:
    messages = body["messages"]
    last = messages[-1]["content"]
    if last.startswith("Tell me a long story"):
        return "Once upon a time " + "there was a word, " * 300
    return f"Hello! You said: {last}"


@asynccontextmanager
async def _openai_case() -> AsyncIterator[ContractSubject]:
    async with FakeOpenAIServer(
        reply=_story_or_echo, chunk_delay=0.005, models=("gpt-4o-mini",)
    ) as srv:
        backend = OpenAIBackend(
            OpenAISettings(_env_file=None, base_url=srv.base_url, api_key="sk-contract"),
            timeout=5.0,
        )
        try:
            yield ContractSubject(backend, srv.disconnected.wait)
        finally:
            await backend.aclose()


@asynccontextmanager
async def _local_case() -> AsyncIterator[ContractSubject]:
    # The local backend on the project's tiny GGUF (tests/fixtures/make_tiny_gguf.py).
    from pathlib import Path

    from adapters.llm.local import LocalBackend, LocalSettings, local_backend_available
    from tests._require import require_or_skip

    reason = local_backend_available()
    if reason is not None:
        require_or_skip("llama", reason)
    tiny = Path(__file__).resolve().parents[2] / "fixtures" / "tiny-chat.gguf"
    backend = LocalBackend(LocalSettings(_env_file=None, model_path=tiny))

    async def released() -> None:
        while backend.busy:
            await asyncio.sleep(0.01)

    try:
        yield ContractSubject(backend, released)
    finally:
        await backend.aclose()


BACKEND_CASES: list[BackendCase] = [
    BackendCase("openai", _openai_case),
    BackendCase("local", _local_case),
]


@pytest.fixture(params=BACKEND_CASES, ids=lambda case: case.name)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[ContractSubject]:
    case: BackendCase = request.param
    async with case.open() as opened:
        yield opened


@pytest.fixture
async def backend(subject: ContractSubject) -> LLMBackend:
    await subject.backend.start()
    return subject.backend


def ask(backend: LLMBackend, text: str) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(Role.SYSTEM, "You are terse."), ChatMessage(Role.USER, text)],
        model=backend.default_model,
        max_tokens=64,
    )


def test_implements_the_port(backend: LLMBackend) -> None:
    assert isinstance(backend, LLMBackend)
    assert backend.name
    models = list(backend.models())
    assert models[0] == backend.default_model
    assert len(models) == len(set(models))


async def test_stream_yields_text_then_usage(backend: LLMBackend) -> None:
    events = await collect(backend.stream(ask(backend, "Say hello")))
    assert text_of(events).strip()
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 1
    assert events[-1] is usage[0]
    assert usage[0].prompt_tokens > 0
    assert usage[0].completion_tokens > 0


async def test_the_reason_the_stream_ended_comes_once_before_usage(backend: LLMBackend) -> None:
    events = await collect(backend.stream(ask(backend, "My name is Zed.")))
    finishes = [e for e in events if isinstance(e, Finish)]
    assert finishes == [Finish("stop")]
    assert not finishes[0].cut
    assert events[-2] is finishes[0]  # then Usage, last


async def test_a_reply_cut_by_max_tokens_says_so(backend: LLMBackend) -> None:
    request = dataclasses.replace(ask(backend, "My name is Zed."), max_tokens=2)
    events = await collect(backend.stream(request))
    finishes = [e for e in events if isinstance(e, Finish)]
    assert finishes == [Finish("length")]
    assert finishes[0].cut
    assert text_of(events).strip()
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage[0].completion_tokens == 2


async def test_closing_early_releases_and_the_backend_goes_on(
    subject: ContractSubject, backend: LLMBackend
) -> None:
    stream = generator(backend.stream(ask(backend, "Tell me a long story")))
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    await stream.aclose()
    await asyncio.wait_for(subject.wait_released(), 5)
    events = await asyncio.wait_for(collect(backend.stream(ask(backend, "Say hello"))), 10)
    assert text_of(events).strip()


async def test_count_tokens_is_positive_and_deterministic(backend: LLMBackend) -> None:
    model = backend.default_model
    short = await backend.count_tokens("Hello, world!", model)
    assert short > 0
    assert await backend.count_tokens("Hello, world!", model) == short
    assert await backend.count_tokens("Hello, world! " * 50, model) > short
    assert await backend.count_tokens("", model) == 0
    assert backend.tokenizer_name(model)
    assert backend.message_overhead(model) >= 0
    assert backend.context_window(model) >= 256


async def test_check_model(backend: LLMBackend) -> None:
    await backend.check_model(backend.default_model)
    with pytest.raises(BackendError) as info:
        await backend.check_model("no-such-model-xyz")
    assert backend.default_model in info.value.user_message


async def test_lifecycle(subject: ContractSubject) -> None:
    backend = subject.backend
    with pytest.raises(RuntimeError):
        await collect(backend.stream(ask(backend, "too early")))
    await backend.start()
    await backend.start()
    assert text_of(await collect(backend.stream(ask(backend, "Say hello")))).strip()
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(RuntimeError):
        await collect(backend.stream(ask(backend, "too late")))
