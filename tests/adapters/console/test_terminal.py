"""``chinwag chat`` on a real pseudo-terminal: ``/stop`` and Ctrl-C while a reply streams.

The process gets the pty as its controlling terminal, so ``\\x03`` written to it is a real
Ctrl-C (the line discipline sends SIGINT); the loopback OpenAI server streams slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.bots.test_cli import llm_env
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPLY = " ".join(f"w{i}" for i in range(400))


class Terminal:
    """A ``chinwag chat`` process on a pty, and everything it printed."""

    def __init__(self, proc: subprocess.Popen[bytes], master: int) -> None:
        self.proc = proc
        self.master = master
        self.screen = ""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the child closed the terminal
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.screen += data.decode(errors="replace")
        self._changed.set()

    async def expect(self, pattern: str, *, after: int = 0, timeout: float = 30) -> int:
        """Wait until ``pattern`` shows at or after offset ``after``; return where it ends."""
        async with asyncio.timeout(timeout):
            while (found := re.compile(pattern).search(self.screen, after)) is None:
                self._changed.clear()
                await self._changed.wait()
        return found.end()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def exit_code(self, timeout: float = 30) -> int:
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:
                await asyncio.sleep(0.05)
        return self.proc.returncode


def _take_terminal() -> None:  # runs in the child after setsid(): the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextlib.asynccontextmanager
async def terminal(tmp_path: Path, server: FakeOpenAIServer) -> AsyncIterator[Terminal]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(  # the pty needs Popen's preexec_fn
        [sys.executable, "-m", "bots.cli", "chat"],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**llm_env(tmp_path, server), "TERM": "dumb"},
        start_new_session=True,
        preexec_fn=_take_terminal,
    )
    os.close(slave)
    term = Terminal(proc, master)
    try:
        yield term
    finally:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


async def test_stop_and_ctrl_c_stop_the_streaming_reply_and_ctrl_c_at_the_prompt_quits(
    tmp_path: Path,
) -> None:
    async with (
        FakeOpenAIServer(reply=lambda _: REPLY, chunk_delay=0.02) as llm,
        terminal(tmp_path, llm) as term,
    ):
        at = await term.expect(r"you> ")
        term.type("tell me a long story\r")
        at = await term.expect(r"clibot> w0 w1 .* w20 ", after=at)
        term.type("/stop\r")
        at = await term.expect(r"clibot> Stopped\.\r?\n", after=at)
        at = await term.expect(r"you> ", after=at)
        assert "w399" not in term.screen  # stopped while it streamed, not after

        term.type("and another one\r")
        at = await term.expect(r"clibot> w0 w1 .* w20 ", after=at)
        term.type("\x03")  # Ctrl-C
        at = await term.expect(r"clibot> Stopped\.\r?\n", after=at)
        at = await term.expect(r"you> ", after=at)
        assert "w399" not in term.screen
        assert term.proc.poll() is None  # one Ctrl-C did not quit

        term.type("\x03")  # Ctrl-C at the prompt quits
        assert await term.exit_code() == 0


async def test_ctrl_c_twice_while_streaming_quits(tmp_path: Path) -> None:
    async with (
        FakeOpenAIServer(reply=lambda _: REPLY, chunk_delay=0.02) as llm,
        terminal(tmp_path, llm) as term,
    ):
        at = await term.expect(r"you> ")
        term.type("tell me a long story\r")
        await term.expect(r"clibot> w0 w1 .* w20 ", after=at)
        term.type("\x03")
        await asyncio.sleep(0.2)  # two presses: signals sent at once would merge into one
        term.type("\x03")
        assert await term.exit_code() == 0
        assert "w399" not in term.screen
