"""Shutdown order: adapters stop intake, the engine drains, then adapters close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from adapters.memory.store import SqlMemoryStore
from bots.app import run_adapters
from core.engine import Engine
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.types import IncomingMessage, ReplyEvent
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend


def _dm(text: str) -> IncomingMessage:
    return IncomingMessage(platform="stub", chat_id="alice", user_id="alice", text=text)


class _Channel(RecordingChannel):
    """Records, for every reply delivered, whether its adapter was still open."""

    def __init__(self, adapter: StubAdapter) -> None:
        super().__init__()
        self.adapter = adapter
        self.open_at_delivery: list[bool] = []

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        ids = await super().stream_reply(events)
        self.open_at_delivery.append(not self.adapter.closed)
        return ids


class StubAdapter:
    """A chat adapter that still holds one message when it is told to stop its intake.

    Like a real platform adapter, it hands everything it already received to the engine
    before it stops taking messages, whether told by ``stop_intake()`` or by ``aclose()``.
    """

    name = "stub"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.channel = _Channel(self)
        self.serving = asyncio.Event()
        self.intake_stopped = asyncio.Event()
        self.futures: list[asyncio.Future[None]] = []
        self.buffered = [_dm("last words")]
        self.closed = False

    @property
    def connected(self) -> bool:
        return self.serving.is_set() and not self.intake_stopped.is_set()

    def receive(self, msg: IncomingMessage) -> None:
        self.futures.append(self.engine.submit(msg, self.channel))

    async def start(self) -> None:
        self.serving.set()

    async def wait_closed(self) -> None:
        await asyncio.Event().wait()  # serves until shut down

    async def stop_intake(self) -> None:
        if not self.intake_stopped.is_set():
            for msg in self.buffered:
                self.receive(msg)
            self.intake_stopped.set()

    async def aclose(self) -> None:
        await self.stop_intake()
        self.closed = True


async def test_no_message_meets_a_closed_engine_and_replies_in_flight_are_delivered(
    store: SqlMemoryStore,
) -> None:
    backend = ScriptedBackend(lambda request: f"re: {request.messages[-1].content}")
    backend.gate = asyncio.Event()  # the first reply stays in flight until released
    engine = Engine(
        backend=backend,
        store=store,
        core=CoreSettings(_env_file=None, bot_name="stubbot"),
        llm=LLMSettings(_env_file=None),
        access=AccessSettings(_env_file=None),
    )
    await engine.start()
    adapter = StubAdapter(engine)
    stop = asyncio.Event()
    serving = asyncio.create_task(run_adapters(engine, [adapter], stop, grace=5))
    await adapter.serving.wait()
    adapter.receive(_dm("first"))
    await adapter.channel.stream_started.wait()

    stop.set()  # a signal arrives while "first" is being answered
    await adapter.intake_stopped.wait()
    backend.gate.set()
    assert await serving is None

    for future in adapter.futures:
        assert future.exception() is None  # none met a closed engine
    assert adapter.channel.replies == ["re: first", "re: last words"]
    assert adapter.channel.open_at_delivery == [True, True]
    assert adapter.closed
    assert engine.state.closed
