"""Tool calls on the local backend: the tiny tool-calling GGUF, LOCAL_TOOLS, no-tool models."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from adapters.llm.local import LocalBackend
from core.types import (
    BackendEvent,
    ChatMessage,
    CompletionRequest,
    Finish,
    Role,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from tests.adapters.llm.local.conftest import TINY, TINY_TOOLS

MakeBackend = Callable[..., LocalBackend]

LIGHT_ON = ToolSpec(
    name="light_on",
    description="Switch a light on.",
    parameters={
        "type": "object",
        "properties": {"entity": {"type": "string", "description": "The light."}},
        "required": ["entity"],
    },
)
ASK = ChatMessage(Role.USER, "Turn on the kitchen light.")
THE_CALL = ToolCallDelta(index=0, id="call_0", name="light_on", arguments='{"entity": "kitchen"}')


def request(model: str, *messages: ChatMessage, **kw) -> CompletionRequest:
    return CompletionRequest(messages=list(messages) or [ASK], model=model, **kw)


async def collect(backend: LocalBackend, req: CompletionRequest) -> list[BackendEvent]:
    return [event async for event in backend.stream(req)]


def text_of(events: list[BackendEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def usage_of(events: list[BackendEvent]) -> Usage:
    usage = events[-1]
    assert isinstance(usage, Usage)
    return usage


@pytest.fixture
async def tools_model(make_backend: MakeBackend) -> LocalBackend:
    backend = make_backend(model_path=TINY_TOOLS)
    await backend.start()
    return backend


async def test_offered_a_tool_the_model_streams_exactly_that_call(
    tools_model: LocalBackend,
) -> None:
    assert tools_model.supports_tools("tiny-tools")
    events = await collect(tools_model, request("tiny-tools", temperature=0.0, tools=[LIGHT_ON]))
    assert events[:2] == [THE_CALL, Finish("tool_calls")]
    assert json.loads(THE_CALL.arguments) == {"entity": "kitchen"}
    assert usage_of(events).completion_tokens == 9  # generated in pieces, parsed whole
    assert len(events) == 3


async def test_without_tools_the_same_model_answers_in_words(tools_model: LocalBackend) -> None:
    events = await collect(tools_model, request("tiny-tools"))
    assert text_of(events) == "I can not do that."
    assert not [e for e in events if isinstance(e, ToolCallDelta)]
    assert Finish("stop") in events


async def test_the_call_and_its_result_are_in_the_next_prompt(tools_model: LocalBackend) -> None:
    called = ChatMessage(
        Role.ASSISTANT,
        "",
        tool_calls=(ToolCall("call_0", "light_on", '{"entity": "kitchen"}'),),
    )
    result = ChatMessage(Role.TOOL, "light.kitchen is on", tool_call_id="call_0")
    events = await collect(
        tools_model, request("tiny-tools", ASK, called, result, tools=[LIGHT_ON])
    )
    # Had the call or the result been left out, the model would call the tool again.
    assert text_of(events) == "The light is on."
    assert Finish("stop") in events


async def test_a_call_cut_by_the_token_limit_is_text_never_a_call(
    tools_model: LocalBackend,
) -> None:
    events = await collect(tools_model, request("tiny-tools", tools=[LIGHT_ON], max_tokens=4))
    assert not [e for e in events if isinstance(e, ToolCallDelta)]
    assert text_of(events) == '<tool_call>{"name": "light_on", "arguments": {"'
    assert Finish("length") in events


async def test_local_tools_off_sends_no_tools(make_backend: MakeBackend) -> None:
    backend = make_backend(model_path=TINY_TOOLS, tools="off")
    await backend.start()
    assert not backend.supports_tools("tiny-tools")
    events = await collect(backend, request("tiny-tools", tools=[LIGHT_ON]))
    assert text_of(events) == "I can not do that."  # the model never saw the tool
    assert not [e for e in events if isinstance(e, ToolCallDelta)]


async def test_a_model_whose_template_has_no_tools_is_never_sent_them(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend(model_path=TINY)
    await backend.start()
    assert not backend.supports_tools("tiny-chat")
    plain = await collect(backend, request("tiny-chat"))
    offered = await collect(backend, request("tiny-chat", tools=[LIGHT_ON]))
    assert usage_of(offered).prompt_tokens == usage_of(plain).prompt_tokens
    assert text_of(offered) == text_of(plain)


async def test_local_tools_on_describes_tools_to_a_template_without_them(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend(model_path=TINY, tools="on")
    await backend.start()
    assert backend.supports_tools("tiny-chat")
    plain = await collect(backend, request("tiny-chat"))
    offered = await collect(backend, request("tiny-chat", tools=[LIGHT_ON]))
    # The tool list (about a hundred tokens of JSON and instructions) joined the prompt.
    assert usage_of(offered).prompt_tokens > usage_of(plain).prompt_tokens + 50
