"""``chinwag doctor`` against the loopback fakes: all green, then one broken thing at a time.

The command runs in a thread (the fakes serve on the test's loop); its report is what the
operator reads on stdout, its exit status what a script sees.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import discord
import pytest

from adapters.llm.local_settings import local_backend_available
from adapters.memory import migrate
from bots.cli import main
from bots.doctor import ALIASES, known_variables, settings_classes, unknown_variables
from tests._require import require_or_skip
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeTelegram
from tests.test_docs import COMPONENTS, VARIABLES

pytestmark = pytest.mark.timeout(60)


@dataclass
class World:
    """The fakes of one test and the settings that point chinwag at them."""

    telegram: FakeTelegram
    discord: FakeDiscord
    llm: FakeOpenAIServer
    env: dict[str, str]
    env_file: Path


@pytest.fixture
async def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> AsyncIterator[World]:
    # discord.py keeps the REST base process-wide; put it back after the test.
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    await migrate.upgrade(sqlite_url)
    async with FakeTelegram() as telegram, FakeDiscord() as fake_discord, FakeOpenAIServer() as llm:
        env = {
            "DATABASE_URL": sqlite_url,
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "sk-test-key-123",
            "OPENAI_MODEL": "gpt-4o-mini",
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
            "DISCORD_BOT_TOKEN": fake_discord.token,
            "DISCORD_API_BASE_URL": fake_discord.api_base_url,
            "DISCORD_GATEWAY_URL": fake_discord.gateway_url,
        }
        yield World(telegram, fake_discord, llm, env, tmp_path / "chinwag.env")


async def doctor(
    world: World, capsys: pytest.CaptureFixture[str], *, extra: str = ""
) -> tuple[int, list[str]]:
    """Write the world's settings (plus ``extra`` lines) to its .env file; run doctor."""
    lines = [f"{key}={value}" for key, value in world.env.items()]
    world.env_file.write_text("\n".join(lines) + "\n" + extra)
    status = await asyncio.to_thread(
        main, ["--env-file", str(world.env_file), "doctor", "--timeout", "5"]
    )
    return status, capsys.readouterr().out.splitlines()


def line_about(lines: list[str], status: str, what: str, text: str) -> str:
    found = [line for line in lines if line.startswith(f"{status:<4} {what}:") and text in line]
    assert found, f"no {status} {what} line with {text!r} in:\n" + "\n".join(lines)
    return found[0]


