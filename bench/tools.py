"""What chinwag adds to a tool call: ``python -m bench.tools [--smoke] [--postgres URL]``.

1. **The loop's own cost per call.** A no-op ``read`` tool (no confirmation) called through
   the real :class:`~core.engine.Engine` and SQL store, driven by an in-process backend that
   answers every user message with one tool call and, once it has read the result, with
   text. Per turn, with ``time.perf_counter()`` stamps:

   * *to the tool*: from the backend yielding the tool-call round's ``Finish`` until the
     tool function runs (the gate's checks; the call's audit row is written meanwhile);
   * *back to the model*: from the tool's return until the backend's ``stream()`` starts
     the next round (the audit row written, then one write: the round's calls and results,
     the audit's result, the round finished, the next reply row; the prompt built again).

   Their sum is the cost per call, reported as p50 and p99 over N sequential turns (after a
   warm-up; a conversation of 10 turns per user, so the rebuilt prompt holds at most 30
   stored messages), on SQLite (a file in a temporary directory, migrated) and on
   PostgreSQL when ``CHINWAG_TEST_POSTGRES_URL`` or ``--postgres`` is given (a database
   created for the run and dropped afterwards). Target: p50 under 2 ms on SQLite.

2. **An MCP tool through chinwag against the bare client** (:mod:`bench.mcp_calls`): the
   fake stdio server's ``echo`` tool (``read``) called through the engine's gate (schema
   validation, policy check, the call within its timeout while its audit row is written in
   the SQLite store, both awaited) against the ``mcp`` SDK's ``call_tool`` alone on a second
   process of the same server. Target: p50 at most 1.2x the bare client.

Exits with status 1 at the end when a figure missed its target (as ``make bench`` expects).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from bench._common import Result
from bots.app import tune_gc
from core.engine import Engine
from core.gate import Call
from core.settings import AccessSettings, CoreSettings, LLMSettings, ToolSettings
from core.tools import FunctionTools, Tool, Toolbox, ToolError, ToolSource, tool
from core.turns import ToolLoop
from core.types import (
    BackendEvent,
    CompletionRequest,
    Finish,
    IncomingMessage,
    Role,
    ToolDecision,
)
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import Scripted, ScriptedBackend, tool_call

TARGET_P50_MS = 2.0
ANSWER = "Done: nothing happened."


@dataclass
class Stamps:
    """``time.perf_counter()`` at each point of the current turn."""

    finished: float = 0.0  # the backend yields the tool-call round's Finish
    invoked: float = 0.0  # the tool function runs
    returned: float = 0.0  # the tool function returns
    requested: float = 0.0  # the backend's stream() starts the next round


@dataclass
class LoopFigures:
    """The loop's cost per call, split in its two halves (seconds, one entry per turn)."""

    to_tool: list[float] = field(default_factory=list)
    back: list[float] = field(default_factory=list)

    def total(self, seconds: float) -> Result:
        both = [a + b for a, b in zip(self.to_tool, self.back, strict=True)]
        return Result("chinwag", 1, len(both), seconds, both)


class StampingBackend(ScriptedBackend):
    """One tool call for a user message; text once the tool's result is in the prompt."""

    def __init__(self, stamps: Stamps) -> None:
        super().__init__(reply=self._script, chunk_size=64)
        self.stamps = stamps

    @staticmethod
    def _script(request: CompletionRequest) -> Scripted:
        if request.messages[-1].role is Role.TOOL:
            return ANSWER
        return tool_call("noop", {})

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        if request.messages[-1].role is Role.TOOL:
            self.stamps.requested = time.perf_counter()
        async for event in super().stream(request):
            if isinstance(event, Finish) and event.reason == "tool_calls":
                self.stamps.finished = time.perf_counter()
            yield event


def noop_tools(stamps: Stamps) -> FunctionTools:
    """The benchmark's no-op ``read`` tool, stamping when it runs and when it returns."""

    @tool
    async def noop() -> str:
        """Do nothing and say so."""
        stamps.invoked = time.perf_counter()
        stamps.returned = time.perf_counter()
        return "nothing to do"

    return FunctionTools([noop], name="bench")


