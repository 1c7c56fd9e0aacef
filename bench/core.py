"""How much the conversation core costs per message: ``python -m bench.core [--smoke]``.

Pushes messages through the real engine and the real SQL store with an instant in-process
backend, so what is measured is chinwag itself:

* throughput (messages/s), every user sending the next message as soon as the reply to the
  last one is stored, for 1 user x 2,000 messages and for 100 users x 200 messages each;
* per-message overhead (time from submitting a message until its reply is stored, minus
  the time spent inside the backend), p50 and p99: for 1 user from the run above, and for
  100 users while they send 1,000 messages a second in all on a fixed schedule (at full
  speed a closed loop measures queueing behind 99 other users, not overhead);
* the prompt-build time for a conversation holding 100 and 100,000 stored messages, with a
  1,024-token window that both fill (no in-memory history cache exists to help).

On SQLite (a file in a temporary directory) and, when ``CHINWAG_TEST_POSTGRES_URL`` is set, on
PostgreSQL (a database created for the run and dropped afterwards), then both side by side,
with whether PostgreSQL met its target: keep up with 1,000 msg/s at a p99 overhead under
20 ms, as SQLite does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from bench._common import Result
from bots.app import tune_gc
from core.engine import Engine
from core.prompt import PromptBuilder
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.types import (
    BackendEvent,
    CompletionRequest,
    ConversationKey,
    IncomingMessage,
    MessageStatus,
    NewMessage,
    ReplyEvent,
    Role,
)
from tests.fakes.scripted import ScriptedBackend

# About 70 of the seeded messages: both conversations fill the same window, so any
# difference comes from how much history is stored, which is what the target is about.
PROMPT_BUDGET = 1024
# The target load: per-message overhead is measured while the core serves this many
# messages a second (a closed loop at full speed would measure queueing, not overhead).
PACED_RATE = 1000
WARM_UP_SECONDS = 1.0
# PostgreSQL's target at the paced load: serve (nearly) all of it at this p99 overhead.
TARGET_P99_MS = 20.0
TARGET_SERVED = 0.98  # of PACED_RATE: an open loop of 100 users ends a little late


class TimedBackend(ScriptedBackend):
    """The scripted backend, answering at once and adding up the time spent inside it."""

    def __init__(self) -> None:
        super().__init__(reply="Sure, here is a short and instant answer.", chunk_size=64)
        self.spent: dict[str, float] = {}

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        started = time.perf_counter()
        tag = request.messages[-1].content
        try:
            async for event in super().stream(request):
                paused = time.perf_counter()
                self.spent[tag] = self.spent.get(tag, 0.0) + (paused - started)
                yield event
                started = time.perf_counter()
        finally:
            self.spent[tag] = self.spent.get(tag, 0.0) + (time.perf_counter() - started)


class NullChannel:
    """A reply channel that consumes the stream and sends nothing anywhere."""

    def __init__(self) -> None:
        self._ids = iter(range(1, 1 << 62))

    async def send_text(self, text: str) -> Sequence[str]:
        return ()

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        async for _ in events:
            pass
        return (str(next(self._ids)),)

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        return None

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        return None


async def run_load(url: str, users: int, per_user: int, rate: float | None = None) -> Result:
    """Push ``users`` x ``per_user`` messages through a fresh engine.

    Without ``rate`` every user sends its next message as soon as the reply to the last one
    is stored (closed loop: measures the most the core can do). With ``rate`` (messages/s in
    total) each user sends on a fixed schedule (open loop: measures the overhead a message
    sees while the core carries that load).
    """
    store = SqlMemoryStore(url)
    await store.start()
    backend = TimedBackend()
    engine = Engine(
        backend=backend,
        store=store,
        core=CoreSettings(_env_file=None, bot_name=f"bench{secrets.token_hex(3)}"),
        llm=LLMSettings(_env_file=None, max_concurrency=64),
        access=AccessSettings(_env_file=None),
    )
    await engine.start()
    tune_gc()  # as `chinwag run` does once its adapters are up
    overheads: list[float] = []
    warmup: list[float] = []
    channel = NullChannel()

    interval = users / rate if rate else 0.0
    warm_up = min(WARM_UP_SECONDS, per_user * interval / 5)  # a short (smoke) run keeps 4/5

    async def user(u: int) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time() + interval * u / users
        for n in range(per_user):
            if interval:
                await asyncio.sleep(max(0.0, begin + n * interval - loop.time()))
            tag = f"user {u} message {n}: how are you today?"
            msg = IncomingMessage("bench", f"chat{u}", f"user{u}", tag, message_id=f"{u}-{n}")
            started = time.perf_counter()
            await engine.handle(msg, channel)
            elapsed = time.perf_counter() - started
            overhead = (elapsed - backend.spent.pop(tag, 0.0)) * 1000
            # The first second is warm-up: every user's first message creates their
            # conversation and fills the history cache, all at once. Reported apart, so the
            # percentiles describe the steady state.
            warm = started - run_started < warm_up if interval else n == 0
            (warmup if warm else overheads).append(overhead)

    run_started = started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for u in range(users):
            group.create_task(user(u), name=f"bench-user-{u}")
    seconds = time.perf_counter() - started
    await engine.aclose()
    await store.aclose()
    result = Result("chinwag", users, users * per_user, seconds, [o / 1000 for o in overheads])
    result.first_ms = max(warmup) if warmup else 0.0
    return result


async def seed(store: SqlMemoryStore, key: ConversationKey, count: int) -> int:
    conversation = await store.new_conversation(key)
    batch = 1000
    for start in range(0, count, batch):
        rows = []
        for n in range(start, min(count, start + batch)):
            role = Role.USER if n % 2 == 0 else Role.ASSISTANT
            text = f"stored message number {n} with a few words of content"
            rows.append(
                NewMessage(
                    role=role,
                    content=text,
                    author_id="u",
                    token_count=len(text.split()),
                    tokenizer="words",
                    status=MessageStatus.COMPLETE,
                )
            )
        await store.append_messages(conversation.id, rows)
    return conversation.id


async def analyze(url: str) -> None:
    """Refresh PostgreSQL's planner statistics after a bulk seed."""
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await connection.execute("ANALYZE messages")
    finally:
        await connection.close()


