"""What the Discord adapter costs: ``python -m bench.discord [--smoke]``.

Users post messages mentioning the bot on the loopback fake Discord (REST + gateway, rate
limits off); the real discord.py client receives them through the gateway and answers over
REST. Measured: messages per second and the latency from the injected message to the bot's
final reply (its text complete on the fake), p50/p95/p99, for 1 user and for 30 concurrent
users across 3 channels, each user sending the next message once the reply to the last one
arrived.

Two bots run on identical fakes, alternating round by round in the same process:

* **floor**: a minimal discord.py echo bot (no LLM, no database) replying with one send;
* **chinwag**: the Discord adapter, the real engine and ``SqlMemoryStore`` on SQLite (a file
  in a temporary directory) with an instant in-process backend, so the figures are the
  framework's, not an LLM's.

A third bot, **adapter**, is the Discord adapter in front of a stub engine that streams
``echo: <text>`` back at once (no engine, no database): it isolates the adapter's own cost
(triggers, reply channel, streaming, splitting) from the engine's and the store's.

Target: chinwag reaches at least 0.7x the floor's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # discord.py imports the stdlib audioop module (voice), deprecated since Python 3.11.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord

from adapters.discord.adapter import DiscordAdapter, configure_endpoints
from adapters.discord.settings import DiscordSettings
from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from bench._common import Result
from core.engine import Engine
from core.ports import ReplyChannel
from core.settings import CoreSettings, LLMSettings
from core.types import CommandInfo, CompletionRequest, IncomingAction, IncomingMessage, Role
from tests.fakes.discord_server import FakeDiscord, FakeUser, Send
from tests.fakes.scripted import ScriptedBackend

TARGET_RATIO = 0.7


def echo_reply(request: CompletionRequest) -> str:
    """The instant backend answers with the user's text, like the floor bot."""
    last = next(m.content for m in reversed(request.messages) if m.role is Role.USER)
    return f"echo: {last}"


class EchoBot(discord.Client):
    """The floor: the least a discord.py bot can do to answer a mention."""

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.user is None:
            return
        text = message.content.replace(f"<@{self.user.id}>", "").strip()
        await message.channel.send(
            f"echo: {text}",
            reference=message,
            allowed_mentions=discord.AllowedMentions.none(),
        )


class StubEngine:
    """Just enough of the engine for the adapter: streams ``echo: <text>`` at once."""

    bot_name = "bench"
    default_model = "stub"

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def commands(self) -> Sequence[CommandInfo]:
        return ()

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        async def reply() -> None:
            async def deltas() -> AsyncIterator[str]:
                yield f"echo: {msg.text}"

            await out.stream_reply(deltas())

        task = asyncio.create_task(reply(), name="bench-stub-reply")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        await self.submit(msg, out)

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        return None


class Tracker:
    """Matches each injected message with the moment its reply was complete on the fake."""

    def __init__(self, fake: FakeDiscord) -> None:
        self._expect: dict[str, tuple[str, float, asyncio.Future[float]]] = {}
        self._reply_of: dict[str, str] = {}
        fake.on_send.append(self._seen)

    def expect(self, message_id: str, text: str, sent: float) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._expect[message_id] = (text, sent, future)
        return future

    def _seen(self, send: Send) -> None:
        if send.kind == "create" and send.reply_to is not None:
            self._reply_of[send.message_id] = send.reply_to
        asked = self._reply_of.get(send.message_id)
        if asked is None or asked not in self._expect:
            return
        text, sent, future = self._expect[asked]
        if send.content == text and not future.done():
            future.set_result(time.perf_counter() - sent)
            del self._expect[asked]


async def _drive(fake: FakeDiscord, users: int, per_user: int, channels: list[str]) -> Result:
    tracker = Tracker(fake)
    people = [fake.add_user(f"user{i}") for i in range(users)]
    latencies: list[float] = []

    async def user(index: int, person: FakeUser) -> None:
        channel = channels[index % len(channels)]
        for n in range(per_user):
            text = f"message {n} from {person.name}"
            sent = time.perf_counter()
            message = await fake.user_message(channel, person, text, mention_bot=True)
            waiting = tracker.expect(message.id, f"echo: {text}", sent)
            latencies.append(await asyncio.wait_for(waiting, 30))

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for index, person in enumerate(people):
            group.create_task(user(index, person), name=f"bench-user-{index}")
    seconds = time.perf_counter() - start
    return Result("", users, users * per_user, seconds, latencies)


def _settings(fake: FakeDiscord) -> DiscordSettings:
    return DiscordSettings(
        _env_file=None,
        bot_token=fake.token,
        api_base_url=fake.api_base_url,
        gateway_url=fake.gateway_url,
        guild_ready_timeout=0.2,
    )


