"""Small helpers the Discord tests share."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from tests.fakes.discord_server import FakeDiscord


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
