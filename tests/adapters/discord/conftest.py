"""A real discord.py client, through the adapter and a real engine, against the fake Discord."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # discord.py imports the stdlib audioop module (voice), deprecated since Python 3.11.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord  # noqa: F401

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.scripted import ScriptedBackend


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


def discord_settings(fake: FakeDiscord, **values: Any) -> DiscordSettings:
    values.setdefault("edit_interval", 0.05)
    values.setdefault("typing_delay", 0.5)
    values.setdefault("request_timeout", 10)
    values.setdefault("guild_ready_timeout", 0.2)
    return DiscordSettings(
        _env_file=None,
        bot_token=fake.token,
        api_base_url=fake.api_base_url,
        gateway_url=fake.gateway_url,
        **values,
    )


class Bot:
    """The running bot under test: engine + adapter, closed in order."""

    def __init__(self, engine: Engine, adapter: DiscordAdapter) -> None:
        self.engine = engine
        self.adapter = adapter

    async def aclose(self) -> None:
        await self.engine.aclose(grace=5)
        await self.adapter.aclose()


BotFactory = Callable[..., Any]


@pytest.fixture
async def make_bot(
    fake: FakeDiscord, store: SqlMemoryStore, backend: ScriptedBackend, tmp_path: Path
) -> AsyncIterator[BotFactory]:
    bots: list[Bot] = []

    async def factory(
        *,
        memory_scope: str = "user",
        admins: str = "",
        data_dir: Path | None = None,
        max_reply_tokens: int | None = None,
        **settings: Any,
    ) -> Bot:
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="chinwag", memory_scope_groups=memory_scope),
            llm=LLMSettings(_env_file=None, max_reply_tokens=max_reply_tokens),
            access=AccessSettings(_env_file=None, admin_users=admins),
        )
        await engine.start()
        adapter = DiscordAdapter(
            discord_settings(fake, **settings), engine, data_dir=data_dir or tmp_path / "data"
        )
        await adapter.start()
        bot = Bot(engine, adapter)
        bots.append(bot)
        return bot

    yield factory
    for bot in reversed(bots):
        await bot.aclose()
