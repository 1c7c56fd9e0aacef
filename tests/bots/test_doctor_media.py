"""``chinwag doctor`` on media: the speech-to-text server and the local vision projector.

Speech to text runs against a second OpenAI fake playing a whisper server (it lists
``whisper-1``); the projector checks use the tiny chat model and its tiny projector
(``tests/fixtures/tiny-mmproj.gguf``). No Telegram or Discord here: their lines are skips.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.llm import local_vision
from adapters.llm.local_settings import local_backend_available
from adapters.memory import migrate
from bots.cli import main
from tests._require import require_or_skip
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY_MODEL = FIXTURES / "tiny-chat.gguf"
TINY_MMPROJ = FIXTURES / "tiny-mmproj.gguf"
STT_KEY = "sk-stt-secret-456"


@dataclass
class Setup:
    """The fakes of one test and the settings that point chinwag at them."""

    llm: FakeOpenAIServer
    whisper: FakeOpenAIServer
    env: dict[str, str]
    env_file: Path


@pytest.fixture
async def setup(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Setup]:
    await migrate.upgrade(sqlite_url)
    async with (
        FakeOpenAIServer() as llm,
        FakeOpenAIServer(models=("whisper-1",), api_key=STT_KEY) as whisper,
    ):
        env = {
            "DATABASE_URL": sqlite_url,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "sk-llm-key-123",
            "OPENAI_MODEL": "gpt-4o-mini",
            "STT_BASE_URL": whisper.base_url,
            "STT_API_KEY": STT_KEY,
        }
        yield Setup(llm, whisper, env, tmp_path / "chinwag.env")


async def doctor(setup: Setup, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    setup.env_file.write_text("".join(f"{k}={v}\n" for k, v in setup.env.items()))
    status = await asyncio.to_thread(
        main, ["--env-file", str(setup.env_file), "doctor", "--timeout", "5"]
    )
    return status, capsys.readouterr().out.splitlines()


def line_about(lines: list[str], status: str, what: str, text: str) -> str:
    found = [line for line in lines if line.startswith(f"{status:<4} {what}:") and text in line]
    assert found, f"no {status} {what} line with {text!r} in:\n" + "\n".join(lines)
    return found[0]


def not_passed(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(("ok ", "skip"))]


# --- speech to text -----------------------------------------------------------------------


async def test_the_whisper_server_answers_and_has_the_model(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = await doctor(setup, capsys)

    assert code == 0, "\n".join(lines)
    line_about(lines, "ok", "speech to text", f"{setup.whisper.base_url} answers in")
    assert line_about(lines, "ok", "speech to text", "").endswith("and has whisper-1")
    assert STT_KEY not in "\n".join(lines)
    assert [r.path for r in setup.whisper.requests] == ["/v1/models"]


async def test_a_refused_stt_key_fails_naming_stt_api_key(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.env["STT_API_KEY"] = "sk-wrong-key-789"

    code, lines = await doctor(setup, capsys)

    assert code == 1
    line = line_about(lines, "FAIL", "speech to text", "STT_API_KEY: was refused by")
    assert line.partition(" -> ")[2].startswith("set STT_API_KEY to a key")
    assert not_passed(lines) == [line]
    assert "sk-wrong-key-789" not in "\n".join(lines)


async def test_the_openai_key_sent_for_stt_is_named_when_refused(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    del setup.env["STT_API_KEY"]

    code, lines = await doctor(setup, capsys)

    assert code == 1
    line = line_about(lines, "FAIL", "speech to text", "STT_API_KEY")
    assert "STT_API_KEY is unset, so OPENAI_API_KEY was sent" in line


async def test_unset_speech_to_text_is_a_skip_that_says_what_voice_notes_get(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    del setup.env["STT_BASE_URL"], setup.env["STT_API_KEY"]

    code, lines = await doctor(setup, capsys)

    assert code == 0, "\n".join(lines)
    line = line_about(lines, "skip", "speech to text", "not configured")
    assert "voice notes get a sentence saying so; set STT_BASE_URL" in line
    assert not setup.whisper.requests


@pytest.mark.parametrize("listing", ["empty", "404"])
async def test_a_server_without_a_model_list_is_reachable(
    setup: Setup, capsys: pytest.CaptureFixture[str], listing: str
) -> None:
    if listing == "empty":
        setup.whisper.models = []
    else:  # no /v1/models at this path: the fake answers 404
        setup.env["STT_BASE_URL"] = setup.whisper.base_url.removesuffix("/v1") + "/whisper/v1"

    code, lines = await doctor(setup, capsys)

    assert code == 0, "\n".join(lines)
    line_about(lines, "ok", "speech to text", "reachable in")
    line_about(lines, "ok", "speech to text", "model list not offered")


async def test_a_model_the_whisper_server_lacks_is_named(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.env["STT_MODEL"] = "Systran/faster-whisper-small"

    code, lines = await doctor(setup, capsys)

    assert code == 1
    line = line_about(
        lines, "FAIL", "speech to text", "has no model 'Systran/faster-whisper-small'"
    )
    assert "it has whisper-1" in line
    assert "set STT_MODEL" in line.partition(" -> ")[2]


async def test_an_unreachable_whisper_server_names_stt_base_url(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    await setup.whisper.aclose()

    code, lines = await doctor(setup, capsys)

    assert code == 1
    line = line_about(lines, "FAIL", "speech to text", "cannot reach")
    assert line.partition(" -> ")[2].startswith("start the speech-to-text server")
    assert "STT_BASE_URL" in line.partition(" -> ")[2]


# --- the local vision projector -----------------------------------------------------------


def use_local_model(setup: Setup, mmproj: Path | None) -> None:
    for key in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "STT_BASE_URL", "STT_API_KEY"):
        del setup.env[key]
    setup.env.update(LLM_BACKEND="local", LOCAL_MODEL_PATH=str(TINY_MODEL))
    if mmproj is not None:
        setup.env["LOCAL_MMPROJ_PATH"] = str(mmproj)


def need_mtmd() -> None:
    reason = local_backend_available() or local_vision.mtmd_available()
    if reason is not None:
        require_or_skip("llama", reason)


async def test_the_projector_loads_with_the_local_model(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    need_mtmd()
    use_local_model(setup, TINY_MMPROJ)

    code, lines = await doctor(setup, capsys)

    assert code == 0, "\n".join(lines)
    line_about(lines, "ok", "LLM", "local model tiny-chat.gguf loads")
    line_about(lines, "ok", "projector", "tiny-mmproj.gguf loads with tiny-chat.gguf")


async def test_no_projector_is_a_skip_for_the_local_model(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    if local_backend_available() is not None:
        require_or_skip("llama", "llama-cpp-python is not installed")
    use_local_model(setup, None)

    code, lines = await doctor(setup, capsys)

    assert code == 0, "\n".join(lines)
    line_about(lines, "skip", "projector", "LOCAL_MMPROJ_PATH is unset")


@pytest.mark.parametrize("wrong", ["missing", "a chat model"])
async def test_a_missing_or_wrong_projector_fails_naming_the_setting(
    setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path, wrong: str
) -> None:
    need_mtmd()
    path, says = {
        "missing": (tmp_path / "mmproj.gguf", "does not exist"),
        "a chat model": (TINY_MODEL, "is not a vision projector"),
    }[wrong]
    use_local_model(setup, path)

    code, lines = await doctor(setup, capsys)

    assert code == 1
    line = line_about(lines, "FAIL", "projector", f"LOCAL_MMPROJ_PATH: {path} {says}")
    assert "point LOCAL_MMPROJ_PATH at the mmproj GGUF made for tiny-chat.gguf" in line
    assert not_passed(lines) == [line]  # the model itself still loads
    line_about(lines, "ok", "LLM", "local model tiny-chat.gguf loads")


async def test_a_build_without_mtmd_says_to_rebuild(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if local_backend_available() is not None:
        require_or_skip("llama", "llama-cpp-python is not installed")
    monkeypatch.setattr(
        local_vision,
        "mtmd_available",
        lambda: "this llama-cpp-python was built without its multimodal library (mtmd); ...",
    )
    use_local_model(setup, TINY_MMPROJ)

    code, lines = await doctor(setup, capsys)

    assert code == 1
    line = line_about(lines, "FAIL", "projector", "LOCAL_MMPROJ_PATH is set, but photos")
    assert "built without its multimodal library (mtmd) -> " in line
    assert "`make install-local`" in line.partition(" -> ")[2]


async def test_a_projector_beside_an_openai_server_is_not_used(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.env["LOCAL_MMPROJ_PATH"] = str(TINY_MMPROJ)

    code, lines = await doctor(setup, capsys)

    assert code == 0, "\n".join(lines)
    line_about(lines, "skip", "projector", "the local backend and its projector are not used")
