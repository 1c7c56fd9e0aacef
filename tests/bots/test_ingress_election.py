"""Exactly one poller per Telegram token; webhook ingress replicas and Discord shards side by side.

Two processes' engines share one store (the lease table); each runs its Telegram adapter
in ingress mode through ``run_adapters``, as ``chinwag ingress`` does. The second poller
waits instead of fighting the first over ``getUpdates`` (no 409), and takes over when the
first stops.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from adapters.memory.store import SqlMemoryStore
from adapters.telegram import TelegramAdapter
from bots.app import run_adapters
from core.engine import Engine
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests._db import UpgradeHead
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.recording_engine import RecordingEngine
from tests.fakes.scripted import ScriptedBackend
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser


async def _engine(stack: AsyncExitStack, url: str) -> Engine:
    store = SqlMemoryStore(url)
    await store.start()
    stack.push_async_callback(store.aclose)
    backend = ScriptedBackend()
    await backend.start()
    engine = Engine(
        backend=backend,
        store=store,
        core=CoreSettings(_env_file=None, bot_name="elect"),
        llm=LLMSettings(_env_file=None),
        access=AccessSettings(_env_file=None),
        heartbeat=0.2,
    )
    await engine.start()
    return engine


async def test_a_second_poller_waits_and_takes_over(
    tmp_path: Path, upgrade_head: UpgradeHead
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}"
    await upgrade_head(url)
    async with FakeTelegram() as fake, AsyncExitStack() as stack:
        engines = [await _engine(stack, url), await _engine(stack, url)]
        adapters = [TelegramAdapter(fast_settings(fake), e, ingress=True) for e in engines]
        assert adapters[0].leases == ("telegram",)
        stops = [asyncio.Event(), asyncio.Event()]
        first = asyncio.create_task(run_adapters(engines[0], [adapters[0]], stops[0], grace=2))
        await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")))
        second = asyncio.create_task(run_adapters(engines[1], [adapters[1]], stops[1], grace=2))
        try:
            user = FakeUser(9100, "Ann", "ann")
            fake.send_text(FakeChat(user.id, "private"), user, "one")
            await fake.wait_for(lambda: len(fake.bot_messages(user.id)) == 1)
            await asyncio.sleep(1.0)  # several of the second's lease checks
            assert adapters[0].connected
            assert not adapters[1].connected
            assert fake.conflicts == 0  # no getUpdates fight
            stops[0].set()  # the first stops (a deploy): the second takes over
            await first
            await asyncio.wait_for(_connected(adapters[1]), 10)
            fake.send_text(FakeChat(user.id, "private"), user, "two")
            await fake.wait_for(lambda: len(fake.bot_messages(user.id)) == 2)
            await fake.wait_idle(quiet=0.3)
            assert [m.text.split(" | ")[0] for m in fake.bot_messages(user.id)] == [
                "echo: one",
                "echo: two",
            ]  # each answered once
        finally:
            for stop in stops:
                stop.set()
            await asyncio.gather(first, second, return_exceptions=True)


async def _connected(adapter: TelegramAdapter) -> None:
    while not adapter.connected:
        await asyncio.sleep(0.05)


def test_webhook_replicas_hold_no_lease_and_shards_hold_their_own() -> None:
    fake_url = "https://bot.example.com/tg"
    webhook = fast_settings(FakeTelegram(), webhook_url=fake_url, webhook_secret="s3cret_Token-1")
    engine = RecordingEngine()
    assert TelegramAdapter(webhook, engine, ingress=True).leases == ()
    assert TelegramAdapter(webhook, engine).leases == ("telegram",)  # chinwag run: as today
    sharded = DiscordSettings(_env_file=None, bot_token="x", shard_ids="1,3", shard_count=4)
    plain = DiscordSettings(_env_file=None, bot_token="x")
    assert DiscordAdapter(sharded, engine, data_dir=Path()).leases == (
        "discord:shard:1",
        "discord:shard:3",
    )
    assert DiscordAdapter(plain, engine, data_dir=Path()).leases == ("discord",)
