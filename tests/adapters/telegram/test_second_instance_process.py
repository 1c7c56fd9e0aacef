"""Two real ``chinwag run`` processes on one Telegram token and one database.

The second sees the first (its lease on (bot, telegram) and its fresh heartbeat), waits,
says why once, and takes over when the first stops; never both down, never both polling.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.adapters.telegram.test_recovery_process import _env
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

pytestmark = pytest.mark.slow


async def _start(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots.cli",
            "run",
            cwd=env["HOME"],
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )


async def _until(check: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


async def _terminate(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 30)


async def test_a_second_process_waits_then_takes_over_when_the_first_stops(tmp_path: Path) -> None:
    async with FakeTelegram() as fake, FakeOpenAIServer() as llm:
        user = FakeUser(5553, "Cy", "cy")
        chat = FakeChat(user.id, "private")
        env = _env(fake, llm, tmp_path)
        first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
        first = await _start(env, first_log)
        second: asyncio.subprocess.Process | None = None
        try:
            await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")), timeout=60)
            second = await _start(env, second_log)
            await _until(lambda: "waiting" in second_log.read_text(), timeout=60)
            fake.send_text(chat, user, "one")
            await fake.wait_for(lambda: len(fake.bot_messages(chat.id)) == 1, timeout=30)
            await asyncio.sleep(1.0)
            assert second.returncode is None and first.returncode is None  # both up
            waiting = second_log.read_text()
            assert waiting.count("another chinwag process") == 1, waiting  # said once
            assert "serves telegram" in waiting

            assert await _terminate(first) == 0, first_log.read_text()
            fake.send_text(chat, user, "two")  # taken by the second once it took over
            await fake.wait_for(lambda: len(fake.bot_messages(chat.id)) == 2, timeout=60)
            await fake.wait_idle(quiet=1.0)
            assert "taking over telegram" in second_log.read_text()
        finally:
            await _terminate(first)
            if second is not None:
                assert await _terminate(second) == 0, second_log.read_text()
        texts = [m.text for m in fake.bot_messages(chat.id)]
        assert texts == [
            "You said: one. I received 2 messages.",
            "You said: two. I received 4 messages.",  # one memory: the same database
        ]
        assert "409" not in first_log.read_text() + second_log.read_text()


async def test_two_processes_that_share_no_database_both_keep_serving(tmp_path: Path) -> None:
    # No shared lease: Telegram's 409 Conflict is all they see of each other. Neither may
    # exit (under a restart policy both would collide forever); each update is answered once.
    async with FakeTelegram() as fake, FakeOpenAIServer() as llm:
        user = FakeUser(5554, "Di", "di")
        chat = FakeChat(user.id, "private")
        logs = [tmp_path / "first.log", tmp_path / "second.log"]
        homes = [tmp_path / "a", tmp_path / "b"]
        processes = []
        try:
            for home, log in zip(homes, logs, strict=True):
                home.mkdir()
                processes.append(await _start(_env(fake, llm, home), log))
                await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")), timeout=60)
            await _until(lambda: fake.conflicts >= 2, timeout=60)
            for n in range(3):
                fake.send_text(chat, user, f"message {n}")
                answered = n + 1
                await fake.wait_for(
                    lambda: len(fake.bot_messages(chat.id)) == answered,  # noqa: B023
                    timeout=60,
                )
            await fake.wait_idle(quiet=1.0)
            assert [p.returncode for p in processes] == [None, None]  # never both down
        finally:
            codes = [await _terminate(p) for p in processes]
        text = "".join(log.read_text() for log in logs)
        assert codes == [0, 0], text
        assert sorted(m.text.split(".")[0] for m in fake.bot_messages(chat.id)) == [
            f"You said: message {n}" for n in range(3)
        ]  # each answered once
        assert "409 Conflict" in text
