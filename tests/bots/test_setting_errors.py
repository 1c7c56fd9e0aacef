"""A bad setting stops ``chinwag run`` with one line naming the variable, never a traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bots.test_cli import chinwag, cli_env
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeTelegram

# Every test here starts a real `chinwag run` process: seconds each.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

_WEBHOOK = {"TELEGRAM_WEBHOOK_URL": "https://bot.example.com/hook", "LOG_LEVEL": "WARNING"}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that something else is already listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def _run(tmp_path: Path, **env: str) -> tuple[int, str]:
    async with FakeTelegram() as fake, FakeOpenAIServer() as llm:
        code, out, err = await chinwag(
            tmp_path,
            "run",
            env=cli_env(
                tmp_path,
                TELEGRAM_BOT_TOKEN=fake.token,
                TELEGRAM_API_BASE_URL=fake.base_url,
                OPENAI_BASE_URL=llm.base_url,
                OPENAI_API_KEY="sk-test-secret-123456",
                OPENAI_MODEL="gpt-4o-mini",
                **env,
            ),
        )
    assert out == ""
    return code, err


def _one_line(err: str, variable: str, example: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"{variable}: " in lines[0], lines[0]
    assert f"{variable}={example}" in lines[0], lines[0]


async def test_busy_webhook_address_is_one_line(tmp_path: Path, busy_port: int) -> None:
    code, err = await _run(
        tmp_path,
        **_WEBHOOK,
        TELEGRAM_WEBHOOK_SECRET="s3cret_value",
        TELEGRAM_WEBHOOK_LISTEN=f"127.0.0.1:{busy_port}",
    )
    assert code == 2
    _one_line(err, "TELEGRAM_WEBHOOK_LISTEN", "0.0.0.0:8443")
    assert f"127.0.0.1:{busy_port}" in err


async def test_unassignable_webhook_address_is_one_line(tmp_path: Path) -> None:
    code, err = await _run(
        tmp_path,
        **_WEBHOOK,
        TELEGRAM_WEBHOOK_SECRET="s3cret_value",
        TELEGRAM_WEBHOOK_LISTEN="192.0.2.1:8443",  # TEST-NET-1: never this host's address
    )
    assert code == 2
    _one_line(err, "TELEGRAM_WEBHOOK_LISTEN", "0.0.0.0:8443")


@pytest.mark.parametrize(
    ("variable", "value", "example"),
    [
        ("TELEGRAM_WEBHOOK_LISTEN", "127.0.0.1:99999", "0.0.0.0:8443"),
        ("TELEGRAM_WEBHOOK_LISTEN", "127.0.0.1:0", "0.0.0.0:8443"),
        ("TELEGRAM_WEBHOOK_SECRET", "", "a-long-random-string_123"),
        ("DATABASE_URL", "postgresql://u@db.example:99999/chinwag", "postgresql://"),
        ("DATABASE_URL", "postgresql://u:hunter2@db.example:abc/chinwag", "postgresql://"),
    ],
)
async def test_bad_setting_is_one_line(
    tmp_path: Path, variable: str, value: str, example: str
) -> None:
    env = {**_WEBHOOK, "TELEGRAM_WEBHOOK_SECRET": "s3cret_value", variable: value}
    code, err = await _run(tmp_path, **env)
    assert code == 2
    _one_line(err, variable, example)
    assert "hunter2" not in err
