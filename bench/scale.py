"""Many processes, one bot: ``python -m bench.scale [--smoke] [--users N] [--messages N]``.

Real ``chinwag`` processes on one PostgreSQL database, answering through the loopback
Telegram fake (flood limits off) with an instant OpenAI-compatible backend (the loopback
fake, streaming its reply at once), so the figures are chinwag's and its queue's:

* **run**: one ``chinwag run`` process on PostgreSQL (no Redis), the one-process default;
* **1, 2 and 4 workers**: one ``chinwag ingress`` (long polling) and N ``chinwag worker``
  processes, the turn queue in PostgreSQL and the shared limits in Redis.

Each configuration gets a fresh database and fake, a warm-up round, then ``users`` private
chats each sending ``messages`` messages, each once the complete reply to the previous one
arrived. Measured: messages per second, the latency from the user's message to the
complete reply on the fake (p50/p99), and the CPU seconds per 1,000 messages of every
chinwag process plus the PostgreSQL backends serving them (read from /proc; the fakes and
this driver are not counted).

Then a crash: two workers, replies streamed slowly, one worker killed with SIGKILL while it
holds replies mid-stream; measured is the time from the kill until every reply is complete
(its turns retried by the other worker after ``WORKER_HEARTBEAT_TIMEOUT_SECONDS``).

Targets: 2 workers not slower than one process (on 2 cores; the gain shows on more), CPU
per message at most 2x the one-process run, a killed worker's turns complete within 15 s.
Exits 1 when a target is missed, after printing every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from adapters.memory import migrate
from bench._common import Result, free_port
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeMessage, FakeTelegram, FakeUser

SPEEDUP_TARGET = 1.0  # 2 workers / one process
CPU_TARGET = 2.0  # CPU per message, 2 workers / one process
RECOVERY_TARGET_S = 15.0
HEARTBEAT_TIMEOUT_S = 10.0
_TICKS = os.sysconf("SC_CLK_TCK")
_user_ids = itertools.count(20_000)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def reply_text(body: Mapping[str, Any]) -> str:
    """The instant backend: repeats the user's message (the fake streams it word by word)."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    text = (
        content
        if isinstance(content, str)
        else " ".join(part.get("text", "") for part in content or () if isinstance(part, dict))
    )
    return f"Echo {text} done."


@dataclass
class Process:
    """One chinwag process and its health endpoint."""

    role: str
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    async def ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.role} exited: {self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    if answer.status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.role} not ready after {within:g} s: {self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        return ""

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@dataclass
class Cluster:
    """The processes of one configuration and what they share."""

    env: dict[str, str]
    directory: Path
    processes: list[Process] = field(default_factory=list)

    async def spawn(self, role: str, command: str, extra: Mapping[str, str] = {}) -> Process:
        port = free_port()
        log = self.directory / f"{role}-{len(self.processes)}.log"
        env = {**self.env, **extra, "CHINWAG_HTTP_LISTEN": f"127.0.0.1:{port}"}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bots.cli",
                command,
                cwd=self.directory,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        process = Process(role, proc, port, log)
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.processes if p.proc.returncode is None]

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))


async def backend_pids(admin: asyncpg.Connection, database: str) -> list[int]:
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    return [row["pid"] for row in rows]