async def run_floor(users: int, per_user: int, workdir: Path) -> Result:
    async with FakeDiscord() as fake:
        fake.record = False
        guild = fake.add_guild()
        channels = [fake.add_channel(guild, f"c{i}") for i in range(3)]
        configure_endpoints(_settings(fake))
        intents = discord.Intents.none()
        intents.guilds = intents.guild_messages = intents.message_content = True
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        client = EchoBot(intents=intents, guild_ready_timeout=0.2)
        await client.login(fake.token)
        task = asyncio.create_task(client.connect(), name="bench-floor-gateway")
        await client.wait_until_ready()
        try:
            result = await _drive(fake, users, per_user, channels)
        finally:
            await client.close()
            await task
    result.bot = "floor"
    return result


async def run_chinwag(users: int, per_user: int, workdir: Path, round_no: int) -> Result:
    url = f"sqlite+aiosqlite:///{workdir / f'bench-{round_no}-{users}.db'}"
    await migrate.upgrade(url)
    store = SqlMemoryStore(url)
    await store.start()
    backend = ScriptedBackend(echo_reply, chunk_size=64)
    engine = Engine(
        backend=backend,
        store=store,
        core=CoreSettings(_env_file=None),
        llm=LLMSettings(_env_file=None, max_concurrency=64),
    )
    await engine.start()
    try:
        async with FakeDiscord() as fake:
            fake.record = False
            guild = fake.add_guild()
            channels = [fake.add_channel(guild, f"c{i}") for i in range(3)]
            adapter = DiscordAdapter(_settings(fake), engine, data_dir=workdir / "data")
            await adapter.start()
            try:
                result = await _drive(fake, users, per_user, channels)
            finally:
                await engine.aclose()
                await adapter.aclose()
    finally:
        await store.aclose()
    result.bot = "chinwag"
    return result


async def run_adapter(users: int, per_user: int, workdir: Path) -> Result:
    async with FakeDiscord() as fake:
        fake.record = False
        guild = fake.add_guild()
        channels = [fake.add_channel(guild, f"c{i}") for i in range(3)]
        adapter = DiscordAdapter(_settings(fake), StubEngine(), data_dir=workdir / "data")
        await adapter.start()
        try:
            result = await _drive(fake, users, per_user, channels)
        finally:
            await adapter.aclose()
    result.bot = "adapter"
    return result


def _line(result: Result) -> str:
    return (
        f"{result.bot:8} {result.users:3} user(s) {result.messages:5} msgs  "
        f"{result.rate:8.1f} msg/s  p50 {result.percentile(0.50):7.1f} ms  "
        f"p95 {result.percentile(0.95):7.1f} ms  p99 {result.percentile(0.99):7.1f} ms"
    )


async def bench(*, smoke: bool, rounds: int) -> dict[str, Any]:
    """Run the benchmark; return the best round per (bot, users) and the ratios."""
    shapes = [(1, 3), (30, 1)] if smoke else [(1, 150), (30, 15)]
    best: dict[tuple[str, int], Result] = {}
    runners: dict[str, Callable[..., Awaitable[Result]]] = {}
    with tempfile.TemporaryDirectory(prefix="chinwag-bench-discord-") as tmp:
        workdir = Path(tmp)
        # Warm-up, not counted: first-use costs (imports, caches) would land on one bot.
        await run_floor(3, 2, workdir)
        await run_adapter(3, 2, workdir)
        await run_chinwag(3, 2, workdir, -1)
        for round_no in range(rounds):
            for users, per_user in shapes:
                runners = {
                    "floor": lambda u=users, p=per_user: run_floor(u, p, workdir),
                    "adapter": lambda u=users, p=per_user: run_adapter(u, p, workdir),
                    "chinwag": lambda u=users, p=per_user, r=round_no: run_chinwag(
                        u, p, workdir, r
                    ),
                }
                order = ["floor", "adapter", "chinwag"]
                if round_no % 2:
                    order.reverse()
                for name in order:
                    # Start each run with a clean heap, so a full collection triggered by
                    # an earlier run's garbage does not land on whichever bot runs next.
                    gc.collect()
                    gc.freeze()
                    result = await runners[name]()
                    gc.unfreeze()
                    print(f"round {round_no + 1}: {_line(result)}", flush=True)
                    key = (name, users)
                    if key not in best or result.rate > best[key].rate:
                        best[key] = result
    ratios = {
        (bot, users): best[(bot, users)].rate / best[("floor", users)].rate
        for users, _ in shapes
        for bot in ("adapter", "chinwag")
    }
    return {"best": best, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.discord", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for the test suite)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rounds = args.rounds or (1 if args.smoke else 3)
    outcome = asyncio.run(bench(smoke=args.smoke, rounds=rounds))
    print("\nbest round of each:")
    for result in outcome["best"].values():
        print("  " + _line(result))
    failed = False
    for (bot, users), ratio in outcome["ratios"].items():
        verdict = "ok" if ratio >= TARGET_RATIO else "below 0.7x"
        if bot == "chinwag":
            failed |= ratio < TARGET_RATIO
        print(f"{bot} / floor throughput, {users:2} user(s): {ratio:.2f}x ({verdict})")
    return 1 if failed and not args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
