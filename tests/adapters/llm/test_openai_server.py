"""What OpenAI-compatible servers say about themselves: overflows, windows, models.

Each server's own wording is played by the loopback fake (``overflow_style``, ``published``,
``props``, ``ollama_show``), and llama-cpp-python's real server is run on the tiny model.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from adapters.llm.openai import OpenAIBackend, OpenAISettings
from adapters.llm.openai_server import (
    OLLAMA_DEFAULT_CONTEXT,
    is_context_overflow,
    masked_url,
    server_root,
    window_from_error,
)
from bots.config import configure_logging, secrets_of
from core.errors import ConfigError, ContextTooLong, ImagesRefused
from core.types import ChatMessage, CompletionRequest, ImagePart, Role
from tests.adapters.llm.backend_helpers import collect, request, text_of
from tests.fakes.openai_server import FakeOpenAIServer

LONG = "many words " * 200  # about 400 tokens


def settings(server: FakeOpenAIServer, **values: object) -> OpenAISettings:
    return OpenAISettings(_env_file=None, base_url=server.base_url, **values)  # type: ignore[arg-type]


# --- the servers' words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "window"),
    [
        # OpenAI, vLLM and llama-cpp-python's server (before a stream)
        (
            "This model's maximum context length is 4096 tokens. However, you requested "
            "5000 tokens (4000 in the messages, 1000 in the completion).",
            4096,
        ),
        # vLLM, newer wording
        (
            "'max_tokens' or 'max_completion_tokens' is too large: 1024. This model's maximum "
            "context length is 2048 tokens and your request has 1500 input tokens",
            2048,
        ),
        # llama-cpp-python's server, in its log and in older versions' replies
        ("Requested tokens (2800) exceed context window of 2048", 2048),
        # llama.cpp's server: the body carries n_ctx
        (
            "exceed_context_size_error the request exceeds the available context size, try "
            'increasing it {"n_prompt_tokens": 5000, "n_ctx": 4096}',
            4096,
        ),
        # LM Studio, in the stream
        (
            "Trying to keep the first 3001 tokens when context the overflows. However, the "
            "model is loaded with context length of only 2048 tokens, which is not enough.",
            2048,
        ),
        # Anthropic-style and Ollama-style wording: overflow, no number to learn
        ("prompt is too long: 210000 tokens > 200000 maximum", None),
        ("the input length exceeds the context length", None),
    ],
)
def test_each_servers_overflow_is_recognised_and_its_window_read(
    message: str, window: int | None
) -> None:
    assert is_context_overflow(message)
    assert window_from_error(message) == window


@pytest.mark.parametrize(
    "message", ["Invalid value for temperature", "model 'llama3' not found", "rate limited"]
)
def test_other_errors_are_neither_overflow_nor_a_window(message: str) -> None:
    assert not is_context_overflow(message)
    assert window_from_error(message) is None


def test_urls_are_masked_and_rooted() -> None:
    assert masked_url("http://bob:s3cret@10.0.0.5:8080/v1") == "http://bob:***@10.0.0.5:8080/v1"
    assert masked_url("https://user:pw@[::1]/v1") == "https://user:***@[::1]/v1"
    assert masked_url("http://localhost:11434/v1") == "http://localhost:11434/v1"
    assert server_root("http://localhost:8080/v1") == "http://localhost:8080"
    assert server_root("https://proxy.example/llm/v1/") == "https://proxy.example/llm"


# --- the model list decides -----------------------------------------------------------------


async def test_without_openai_model_the_servers_first_model_is_used() -> None:
    async with FakeOpenAIServer(models=("qwen2.5:7b", "llama3")) as server:
        backend = OpenAIBackend(settings(server), timeout=5)
        await backend.start()
        try:
            assert backend.default_model == "qwen2.5:7b"
            assert list(backend.models()) == ["qwen2.5:7b"]
            events = await collect(backend.stream(request(model=backend.default_model)))
        finally:
            await backend.aclose()
    assert text_of(events)
    assert server.chat_requests[-1].body["model"] == "qwen2.5:7b"


async def test_without_openai_model_an_unreachable_server_names_the_variable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    backend = OpenAIBackend(
        OpenAISettings(_env_file=None, base_url=f"http://127.0.0.1:{port}/v1"),
        timeout=2,
    )
    with pytest.raises(ConfigError) as info:
        await backend.start()
    assert info.value.variable == "OPENAI_MODEL"
    assert f"127.0.0.1:{port}" in str(info.value)
    with pytest.raises(RuntimeError):
        backend.stream(request())


async def test_an_empty_model_list_without_openai_model_is_a_config_error() -> None:
    async with FakeOpenAIServer(models=()) as server:
        backend = OpenAIBackend(settings(server), timeout=5)
        with pytest.raises(ConfigError) as info:
            await backend.start()
    assert "lists no models" in str(info.value)


# --- the window the server publishes --------------------------------------------------------


@pytest.mark.parametrize(
    ("server_kwargs", "expected"),
    [
        ({"published": {"llama3": {"max_model_len": 6144}}}, 6144),  # vLLM
        ({"published": {"llama3": {"context_length": 32768}}}, 32768),  # LM Studio, OpenRouter
        ({"props": {"default_generation_settings": {"n_ctx": 3072}}}, 3072),  # llama.cpp
        ({"ollama_show": {"llama3": {"parameters": "stop <|eot|>\nnum_ctx 12288"}}}, 12288),
        (
            {"ollama_show": {"llama3": {"model_info": {"llama.context_length": 131072}}}},
            OLLAMA_DEFAULT_CONTEXT,
        ),
        ({}, 8192),  # nothing published: the conservative default
    ],
)
async def test_the_published_window_replaces_the_guess(
    server_kwargs: dict[str, object], expected: int
) -> None:
    async with FakeOpenAIServer(models=("llama3",), **server_kwargs) as server:  # type: ignore[arg-type]
        backend = OpenAIBackend(settings(server, model="llama3"), timeout=5)
        await backend.start()
        try:
            assert backend.context_window("llama3") == expected
        finally:
            await backend.aclose()


# --- overflows, in each server's form, teach the window ---------------------------------------


@pytest.mark.parametrize("style", ["openai", "llama_server", "empty_stream", "lmstudio"])
async def test_an_overflow_in_any_form_is_context_too_long_and_the_window_is_learned(
    style: str,
) -> None:
    async with FakeOpenAIServer(
        models=("llama3",), context_limit=300, overflow_style=style
    ) as server:
        backend = OpenAIBackend(settings(server, model="llama3"), timeout=5)
        await backend.start()
        try:
            assert backend.context_window("llama3") == 8192
            with pytest.raises(ContextTooLong) as info:
                await collect(backend.stream(request(LONG, model="llama3")))
            assert info.value.limit == 300
            assert backend.context_window("llama3") == 300
            short = await collect(backend.stream(request("hi", model="llama3")))
        finally:
            await backend.aclose()
    assert text_of(short) == "You said: hi. I received 2 messages."
    if style == "empty_stream":  # asked again without streaming, which said why
        streamed = [bool(r.body.get("stream")) for r in server.chat_requests]
        assert streamed[:2] == [True, False]


# --- credentials in the base URL ------------------------------------------------------------


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """``configure_logging`` changes the root logger: put it back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


