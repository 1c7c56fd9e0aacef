"""The real ``chinwag`` process on the fake Discord and the fake OpenAI server, restarted."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.adapters.discord.helpers import process_env
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer

CHINWAG = Path(sys.executable).parent / "chinwag"


@asynccontextmanager
async def running_chinwag(
    fake: FakeDiscord, openai: FakeOpenAIServer, workdir: Path, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = process_env(fake, openai, workdir)
    identified = fake.identifies
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            str(CHINWAG), "run", cwd=workdir, env=env, stdout=output, stderr=output
        )
    try:
        waiting = asyncio.create_task(
            fake.wait_for(lambda: fake.identifies > identified and fake.connected(), timeout=60)
        )
        exited = asyncio.create_task(process.wait())
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            waiting.cancel()
            pytest.fail(f"chinwag exited with {process.returncode}:\n{log.read_text()}")
        exited.cancel()
        await waiting
        await asyncio.sleep(0.5)  # READY handled, the adapter starts taking messages
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


@pytest.mark.slow
async def test_a_restarted_process_keeps_memory_and_answers_a_replay_once(
    tmp_path: Path,
) -> None:
    assert CHINWAG.exists(), "install the project (pip install -e .) for the chinwag script"
    log = tmp_path / "chinwag.log"
    async with FakeDiscord() as fake, FakeOpenAIServer() as openai:
        alice = fake.add_user("alice")
        dm = fake.dm_channel(alice)

        async with running_chinwag(fake, openai, tmp_path, log) as process:
            first = await fake.user_message(dm, alice, "my name is Zed")
            await fake.wait_for(lambda: len(fake.bot_texts(dm)) == 1, timeout=30, what="a reply")
        assert process.returncode == 0, log.read_text()
        assert fake.bot_texts(dm) == ["You said: my name is Zed. I received 2 messages."]
        syncs = fake.command_syncs

        async with running_chinwag(fake, openai, tmp_path, log):
            await fake.redeliver(first.id)  # the gateway replays the message after a restart
            await fake.user_message(dm, alice, "what is my name?")
            await fake.wait_for(lambda: len(fake.bot_texts(dm)) >= 2, timeout=30, what="a reply")
            await asyncio.sleep(0.5)  # room for a wrong second answer to the replay

        texts = fake.bot_texts(dm)
        # system + my name is Zed + its answer + the question: the memory survived.
        assert texts == [
            "You said: my name is Zed. I received 2 messages.",
            "You said: what is my name?. I received 4 messages.",
        ], log.read_text()
        assert len(openai.chat_requests) == 2  # the replay cost no LLM call
        assert syncs == 1 and fake.command_syncs == 1  # unchanged commands: no re-sync
        assert fake.token not in log.read_text()