def make_engine(
    store: SqlMemoryStore, backend: ScriptedBackend, sources: list[ToolSource]
) -> Engine:
    return Engine(
        backend=backend,
        store=store,
        core=CoreSettings(_env_file=None, bot_name=f"bench{secrets.token_hex(3)}"),
        llm=LLMSettings(_env_file=None),
        access=AccessSettings(_env_file=None),
        toolbox=Toolbox(sources),
        tool_settings=ToolSettings(_env_file=None),
    )


async def measure_loop(url: str, turns: int, warmup: int, per_chat: int = 10) -> Result:
    """``warmup`` + ``turns`` sequential tool turns; the cost of the last ``turns``.

    Each user has a conversation of ``per_chat`` turns (the prompt then holds at most
    ``3 * per_chat`` stored messages: the next round rebuilds it, which costs more the more
    it holds), then the next user starts one.
    """
    stamps = Stamps()
    backend = StampingBackend(stamps)
    figures = LoopFigures()
    async with SqlMemoryStore(url) as store:
        engine = make_engine(store, backend, [noop_tools(stamps)])
        await engine.start()
        tune_gc()  # as `chinwag run` does once its adapters are up
        out = RecordingChannel()
        started = time.perf_counter()
        try:
            for n in range(warmup + turns):
                if n == warmup:
                    figures = LoopFigures()
                    started = time.perf_counter()
                stamps.finished = stamps.invoked = stamps.returned = stamps.requested = 0.0
                user = f"user{n // per_chat}"  # a conversation of per_chat turns
                msg = IncomingMessage("bench", user, user, f"turn {n}", message_id=str(n))
                await engine.handle(msg, out)
                if out.replies[-1:] != [ANSWER] or not stamps.requested:
                    raise RuntimeError(f"turn {n} did not go through the tool: {out.texts[-3:]}")
                figures.to_tool.append(stamps.invoked - stamps.finished)
                figures.back.append(stamps.requested - stamps.returned)
                out.events.clear()
            seconds = time.perf_counter() - started
        finally:
            await engine.aclose()
    result = figures.total(seconds)
    result.first_ms = _median(figures.to_tool) * 1000  # kept for the report: the first half
    return result


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def loop_line(name: str, result: Result, turns: int, target: float | None) -> tuple[str, bool]:
    """The report line for one database, and whether it met its target."""
    p50, p99 = result.percentile(0.5), result.percentile(0.99)
    to_tool = result.first_ms
    line = (
        f"{name:10} tool call x {turns:,} (no-op read tool): framework cost p50 {p50:.3f} ms, "
        f"p99 {p99:.3f} ms (p50 to the tool {to_tool:.3f} ms, the rest back to the model)"
    )
    if target is None:
        return line + " (no target)", True
    met = p50 < target
    return line + f" (target p50 < {target:g} ms: {'ok' if met else 'BELOW TARGET'})", met


async def with_postgres(admin_url: str, run: Callable[[str], Awaitable[Result]]) -> Result:
    """``run`` on a database created for it (dropped afterwards)."""
    import asyncpg

    name = f"chinwag_bench_{secrets.token_hex(4)}"
    plain = admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    admin = await asyncpg.connect(plain)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = plain.rsplit("/", 1)[0]
        url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
        await migrate.upgrade(url)
        return await run(url)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


class GatePath:
    """An MCP read call as the tool loop makes it: the gate, the call and its audit row."""

    def __init__(self, engine: Engine) -> None:
        tooling = engine._tools  # the engine's own gate and loop, as a turn uses them
        self.gate = tooling.gate
        self.loop: ToolLoop = tooling.loop
        self.msg = IncomingMessage("bench", "chat", "user", "call it")
        self.count = 0

    async def __call__(self, found: Tool, arguments: str) -> object:
        self.count += 1
        offered = self.gate.offered(self.msg)
        call = self.gate.check(self.msg, Call(f"call_{self.count}", found.name, arguments), offered)
        if call.decision is not ToolDecision.ALLOWED or call.tool is None or call.args is None:
            raise ToolError(f"the gate did not allow the call: {call.error}")
        # As the tool loop runs a round of reads: the audit row written while the call runs;
        # its result is added by the round's one write after the call (bench 1 counts it).
        audited = asyncio.ensure_future(self.loop.audit(self.msg, call, call.decision))
        try:
            executed = await self.loop.execute(call.tool, call.args)
        finally:
            call.audit_id = await audited
        if executed.status != "ok":
            raise ToolError(f"the MCP call failed: {executed.result.content}")
        return executed.result


