"""OpenAIBackend driven through the real ``openai`` client against the loopback fake."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise

import pytest
from pydantic import ValidationError

from adapters.llm.openai import (
    DEFAULT_CONTEXT_WINDOW,
    PLACEHOLDER_API_KEY,
    OpenAIBackend,
    OpenAISettings,
    is_context_overflow,
    parse_retry_after,
)
from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextTooLong,
    RateLimited,
)
from core.types import (
    BackendEvent,
    ChatMessage,
    CompletionRequest,
    Role,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from tests.adapters.llm.backend_helpers import (
    API_KEY,
    MakeBackend,
    collect,
    generator,
    request,
    text_of,
)
from tests.fakes.openai_server import FakeOpenAIServer, FakeReply, FakeToolCall

EXPECTED = "You said: hello there. I received 2 messages."


# --- settings -------------------------------------------------------------------------------


def test_settings_read_the_conventional_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1/")
    monkeypatch.setenv("OPENAI_MODEL", "llama3")
    monkeypatch.setenv("OPENAI_ALLOWED_MODELS", "qwen2.5, llama3,,mistral")
    settings = OpenAISettings(_env_file=None)
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(settings)
    assert settings.base_url == "http://localhost:11434/v1"
    assert settings.allowed_models == ["qwen2.5", "llama3", "mistral"]
    backend = OpenAIBackend(settings)
    assert list(backend.models()) == ["llama3", "qwen2.5", "mistral"]
    assert backend.default_model == "llama3"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    settings = OpenAISettings(_env_file=None)
    assert settings.api_key is None
    assert settings.base_url is None
    assert settings.model is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-set")
    monkeypatch.setenv("OPENAI_MODEL", "")
    official = OpenAIBackend(OpenAISettings(_env_file=None))
    assert official.default_model == "gpt-4o-mini"  # api.openai.com: the default model


@pytest.mark.parametrize("url", ["localhost:11434", "ftp://example.com/v1", "http://", "not a url"])
def test_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="http"):
        OpenAISettings(_env_file=None, base_url=url)


def test_official_api_without_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIBackend(OpenAISettings(_env_file=None))
    assert info.value.variable == "OPENAI_API_KEY"
    assert "OPENAI_API_KEY=" in str(info.value)


async def test_local_server_without_key_gets_a_placeholder() -> None:
    async with FakeOpenAIServer() as srv:
        backend = OpenAIBackend(OpenAISettings(_env_file=None, base_url=srv.base_url))
        await backend.start()
        try:
            events = await collect(backend.stream(request()))
        finally:
            await backend.aclose()
    assert text_of(events) == EXPECTED
    assert srv.chat_requests[0].headers["Authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


# --- models and windows ----------------------------------------------------------------------


async def test_models_default_first_and_check_model(make_backend: MakeBackend) -> None:
    backend = await make_backend(settings={"allowed_models": "gpt-4o, gpt-4o-mini, gpt-4o"})
    assert list(backend.models()) == ["gpt-4o-mini", "gpt-4o"]
    await backend.check_model("gpt-4o")
    with pytest.raises(BackendError) as info:
        await backend.check_model("gpt-9")
    assert "gpt-9" in info.value.user_message
    assert "gpt-4o-mini, gpt-4o" in info.value.user_message


def test_context_windows_table_override_and_default() -> None:
    settings = OpenAISettings(_env_file=None, api_key="k")
    backend = OpenAIBackend(settings, context_windows={"llama3": 32768, "gpt-4o": 64000})
    assert backend.context_window("gpt-4o-mini") == 128_000
    assert backend.context_window("gpt-4o-2024-08-06") == 128_000
    assert backend.context_window("gpt-4o") == 64000
    assert backend.context_window("gpt-4.1-mini") == 1_047_576
    assert backend.context_window("gpt-4") == 8192
    assert backend.context_window("gpt-4-0613") == 8192
    assert backend.context_window("gpt-4-turbo") == 128_000
    assert backend.context_window("gpt-3.5-turbo") == 16385
    assert backend.context_window("o3-mini") == 200_000
    assert backend.context_window("openai/o1") == 200_000
    assert backend.context_window("llama3") == 32768
    assert backend.context_window("mistral:7b") == DEFAULT_CONTEXT_WINDOW == 8192


# --- lifecycle --------------------------------------------------------------------------------


async def test_lifecycle_is_idempotent_and_misuse_raises(server: FakeOpenAIServer) -> None:
    backend = OpenAIBackend(
        OpenAISettings(_env_file=None, api_key=API_KEY, base_url=server.base_url)
    )
    with pytest.raises(RuntimeError, match="not started"):
        backend.stream(request())
    await backend.start()
    await backend.start()
    assert text_of(await collect(backend.stream(request()))) == EXPECTED
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        backend.stream(request())
    with pytest.raises(RuntimeError, match="closed"):
        await backend.start()


# --- streaming ----------------------------------------------------------------------------------


async def test_streams_text_then_usage_with_the_real_request_shape(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    events = await collect(backend.stream(request(temperature=0.2, max_tokens=50)))
    assert text_of(events) == EXPECTED
    assert sum(isinstance(e, TextDelta) for e in events) > 3  # really streamed in pieces
    assert isinstance(events[-1], Usage)
    assert events[-1].prompt_tokens == 2 * 4 + 3 + 3 + 2  # "Be brief." 3, "hello there" 2
    assert events[-1].completion_tokens > 0
    body = server.chat_requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 50  # a compatible server: max_tokens, not max_completion_tokens
    assert server.chat_requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert server.streams_completed == 1


async def test_prompt_tokens_the_server_cached_are_reported(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    """OpenAI's prompt caching (``prompt_tokens_details.cached_tokens``) reaches Usage."""
    backend = await make_backend()
    server.reply = lambda body: FakeReply(text="Hi again.", cached_tokens=8)
    events = await collect(backend.stream(request()))
    usage = events[-1]
    assert isinstance(usage, Usage)
    assert (usage.prompt_tokens, usage.cached_tokens) == (16, 8)
    server.reply = lambda body: "No cache."
    plain = (await collect(backend.stream(request())))[-1]
    assert isinstance(plain, Usage)
    assert plain.cached_tokens == 0


