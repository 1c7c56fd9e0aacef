from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.memory.in_memory import InMemoryStore
from core.bot import BotCommand
from core.engine import Engine
from core.instance import HEARTBEAT_SECONDS
from core.ports import MemoryStore
from core.settings import (
    AccessSettings,
    CoreSettings,
    LLMSettings,
    MediaSettings,
    ToolSettings,
)
from core.tools import Toolbox
from core.types import IncomingMessage
from tests.fakes.scripted import ScriptedBackend


class Clock:
    """A fake UTC clock tests move by hand instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        # Today at noon UTC: the store stamps rows with the real time, so the day must match.
        self.now = start or datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def memory_store(clock: Clock) -> AsyncIterator[InMemoryStore]:
    """A started ``InMemoryStore`` stamping rows with the engine's ``clock``.

    One clock for both: recovery compares a reply's stamp with the engine's time (with the
    real time in the store, a reply written at 05:00 was seven hours old at the clock's noon).
    """
    async with InMemoryStore(clock=clock) as memory:
        yield memory


@pytest.fixture
def store_clock(clock: Clock) -> Clock:
    """The SQL store (``sqlite_store``) stamps rows with the engine's ``clock`` too."""
    return clock


@pytest.fixture
def store(request: pytest.FixtureRequest) -> MemoryStore:
    """The engine's store: ``memory_store``, as the engine tests need no SQL.

    A test that also asks for ``sqlite_url`` reads the database itself: it gets the SQL
    store on that file (``sqlite_store``) instead.
    """
    name = "sqlite_store" if "sqlite_url" in request.fixturenames else "memory_store"
    found: MemoryStore = request.getfixturevalue(name)
    return found


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def clock() -> Clock:
    return Clock()


EngineFactory = Callable[..., Engine]


@pytest.fixture
async def make_engine(store, backend, clock) -> AsyncIterator[EngineFactory]:
    engines: list[Engine] = []

    def factory(
        *,
        bot_name: str = "testbot",
        max_concurrency: int = 8,
        context_window: int | None = None,
        max_reply_tokens: int | None = None,
        memory_scope: str = "user",
        system_prompt: str | None = "You are a test bot.",
        backend_override: Any = None,
        toolbox: Toolbox | None = None,
        tools: dict[str, Any] | None = None,
        persona: str | None = None,
        extra_commands: Sequence[BotCommand] = (),
        store_override: MemoryStore | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
        knowledge: Any = None,
        media: MediaSettings | None = None,
        reader: Any = None,
        transcriber: Any = None,
        **access: Any,
    ) -> Engine:
        engine = Engine(
            backend=backend_override or backend,
            store=store_override or store,
            core=CoreSettings(
                _env_file=None,
                bot_name=bot_name,
                system_prompt=system_prompt,
                memory_scope_groups=memory_scope,
            ),
            llm=LLMSettings(
                _env_file=None,
                max_concurrency=max_concurrency,
                context_window=context_window,
                max_reply_tokens=max_reply_tokens,
            ),
            access=AccessSettings(_env_file=None, **access),
            clock=clock,
            toolbox=toolbox,
            tool_settings=ToolSettings(_env_file=None, **(tools or {})),
            persona=persona,
            extra_commands=extra_commands,
            heartbeat=heartbeat,
            knowledge=knowledge,
            media=media,
            reader=reader,
            transcriber=transcriber,
        )
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.aclose(grace=1)


def dm(
    text: str, user: str = "alice", *, message_id: str | None = None, **kw: Any
) -> IncomingMessage:
    """A private text message from ``user`` on the test platform."""
    return IncomingMessage(
        platform=kw.pop("platform", "test"),
        chat_id=kw.pop("chat_id", user),
        user_id=user,
        text=text,
        message_id=message_id,
        **kw,
    )
