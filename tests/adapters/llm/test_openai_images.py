"""Photos to OpenAI-compatible vision models: content parts, the vision rule, refusals."""

from __future__ import annotations

import base64
import logging
import struct
import zlib

import openai
import pytest

from adapters.llm.openai import OpenAIBackend, OpenAISettings
from core.errors import ContextTooLong, ImagesRefused
from core.media import image_tokens
from core.types import ChatMessage, CompletionRequest, ImagePart, Role, Usage
from tests.adapters.llm.backend_helpers import MakeBackend, collect, text_of
from tests.fakes.openai_server import FakeOpenAIServer


def png(width: int, height: int, shade: int = 0) -> bytes:
    """A real grey PNG of ``width`` x ``height`` (no Pillow needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + bytes([shade]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PHOTO = ImagePart(data=png(64, 48, shade=200), mime_type="image/png", width=64, height=48)
JPEG = ImagePart(
    data=b"\xff\xd8\xff\xe0not-really-a-jpeg", mime_type="image/jpeg", width=8, height=8
)


def image_request(
    caption: str = "what is this plant?",
    images: tuple[ImagePart, ...] = (PHOTO,),
    model: str = "gpt-4o-mini",
) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            ChatMessage(Role.SYSTEM, "Be brief."),
            ChatMessage(Role.USER, "hi"),
            ChatMessage(Role.ASSISTANT, "Hello!"),
            ChatMessage(Role.USER, caption, images=images),
        ],
        model=model,
    )


# --- what goes out ----------------------------------------------------------------------------


async def test_an_image_turn_sends_the_caption_then_the_image_as_a_data_url(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    events = await collect(backend.stream(image_request()))
    assert text_of(events) == "You said: what is this plant?. I received 4 messages."
    messages = server.chat_requests[-1].body["messages"]
    assert [m["content"] for m in messages[:3]] == ["Be brief.", "hi", "Hello!"]  # plain strings
    encoded = base64.b64encode(PHOTO.data).decode()
    assert messages[3]["content"] == [
        {"type": "text", "text": "what is this plant?"},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{encoded}", "detail": "auto"},
        },
    ]
    [[image]] = server.images_sent
    assert (image.message, image.mime_type, image.data, image.detail) == (
        3,
        "image/png",
        PHOTO.data,
        "auto",
    )


async def test_a_photo_without_caption_sends_no_text_part_and_several_keep_their_order(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    await collect(backend.stream(image_request("", images=(JPEG, PHOTO))))
    parts = server.chat_requests[-1].body["messages"][3]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url"]
    assert [(i.mime_type, i.data) for i in server.images_sent[-1]] == [
        ("image/jpeg", JPEG.data),
        ("image/png", PHOTO.data),
    ]


async def test_messages_without_images_stay_plain_strings(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    await collect(backend.stream(image_request(images=())))
    assert server.images_sent == [[]]
    assert server.chat_requests[-1].body["messages"][3]["content"] == "what is this plant?"


async def test_images_cost_prompt_tokens_without_skewing_the_estimate(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend(settings={"vision_models": "llama3"})
    big = ImagePart(data=png(1024, 1024), mime_type="image/png", width=1024, height=1024)
    for _ in range(4):  # llama3's tokenizer is estimated and learns from reported usage
        events = await collect(backend.stream(image_request(images=(big,), model="llama3")))
    plain = await collect(backend.stream(image_request(images=(), model="llama3")))
    with_image, without = events[-1], plain[-1]
    assert isinstance(with_image, Usage)
    assert isinstance(without, Usage)
    assert with_image.prompt_tokens - without.prompt_tokens == image_tokens(1024, 1024)
    assert backend.calibration("llama3") == 1.0


async def test_the_debug_log_shows_no_image_data(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend = await make_backend()
    with caplog.at_level(logging.DEBUG, logger="adapters.llm.openai"):
        await collect(backend.stream(image_request()))
    encoded = base64.b64encode(PHOTO.data).decode()
    assert "data:image/png;base64," in caplog.text
    assert encoded[:40] not in caplog.text


# --- which models see images ------------------------------------------------------------------


def test_the_vision_rule_with_and_without_openai_vision_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = OpenAIBackend(OpenAISettings(_env_file=None, base_url="http://127.0.0.1:9/v1"))
    assert plain.supports_images("gpt-4o")
    assert not plain.supports_images("llama3.1:8b")
    assert not plain.supports_images("acme/vlm-7b")
    monkeypatch.setenv("OPENAI_VISION_MODELS", "llama3.1:8b, acme/*")
    settings = OpenAISettings(_env_file=None, base_url="http://127.0.0.1:9/v1")
    assert settings.vision_models == ["llama3.1:8b", "acme/*"]
    extended = OpenAIBackend(settings)
    assert extended.supports_images("llama3.1:8b")
    assert extended.supports_images("acme/vlm-7b")
    assert extended.supports_images("gpt-4o")  # the families still apply
    assert not extended.supports_images("qwen2.5:7b")


# --- a server that refuses images -----------------------------------------------------------


@pytest.mark.parametrize("style", ["openai", "vllm", "llama_server", "ollama"])
async def test_a_text_only_servers_refusal_is_translated_once_and_remembered(
    server: FakeOpenAIServer, make_backend: MakeBackend, style: str
) -> None:
    server.text_only_models = {"llama3"}
    server.image_refusal = style
    backend = await make_backend(settings={"vision_models": "llama3"})
    assert backend.supports_images("llama3")
    with pytest.raises(ImagesRefused) as info:
        await collect(backend.stream(image_request(model="llama3")))
    assert info.value.model == "llama3"
    assert "images" in info.value.user_message
    assert len(server.chat_requests) == 1  # not retried, not even Ollama's 500
    assert not backend.supports_images("llama3")  # from now on the engine sends none
    assert backend.supports_images("gpt-4o")
    events = await collect(backend.stream(image_request(images=(), model="llama3")))
    assert text_of(events) == "You said: what is this plant?. I received 4 messages."


async def test_other_failures_of_an_image_turn_are_not_taken_for_a_refusal(
    server: FakeOpenAIServer, make_backend: MakeBackend
) -> None:
    backend = await make_backend()
    server.fail_server_error(times=1)
    events = await collect(backend.stream(image_request()))  # a plain 500 is retried
    assert text_of(events).startswith("You said: what is this plant?")
    server.context_limit = 100
    with pytest.raises(ContextTooLong):
        await collect(backend.stream(image_request()))
    assert backend.supports_images("gpt-4o-mini")


# --- the fake is as strict as a real server ------------------------------------------------


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
                ],
            },
            "base64-encoded data URL",
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}
                ],
            },
            "base64-encoded data URL",
        ),
        (
            {
                "role": "system",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ],
            },
            "only allowed for messages with role 'user'",
        ),
        ({"role": "user", "content": [{"type": "video", "video": {}}]}, "'video'"),
    ],
)
async def test_the_fake_refuses_image_parts_a_strict_server_refuses(
    message: dict[str, object], complaint: str
) -> None:
    async with (
        FakeOpenAIServer() as srv,
        openai.AsyncOpenAI(api_key="k", base_url=srv.base_url, max_retries=0) as client,
    ):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=[message])  # type: ignore[list-item]  # malformed on purpose
    assert complaint in info.value.message