async def prompt_build(url: str, sizes: Sequence[int], repeats: int) -> dict[int, float]:
    store = SqlMemoryStore(url)
    await store.start()
    builder = PromptBuilder(ScriptedBackend(), store)
    timings: dict[int, float] = {}
    for size in sizes:
        key = ConversationKey("bench-prompt", "bench", f"c{size}", None, secrets.token_hex(4))
        conversation_id = await seed(store, key, size)
        if url.startswith("postgresql"):
            await analyze(url)  # as autovacuum does after such growth
        samples = []
        for _ in range(repeats + 3):
            started = time.perf_counter()
            prompt = await builder.build(
                conversation_id=conversation_id,
                before_seq=None,
                system_prompt="You are helpful.",
                model="scripted",
                budget=PROMPT_BUDGET,
                shared=False,
            )
            samples.append(time.perf_counter() - started)
        assert prompt.turns > 0
        timings[size] = statistics.median(samples[3:]) * 1000  # warm-up excluded
    await store.aclose()
    return timings


Figures = dict[str, float]
"""What one database scored, by row of the side-by-side summary."""


async def bench_database(name: str, url: str, smoke: bool) -> Figures:
    figures: Figures = {}
    await migrate.upgrade(url)
    loads = [(1, 50), (10, 10)] if smoke else [(1, 2000), (100, 200)]
    for users, per_user in loads:
        result = await run_load(url, users, per_user)
        line = (
            f"{name:10} {users:>3} user(s) x {per_user:>4} msgs: {result.rate:6.0f} msg/s at most"
        )
        figures[f"{users} user(s), msg/s at most"] = result.rate
        if users == 1:
            p50, p99 = result.percentile(0.50), result.percentile(0.99)
            line += f"; overhead p50 {p50:5.2f} ms  p99 {p99:5.2f} ms"
            figures["1 user, overhead p99 ms"] = p99
        print(line, flush=True)
        if users > 1:
            paced = await run_load(url, users, per_user, rate=PACED_RATE)
            figures[f"{PACED_RATE:,} msg/s sent, served"] = paced.rate
            figures[f"{PACED_RATE:,} msg/s sent, p50 ms"] = paced.percentile(0.50)
            figures[f"{PACED_RATE:,} msg/s sent, p99 ms"] = paced.percentile(0.99)
            print(
                f"{name:10} {users:>3} user(s) x {per_user:>4} msgs sent at {PACED_RATE:,} msg/s "
                f"({paced.rate:,.0f} served): overhead p50 {paced.percentile(0.50):5.2f} ms  "
                f"p99 {paced.percentile(0.99):5.2f} ms after the first second "
                f"(warm-up, every user's first message at once: at most {paced.first_ms:.0f} ms)",
                flush=True,
            )
    sizes = (100, 2000) if smoke else (100, 100_000)
    timings = await prompt_build(url, sizes, repeats=5 if smoke else 30)
    small, large = timings[sizes[0]], timings[sizes[1]]
    print(
        f"{name:10} prompt build: {sizes[0]:,} stored {small:.2f} ms, {sizes[1]:,} stored "
        f"{large:.2f} ms  (ratio {large / small:.2f}x)"
    )
    figures[f"prompt build, {sizes[1]:,} stored, ms"] = large
    return figures


