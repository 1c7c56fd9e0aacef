"""``chinwag run`` with ``CHINWAG_HTTP_LISTEN``: health, readiness and metrics while it chats.

The real wiring (:func:`bots.app.serve`) runs in-process against the loopback Telegram and
OpenAI fakes; PostgreSQL outages are made by a loopback proxy, never by stopping the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.discord.settings import DiscordSettings
from adapters.memory.settings import MemorySettings
from adapters.memory.store import SqlMemoryStore
from adapters.telegram.settings import TelegramSettings
from bots.app import Settings, serve
from bots.cli import main
from bots.config import BotSettings
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests.fakes.openai_server import FakeOpenAIServer, default_reply
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

BOT = "metricsbot"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, frozenset(labels.items())), 0.0)


async def _until(port: int, path: str, status: int, timeout: float = 20.0) -> str:
    """Poll ``path`` until it answers ``status``; return that body."""
    last: tuple[int, str] = (0, "")
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(OSError):
                last = await _get(port, path)
                if last[0] == status:
                    return last[1]
            await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never answered {status}; last {last}")  # pragma: no cover


def _reply(body: Mapping[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    if users and "long" in str(users[-1].get("content")):
        return "word " * 200  # cut by LLM_MAX_REPLY_TOKENS
    return default_reply(body)


def _settings(tmp_path: Path, telegram: FakeTelegram, database_url: str, port: int) -> Settings:
    return Settings(
        env_file=None,
        core=CoreSettings(_env_file=None, bot_name=BOT),
        llm=LLMSettings(_env_file=None, max_reply_tokens=40),
        access=AccessSettings(_env_file=None),
        memory=MemorySettings(_env_file=None, database_url=database_url),
        telegram=TelegramSettings(
            _env_file=None,
            bot_token=telegram.token,
            api_base_url=telegram.base_url,
            edit_interval=0.05,
            first_flush_delay=0.02,
            poll_timeout=1,
        ),
        discord=DiscordSettings(_env_file=None),
        http_listen=("127.0.0.1", port),
    )


@contextlib.asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[Callable[[], bool]]:
    """``serve`` in a task, stopped (as by SIGTERM) and awaited at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, console=False, stop=stop), name="test-serve")
    try:
        yield task.done
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def llm(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(reply=_reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
        yield server


async def _say(telegram: FakeTelegram, chat: FakeChat, user: FakeUser, text: str) -> None:
    before = len(telegram.bot_messages(chat.id))
    telegram.send_text(chat, user, text)
    await telegram.wait_for(lambda: len(telegram.bot_messages(chat.id)) > before, timeout=20)
    await telegram.wait_idle(quiet=0.25)


@pytest.mark.slow
async def test_metrics_count_exactly_the_messages_sent_and_their_replies(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    port = _free_port()
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    async with (
        FakeTelegram() as telegram,
        _running(_settings(tmp_path, telegram, database_url, port)),
    ):
        assert await _until(port, "/readyz", 200) == "ready\n"
        assert await _get(port, "/healthz") == (200, "ok\n")
        assert (await _get(port, "/nope"))[0] == 404
        before = (await _get(port, "/metrics"))[1]

        ada = FakeUser(7001, "Ada", "ada")
        chat = FakeChat(ada.id, "private")
        for text in ("hello", "a long answer please", "thanks"):
            await _say(telegram, chat, ada, text)
        status, after = await _get(port, "/metrics")
        assert status == 200

        async with SqlMemoryStore(database_url) as store:
            usage = await store.get_usage(BOT, "telegram", str(ada.id), datetime.now(UTC).date())

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("chinwag_messages_received_total", platform="telegram") == 3
    assert moved("chinwag_replies_total", platform="telegram", status="complete") == 2
    assert moved("chinwag_replies_total", platform="telegram", status="cut") == 1
    assert moved("chinwag_replies_total", platform="telegram", status="failed") == 0
    assert moved("chinwag_reply_seconds_count") == 3
    assert moved("chinwag_first_token_seconds_count") == 3
    tokens = moved("chinwag_llm_tokens_total", direction="prompt") + moved(
        "chinwag_llm_tokens_total", direction="completion"
    )
    assert tokens == usage.tokens_total > 0
    assert moved("chinwag_llm_calls_total", result="ok") == 3
    assert _value(after, "chinwag_active_replies") == 0
    assert _value(after, "chinwag_errors_total", kind="backend") == 0
    assert _value(after, "chinwag_build_info", version=_version(after), backend="openai") == 1


def _version(text: str) -> str:
    for (name, labels), _ in _samples(text).items():
        if name == "chinwag_build_info":
            return dict(labels)["version"]
    raise AssertionError("no chinwag_build_info")


async def test_a_stopped_bot_no_longer_listens(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    port = _free_port()
    async with FakeTelegram() as telegram:
        settings = _settings(tmp_path, telegram, f"sqlite:///{tmp_path / 'm.db'}", port)
        async with _running(settings):
            await _until(port, "/readyz", 200)
    with pytest.raises(ConnectionRefusedError):
        await _get(port, "/healthz")


@pytest.mark.postgres
async def test_readyz_follows_a_postgresql_outage(
    tmp_path: Path, llm: FakeOpenAIServer, proxy: TcpProxy, direct_url: str
) -> None:
    port = _free_port()
    through_proxy = direct_url.replace(
        direct_url.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{proxy.port}", 1
    )
    async with (
        FakeTelegram() as telegram,
        _running(_settings(tmp_path, telegram, through_proxy, port)),
    ):
        await _until(port, "/readyz", 200)
        proxy.cut()
        body = await _until(port, "/readyz", 503)
        assert body == "not ready: database unreachable\n"
        assert await _get(port, "/healthz") == (200, "ok\n")  # alive all along
        proxy.restore()
        assert await _until(port, "/readyz", 200) == "ready\n"


def test_the_listener_is_off_unless_configured() -> None:
    assert BotSettings(_env_file=None).http_listen() is None
    assert BotSettings(_env_file=None, chinwag_http_listen="[::1]:9464").http_listen() == (
        "::1",
        9464,
    )
    assert BotSettings(_env_file=None, chinwag_http_listen=":9464").http_listen() == (
        "0.0.0.0",
        9464,
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("localhost", "CHINWAG_HTTP_LISTEN"),
        ("127.0.0.1:70000", "the port must be 1-65535"),
        ("127.0.0.1:8443", "the Telegram webhook's"),
    ],
)
def test_a_bad_listen_address_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    value: str,
    problem: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHINWAG_HTTP_LISTEN", value)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_URL", "https://bot.example.com/tg")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_LISTEN", "0.0.0.0:8443")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "s3cret-value")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chinwag: configuration error: CHINWAG_HTTP_LISTEN")
    assert problem in err
    assert len(err.strip().splitlines()) == 1
