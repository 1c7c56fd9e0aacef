"""What the Telegram adapter costs: ``python -m bench.telegram [--smoke] [--rounds N]``.

Users write to the bot in private chats on the loopback fake Bot API (flood limits off);
python-telegram-bot long-polls the updates and answers through the fake. Measured: messages
per second, and the latency from the injected user message to the bot's final reply on the
fake (p50/p95/p99), for 1 user and for 50 concurrent users, each user sending the next
message once the reply to the last one arrived.

Two bots run on identical fakes, alternating round by round in the same process:

* **floor**: a minimal python-telegram-bot echo bot (no LLM, no database) replying with one
  ``sendMessage``;
* **chinwag**: the Telegram adapter, the real engine and ``SqlMemoryStore`` on SQLite (a file
  in a temporary directory) with an instant in-process backend, so the figures are the
  framework's, not an LLM's;
* **engine**: the same engine, store and backend driven directly, without Telegram, to show
  how much of chinwag's time is the engine and its database rather than the adapter.

Target: chinwag reaches at least 0.7x the floor's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from adapters.telegram import TelegramAdapter, TelegramSettings
from bench._common import Result
from core.engine import Engine
from core.settings import CoreSettings, LLMSettings
from core.types import CompletionRequest, IncomingMessage, ReplyEvent, Role
from tests.fakes.scripted import ScriptedBackend
from tests.fakes.telegram_server import FakeChat, FakeMessage, FakeTelegram, FakeUser

TARGET_RATIO = 0.7
_user_ids = itertools.count(10_000)


def echo_reply(request: CompletionRequest) -> str:
    """The instant backend answers with the user's text, like the floor bot."""
    last = next(m.content for m in reversed(request.messages) if m.role is Role.USER)
    return f"echo: {last}"


async def run_load(fake: FakeTelegram, bot: str, users: int, per_user: int) -> Result:
    """Each user sends ``per_user`` messages, each once the previous reply arrived."""
    waiting: dict[int, asyncio.Future[None]] = {}

    def on_reply(message: FakeMessage) -> None:
        future = waiting.pop(message.chat.id, None)
        if future is not None and not future.done():
            future.set_result(None)

    fake.listeners.append(on_reply)
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def user_loop() -> None:
        user = FakeUser(next(_user_ids), "User", None)
        chat = FakeChat(user.id, "private")
        for i in range(per_user):
            future: asyncio.Future[None] = loop.create_future()
            waiting[chat.id] = future
            sent = time.perf_counter()
            fake.send_text(chat, user, f"message {i} from {user.id}")
            await asyncio.wait_for(future, timeout=30)
            latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for n in range(users):
                group.create_task(user_loop(), name=f"bench-user-{n}")
    finally:
        fake.listeners.remove(on_reply)
    return Result(bot, users, users * per_user, time.perf_counter() - started, latencies)


async def _echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.message
    if message is not None and message.text:
        await message.reply_text(f"echo: {message.text}", do_quote=False)


async def floor_bot(fake: FakeTelegram) -> Callable[[], Awaitable[None]]:
    """Start the minimal echo bot; return its stop function."""
    app = (
        Application.builder()
        .token(fake.token)
        .base_url(f"{fake.base_url}/bot")
        .base_file_url(f"{fake.base_url}/file/bot")
        .concurrent_updates(256)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, _echo))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(allowed_updates=["message"])

    async def stop() -> None:
        assert app.updater is not None
        await app.updater.stop()
        await app.stop()
        await app.shutdown()

    return stop


async def chinwag_bot(fake: FakeTelegram, directory: Path) -> Callable[[], Awaitable[None]]:
    """Start the adapter + engine + SQLite store + instant backend; return its stop function."""
    url = f"sqlite+aiosqlite:///{directory / f'bench-{next(_user_ids)}.db'}"
    await migrate.upgrade(url)
    store = SqlMemoryStore(url)
    await store.start()
    backend = ScriptedBackend(reply=echo_reply, chunk_size=64)
    await backend.start()
    engine = Engine(
        backend=backend,
        store=store,
        core=CoreSettings(_env_file=None, bot_name="bench"),
        llm=LLMSettings(_env_file=None, max_concurrency=64),
    )
    await engine.start()
    adapter = TelegramAdapter(
        TelegramSettings(_env_file=None, bot_token=fake.token, api_base_url=fake.base_url),
        engine,
    )
    await adapter.start()

    async def stop() -> None:
        await adapter.aclose()
        await engine.aclose()
        await backend.aclose()
        await store.aclose()

    return stop


