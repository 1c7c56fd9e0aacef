"""Small helpers the Discord tests share."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer


async def idle(fake: FakeDiscord, bot: Any, *, quiet: float = 0.15, timeout: float = 15) -> None:
    """Wait until the bot answered everything it took and stopped calling Discord."""
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0.05)  # let the gateway deliver what the fake just sent
    while bot.adapter.pending:
        if time.monotonic() > deadline:
            raise AssertionError(f"the bot still has {bot.adapter.pending} message(s) in flight")
        await asyncio.sleep(0.02)
    await fake.settle(quiet=quiet, timeout=max(deadline - time.monotonic(), 1))


def fences_balanced(text: str) -> bool:
    """Every code block opened in ``text`` is closed in it."""
    open_block = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```") and (open_block or stripped.count("```") == 1):
            open_block = not open_block
    return not open_block


def same_text(parts: list[str], original: str) -> bool:
    """The parts carry the original text: equal once fences and whitespace are ignored."""

    def norm(text: str) -> str:
        return re.sub(r"\s+", "", re.sub(r"(?m)^\s*```\w*\s*$", "", text))

    return norm("\n".join(parts)) == norm(original)


def process_env(fake: FakeDiscord, openai: FakeOpenAIServer, workdir: Path) -> dict[str, str]:
    """The environment of a real ``chinwag run`` on the loopback Discord and OpenAI fakes.

    The test runner's own chinwag variables are left out; the database is a SQLite file in
    ``workdir``.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISCORD_", "TELEGRAM_", "OPENAI_", "LLM_", "CHINWAG_"))
    }
    env.update(
        DISCORD_BOT_TOKEN=fake.token,
        DISCORD_API_BASE_URL=fake.api_base_url,
        DISCORD_GATEWAY_URL=fake.gateway_url,
        DISCORD_EDIT_INTERVAL="0.05",
        DISCORD_GUILD_READY_TIMEOUT="0.2",
        LLM_BACKEND="openai",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=openai.base_url,
        OPENAI_MODEL="gpt-4o-mini",
        CHINWAG_DATA_DIR=str(workdir / "data"),
        DATABASE_URL=f"sqlite:///{workdir / 'chinwag.db'}",
        LOG_LEVEL="INFO",
        PYTHONWARNINGS="ignore::DeprecationWarning",
    )
    return env
