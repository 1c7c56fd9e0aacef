from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.memory.store import SqlMemoryStore
from adapters.telegram import TelegramAdapter, TelegramSettings
from core.engine import Engine
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests._db import UpgradeHead
from tests.fakes.scripted import ScriptedBackend
from tests.fakes.telegram_server import FakeChat, FakeMessage, FakeTelegram, FakeUser, FloodLimits

_ids = itertools.count(1000)


def fast_settings(fake: FakeTelegram, **overrides: Any) -> TelegramSettings:
    """Settings pointing at the fake, with throttles shrunk so tests stay fast."""
    values: dict[str, Any] = {
        "bot_token": fake.token,
        "api_base_url": fake.base_url,
        "edit_interval": 0.05,
        "group_edit_interval": 0.05,
        "first_flush_delay": 0.02,
        "typing_delay": 0.5,
        "poll_timeout": 1,
        "request_timeout": 10,
    }
    values.update(overrides)
    return TelegramSettings(_env_file=None, **values)


@dataclass
class Harness:
    """A running bot: fake Telegram + real PTB Application + real engine and SQLite store."""

    fake: FakeTelegram
    backend: ScriptedBackend
    store: SqlMemoryStore
    engine: Engine
    adapter: TelegramAdapter
    url: str
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def user(self, name: str = "Alice") -> FakeUser:
        return FakeUser(next(_ids), name, f"{name.lower()}_{next(_ids)}")

    def private(self, user: FakeUser) -> FakeChat:
        return FakeChat(user.id, "private")

    def group(self, *, forum: bool = False) -> FakeChat:
        return FakeChat(-next(_ids), "supergroup", "Test group", is_forum=forum)

    async def say(
        self, chat: FakeChat, user: FakeUser, text: str, *, replies: int = 1, **kw: Any
    ) -> list[FakeMessage]:
        """Send ``text`` and return the bot's new messages once it has answered."""
        before = {m.message_id for m in self.fake.bot_messages(chat.id)}
        self.fake.send_text(chat, user, text, **kw)
        await self.fake.wait_for(
            lambda: (
                len([m for m in self.fake.bot_messages(chat.id) if m.message_id not in before])
                >= replies
            )
        )
        await self.fake.wait_idle(quiet=0.25)
        return [m for m in self.fake.bot_messages(chat.id) if m.message_id not in before]


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def harness_factory(tmp_path, upgrade_head: UpgradeHead) -> AsyncIterator[HarnessFactory]:
    stacks: list[AsyncExitStack] = []
    url = f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}"
    await upgrade_head(url)

    async def make(
        *,
        backend: ScriptedBackend | None = None,
        memory_scope: str = "user",
        fake: FakeTelegram | None = None,
        limits: FloodLimits | None = None,
        max_reply_tokens: int | None = None,
        **settings: Any,
    ) -> Harness:
        stack = AsyncExitStack()
        stacks.append(stack)
        if fake is None:
            fake = await stack.enter_async_context(FakeTelegram(limits=limits))
        store = SqlMemoryStore(url)
        await store.start()
        stack.push_async_callback(store.aclose)
        backend = backend or ScriptedBackend()
        await backend.start()
        stack.push_async_callback(backend.aclose)
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="tgtest", memory_scope_groups=memory_scope),
            llm=LLMSettings(_env_file=None, max_reply_tokens=max_reply_tokens),
            access=AccessSettings(_env_file=None),
        )
        await engine.start()
        stack.push_async_callback(engine.aclose)
        adapter = TelegramAdapter(fast_settings(fake, **settings), engine)
        await adapter.start()
        stack.push_async_callback(adapter.aclose)
        return Harness(fake, backend, store, engine, adapter, url, stack)

    yield make
    for stack in reversed(stacks):
        await stack.aclose()


@pytest.fixture
async def bot(harness_factory) -> Harness:
    return await harness_factory()
