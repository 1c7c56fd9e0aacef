"""Real ``chinwag ingress`` and ``chinwag worker`` processes for the scaling tests.

:func:`cluster` starts N ingress and M worker processes of one bot against the loopback
fakes (the test's own ``FakeTelegram`` and ``FakeOpenAIServer``), a PostgreSQL database
and Redis; every process's log is collected, and each one can be stopped (SIGTERM),
killed (SIGKILL) or started again. The lead's larger test (1 ingress + 3 workers, 50
conversations) and ``bench.scale`` build on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY = {"ingress": "telegram adapter started (ingress)", "worker": "sending only"}


def scale_env(
    *,
    telegram_token: str,
    telegram_url: str,
    llm_url: str,
    database_url: str,
    redis_url: str,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """The environment of one bot's processes (the caller's, less its chinwag settings)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISCORD_", "TELEGRAM_", "OPENAI_", "LLM_", "CHINWAG_", "REDIS_"))
        and key != "DATABASE_URL"
    }
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO),
        BOT_NAME="scaled",
        TELEGRAM_BOT_TOKEN=telegram_token,
        TELEGRAM_API_BASE_URL=telegram_url,
        TELEGRAM_POLL_TIMEOUT="1",
        OPENAI_BASE_URL=llm_url,
        OPENAI_API_KEY="sk-test-key",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CHINWAG_DATA_DIR=str(data_dir),
        LOG_LEVEL="INFO",
        WORKER_HEARTBEAT_TIMEOUT_SECONDS="3",
    )
    env.update(extra)
    return env


@dataclass
class Process:
    """One running ``chinwag`` process and its log."""

    role: str
    name: str
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until ``text`` is in the log; fail (with the log) if it exits first."""
        async with asyncio.timeout(timeout):
            while text not in self.log:
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited first:\n{self.log}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as on a crash or a lost machine."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                status = await self.process.wait()
        except TimeoutError:
            self.kill()
            status = await self.process.wait()
        if self.reader is not None:
            await self.reader
        return status


async def _read(proc: Process) -> None:
    stdout = proc.process.stdout
    assert stdout is not None
    while line := await stdout.readline():
        proc.lines.append(line.decode(errors="replace"))


async def start(role: str, name: str, env: Mapping[str, str], cwd: Path, **extra: str) -> Process:
    """Start ``chinwag ROLE`` (``extra``: this process's own settings, e.g. its
    ``CHINWAG_HTTP_LISTEN``) and return once it serves (its READY line is logged)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        role,
        cwd=cwd,
        env={**env, **extra},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    proc = Process(role, name, process)
    proc.reader = asyncio.create_task(_read(proc), name=f"read-{name}")
    try:
        await proc.wait_for_log(READY[role])
    except BaseException:
        proc.kill()
        await process.wait()
        raise
    return proc


@dataclass
class Cluster:
    """The processes of one scaled bot."""

    env: dict[str, str]
    cwd: Path
    ingress: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)

    async def add_worker(self, **extra: str) -> Process:
        """Start one more worker (a deploy, a scale-up)."""
        name = f"worker-{len(self.workers) + 1}"
        worker = await start("worker", name, self.env, self.cwd, **extra)
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        """Every process's log, each under its name (for failure messages)."""
        return "\n".join(f"=== {p.name}\n{p.log}" for p in [*self.ingress, *self.workers])


@contextlib.asynccontextmanager
async def cluster(
    env: Mapping[str, str], cwd: Path, *, ingress: int = 1, workers: int = 2
) -> AsyncIterator[Cluster]:
    """``ingress`` ingress and ``workers`` worker processes, started at once; all stopped
    (SIGTERM, SIGKILL after 30 s) at the end."""
    running = Cluster(dict(env), cwd)
    try:
        roles = ["ingress"] * ingress + ["worker"] * workers
        names = [f"ingress-{n + 1}" for n in range(ingress)]
        names += [f"worker-{n + 1}" for n in range(workers)]
        started = await asyncio.gather(
            *(start(role, name, env, cwd) for role, name in zip(roles, names, strict=True)),
            return_exceptions=True,
        )
        for role, result in zip(roles, started, strict=True):
            if isinstance(result, Process):
                (running.ingress if role == "ingress" else running.workers).append(result)
        for result in started:
            if isinstance(result, BaseException):
                raise result
        yield running
    finally:
        await asyncio.gather(
            *(p.stop() for p in [*running.ingress, *running.workers]), return_exceptions=True
        )


def free_port() -> int:
    """A TCP port free on loopback now (for a process's webhook or health endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(
    condition: Callable[[], bool],
    what: str,
    bot: Cluster,
    timeout: float = 120,
    every: float = 0.05,
) -> None:
    """Wait for ``condition`` (checked every ``every`` s); fail with the processes' logs."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}\n{bot.logs()[-20000:]}") from None


__all__ = [
    "READY",
    "Cluster",
    "Process",
    "cluster",
    "free_port",
    "scale_env",
    "start",
    "until",
]