def side_by_side(sqlite: Figures, postgres: Figures | None) -> None:
    """Print both databases' figures in two columns, then PostgreSQL against its target."""
    print(f"\n{'side by side':34} {'sqlite':>10} {'postgresql':>10}")
    for row, value in sqlite.items():
        other = f"{postgres[row]:10.1f}" if postgres else f"{'-':>10}"
        print(f"{row:34} {value:10.1f} {other}")
    if postgres is None:
        return
    served = postgres[f"{PACED_RATE:,} msg/s sent, served"]
    p99 = postgres[f"{PACED_RATE:,} msg/s sent, p99 ms"]
    target = f"serve {PACED_RATE:,} msg/s at p99 overhead < {TARGET_P99_MS:.0f} ms"
    if served >= TARGET_SERVED * PACED_RATE and p99 < TARGET_P99_MS:
        print(f"postgresql target met: {target} (served {served:,.0f}, p99 {p99:.2f} ms)")
    else:
        print(
            f"postgresql target MISSED: {target}; served {served:,.0f} msg/s, p99 {p99:.2f} ms "
            f"on {os.cpu_count()} CPUs shared with the PostgreSQL server"
        )


async def with_postgres(admin_url: str, smoke: bool) -> Figures:
    import asyncpg

    name = f"chinwag_bench_{secrets.token_hex(4)}"
    plain = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(plain)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = plain.rsplit("/", 1)[0]
        return await bench_database(
            "postgresql",
            f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1),
            smoke,
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(smoke: bool) -> None:
    print(
        f"bench.core ({'smoke' if smoke else 'full'} size), Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        lite = await bench_database(
            "sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", smoke
        )
    pg = os.environ.get("CHINWAG_TEST_POSTGRES_URL")
    postgres = await with_postgres(pg, smoke) if pg else None
    if postgres is None:
        print("postgresql skipped: set CHINWAG_TEST_POSTGRES_URL=postgresql://user@host/db")
    side_by_side(lite, postgres)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.core", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny size, for the test suite")
    asyncio.run(main(parser.parse_args().smoke))