class Replies:
    """Waits for each chat's complete reply on the fake."""

    def __init__(self, fake: FakeTelegram) -> None:
        self.waiting: dict[tuple[int, str], asyncio.Future[float]] = {}
        self.partial: set[int] = set()  # chats showing a reply still being written
        fake.listeners.append(self._on_message)

    def expect(self, chat_id: int, text: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[(chat_id, f"Echo {text} done.")] = future
        return future

    def _on_message(self, message: FakeMessage) -> None:
        key = (message.chat.id, message.text.strip())
        future = self.waiting.pop(key, None)
        if future is not None and not future.done():
            self.partial.discard(message.chat.id)
            future.set_result(time.perf_counter())
        elif not message.text.endswith("done."):
            self.partial.add(message.chat.id)


async def load(fake: FakeTelegram, replies: Replies, users: int, per_user: int) -> Result:
    latencies: list[float] = []

    async def user_loop() -> None:
        user = FakeUser(next(_user_ids), "User", None)
        chat = FakeChat(user.id, "private")
        for i in range(per_user):
            text = f"message {i} from {user.id}"
            future = replies.expect(chat.id, text)
            sent = time.perf_counter()
            fake.send_text(chat, user, text)
            done = await asyncio.wait_for(future, timeout=120)
            latencies.append(done - sent)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for n in range(users):
            group.create_task(user_loop(), name=f"bench-user-{n}")
    return Result("", users, users * per_user, time.perf_counter() - started, latencies)


@contextlib.asynccontextmanager
async def database(admin: asyncpg.Connection, admin_url: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh, migrated database; yields (its name, its SQLAlchemy URL)."""
    name = f"chinwag_scale_{secrets.token_hex(4)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await migrate.upgrade(url)
        yield name, url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_env(
    directory: Path, db_url: str, fake: FakeTelegram, llm: FakeOpenAIServer
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DISCORD_", "TELEGRAM_", "OPENAI_", "LLM_", "CHINWAG_", "REDIS_", "DATABASE_")
        )
    }
    env.update(
        PYTHONUNBUFFERED="1",
        BOT_NAME="scale",
        LOG_LEVEL="WARNING",
        DATABASE_URL=db_url,
        TELEGRAM_BOT_TOKEN=fake.token,
        TELEGRAM_API_BASE_URL=fake.base_url,
        TELEGRAM_POLL_TIMEOUT="1",
        OPENAI_BASE_URL=llm.base_url,
        OPENAI_API_KEY="sk-bench",
        LLM_MAX_CONCURRENCY="64",
        CHINWAG_DATA_DIR=str(directory / "data"),
        WORKER_HEARTBEAT_TIMEOUT_SECONDS=str(HEARTBEAT_TIMEOUT_S),
        WORKER_CONCURRENCY="32",
    )
    return env


@dataclass
class Figures:
    label: str
    result: Result
    cpu_per_1000: float


async def measure(
    label: str,
    workers: int,
    admin: asyncpg.Connection,
    admin_url: str,
    redis_url: str,
    users: int,
    per_user: int,
    tmp: Path,
) -> Figures:
    """One configuration: ``workers`` = 0 is ``chinwag run``."""
    async with (
        database(admin, admin_url) as (name, url),
        FakeTelegram() as fake,
        FakeOpenAIServer(reply=reply_text) as llm,
    ):
        directory = Path(tempfile.mkdtemp(prefix=f"{label.replace(' ', '-')}-", dir=tmp))
        cluster = Cluster(base_env(directory, url, fake, llm), directory)
        try:
            if workers == 0:
                processes = [await cluster.spawn("run", "run")]
            else:
                shared = {"REDIS_URL": redis_url}
                processes = [await cluster.spawn("ingress", "ingress", shared)]
                for _ in range(workers):
                    processes.append(await cluster.spawn("worker", "worker", shared))
            await asyncio.gather(*(p.ready(90) for p in processes))
            replies = Replies(fake)
            await load(fake, replies, min(users, 10), 2)  # warm-up: connections, caches
            pids = cluster.pids()
            backends = await backend_pids(admin, name)
            before = {pid: cpu_seconds(pid) for pid in pids + backends}
            result = await load(fake, replies, users, per_user)
            backends = sorted(set(backends) | set(await backend_pids(admin, name)))
            spent = sum(cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids + backends)
        finally:
            await cluster.stop()
    result.bot = label
    return Figures(label, result, spent / result.messages * 1000)


async def crash(
    admin: asyncpg.Connection, admin_url: str, redis_url: str, tmp: Path, chats: int
) -> float:
    """Seconds from a worker's SIGKILL (replies mid-stream) until every reply is complete."""
    async with (
        database(admin, admin_url) as (_name, url),
        FakeTelegram() as fake,
        FakeOpenAIServer(reply=reply_text, chunk_delay=0.25) as llm,
    ):
        directory = Path(tempfile.mkdtemp(prefix="crash-", dir=tmp))
        cluster = Cluster(base_env(directory, url, fake, llm), directory)
        shared = {"REDIS_URL": redis_url}
        try:
            processes = [await cluster.spawn("ingress", "ingress", shared)]
            processes += [await cluster.spawn("worker", "worker", shared) for _ in range(2)]
            await asyncio.gather(*(p.ready(90) for p in processes))
            replies = Replies(fake)
            futures = []
            for _ in range(chats):
                user = FakeUser(next(_user_ids), "User", None)
                chat = FakeChat(user.id, "private")
                text = "tell me " + " ".join(f"w{i}" for i in range(12))
                futures.append(replies.expect(chat.id, text))
                fake.send_text(chat, user, text)
            # Kill a worker once replies are on screen, mid-stream.
            deadline = time.monotonic() + 60
            while len(replies.partial) < chats // 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("no replies mid-stream within 60 s")
                await asyncio.sleep(0.05)
            victim = processes[1]
            victim.proc.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            done = await asyncio.wait_for(asyncio.gather(*futures), timeout=120)
            return max(done) - killed
        finally:
            await cluster.stop()


def report(figures: Sequence[Figures]) -> None:
    print(f"{'configuration':<22}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU s/1k msg':>14}")
    for f in figures:
        r = f.result
        print(
            f"{f.label:<22}{r.rate:>9.0f}{r.percentile(0.5):>9.1f}{r.percentile(0.99):>9.1f}"
            f"{f.cpu_per_1000:>14.2f}"
        )


async def main(args: argparse.Namespace) -> int:
    admin_url = os.environ.get(
        "CHINWAG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("CHINWAG_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    users, per_user = (5, 3) if args.smoke else (args.users, args.messages)
    print(
        f"bench.scale: {users} users x {per_user} messages, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    admin = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"))
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="chinwag-scale-") as tmp:
        try:
            for label, workers in (
                ("run (1 process)", 0),
                ("1 worker", 1),
                ("2 workers", 2),
                ("4 workers", 4),
            ):
                if args.smoke and workers == 4:
                    continue
                figures.append(
                    await measure(
                        label, workers, admin, admin_url, redis_url, users, per_user, Path(tmp)
                    )
                )
                print(f"  measured {label}")
            recovery = await crash(admin, admin_url, redis_url, Path(tmp), 6 if args.smoke else 20)
        finally:
            await admin.close()
    report(figures)
    one = figures[0]
    two = next(f for f in figures if f.label == "2 workers")
    speedup = two.result.rate / one.result.rate
    cpu_ratio = two.cpu_per_1000 / one.cpu_per_1000
    print(f"2 workers / one process: throughput {speedup:.2f}x (target >= {SPEEDUP_TARGET:g}x)")
    print(f"2 workers / one process: CPU per message {cpu_ratio:.2f}x (target <= {CPU_TARGET:g}x)")
    print(
        f"killed worker: its turns complete {recovery:.1f} s after SIGKILL "
        f"(target <= {RECOVERY_TARGET_S:g} s; heartbeat timeout {HEARTBEAT_TIMEOUT_S:g} s)"
    )
    missed = []
    if speedup < SPEEDUP_TARGET:
        missed.append(f"throughput of 2 workers is {speedup:.2f}x one process")
    if cpu_ratio > CPU_TARGET:
        missed.append(f"CPU per message of 2 workers is {cpu_ratio:.2f}x one process")
    if recovery > RECOVERY_TARGET_S:
        missed.append(f"a killed worker's turns took {recovery:.1f} s")
    for line in missed:
        print(f"BELOW TARGET: {line}")
    return 1 if missed and not args.smoke else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny size, for the test suite")
    parser.add_argument("--users", type=int, default=50, help="concurrent private chats")
    parser.add_argument("--messages", type=int, default=10, help="messages per chat")
    sys.exit(asyncio.run(main(parser.parse_args())))
