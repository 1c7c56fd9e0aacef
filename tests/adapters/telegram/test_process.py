"""The real ``chinwag run`` process against the fake Telegram and a fake OpenAI server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


async def _start(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "run",
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _stop(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        raise AssertionError(f"chinwag did not stop on SIGTERM:\n{out.decode()}") from None
    return out.decode(errors="replace")


async def test_restart_keeps_memory_and_answers_a_redelivered_update_once(tmp_path: Path) -> None:
    async with FakeTelegram() as fake, FakeOpenAIServer() as llm:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),
            "PTB_TIMEDELTA": "true",
            "LOG_LEVEL": "DEBUG",
            "BOT_NAME": "proc",
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_API_BASE_URL": fake.base_url,
            "TELEGRAM_POLL_TIMEOUT": "1",
            "TELEGRAM_EDIT_INTERVAL": "0.1",
            "LLM_BACKEND": "openai",
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "sk-test-key",
            "OPENAI_MODEL": "gpt-4o-mini",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
            "CHINWAG_DATA_DIR": str(tmp_path / "data"),
        }
        user = FakeUser(5551, "Ada", "ada_l")
        chat = FakeChat(user.id, "private")

        first = await _start(env, tmp_path)
        try:
            await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")), timeout=60)
            fake.send_text(chat, user, "my name is Ada")
            await fake.wait_for(
                lambda: any("my name is Ada" in m.text for m in fake.bot_messages(chat.id)),
                timeout=30,
            )
            update_id = fake.delivered_update_ids()[-1]
        finally:
            log = await _stop(first)
        assert first.returncode == 0, log
        assert f"serving @{fake.bot.username}" in log  # logs are on, at DEBUG...
        assert fake.token not in log and fake.token.split(":")[1] not in log

        # Telegram redelivers the answered update (say its offset was lost), then a new one.
        fake.redeliver(update_id)
        fake.send_text(chat, user, "what is my name?")
        second = await _start(env, tmp_path)
        try:
            await fake.wait_for(
                lambda: any("what is my name?" in m.text for m in fake.bot_messages(chat.id)),
                timeout=60,
            )
            await fake.wait_idle(quiet=0.5)
        finally:
            log = await _stop(second)
        assert second.returncode == 0, log
        replies = [m.text for m in fake.bot_messages(chat.id)]
        assert fake.pending_updates == 0  # the redelivered update was fetched and confirmed
        assert len(replies) == 2, replies  # ...and answered once
        assert replies[0] == "You said: my name is Ada. I received 2 messages."
        # Memory survived the restart: system prompt, first exchange, new question.
        assert replies[1] == "You said: what is my name?. I received 4 messages."
        last_prompt = llm.chat_requests[-1].body["messages"]
        assert any(m.get("content") == "my name is Ada" for m in last_prompt)
