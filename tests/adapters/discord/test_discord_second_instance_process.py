"""Two real ``chinwag run`` processes on one Discord token and one database.

Discord sends every event to every connected session, so two processes would both answer:
the second waits for the first's (bot, discord) lease, says why once, and connects only
when the first stops.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.adapters.discord.helpers import process_env
from tests.adapters.discord.test_discord_process import CHINWAG
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow


async def _start(
    fake: FakeDiscord, openai: FakeOpenAIServer, workdir: Path, log: Path
) -> asyncio.subprocess.Process:
    env = process_env(fake, openai, workdir)
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            str(CHINWAG), "run", cwd=workdir, env=env, stdout=output, stderr=output
        )


async def _terminate(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 30)


async def test_only_the_lease_holder_serves_and_the_second_takes_over(tmp_path: Path) -> None:
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    async with FakeDiscord() as fake, FakeOpenAIServer() as openai:
        alice = fake.add_user("alice")
        dm = fake.dm_channel(alice)
        first = await _start(fake, openai, tmp_path, first_log)
        second: asyncio.subprocess.Process | None = None
        try:
            await fake.wait_for(lambda: fake.identifies == 1 and fake.connected(), timeout=60)
            await asyncio.sleep(0.5)
            second = await _start(fake, openai, tmp_path, second_log)
            async with asyncio.timeout(60):
                while "another chinwag process" not in second_log.read_text():
                    await asyncio.sleep(0.1)
            await fake.user_message(dm, alice, "one")
            await fake.wait_for(lambda: len(fake.bot_texts(dm)) == 1, timeout=30, what="a reply")
            await asyncio.sleep(1.0)  # room for a second answer from a second session
            assert fake.identifies == 1  # the second never connected
            assert second.returncode is None

            assert await _terminate(first) == 0, first_log.read_text()
            await fake.wait_for(lambda: fake.identifies == 2 and fake.connected(), timeout=60)
            await asyncio.sleep(0.5)
            await fake.user_message(dm, alice, "two")
            await fake.wait_for(lambda: len(fake.bot_texts(dm)) == 2, timeout=30, what="a reply")
            await asyncio.sleep(0.5)
        finally:
            await _terminate(first)
            if second is not None:
                assert await _terminate(second) == 0, second_log.read_text()
        assert fake.bot_texts(dm) == [
            "You said: one. I received 2 messages.",
            "You said: two. I received 4 messages.",
        ]
