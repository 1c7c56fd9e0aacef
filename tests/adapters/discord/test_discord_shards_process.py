"""Two real ``chinwag run`` processes holding Discord shards 0 and 1 of 2, one database.

Each process holds its own shard's lease, so both serve at once; Discord (the fake) sends a
server's events only to its shard. Every message is answered exactly once, by the process
holding its server's shard; a third process asking for a shard already held waits.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.adapters.discord.helpers import process_env
from tests.adapters.discord.test_discord_process import CHINWAG
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow


async def _start(
    fake: FakeDiscord, openai: FakeOpenAIServer, workdir: Path, log: Path, shard: int
) -> asyncio.subprocess.Process:
    env = process_env(fake, openai, workdir)
    env.update(DISCORD_SHARD_IDS=str(shard), DISCORD_SHARD_COUNT="2")
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            str(CHINWAG), "run", cwd=workdir, env=env, stdout=output, stderr=output
        )


async def _terminate(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 30)


async def test_two_processes_each_answer_their_own_shards_servers_once(tmp_path: Path) -> None:
    logs = [tmp_path / f"shard{n}.log" for n in range(3)]
    async with FakeDiscord(shard_count=2) as fake, FakeOpenAIServer() as openai:
        alice = fake.add_user("alice")
        channels = [fake.add_channel(fake.add_guild(f"g{s}", shard=s)) for s in (0, 1)]
        processes = [
            await _start(fake, openai, tmp_path, logs[0], 0),
            await _start(fake, openai, tmp_path, logs[1], 1),
        ]
        try:
            await fake.wait_for(lambda: fake.identifies == 2 and fake.connected(), timeout=60)
            await asyncio.sleep(0.5)
            processes.append(await _start(fake, openai, tmp_path, logs[2], 0))
            async with asyncio.timeout(60):
                while "another chinwag process" not in logs[2].read_text():
                    await asyncio.sleep(0.1)
            asked: dict[str, str] = {}  # message id -> channel
            for round_ in range(4):
                for channel in channels:
                    message = await fake.user_message(
                        channel, alice, f"hello {round_}", mention_bot=True
                    )
                    asked[message.id] = channel
            await fake.wait_for(
                lambda: sum(len(fake.bot_texts(c)) for c in channels) >= len(asked),
                timeout=60,
                what="the replies",
            )
            await asyncio.sleep(1.0)  # room for a second answer
            assert fake.identifies == 2  # the third never connected
        finally:
            codes = [await _terminate(p) for p in processes]
        assert codes == [0, 0, 0], [log.read_text()[-2000:] for log in logs]
        replies = Counter(s.reply_to for s in fake.sends if s.kind == "create")
        assert replies == Counter(dict.fromkeys(asked, 1))  # each message answered once
        for log, channel in zip(logs[:2], channels, strict=True):
            assert "holding Discord shards" in log.read_text()
            assert len(fake.bot_texts(channel)) == 4