async def test_a_working_setup_passes_every_check(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = await doctor(world, capsys)

    assert status == 0, "\n".join(lines)
    # No speech-to-text server here (tests/bots/test_doctor_media.py has one): a skip.
    others = [line for line in lines if not line.startswith("skip speech to text:")]
    assert len(others) == len(lines) - 1
    assert all(line.startswith("ok ") for line in others), "\n".join(lines)
    line_about(lines, "ok", "database", "schema current")
    line_about(lines, "ok", "LLM", "has gpt-4o-mini")
    line_about(lines, "ok", "Telegram", "@chinwag_test_bot")
    line_about(lines, "ok", "Discord", "Message Content intent is enabled")
    report = "\n".join(lines)
    for secret in ("sk-test-key-123", world.telegram.token, world.discord.token):
        assert secret not in report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrong_telegram_token(world: World) -> str:
    world.env["TELEGRAM_BOT_TOKEN"] = "123456:WRONG-token_abcdefghijklmnopqrstu"
    return ""


def unreachable_database(world: World) -> str:
    world.env["DATABASE_URL"] = f"postgresql://chinwag:pw-s3cret@127.0.0.1:{free_port()}/chinwag"
    return ""


def unknown_model(world: World) -> str:
    world.env["OPENAI_MODEL"] = "llama-9000"
    return ""


def misspelled_variable(world: World) -> str:
    return "TELEGRAM_TOKEN=123456:whatever\n"


def no_message_content_intent(world: World) -> str:
    world.discord.allow_message_content = False
    return ""


def webhook_while_polling(world: World) -> str:
    world.telegram.webhook_url = "https://elsewhere.example/hook"
    return ""


BROKEN: list[tuple[Callable[[World], str], str, str, str, str]] = [
    # (break it, status, check, what the line says, what to do)
    (
        wrong_telegram_token,
        "FAIL",
        "Telegram",
        "TELEGRAM_BOT_TOKEN: was refused by Telegram",
        "set TELEGRAM_BOT_TOKEN",
    ),
    (
        unreachable_database,
        "FAIL",
        "database",
        "cannot connect to PostgreSQL at 127.0.0.1:",
        "start the database or correct DATABASE_URL",
    ),
    (
        unknown_model,
        "FAIL",
        "LLM",
        "has no model 'llama-9000'; it has gpt-4o-mini, gpt-4o",
        "set OPENAI_MODEL to one of those",
    ),
    (
        misspelled_variable,
        "warn",
        "configuration",
        "TELEGRAM_TOKEN (in ",
        "did you mean TELEGRAM_BOT_TOKEN?",
    ),
    (
        no_message_content_intent,
        "FAIL",
        "Discord",
        "the Message Content intent is off",
        "Privileged Gateway Intents > MESSAGE CONTENT INTENT",
    ),
    (
        webhook_while_polling,
        "warn",
        "Telegram",
        "a webhook is set (https://elsewhere.example/hook) while chinwag is configured for polling",
        "deletes it when it starts polling",
    ),
]


@pytest.mark.parametrize(
    ("breakage", "status", "what", "says", "fix"), BROKEN, ids=[b[0].__name__ for b in BROKEN]
)
async def test_one_broken_thing_is_named_with_its_fix(
    world: World,
    capsys: pytest.CaptureFixture[str],
    breakage: Callable[[World], str],
    status: str,
    what: str,
    says: str,
    fix: str,
) -> None:
    extra = breakage(world)

    code, lines = await doctor(world, capsys, extra=extra)

    assert code == 1
    line = line_about(lines, status, what, says)
    assert fix in line.partition(" -> ")[2]
    # Only the broken thing is reported; the rest still passes.
    assert [other for other in lines if not other.startswith(("ok ", "skip"))] == [line]
    assert "pw-s3cret" not in "\n".join(lines)


async def test_a_malformed_setting_is_named_and_what_needs_it_waits(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.env["TELEGRAM_POLL_TIMEOUT"] = "soon"
    world.env["DATABASE_URL"] = "mysql://chinwag@db/chinwag"

    code, lines = await doctor(world, capsys)

    assert code == 1
    line_about(lines, "FAIL", "configuration", "TELEGRAM_POLL_TIMEOUT")
    line_about(lines, "skip", "Telegram", "fix the configuration above first")
    line_about(lines, "FAIL", "database", "DATABASE_URL: unsupported database or driver 'mysql'")
    line_about(lines, "ok", "Discord", "token valid")


async def test_run_names_a_missing_model_in_one_line_before_starting(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.env["OPENAI_MODEL"] = "llama-9000"
    world.env_file.write_text(
        "\n".join(f"{k}={v}" for k, v in world.env.items()) + "\nTELEGRAM_TOKEN=x\n"
    )

    status = await asyncio.to_thread(main, ["--env-file", str(world.env_file), "run"])

    err = capsys.readouterr().err
    assert status == 2
    assert "TELEGRAM_TOKEN (in " in err
    assert "did you mean TELEGRAM_BOT_TOKEN?" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("chinwag: configuration error: OPENAI_MODEL: ")
    assert "has no model 'llama-9000'" in last
    assert "Traceback" not in err
    assert not world.telegram.calls_to("getUpdates")  # nothing started


def test_doctor_knows_every_documented_setting() -> None:
    assert set(VARIABLES) <= known_variables()
    assert set(COMPONENTS) <= set(settings_classes())
    assert set(ALIASES.values()) <= known_variables()


def test_unknown_variables_look_like_chinwags_only() -> None:
    found = unknown_variables(
        {
            "environment": {
                "PATH": "/bin",
                "HOME": "/root",
                "DISCORD_TOKEN": "x",
                "OPENAI_API_KEY": "sk",
                "DATABSE_URL": "x",
                "DB_PASSWORD": "x",
                "telegram_bot_token": "x",
                "CHINWAG_PG_IMAGE": "postgres:16",
            }
        }
    )

    assert found == [
        ("DISCORD_TOKEN", "environment", "DISCORD_BOT_TOKEN"),
        ("DATABSE_URL", "environment", "DATABASE_URL"),
        ("DB_PASSWORD", "environment", None),
    ]


TINY_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-chat.gguf"


def use_local_model(world: World, path: Path) -> None:
    for key in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        del world.env[key]
    world.env.update(LLM_BACKEND="local", LOCAL_MODEL_PATH=str(path))


async def test_the_local_model_is_loaded_and_timed(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = local_backend_available()
    if reason is not None:
        require_or_skip("llama", reason)
    use_local_model(world, TINY_MODEL)

    code, lines = await doctor(world, capsys)

    assert code == 0, "\n".join(lines)
    assert re.search(
        r"^ok   LLM: local model tiny-chat\.gguf loads \(\d+\.\ds\)$", "\n".join(lines), re.M
    )


async def test_a_local_model_that_is_not_there_is_named(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if local_backend_available() is not None:
        require_or_skip("llama", "llama-cpp-python is not installed")
    use_local_model(world, tmp_path / "missing.gguf")

    code, lines = await doctor(world, capsys)

    assert code == 1
    line = line_about(lines, "FAIL", "LLM", f"LOCAL_MODEL_PATH: no file at {tmp_path}")
    assert line.endswith("-> correct LOCAL_MODEL_PATH")
