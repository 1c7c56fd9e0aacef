"""Speech to text against the loopback OpenAI server, and when it counts as configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.discord.settings import DiscordSettings
from adapters.llm.openai_wire import OpenAISettings
from adapters.llm.stt import OpenAITranscriber, STTSettings, stt_configured
from adapters.memory.settings import MemorySettings
from adapters.telegram.settings import TelegramSettings
from bots.app import Settings, build_transcriber
from core.errors import BackendError, BackendUnavailable, MediaError, RateLimited
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests.fakes.openai_server import FakeOpenAIServer

KEY = "sk-stt-test-key-123456"


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
async def transcriber(server: FakeOpenAIServer) -> AsyncIterator[OpenAITranscriber]:
    stt = OpenAITranscriber(
        model="whisper-1",
        base_url=server.base_url,
        api_key=SecretStr(KEY),
        timeout=10.0,
        max_retries=0,
    )
    yield stt
    await stt.aclose()


def _voice(tmp_path: Path, size: int = 2048) -> Path:
    path = tmp_path / "download.tmp"
    path.write_bytes(b"OggS" + b"\x01" * (size - 4))
    return path


async def test_the_transcript_comes_back_with_the_model_and_key_sent(
    server: FakeOpenAIServer, transcriber: OpenAITranscriber, tmp_path: Path
) -> None:
    server.transcript = "  What plant is this?  "
    path = _voice(tmp_path)

    text = await transcriber.transcribe(path, "file_3.oga", "audio/ogg")

    assert text == "What plant is this?"
    [request] = server.transcription_requests
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "whisper-1"
    assert request.body["file_name"] == "file_3.oga"
    assert request.body["file_type"] == "audio/ogg"
    assert request.body["file_bytes"] == path.read_bytes()


async def test_a_format_the_server_refuses_is_a_media_error(
    transcriber: OpenAITranscriber, tmp_path: Path
) -> None:
    with pytest.raises(MediaError) as caught:
        await transcriber.transcribe(_voice(tmp_path), "memo.xyz", None)
    assert "memo.xyz" in caught.value.user_message


async def test_the_servers_25_mb_limit_is_a_media_error(
    server: FakeOpenAIServer, transcriber: OpenAITranscriber, tmp_path: Path
) -> None:
    path = _voice(tmp_path, 26 * 1024 * 1024)

    with pytest.raises(MediaError) as caught:
        await transcriber.transcribe(path, "long.mp3", "audio/mpeg")

    assert caught.value.user_message == ("long.mp3 is too large for the speech-to-text server.")
    [request] = server.transcription_requests
    assert request.body["refused_bytes"] > 26_214_400


async def test_openai_itself_is_not_sent_more_than_25_mb(tmp_path: Path) -> None:
    # No base URL: api.openai.com. The file is refused before any connection (the test
    # suite blocks non-loopback connections, so an upload attempt would fail differently).
    stt = OpenAITranscriber(api_key=SecretStr(KEY), max_retries=0)
    path = tmp_path / "lecture.mp3"
    with path.open("wb") as file:
        file.truncate(30 * 1024 * 1024)
    try:
        with pytest.raises(MediaError) as caught:
            await stt.transcribe(path, "lecture.mp3", "audio/mpeg")
    finally:
        await stt.aclose()
    assert caught.value.user_message == (
        "lecture.mp3 is too large to transcribe (30.0 MB; the limit is 25.0 MB)."
    )


async def test_a_server_error_is_backend_unavailable(
    server: FakeOpenAIServer, transcriber: OpenAITranscriber, tmp_path: Path
) -> None:
    server.fail_server_error(status=503)
    with pytest.raises(BackendUnavailable) as caught:
        await transcriber.transcribe(_voice(tmp_path), "note.ogg", "audio/ogg")
    assert caught.value.user_message == (
        "I couldn't transcribe that voice message just now. Please try again."
    )


async def test_a_rate_limit_is_rate_limited_with_its_wait(
    server: FakeOpenAIServer, transcriber: OpenAITranscriber, tmp_path: Path
) -> None:
    server.fail_rate_limited(retry_after="7")
    with pytest.raises(RateLimited) as caught:
        await transcriber.transcribe(_voice(tmp_path), "note.ogg", "audio/ogg")
    assert caught.value.retry_after == 7.0


async def test_a_refused_key_is_reported_without_the_key(
    server: FakeOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stt = OpenAITranscriber(
        base_url=server.base_url, api_key=SecretStr("sk-wrong-key-987654"), max_retries=0
    )
    try:
        with pytest.raises(BackendError) as caught:
            await stt.transcribe(_voice(tmp_path), "note.ogg", "audio/ogg")
    finally:
        await stt.aclose()
    assert "STT_API_KEY" in caplog.text
    assert "sk-wrong-key-987654" not in str(caught.value)
    assert "sk-wrong-key-987654" not in caplog.text


async def test_a_closed_transcriber_refuses_work(
    transcriber: OpenAITranscriber, tmp_path: Path
) -> None:
    await transcriber.aclose()
    await transcriber.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="after aclose"):
        await transcriber.transcribe(_voice(tmp_path), "note.ogg", "audio/ogg")


# --- when speech to text is on -------------------------------------------------------------


@pytest.mark.parametrize(
    ("stt", "openai", "configured"),
    [
        ({}, {}, False),
        ({"base_url": "http://localhost:8000/v1"}, {}, True),
        ({}, {"api_key": "sk-proj-1"}, True),
        ({}, {"api_key": "sk-proj-1", "base_url": "https://api.openai.com/v1"}, True),
        ({}, {"api_key": "sk-or-1", "base_url": "https://openrouter.ai/api/v1"}, False),
        ({}, {"base_url": "http://localhost:11434/v1"}, False),
        ({"api_key": "sk-proj-2"}, {}, True),
        (
            {"base_url": "http://whisper:8000/v1"},
            {"api_key": "sk-or-1", "base_url": "https://openrouter.ai/api/v1"},
            True,
        ),
    ],
)
def test_when_speech_to_text_counts_as_configured(
    stt: dict[str, Any], openai: dict[str, Any], configured: bool
) -> None:
    assert (
        stt_configured(STTSettings(_env_file=None, **stt), OpenAISettings(_env_file=None, **openai))
        is configured
    )


def test_the_settings_defaults_and_a_bad_url() -> None:
    settings = STTSettings(_env_file=None)
    assert settings.model == "whisper-1"
    assert settings.base_url is None
    with pytest.raises(ValueError, match="http"):
        STTSettings(_env_file=None, base_url="whisper:8000")


def _app_settings(tmp_path: Path) -> Settings:
    return Settings(
        env_file=None,
        core=CoreSettings(_env_file=None),
        llm=LLMSettings(_env_file=None),
        access=AccessSettings(_env_file=None),
        memory=MemorySettings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'db'}"),
        telegram=TelegramSettings(_env_file=None),
        discord=DiscordSettings(_env_file=None),
    )


async def test_the_wiring_builds_a_transcriber_that_uses_the_openai_key(
    server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _app_settings(tmp_path)
    assert build_transcriber(settings) is None

    monkeypatch.setenv("STT_BASE_URL", server.base_url)
    monkeypatch.setenv("STT_MODEL", "Systran/faster-whisper-small")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    transcriber = build_transcriber(settings)
    assert transcriber is not None
    try:
        assert await transcriber.transcribe(_voice(tmp_path), "a.ogg", None) == (
            "This is what was said."
        )
    finally:
        await transcriber.aclose()
    [request] = server.transcription_requests
    assert request.body["model"] == "Systran/faster-whisper-small"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
