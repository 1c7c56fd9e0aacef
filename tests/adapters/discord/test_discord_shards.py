"""Gateway shards spread over processes: each holds its own, every server message lands once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from bots.config import load
from core.errors import ConfigError
from tests.adapters.discord.conftest import discord_settings
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.recording_engine import RecordingEngine


def test_shard_settings_come_together_and_fit() -> None:
    sharded = DiscordSettings(_env_file=None, shard_ids="0, 2", shard_count=4)
    assert sharded.shard_numbers == [0, 2]
    assert DiscordSettings(_env_file=None).shard_numbers == []
    for bad in (
        {"shard_ids": "0,1"},  # no count
        {"shard_count": 2},  # no ids
        {"shard_ids": "0,2", "shard_count": 2},  # 2 is not a shard of 2
        {"shard_ids": "one", "shard_count": 2},
        {"shard_ids": "1,1", "shard_count": 2},
    ):
        with pytest.raises(ValidationError):
            DiscordSettings(_env_file=None, **bad)


def test_a_shard_mistake_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_SHARD_IDS", "0,1")
    with pytest.raises(ConfigError) as caught:
        load(DiscordSettings, None)
    assert "DISCORD_SHARD_COUNT" in str(caught.value)


async def _sharded(
    fake: FakeDiscord, engine: RecordingEngine, ids: str, tmp: Path
) -> DiscordAdapter:
    settings = discord_settings(fake, shard_ids=ids, shard_count=fake.shard_count)
    adapter = DiscordAdapter(settings, engine, data_dir=tmp / engine.tag)
    await adapter.start()
    return adapter


async def test_two_processes_holding_shards_0_and_1_each_get_their_servers_once(
    tmp_path: Path,
) -> None:
    async with FakeDiscord(shard_count=2) as fake:
        user = fake.add_user("alice")
        channels = {
            shard: [fake.add_channel(fake.add_guild(f"g{shard}{n}", shard=shard)) for n in range(2)]
            for shard in (0, 1)
        }
        dm = fake.dm_channel(user)
        first, second = RecordingEngine("first"), RecordingEngine("second")
        adapters = [
            await _sharded(fake, first, "0", tmp_path),
            await _sharded(fake, second, "1", tmp_path),
        ]
        try:
            assert all(a.connected for a in adapters)
            sent: dict[str, str] = {}  # message id -> the shard that must get it
            for round_ in range(5):
                for shard, ids in channels.items():
                    for channel in ids:
                        text = f"{channel} #{round_}"
                        message = await fake.user_message(channel, user, text, mention_bot=True)
                        sent[message.id] = str(shard)
                message = await fake.user_message(dm, user, f"dm #{round_}")
                sent[message.id] = "0"  # Discord sends direct messages to shard 0
            async with asyncio.timeout(15):
                while len(first.messages) + len(second.messages) < len(sent):
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # a duplicate would arrive by now
            taken = Counter(m.message_id for m in first.messages + second.messages)
            assert taken == Counter(sent.keys())  # every message once: none lost, none twice
            assert {m.message_id for m in first.messages} == {
                i for i, shard in sent.items() if shard == "0"
            }
            assert {m.message_id for m in second.messages} == {
                i for i, shard in sent.items() if shard == "1"
            }
            await fake.settle()
            for channel in channels[1]:  # the shard-1 process answers its own servers
                assert fake.bot_texts(channel)[0].startswith("got ")
        finally:
            for adapter in adapters:
                await adapter.aclose()


@pytest.mark.slow  # discord.py waits 5 s between two shards' IDENTIFYs, as Discord asks
async def test_one_process_may_hold_every_shard(tmp_path: Path) -> None:
    async with FakeDiscord(shard_count=2) as fake:
        user = fake.add_user("bob")
        channels = [fake.add_channel(fake.add_guild(f"g{s}", shard=s)) for s in (0, 1)]
        engine = RecordingEngine("all")
        adapter = await _sharded(fake, engine, "0,1", tmp_path)
        try:
            for channel in channels:
                await fake.user_message(channel, user, "hello", mention_bot=True)
            async with asyncio.timeout(10):
                while len(engine.messages) < 2:
                    await asyncio.sleep(0.02)
            assert {m.chat_id for m in engine.messages} == set(channels)
            assert fake.identifies == 2  # one gateway session per shard
        finally:
            await adapter.aclose()