class _NullChannel:
    """A reply channel that reads the reply and sends nowhere (engine-only figures)."""

    _ids = itertools.count(1)

    async def send_text(self, text: str) -> Sequence[str]:
        return [f"reply-{next(self._ids)}"]

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        async for _ in events:
            pass
        return [f"reply-{next(self._ids)}"]

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        return None

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        return None


async def engine_only(users: int, per_user: int, directory: Path) -> Result:
    """The engine and store with the same backend, no Telegram at all: where time goes."""
    url = f"sqlite+aiosqlite:///{directory / f'bench-{next(_user_ids)}.db'}"
    await migrate.upgrade(url)
    store = SqlMemoryStore(url)
    await store.start()
    engine = Engine(
        backend=ScriptedBackend(reply=echo_reply, chunk_size=64),
        store=store,
        core=CoreSettings(_env_file=None, bot_name="bench"),
        llm=LLMSettings(_env_file=None, max_concurrency=64),
    )
    await engine.start()
    latencies: list[float] = []
    ids = itertools.count(1)

    async def user_loop() -> None:
        user = str(next(_user_ids))
        for i in range(per_user):
            sent = time.perf_counter()
            message = IncomingMessage(
                "telegram", user, user, f"message {i} from {user}", message_id=str(next(ids))
            )
            await engine.handle(message, _NullChannel())
            latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for n in range(users):
                group.create_task(user_loop(), name=f"bench-engine-user-{n}")
    finally:
        await engine.aclose()
        await store.aclose()
    return Result("engine", users, users * per_user, time.perf_counter() - started, latencies)


async def measure(bot: str, users: int, per_user: int, directory: Path) -> Result:
    if bot == "engine":
        return await engine_only(users, per_user, directory)
    async with FakeTelegram() as fake:
        # Make the fake know each chat: the bot may only write where a user wrote first.
        stop = await (floor_bot(fake) if bot == "floor" else chinwag_bot(fake, directory))
        try:
            # One warm-up exchange so connection set-up is not measured.
            await run_load(fake, bot, 1, 1)
            return await run_load(fake, bot, users, per_user)
        finally:
            await stop()


def _line(result: Result) -> str:
    return (
        f"{result.bot:8} users={result.users:<3} msgs={result.messages:<5} "
        f"{result.rate:8.1f} msg/s   p50={result.percentile(0.50):7.1f} ms  "
        f"p95={result.percentile(0.95):7.1f} ms  p99={result.percentile(0.99):7.1f} ms"
    )


async def main(smoke: bool, rounds: int) -> dict[int, float]:
    """Run the alternating rounds; print figures; return chinwag/floor throughput by users."""
    sizes = [(1, 5), (5, 2)] if smoke else [(1, 200), (50, 10)]
    if smoke:
        rounds = 1
    ratios: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-") as tmp:
        directory = Path(tmp)
        for users, per_user in sizes:
            results: dict[str, list[Result]] = {"floor": [], "chinwag": [], "engine": []}
            for _ in range(rounds):
                for bot in ("floor", "chinwag", "engine"):
                    result = await measure(bot, users, per_user, directory)
                    results[bot].append(result)
                    print(_line(result), flush=True)
            floor = statistics.median(r.rate for r in results["floor"])
            ours = statistics.median(r.rate for r in results["chinwag"])
            alone = statistics.median(r.rate for r in results["engine"])
            ratios[users] = ours / floor
            verdict = "ok" if ratios[users] >= TARGET_RATIO else "BELOW TARGET"
            print(
                f"== {users} user(s): chinwag {ours:.1f} msg/s vs floor {floor:.1f} msg/s "
                f"(median of {rounds}) = {ratios[users]:.2f}x (target {TARGET_RATIO}x: {verdict}); "
                f"engine+store alone, no Telegram: {alone:.1f} msg/s",
                flush=True,
            )
    return ratios


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telegram", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny size, for the test suite")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    ratios: Any = asyncio.run(main(args.smoke, args.rounds))
    return 0 if args.smoke or all(r >= TARGET_RATIO for r in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(cli())
