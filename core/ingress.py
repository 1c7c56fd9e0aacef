"""``IngressEngine``: what platform adapters talk to in ``chinwag ingress``.

In the scaled deployment an ingress process answers nothing itself. For each platform event
it checks what can be checked without the model and queues the turn (``core.queue``):

- a message is queued as one job locked by its conversation slot, recorded by its platform
  id in the same transaction (a redelivered event makes no second turn); the future
  :meth:`IngressEngine.submit` returns resolves once the job is stored, so the adapter
  acknowledges the platform only then. If the queue's database cannot be reached the
  future fails with ``StoreError`` (the user is told briefly): the event is not
  acknowledged and the platform delivers it again;
- a button press is queued under the same conversation lock (it runs after the turns
  before it);
- ``/stop`` (every command that bypasses the conversation's lane) is published on the
  :class:`~core.queue.StopSignal`: whichever worker writes that conversation's reply stops
  it; if none did, the user reads "There's no reply in progress to stop.".

The commands and conversation keys come from the bot's real engine, built but never
started (:class:`Commands`): ingress registers the same commands the workers answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from core.errors import StoreError
from core.notices import notify
from core.ports import ReplyChannel
from core.queue import JobKind, StopSignal, TurnQueue, action_payload, message_payload
from core.telemetry import NO_TELEMETRY, Telemetry
from core.types import CommandInfo, ConversationKey, IncomingAction, IncomingMessage

_log = logging.getLogger(__name__)

NO_REPLY_TO_STOP = "There's no reply in progress to stop."
STOPPED = "Stopped."


class Commands(Protocol):
    """What ingress takes from the bot's engine (``core.engine.Engine`` has it all)."""

    @property
    def bot_name(self) -> str:
        """The ``BOT_NAME`` memories are stored under."""
        ...

    @property
    def default_model(self) -> str:
        """The model a conversation that chose none is answered by."""
        ...

    def commands(self) -> Sequence[CommandInfo]:
        """The commands the engine answers."""
        ...

    def key_for(
        self,
        platform: str,
        chat_id: str,
        user_id: str,
        thread_id: str | None = None,
        is_private: bool = True,
    ) -> ConversationKey:
        """The conversation slot a message belongs to (``MEMORY_SCOPE_GROUPS``)."""
        ...

    def bypasses_lane(self, text: str) -> bool:
        """Whether ``text`` is a command answered at once (``/stop``)."""
        ...

    async def admits(self, msg: IncomingMessage, out: ReplyChannel) -> bool:
        """The allowlist check of ``msg``'s author."""
        ...


class IngressEngine:
    """Queues platform events for workers; implements ``core.chat_ports.ConversationEngine``.

    Args:
        engine: the bot's engine (never started): commands, keys, the allowlist.
        queue: where turns go (``adapters.queue``'s ``ProcrastinateTurnQueue``).
        stop: ``/stop`` across processes.
        telemetry: counts the messages received (for ``/metrics``).
    """

    def __init__(
        self,
        engine: Commands,
        queue: TurnQueue,
        stop: StopSignal,
        *,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._engine = engine
        self._queue = queue
        self._stop = stop
        self._telemetry = telemetry
        self._tasks: set[asyncio.Task[None]] = set()
        # The newest event being queued per conversation: the next one waits for it, so a
        # conversation's jobs are made (and answered) in the order its events arrived.
        self._tails: dict[ConversationKey, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def bot_name(self) -> str:
        """The ``BOT_NAME`` turns are queued under."""
        return self._engine.bot_name

    @property
    def default_model(self) -> str:
        """The model a conversation that chose none is answered by (for banners)."""
        return self._engine.default_model

    def commands(self) -> Sequence[CommandInfo]:
        """The commands the workers answer, for adapters to register."""
        return self._engine.commands()

    def _key(
        self, platform: str, chat: str, user: str, thread: str | None, private: bool
    ) -> ConversationKey:
        return self._engine.key_for(platform, chat, user, thread, private)

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        """Queue ``msg`` (call in arrival order); the future resolves once it is stored.

        It fails with ``StoreError`` when the queue cannot take it (not acknowledged: the
        platform delivers it again), with ``RuntimeError`` after :meth:`aclose`.
        """
        self._telemetry.message_received(msg.platform)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(RuntimeError("ingress is closed"))
            return future
        if self._engine.bypasses_lane(msg.text):
            work: Awaitable[None] = self._stop_reply(msg, out)
            self._spawn(self._settle(work, future))
            return future
        key = self._key(msg.platform, msg.chat_id, msg.user_id, msg.thread_id, msg.is_private)
        self._in_order(key, self._enqueue(JobKind.MESSAGE, key, message_payload(msg), out), future)
        return future

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _in_order(
        self, key: ConversationKey, work: Awaitable[None], future: asyncio.Future[None]
    ) -> None:
        """Run ``work`` once the conversation's earlier events are queued (or failed)."""
        before = self._tails.get(key)

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])
            await self._settle(work, future)

        task = self._spawn(run())
        self._tails[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tails.get(key) is done:
                del self._tails[key]

        task.add_done_callback(forget)

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        """Queue ``msg`` and return once it is stored."""
        await self.submit(msg, out)

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        """Queue a button press behind its conversation's turns; return once it is stored.

        Raises:
            StoreError: the queue cannot take it (the user is told briefly).
        """
        key = self._key(
            action.platform, action.chat_id, action.user_id, action.thread_id, action.is_private
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_order(key, self._enqueue(JobKind.ACTION, key, action_payload(action), out), future)
        await future

    async def aclose(self) -> None:
        """Take no more events; wait for the ones being queued. Idempotent."""
        self._closed = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    async def _settle(self, work: Awaitable[None], future: asyncio.Future[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            if not future.done():
                future.cancel()
            raise
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(None)

    async def _enqueue(
        self, kind: JobKind, key: ConversationKey, payload: Mapping[str, Any], out: ReplyChannel
    ) -> None:
        try:
            await self._queue.enqueue(kind, key, payload)
        except StoreError as exc:
            _log.error("could not queue a %s %s: %s", key.platform, kind.value, exc)
            await notify(out, exc.user_message)
            raise

    async def _stop_reply(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        if not await self._engine.admits(msg, out):
            return
        key = self._key(msg.platform, msg.chat_id, msg.user_id, msg.thread_id, msg.is_private)
        try:
            stopped = await self._stop.publish(key)
        except Exception as exc:  # Redis away: say so, keep serving
            _log.error("could not publish /stop for %s: %s", key.platform, type(exc).__name__)
            await notify(out, "I couldn't reach the reply to stop it just now. Please try again.")
            return
        await notify(out, STOPPED if stopped else NO_REPLY_TO_STOP)


__all__ = ["NO_REPLY_TO_STOP", "STOPPED", "Commands", "IngressEngine"]
