"""The suite-wide guards of tests/conftest.py: clean environment, loopback only, require."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from adapters.memory.settings import MemorySettings
from tests._require import NetworkBlocked, require_or_skip


def test_no_chinwag_variable_reaches_a_test(tmp_path: Path) -> None:
    assert "DATABASE_URL" not in os.environ
    assert not any(name.startswith(("OPENAI_", "TELEGRAM_", "DISCORD_")) for name in os.environ)
    assert os.environ["CHINWAG_DATA_DIR"].startswith(str(tmp_path))
    assert MemorySettings().async_url().startswith(f"sqlite+aiosqlite:///{tmp_path}")


def test_dotenv_in_the_working_directory_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://dev:pw@prod-db/chinwag\n")
    monkeypatch.chdir(tmp_path)
    assert MemorySettings().database_url is None


async def test_connections_beyond_loopback_fail_loudly() -> None:
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("example.com", 443)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlocked):
            sock.connect(("192.0.2.1", 80))
    finally:
        sock.close()
    with pytest.raises(NetworkBlocked):
        await asyncio.open_connection("api.telegram.org", 443)


async def test_loopback_still_works() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("localhost", port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


def test_require_or_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHINWAG_TEST_REQUIRE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        require_or_skip("postgres", "no server")
    monkeypatch.setenv("CHINWAG_TEST_REQUIRE", "llama, Postgres")
    with pytest.raises(pytest.fail.Exception, match="no server"):
        require_or_skip("postgres", "no server")
    with pytest.raises(pytest.skip.Exception):
        require_or_skip("gpu", "no gpu")