async def test_credentials_in_the_base_url_never_reach_the_operators_log(
    capsys: pytest.CaptureFixture[str], logging_restored: None
) -> None:
    async with FakeOpenAIServer(models=("llama3",), context_limit=50) as server:
        url = server.base_url.replace("http://", "http://alice:Pa55-w0rd-XYZ@")
        configured = OpenAISettings(_env_file=None, base_url=url, model="llama3")
        assert "Pa55-w0rd-XYZ" in secrets_of(configured)
        # No redaction filter: the backend masks by itself, and httpx2 is kept quiet.
        configure_logging("INFO", [])
        backend = OpenAIBackend(configured, timeout=5)
        await backend.start()
        try:
            with pytest.raises(ContextTooLong) as info:
                await collect(backend.stream(request(LONG, model="llama3")))
        finally:
            await backend.aclose()
    logged = capsys.readouterr().err
    assert "alice:***@127.0.0.1" in logged  # the URL is still shown, masked
    assert "Pa55-w0rd-XYZ" not in logged
    assert "Pa55-w0rd-XYZ" not in str(info.value)


# --- llama-cpp-python's own server ------------------------------------------------------------


@pytest.mark.slow
async def test_llama_cpp_server_overflow_teaches_the_window_then_answers(
    llama_cpp_server: str,
) -> None:
    backend = OpenAIBackend(
        OpenAISettings(_env_file=None, base_url=llama_cpp_server),
        timeout=20,
    )
    await backend.start()
    try:
        model = backend.default_model
        assert model.endswith("tiny-chat.gguf")  # the server's list decided
        long = request("My name is Zed. " * 60, model=model, max_tokens=16)
        with pytest.raises(ContextTooLong) as info:
            await collect(backend.stream(long))
        assert info.value.limit == 256
        assert backend.context_window(model) == 256
        answer = await collect(
            backend.stream(request("My name is Zed.", model=model, max_tokens=16, temperature=0.0))
        )
    finally:
        await backend.aclose()
    assert text_of(answer) == "Nice to meet you, Zed."


@pytest.mark.slow
async def test_llama_cpp_servers_text_model_refusing_images_is_recognised(
    llama_cpp_server: str,
) -> None:
    backend = OpenAIBackend(
        OpenAISettings(_env_file=None, base_url=llama_cpp_server, vision_models="*"),
        timeout=20,
    )
    await backend.start()
    try:
        model = backend.default_model
        photo = ImagePart(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png", width=1, height=1)
        turn = CompletionRequest(
            messages=[ChatMessage(Role.USER, "My name is Zed.", images=(photo,))],
            model=model,
            max_tokens=16,
            temperature=0.0,
        )
        with pytest.raises(ImagesRefused):  # its 500 "can only concatenate str (not list)"
            await collect(backend.stream(turn))
        assert not backend.supports_images(model)
        answer = await collect(
            backend.stream(request("My name is Zed.", model=model, max_tokens=16, temperature=0.0))
        )
    finally:
        await backend.aclose()
    assert text_of(answer) == "Nice to meet you, Zed."
