"""The local backend sees images through a vision projector (``LOCAL_MMPROJ_PATH``).

Runs on the tiny chat model and the tiny projector generated for it
(``tests/fixtures/make_tiny_mmproj_gguf.py``): a red picture makes the model a pirate, a blue
one a robot. A real vision model is an opt-in smoke test (``CHINWAG_TEST_VISION_MODEL`` and
``CHINWAG_TEST_VISION_MMPROJ``, paths to a GGUF and its mmproj file).
"""

from __future__ import annotations

import importlib.util
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.llm.local import LocalBackend
from adapters.llm.local_vision import mtmd_available
from core.errors import BackendError, ConfigError
from core.types import ChatMessage, CompletionRequest, ImagePart, Role, TextDelta
from tests._require import require_or_skip
from tests.adapters.llm.local.conftest import FIXTURES, TINY

pytestmark = pytest.mark.llama
MakeBackend = Callable[..., LocalBackend]
MMPROJ = FIXTURES / "tiny-mmproj.gguf"


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_tiny_mmproj_gguf", FIXTURES / "make_tiny_mmproj_gguf.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPECTED_BY_COLOUR: dict[tuple[int, int, int], str] = _load_generator().EXPECTED_BY_COLOUR


def png(colour: tuple[int, int, int], width: int = 40, height: int = 30) -> bytes:
    """A PNG picture of one colour (written by hand: the tests need no image library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(colour) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def photo(colour: tuple[int, int, int]) -> ImagePart:
    return ImagePart(png(colour), "image/png", 40, 30)


def turn(text: str, *images: ImagePart, model: str = "tiny-chat") -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(Role.USER, text, images=images)], model=model)


async def reply(backend: LocalBackend, request: CompletionRequest) -> str:
    return "".join([e.text async for e in backend.stream(request) if isinstance(e, TextDelta)])


@pytest.fixture
async def seeing(make_backend: MakeBackend) -> LocalBackend:
    reason = mtmd_available()
    if reason is not None:
        require_or_skip("llama", reason)
    backend = make_backend(mmproj_path=MMPROJ)
    await backend.start()
    return backend


async def test_without_a_projector_no_model_sees_images(tiny: LocalBackend) -> None:
    assert tiny.supports_images("tiny-chat") is False
    # An image that reaches it anyway is left out: the caption alone is answered.
    assert await reply(tiny, turn("Say hello.", photo((255, 0, 0)))) == "Hello."


async def test_an_image_turn_is_answered_and_the_picture_decides_the_reply(
    seeing: LocalBackend,
) -> None:
    assert seeing.supports_images("tiny-chat") is True
    answers = {
        colour: await reply(seeing, turn("Say hello.", photo(colour)))
        for colour in EXPECTED_BY_COLOUR
    }
    assert answers == EXPECTED_BY_COLOUR  # two different pictures, two different replies
    assert len(set(answers.values())) == 2
    # The same caption without a picture: the model saw nothing, and no image is reused.
    assert await reply(seeing, turn("Say hello.")) == "Hello."


async def test_an_image_in_an_earlier_turn_is_still_seen(seeing: LocalBackend) -> None:
    request = CompletionRequest(
        messages=[
            ChatMessage(Role.USER, "Look.", images=(photo((0, 0, 255)),)),
            ChatMessage(Role.ASSISTANT, "Nice."),
            ChatMessage(Role.USER, "Say hello."),
        ],
        model="tiny-chat",
    )
    assert await reply(seeing, request) == "Beep boop."


async def test_a_corrupt_image_is_a_clear_message_and_the_model_still_answers(
    seeing: LocalBackend,
) -> None:
    broken = ImagePart(b"\x89PNG\r\n\x1a\n this is not a picture", "image/png", 40, 30)
    with pytest.raises(BackendError) as caught:
        await reply(seeing, turn("Say hello.", broken))
    assert "couldn't read that image" in caught.value.user_message
    assert "JPEG or PNG" in caught.value.user_message
    assert await reply(seeing, turn("Say hello.", photo((255, 0, 0)))) == "Ahoy, matey!"


async def test_text_that_looks_like_a_media_marker_is_just_text(seeing: LocalBackend) -> None:
    # llama.cpp's default marker in a user's text must not be taken for an image.
    assert await reply(seeing, turn("<__media__> Say hello.", photo((0, 0, 255)))) == "Beep boop."


async def test_a_file_that_is_not_a_projector_names_the_setting(make_backend: MakeBackend) -> None:
    reason = mtmd_available()
    if reason is not None:
        require_or_skip("llama", reason)
    backend = make_backend(mmproj_path=TINY)  # a chat model, not an mmproj file
    with pytest.raises(ConfigError) as caught:
        await backend.start()
    assert caught.value.variable == "LOCAL_MMPROJ_PATH"
    assert "not a vision projector" in str(caught.value)


async def test_a_missing_projector_names_the_setting(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    reason = mtmd_available()
    if reason is not None:
        require_or_skip("llama", reason)
    backend = make_backend(mmproj_path=tmp_path / "nope.gguf")
    with pytest.raises(ConfigError) as caught:
        await backend.start()
    assert caught.value.variable == "LOCAL_MMPROJ_PATH"
    assert "does not exist" in str(caught.value)


async def test_a_build_without_mtmd_says_how_to_get_it(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adapters.llm.local as local

    monkeypatch.setattr(
        local, "mtmd_available", lambda: "built without mtmd; rebuild with scripts/install-llama.sh"
    )
    backend = make_backend(mmproj_path=MMPROJ)
    with pytest.raises(ConfigError) as caught:
        await backend.start()
    assert caught.value.variable == "LOCAL_MMPROJ_PATH"
    assert "install-llama.sh" in str(caught.value)


@pytest.mark.slow
async def test_smoke_a_real_vision_model(make_backend: MakeBackend) -> None:
    model = os.environ.get("CHINWAG_TEST_VISION_MODEL")
    mmproj = os.environ.get("CHINWAG_TEST_VISION_MMPROJ")
    if not model or not mmproj:
        pytest.skip("set CHINWAG_TEST_VISION_MODEL and CHINWAG_TEST_VISION_MMPROJ to run it")
    reason = mtmd_available()
    if reason is not None:
        require_or_skip("llama", reason)
    backend = make_backend(model_path=Path(model), mmproj_path=Path(mmproj), context=4096)
    await backend.start()
    name = backend.default_model
    answer = await reply(
        backend,
        CompletionRequest(
            messages=[
                ChatMessage(
                    Role.USER,
                    "What colour is this picture? Answer with one word.",
                    images=(photo((255, 0, 0)),),
                )
            ],
            model=name,
            temperature=0.0,
            max_tokens=16,
        ),
    )
    assert "red" in answer.lower()