async def test_messages_with_names_and_tool_results_are_sent_as_openai_expects(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    call = ToolCall(id="call_1", name="lookup", arguments='{"q": "x"}')
    req = CompletionRequest(
        messages=[
            ChatMessage(Role.USER, "hi", name="Ann Lee!"),
            ChatMessage(Role.ASSISTANT, "", tool_calls=(call,)),
            ChatMessage(Role.TOOL, "42", tool_call_id="call_1"),
            ChatMessage(Role.USER, "and?", name="Ann Lee!"),
        ],
        model="gpt-4o-mini",
    )
    await collect(backend.stream(req))
    sent = server.chat_requests[0].body["messages"]
    assert sent[0] == {"role": "user", "content": "hi", "name": "Ann_Lee_"}
    assert sent[1]["content"] == ""  # null on api.openai.com; llama-cpp-python refuses it
    assert sent[1]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        }
    ]
    assert sent[2] == {"role": "tool", "content": "42", "tool_call_id": "call_1"}


async def test_tool_call_deltas_stream_through(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    arguments = json.dumps({"city": "Paris", "unit": "celsius", "days": 3})
    server.reply = lambda body: FakeReply(
        text="Let me check.", tool_calls=[FakeToolCall("call_abc", "get_weather", arguments)]
    )
    backend = await make_backend()
    tool = ToolSpec(
        name="get_weather",
        description="Weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    events = await collect(backend.stream(request(tools=[tool])))
    assert server.chat_requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(deltas) > 2  # arguments arrive in pieces
    assert deltas[0].id == "call_abc"
    assert deltas[0].name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert "".join(d.arguments for d in deltas) == arguments
    assert text_of(events) == "Let me check."
    assert isinstance(events[-1], Usage)


async def test_server_rejecting_stream_options_still_streams_and_is_remembered(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.reject_stream_options = True
    backend = await make_backend()
    first = await collect(backend.stream(request()))
    second = await collect(backend.stream(request()))
    assert text_of(first) == text_of(second) == EXPECTED
    assert not any(isinstance(e, Usage) for e in first + second)
    sent = [r.body for r in server.chat_requests]
    assert len(sent) == 3  # one refusal, then two plain streams
    assert "stream_options" in sent[0]
    assert "stream_options" not in sent[1]
    assert "stream_options" not in sent[2]


# --- retries ------------------------------------------------------------------------------------


async def test_429_retry_after_is_honoured_then_succeeds(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.fail_rate_limited(1, retry_after="1")
    backend = await make_backend()
    events = await collect(backend.stream(request()))
    assert text_of(events) == EXPECTED
    first, second = server.chat_requests
    assert second.at - first.at >= 1.0
    assert second.headers["x-stainless-retry-count"] == "0"  # the client's own retries are off


async def test_retry_after_ms_is_preferred(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.fail_rate_limited(2, retry_after="20", retry_after_ms="150")
    backend = await make_backend()
    assert text_of(await collect(backend.stream(request()))) == EXPECTED
    times = [r.at for r in server.chat_requests]
    assert len(times) == 3
    assert all(0.15 <= b - a < 5 for a, b in pairwise(times))


async def test_429_after_retries_raises_rate_limited(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.fail_rate_limited(10, retry_after="0.05")
    backend = await make_backend(max_retries=2)
    with pytest.raises(RateLimited) as info:
        await collect(backend.stream(request()))
    assert info.value.retry_after == pytest.approx(0.05)
    assert len(server.chat_requests) == 3
    assert "rate" in info.value.user_message.lower()


async def test_retry_after_beyond_the_cap_is_not_waited_for(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.fail_rate_limited(1, retry_after="120")
    backend = await make_backend(max_retry_after=30)
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await collect(backend.stream(request()))
    assert time.monotonic() - started < 1
    assert info.value.retry_after == 120
    assert len(server.chat_requests) == 1


async def test_insufficient_quota_is_not_retried(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.fail_rate_limited(5, retry_after=None, code="insufficient_quota")
    backend = await make_backend()
    with pytest.raises(BackendUnavailable) as info:
        await collect(backend.stream(request()))
    assert "quota" in info.value.user_message
    assert len(server.chat_requests) == 1


async def test_5xx_is_retried_with_backoff_and_text_is_not_duplicated(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.fail_server_error(1, status=500)
    server.fail_server_error(1, status=503)
    backend = await make_backend()
    events = await collect(backend.stream(request()))
    assert text_of(events) == EXPECTED
    assert len(server.chat_requests) == 3


async def test_5xx_after_retries_is_unavailable(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.fail_server_error(10, status=502)
    backend = await make_backend(max_retries=3)
    with pytest.raises(BackendUnavailable) as info:
        await collect(backend.stream(request()))
    assert "502" in str(info.value)
    assert len(server.chat_requests) == 4


async def test_unreachable_server_is_unavailable_after_retries() -> None:
    srv = FakeOpenAIServer()
    await srv.start()
    url = srv.base_url
    await srv.aclose()  # nothing listens on that port any more
    backend = OpenAIBackend(
        OpenAISettings(_env_file=None, base_url=url, model="gpt-4o-mini"),
        max_retries=2,
        backoff_base=0.01,
        timeout=5,
    )
    await backend.start()
    try:
        with pytest.raises(BackendUnavailable, match="connection"):
            await collect(backend.stream(request()))
    finally:
        await backend.aclose()


async def test_connection_dropped_before_any_text_is_retried(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.drop_mid_stream(after_chunks=0)
    backend = await make_backend()
    events = await collect(backend.stream(request()))
    assert text_of(events) == EXPECTED
    assert len(server.chat_requests) == 2


async def test_dropped_stream_mid_reply_raises_without_duplicating_text(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.drop_mid_stream(after_chunks=3)
    backend = await make_backend()
    events: list[BackendEvent] = []
    with pytest.raises(BackendUnavailable):
        await collect(backend.stream(request()), into=events)
    assert text_of(events) == "You said: hello"
    assert len(server.chat_requests) == 1  # never retried once text was out


async def test_malformed_stream_is_a_backend_error(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.send_garbage_mid_stream(after_chunks=2)
    backend = await make_backend()
    events: list[BackendEvent] = []
    with pytest.raises(BackendError, match="malformed"):
        await collect(backend.stream(request()), into=events)
    assert text_of(events) == "You said:"


# --- timeouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("before_headers", [False, True])
async def test_first_chunk_timeout(
    server: FakeOpenAIServer, make_backend: MakeBackend, before_headers: bool
) -> None:
    server.hang_before_first_chunk(before_headers=before_headers)
    backend = await make_backend(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(BackendTimeout) as info:
        await collect(backend.stream(request()))
    assert 0.3 <= time.monotonic() - started < 2
    assert info.value.timeout == 0.3
    assert "too long" in info.value.user_message
    assert len(server.chat_requests) == 1  # a timeout is not retried
    await asyncio.wait_for(server.disconnected.wait(), 2)


async def test_next_chunk_timeout_keeps_the_text_so_far(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.hang_mid_stream(after_chunks=2)
    backend = await make_backend(timeout=0.3)
    events: list[BackendEvent] = []
    with pytest.raises(BackendTimeout):
        await collect(backend.stream(request()), into=events)
    assert text_of(events) == "You said:"
    assert len(server.chat_requests) == 1
    await asyncio.wait_for(server.disconnected.wait(), 2)


async def test_slow_but_steady_stream_is_not_a_timeout(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.chunk_delay = 0.1
    backend = await make_backend(timeout=0.4)  # the whole reply takes longer than that
    started = time.monotonic()
    assert text_of(await collect(backend.stream(request()))) == EXPECTED
    assert time.monotonic() - started > 0.4


# --- early close ----------------------------------------------------------------------------------


async def test_closing_the_stream_early_closes_the_http_stream(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.chunk_delay = 0.05
    server.reply = lambda body: "word " * 200
    backend = await make_backend()
    stream = generator(backend.stream(request()))
    first = await anext(stream)
    assert first == TextDelta("word")
    await stream.aclose()  # what the engine does on /stop
    await asyncio.wait_for(server.disconnected.wait(), 2)
    assert server.streams_completed == 0
    # the backend goes on serving
    server.reply = lambda body: "again"
    assert text_of(await collect(backend.stream(request()))) == "again"


async def test_cancelling_the_consumer_closes_the_http_stream(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.hang_mid_stream(after_chunks=1)
    backend = await make_backend()
    got_text = asyncio.Event()

    async def consume() -> None:
        async for event in backend.stream(request()):
            if isinstance(event, TextDelta):
                got_text.set()

    task = asyncio.create_task(consume(), name="consume-stream")
    await asyncio.wait_for(got_text.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.disconnected.wait(), 2)


# --- refusals -------------------------------------------------------------------------------------


async def test_context_length_exceeded_is_context_too_long(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.context_limit = 50
    backend = await make_backend(context_windows={"gpt-4o-mini": 50})
    assert text_of(await collect(backend.stream(request("short")))) == (
        "You said: short. I received 2 messages."
    )
    with pytest.raises(ContextTooLong) as info:
        await collect(backend.stream(request("many words " * 40)))
    assert info.value.limit == 50
    assert "/reset" in info.value.user_message
    assert len(server.chat_requests) == 2  # not retried


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "the request exceeds the available context size, try increasing it",
        "Input exceeds the context window of this model",
        "error code: context_length_exceeded",
    ],
)
def test_context_overflow_messages_of_various_servers(message: str) -> None:
    assert is_context_overflow(message)


@pytest.mark.parametrize("message", ["Invalid value for temperature", "model not found", ""])
def test_other_messages_are_not_context_overflow(message: str) -> None:
    assert not is_context_overflow(message)


async def test_unknown_model_names_the_model(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    with pytest.raises(BackendError) as info:
        await collect(backend.stream(request(model="gpt-imaginary")))
    assert "gpt-imaginary" in info.value.user_message
    assert len(server.chat_requests) == 1


async def test_refused_key_is_a_clear_message_without_the_key(
    server: FakeOpenAIServer, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-TOPSECRET-9999888877776666"
    caplog.set_level(logging.DEBUG)
    backend = await make_backend(settings={"api_key": wrong})
    with pytest.raises(BackendUnavailable) as info:
        await collect(backend.stream(request()))
    err = info.value
    assert "API key" in err.user_message
    assert len(server.chat_requests) == 1  # a refused key is not retried
    for text in (str(err), err.user_message, repr(err), caplog.text):
        assert wrong not in text
        assert "TOPSECRET" not in text
    assert "OPENAI_API_KEY" in caplog.text  # the operator is told what to fix


async def test_key_never_reaches_logs_or_errors(
    server: FakeOpenAIServer, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = await make_backend()
    await collect(backend.stream(request()))
    server.fail_rate_limited(5, retry_after="0")
    server.fail_server_error(5)
    errors: list[BackendError] = []
    for _ in range(2):
        try:
            await collect(backend.stream(request()))
        except BackendError as exc:
            errors.append(exc)
    assert len(errors) == 2
    assert any(r.levelno == logging.WARNING and "retry" in r.getMessage() for r in caplog.records)
    for text in [caplog.text, *(str(e) for e in errors), *(e.user_message for e in errors)]:
        assert API_KEY not in text


async def test_reply_bodies_are_logged_only_at_debug(
    server: FakeOpenAIServer, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backend = await make_backend()
    server.fail_server_error(1)
    await collect(backend.stream(request("my private diary entry")))
    assert "private diary" not in caplog.text


# --- calibration of estimated tokenizers ----------------------------------------------------


async def test_estimated_model_learns_from_reported_usage(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    server.prompt_token_scale = 1.5  # the server's tokenizer splits 1.5x finer than o200k
    backend = await make_backend()
    text = "The quick brown fox jumps over the lazy dog near the riverbank. " * 4
    assert backend.tokenizer_name("llama3") == "o200k_base~est"
    before = await backend.count_tokens(text, "llama3")
    exact_before = await backend.count_tokens(text, "gpt-4o-mini")
    assert before == exact_before  # factor starts at 1.0
    for _ in range(8):
        await collect(backend.stream(request(text, model="llama3")))
        await collect(backend.stream(request(text, model="gpt-4o-mini")))
    assert 1.4 < backend.calibration("llama3") <= 1.5
    assert backend.calibration("gpt-4o-mini") == 1.0  # exact tokenizers never drift
    after = await backend.count_tokens(text, "llama3")
    assert 1.4 * before < after <= 1.5 * before + 1
    assert await backend.count_tokens(text, "gpt-4o-mini") == exact_before


# --- Retry-After parsing -----------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": date}, now=now.timestamp()) == pytest.approx(7.0)
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
