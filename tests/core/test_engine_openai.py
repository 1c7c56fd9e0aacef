"""The engine with the real OpenAI backend against the loopback server: what /stop and a
failing server look like from both ends."""

from __future__ import annotations

import asyncio

import pytest

from adapters.llm.openai import OpenAIBackend, OpenAISettings
from core.types import MessageStatus, Role
from tests.core.conftest import dm
from tests.core.test_engine import WatchedChannel, history
from tests.fakes.channel import RecordingChannel
from tests.fakes.openai_server import FakeOpenAIServer

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
