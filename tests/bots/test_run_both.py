"""One ``chinwag run`` process serves Telegram and Discord at once, with one memory each."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def read_until_started(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    """Read the process's log into ``lines`` until both adapters say they started."""
    assert process.stdout is not None
    while not all(f"{name} adapter started" in "".join(lines) for name in ("telegram", "discord")):
        line = await process.stdout.readline()
        if not line:
            raise AssertionError("chinwag exited before both adapters started:\n" + "".join(lines))
        lines.append(line.decode(errors="replace"))


async def test_run_serves_telegram_and_discord_in_one_process(tmp_path: Path) -> None:
    async with FakeTelegram() as telegram, FakeDiscord() as discord, FakeOpenAIServer() as llm:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DISCORD_", "TELEGRAM_", "OPENAI_", "LLM_", "CHINWAG_"))
        }
        env.update(
            PYTHONUNBUFFERED="1",
            BOT_NAME="both",
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_API_BASE_URL=telegram.base_url,
            TELEGRAM_POLL_TIMEOUT="1",
            DISCORD_BOT_TOKEN=discord.token,
            DISCORD_API_BASE_URL=discord.api_base_url,
            DISCORD_GATEWAY_URL=discord.gateway_url,
            DISCORD_GUILD_READY_TIMEOUT="0.2",
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="sk-test-key",
            CHINWAG_DATA_DIR=str(tmp_path / "data"),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots.cli",
            "run",
            cwd=tmp_path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        lines: list[str] = []
        try:
            # Each adapter is logged as started once it serves (Discord: after READY).
            await asyncio.wait_for(read_until_started(process, lines), 60)

            ada = FakeUser(7001, "Ada", "ada")
            private = FakeChat(ada.id, "private")
            telegram.send_text(private, ada, "hello from Telegram")
            zed = discord.add_user("zed")
            dm = discord.dm_channel(zed)
            await discord.user_message(dm, zed, "hello from Discord")

            await telegram.wait_for(
                lambda: any(
                    "hello from Telegram" in m.text for m in telegram.bot_messages(private.id)
                ),
                timeout=30,
            )
            await discord.wait_for(
                lambda: len(discord.bot_texts(dm)) == 1, timeout=30, what="a reply"
            )
            # each platform's user has their own memory: two messages each (system + user)
            assert [m.text for m in telegram.bot_messages(private.id)] == [
                "You said: hello from Telegram. I received 2 messages."
            ]
            assert discord.bot_texts(dm) == ["You said: hello from Discord. I received 2 messages."]
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        log = "".join(lines) + out.decode(errors="replace")
        assert process.returncode == 0, log
        assert "telegram adapter started" in log
        assert "discord adapter started" in log
        assert telegram.token not in log
        assert discord.token not in log
