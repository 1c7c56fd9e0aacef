"""Native tool calls through the OpenAI backend, the real ``openai`` client and the fake API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from core.errors import BackendError
from core.types import (
    BackendEvent,
    ChatMessage,
    CompletionRequest,
    Finish,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from tests.adapters.llm.backend_helpers import MakeBackend, collect, text_of
from tests.fakes.openai_server import FakeOpenAIServer, FakeReply, FakeToolCall

LIGHT_ON = ToolSpec(
    "light_on",
    "Switch a light on.",
    {"type": "object", "properties": {"entity": {"type": "string"}}, "required": ["entity"]},
)
GET_STATE = ToolSpec(
    "get_state",
    "Read an entity's state.",
    {"type": "object", "properties": {"entity": {"type": "string"}}},
)
ASK = ChatMessage(Role.USER, "Turn on the kitchen light and tell me the hall's.")


def assembled(events: list[BackendEvent]) -> list[ToolCall]:
    """Tool-call deltas joined by index, as the engine joins them."""
    parts: dict[int, dict[str, str]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            part = parts.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            part["id"] = event.id or part["id"]
            part["name"] = event.name or part["name"]
            part["arguments"] += event.arguments
    return [ToolCall(**parts[i]) for i in sorted(parts)]


def home_model(body: Mapping[str, Any]) -> str | FakeReply:
    """Calls two tools for a question; answers from the results once they are there."""
    messages = body["messages"]
    if messages[-1]["role"] == "tool":
        results = [m["content"] for m in messages if m["role"] == "tool"]
        return f"Done: {'; '.join(results)}."
    return FakeReply(
        text="On it.",
        tool_calls=[
            FakeToolCall("call_k1", "light_on", json.dumps({"entity": "light.kitchen"})),
            FakeToolCall("call_h2", "get_state", json.dumps({"entity": "light.hall"})),
        ],
    )


async def test_a_tool_round_trip_as_the_api_wants_it(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.reply = home_model
    backend = await make_backend()
    assert backend.supports_tools("gpt-4o-mini")
    first = await collect(
        backend.stream(CompletionRequest([ASK], "gpt-4o-mini", tools=[LIGHT_ON, GET_STATE]))
    )
    calls = assembled(first)
    assert calls == [
        ToolCall("call_k1", "light_on", '{"entity": "light.kitchen"}'),
        ToolCall("call_h2", "get_state", '{"entity": "light.hall"}'),
    ]
    assert text_of(first) == "On it."
    assert Finish("tool_calls") in first

    history = [
        ASK,
        ChatMessage(Role.ASSISTANT, "On it.", tool_calls=tuple(calls)),
        ChatMessage(Role.TOOL, "light.kitchen is on", name="light_on", tool_call_id="call_k1"),
        ChatMessage(Role.TOOL, "light.hall is off", name="get_state", tool_call_id="call_h2"),
    ]
    second = await collect(
        backend.stream(CompletionRequest(history, "gpt-4o-mini", tools=[LIGHT_ON, GET_STATE]))
    )
    assert text_of(second) == "Done: light.kitchen is on; light.hall is off."
    assert Finish("stop") in second
    sent = server.chat_requests[1].body["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "On it.",  # text before the calls is kept, not nulled
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }
    assert sent[2] == {"role": "tool", "content": "light.kitchen is on", "tool_call_id": "call_k1"}
    assert server.tools_offered == [["light_on", "get_state"], ["light_on", "get_state"]]


async def test_tools_not_offered_are_not_in_the_request(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    await collect(backend.stream(CompletionRequest([ASK], "gpt-4o-mini", tools=[GET_STATE])))
    await collect(backend.stream(CompletionRequest([ASK], "gpt-4o-mini")))
    assert server.tools_offered == [["get_state"], []]
    assert "tools" not in server.chat_requests[1].body  # omitted, not an empty list


@pytest.mark.parametrize(
    ("messages", "tools", "complaint"),
    [
        (
            [ASK, ChatMessage(Role.TOOL, "on", tool_call_id="call_nobody")],
            [],
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            [
                ASK,
                ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall("call_1", "light_on", "{}"),)),
                ChatMessage(Role.USER, "well?"),
            ],
            [],
            "did not have response messages: call_1",
        ),
        ([ASK], [ToolSpec("light on!", "x", {"type": "object"})], "tools[0].function.name"),
        ([ASK], [ToolSpec("x" * 65, "x", {"type": "object"})], "string too long"),
    ],
    ids=["orphan tool result", "unanswered call", "bad tool name", "long tool name"],
)
async def test_requests_the_real_api_refuses_are_refused_once(
    server: FakeOpenAIServer,
    make_backend: MakeBackend,
    messages: list[ChatMessage],
    tools: list[ToolSpec],
    complaint: str,
) -> None:
    backend = await make_backend()
    with pytest.raises(BackendError) as info:
        await collect(backend.stream(CompletionRequest(messages, "gpt-4o-mini", tools=tools)))
    assert complaint in str(info.value)
    assert len(server.chat_requests) == 1  # a 400 is not retried


async def test_tool_calls_come_through_the_non_streaming_fallback(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.reply = home_model
    server.empty_stream()  # as llama-cpp-python's server answers when it fails early
    backend = await make_backend()
    events = await collect(
        backend.stream(CompletionRequest([ASK], "gpt-4o-mini", tools=[LIGHT_ON, GET_STATE]))
    )
    assert [r.body["stream"] for r in server.chat_requests] == [True, False]
    assert server.chat_requests[1].body["tools"] == server.chat_requests[0].body["tools"]
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(0, "call_k1", "light_on", '{"entity": "light.kitchen"}'),
        ToolCallDelta(1, "call_h2", "get_state", '{"entity": "light.hall"}'),
    ]
    assert text_of(events) == "On it."
    assert events[-2:] == [Finish("tool_calls"), events[-1]]
    assert isinstance(events[-1], Usage)


async def test_tool_calls_in_the_history_do_not_skew_the_token_estimate(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    """The server counts a call's name and arguments; so does the estimate's calibration."""
    server.reply = lambda body: "ok"
    backend = await make_backend()
    notes = json.dumps({"text": "buy milk, eggs, bread, apples and coffee beans " * 6})
    history = [
        ChatMessage(Role.USER, "Write my shopping list down, please: " + "milk and eggs, " * 8),
        ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall("call_1", "note", notes),)),
        ChatMessage(Role.TOOL, "saved", tool_call_id="call_1"),
        ChatMessage(Role.USER, "Thanks."),
    ]
    for _ in range(6):
        await collect(backend.stream(CompletionRequest(history, "llama3")))
    # The fake's tokenizer is o200k itself: the factor must stay at 1.
    assert backend.calibration("llama3") == pytest.approx(1.0, abs=0.02)


# --- calls a server leaves in the text ---------------------------------------------------------

MARKUP = '<tool_call>{"name": "light_on", "arguments": {"entity": "kitchen"}}</tool_call>'
THE_CALL = ToolCallDelta(index=0, id="call_0", name="light_on", arguments='{"entity": "kitchen"}')


async def test_tool_call_markup_in_the_text_is_a_call_when_tools_were_offered(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.reply = lambda body: f"Sure. {MARKUP}"
    backend = await make_backend()
    offered = await collect(
        backend.stream(CompletionRequest([ASK], "gpt-4o-mini", tools=[LIGHT_ON]))
    )
    assert text_of(offered) == "Sure."
    assert [e for e in offered if isinstance(e, ToolCallDelta)] == [THE_CALL]
    assert Finish("tool_calls") in offered
    server.empty_stream()  # the same through the non-streaming fallback
    fallback = await collect(
        backend.stream(CompletionRequest([ASK], "gpt-4o-mini", tools=[LIGHT_ON]))
    )
    assert [e for e in fallback if isinstance(e, ToolCallDelta)] == [THE_CALL]
    assert Finish("tool_calls") in fallback
    plain = await collect(backend.stream(CompletionRequest([ASK], "gpt-4o-mini")))
    assert text_of(plain) == f"Sure. {MARKUP}"  # no tools offered: just text
    assert not [e for e in plain if isinstance(e, ToolCallDelta)]


async def test_native_calls_leave_the_text_alone(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.reply = lambda body: FakeReply(
        text="I would write <tool_call>", tool_calls=[FakeToolCall("call_n", "light_on", "{}")]
    )
    backend = await make_backend()
    events = await collect(
        backend.stream(CompletionRequest([ASK], "gpt-4o-mini", tools=[LIGHT_ON]))
    )
    assert assembled(events) == [ToolCall("call_n", "light_on", "{}")]
    assert text_of(events) == "I would write <tool_call>"


@pytest.mark.slow
async def test_llama_cpp_server_serves_the_tiny_tool_model_through_our_backend() -> None:
    """llama-cpp-python's server renders the tools into the GGUF's template but returns the
    model's call as text (``finish_reason`` ``stop``); the backend parses it into a call."""
    from adapters.llm.openai import OpenAIBackend, OpenAISettings
    from tests.llama_server import TINY_TOOLS, llama_cpp_server

    async with llama_cpp_server(n_ctx=512, model=TINY_TOOLS) as base_url:
        backend = OpenAIBackend(OpenAISettings(_env_file=None, base_url=base_url), timeout=20)
        await backend.start()
        try:
            model = backend.default_model
            ask = [ChatMessage(Role.USER, "Turn on the kitchen light.")]
            called = await collect(
                backend.stream(CompletionRequest(ask, model, temperature=0.0, tools=[LIGHT_ON]))
            )
            untooled = await collect(backend.stream(CompletionRequest(ask, model, temperature=0.0)))
            history = [
                *ask,
                ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall(**_call(called)),)),
                ChatMessage(Role.TOOL, "light.kitchen is on", tool_call_id="call_0"),
            ]
            answered = await collect(
                backend.stream(CompletionRequest(history, model, temperature=0.0, tools=[LIGHT_ON]))
            )
        finally:
            await backend.aclose()
    assert [e for e in called if isinstance(e, ToolCallDelta)] == [THE_CALL]
    assert Finish("tool_calls") in called
    assert text_of(untooled) == "I can not do that."  # the tools reached the prompt above
    assert text_of(answered) == "The light is on."  # and so did the call and its result


def _call(events: list[BackendEvent]) -> dict[str, str]:
    (call,) = assembled(events)
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def test_a_call_without_text_has_null_content_on_openai_and_empty_elsewhere() -> None:
    from adapters.llm.openai_wire import message_param

    message = ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall("call_1", "light_on", "{}"),))
    assert message_param(message)["content"] is None
    assert message_param(message, null_content=False)["content"] == ""
    assert message_param(message)["tool_calls"][0]["type"] == "function"