class LateTools:
    """A tool source that offers whatever tools it is given once the benchmark has them."""

    name = "mcp"

    def __init__(self) -> None:
        self.found: list[Tool] = []

    def tools(self) -> list[Tool]:
        return self.found

    async def start(self) -> None:
        """Nothing to connect."""

    async def aclose(self) -> None:
        """Nothing to release."""


async def measure_mcp(url: str, calls: int, warmup: int) -> list[str] | None:
    """The MCP comparison's report lines (``None`` without the ``mcp`` extra)."""
    try:
        from bench.mcp_calls import TARGET_RATIO, measure_mcp_calls
    except ImportError:
        return None
    late = LateTools()
    async with SqlMemoryStore(url) as store:
        engine = make_engine(store, ScriptedBackend(), [late])
        await engine.start()
        path = GatePath(engine)

        async def through(found: Tool, arguments: str) -> object:
            if found not in late.found:  # the engine's gate offers the source's own tool
                late.found.append(found)
            return await path(found, arguments)

        try:
            figures = await measure_mcp_calls(calls=calls, warmup=warmup, through=through)
        finally:
            await engine.aclose()
        audited = len(await store.audit_entries(bot=engine.bot_name, limit=calls + warmup))
    if audited != calls + warmup:
        raise RuntimeError(f"{audited} audit rows for {calls + warmup} calls")
    lines = figures.lines()
    if figures.ratio(0.5) > TARGET_RATIO:
        lines[-1] = lines[-1].replace("over target", "BELOW TARGET (over x1.2)")
    return lines


async def main(args: argparse.Namespace) -> int:
    turns, warmup = (20, 5) if args.smoke else (args.turns, max(10, args.turns // 10))
    calls, mcp_warmup = (20, 5) if args.smoke else (args.calls, 100)
    print(
        f"bench.tools ({'smoke' if args.smoke else 'full'} size), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs",
        flush=True,
    )
    missed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await migrate.upgrade(url)
        result = await measure_loop(url, turns, warmup, args.per_chat)
        line, met = loop_line("sqlite", result, turns, TARGET_P50_MS)
        print(line, flush=True)
        if not met:
            missed.append("sqlite tool-call cost")
        mcp_url = f"sqlite+aiosqlite:///{Path(tmp) / 'mcp.db'}"
        await migrate.upgrade(mcp_url)
        mcp_lines = await measure_mcp(mcp_url, calls, mcp_warmup)
    pg = (args.postgres or os.environ.get("CHINWAG_TEST_POSTGRES_URL", "")).strip()
    if pg:

        async def run(url: str) -> Result:
            return await measure_loop(url, turns, warmup, args.per_chat)

        line, _ = loop_line("postgresql", await with_postgres(pg, run), turns, None)
        print(line, flush=True)
    else:
        print("postgresql skipped: set CHINWAG_TEST_POSTGRES_URL or pass --postgres URL")
    if mcp_lines is None:
        print("MCP comparison skipped: the mcp extra is not installed")
    else:
        for line in mcp_lines:
            print(line)
        if "BELOW TARGET" in mcp_lines[-1]:
            missed.append("MCP call ratio")
    if missed:
        print(f"bench.tools: below target: {', '.join(missed)}")
        return 1
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tools", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny size, for the test suite")
    parser.add_argument("--turns", type=int, default=300, help="measured tool turns (300)")
    parser.add_argument("--per-chat", type=int, default=10, help="turns per conversation (10)")
    parser.add_argument("--calls", type=int, default=2000, help="measured MCP calls (2,000)")
    parser.add_argument("--postgres", help="an admin URL (else CHINWAG_TEST_POSTGRES_URL)")
    return parser.parse_args(argv)


def run_main(argv: list[str] | None = None) -> int:
    return asyncio.run(main(parse(argv)))


__all__ = ["GatePath", "StampingBackend", "measure_loop", "measure_mcp", "run_main"]

if __name__ == "__main__":
    sys.exit(run_main())
