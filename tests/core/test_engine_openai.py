"""The engine with the real OpenAI backend against the loopback server (and llama-cpp-python's
real server): what /stop, a failing server, a history that outgrows the server's context and
a reply cut by the token limit look like from both ends."""

from __future__ import annotations

import asyncio

import pytest

from adapters.llm.openai import OpenAIBackend, OpenAISettings
from core.notices import CUT_NOTICE
from core.types import MessageStatus, Role
from tests.core.conftest import dm
from tests.core.test_engine import WatchedChannel, history
from tests.fakes.channel import RecordingChannel
from tests.fakes.openai_server import FakeOpenAIServer, prompt_tokens

LONG = " ".join(f"word{n}" for n in range(400))


@pytest.fixture
async def openai_backend():
    async with FakeOpenAIServer(reply=lambda body: LONG, chunk_delay=0.02) as server:
        backend = OpenAIBackend(
            OpenAISettings(_env_file=None, base_url=server.base_url, api_key="sk-loopback"),
            timeout=5,
        )
        await backend.start()
        yield server, backend
        await backend.aclose()


async def test_stop_closes_the_http_stream_and_stores_the_partial_reply(
    make_engine, store, openai_backend
):
    server, backend = openai_backend
    engine = make_engine(backend_override=backend)
    out = WatchedChannel()
    reply = engine.submit(dm("tell me a long story"), out)
    await asyncio.wait_for(out.first_text.wait(), 5)  # the server is streaming
    await asyncio.wait_for(engine.handle(dm("/stop"), out), 5)
    await asyncio.wait_for(reply, 5)
    await asyncio.wait_for(server.disconnected.wait(), 5)  # the server saw the client go
    assert server.streams_completed == 0
    stored = [m for m in await history(store, engine) if m.role is Role.ASSISTANT]
    assert stored[0].status is MessageStatus.INTERRUPTED
    assert 0 < len(stored[0].content) < len(LONG)
    assert out.replies == [stored[0].content]  # the user saw exactly what was kept


async def test_server_errors_become_a_short_message_and_the_next_message_works(
    make_engine, openai_backend
):
    server, backend = openai_backend
    server.chunk_delay = 0
    engine = make_engine(backend_override=backend)
    out = RecordingChannel()
    server.fail_server_error(times=4)  # the first try and every retry
    await engine.handle(dm("first"), out)
    assert out.texts == ["The language model is unavailable right now. Please try again shortly."]
    await engine.handle(dm("second"), out)
    assert out.replies == [LONG]


@pytest.mark.parametrize("style", ["openai", "llama_server", "empty_stream", "lmstudio"])
async def test_a_history_that_outgrows_the_servers_context_keeps_getting_answers(
    make_engine, style
):
    async with FakeOpenAIServer(
        models=("local-model",), context_limit=400, overflow_style=style
    ) as server:
        backend = OpenAIBackend(
            OpenAISettings(_env_file=None, base_url=server.base_url, model="local-model"),
            timeout=5,
        )
        await backend.start()
        try:
            engine = make_engine(backend_override=backend)
            out = RecordingChannel()
            for n in range(12):
                await engine.handle(dm(f"turn {n}: " + "lorem ipsum dolor " * 10), out)
                assert out.texts[-1].startswith(f"You said: turn {n}:")  # never an error
            assert backend.context_window("local-model") == 400  # learned, and remembered
        finally:
            await backend.aclose()
    refused = [r for r in server.chat_requests if prompt_tokens(r.body) > 400]
    assert refused  # the server did refuse a prompt as too long
    assert prompt_tokens(server.chat_requests[-1].body) <= 300  # a quarter left for the reply


async def test_a_reply_cut_by_the_servers_token_limit_says_so_and_continues(make_engine, store):
    story = " ".join(f"word{n}" for n in range(60))

    def reply(body):
        return "and that was all." if body["messages"][-1]["content"] == "continue" else story

    async with FakeOpenAIServer(reply=reply) as server:
        backend = OpenAIBackend(
            OpenAISettings(_env_file=None, base_url=server.base_url, api_key="sk-loopback"),
            timeout=5,
        )
        await backend.start()
        try:
            engine = make_engine(backend_override=backend, max_reply_tokens=20)
            out = RecordingChannel()
            await engine.handle(dm("tell me a story"), out)
            await engine.handle(dm("continue"), out)
        finally:
            await backend.aclose()
    first, second = server.chat_requests
    assert first.body["max_tokens"] == 20
    cut = next(m for m in await history(store, engine) if m.role is Role.ASSISTANT)
    assert cut.status is MessageStatus.CUT
    assert story.startswith(cut.content) and cut.content != story
    assert out.replies == [f"{cut.content}\n\n{CUT_NOTICE}", "and that was all."]
    assert second.body["messages"][-2] == {"role": "assistant", "content": cut.content}


@pytest.mark.slow
async def test_llama_cpp_server_answers_after_the_history_overflows_its_context(
    make_engine, llama_cpp_server
):
    backend = OpenAIBackend(OpenAISettings(_env_file=None, base_url=llama_cpp_server), timeout=20)
    await backend.start()
    try:
        model = backend.default_model
        assert backend.context_window(model) > 256  # the server does not say its context
        engine = make_engine(backend_override=backend)
        out = RecordingChannel()
        await engine.handle(dm("My name is Zed."), out)
        for _ in range(6):  # about 45 tokens a turn: the sixth overflows 256 tokens
            await engine.handle(dm("Say hello. " * 6), out)
        learned = backend.context_window(model)
        await engine.handle(dm("What is my name?"), out)  # the next message, no /reset
    finally:
        await backend.aclose()
    assert learned == 256  # the overflow happened, and taught the window
    assert out.notices == []  # never "the language model is unavailable"
    assert out.replies[:7] == ["Nice to meet you, Zed."] * 7
    assert out.replies[7] == "Your name is Zed."
