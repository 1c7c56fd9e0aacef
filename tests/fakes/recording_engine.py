"""A stand-in engine that records what adapters hand it, for testing ingress and shards.

Every message and button press is recorded with the adapter it came through (``tag``) and
answered with a short notice (``got <text>``), in order per conversation. ``block`` holds
every ``submit`` future unresolved until set (a queue that has not stored the turn yet);
``fail`` makes the future fail (the queue's database is down); ``hold`` (when given)
holds it after the turn was recorded (queued, not yet acknowledged). ``served`` counts
``wait_to_serve`` calls and ``serve_gate`` (when given) is what they wait for: the election
an ingress poller goes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from core.errors import StoreError
from core.ports import ReplyChannel
from core.types import CommandInfo, IncomingAction, IncomingMessage

__all__ = ["RecordingEngine"]


class RecordingEngine:
    """A ``ConversationEngine`` that records every message and press."""

    bot_name = "recorder"
    default_model = "none"

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.messages: list[IncomingMessage] = []
        self.actions: list[IncomingAction] = []
        self.block: asyncio.Event | None = None
        self.hold: asyncio.Event | None = None
        self.fail = False
        self.answer = True
        self.served = 0
        self.serve_gate: asyncio.Event | None = None
        self._lane = asyncio.Lock()

    def commands(self) -> Sequence[CommandInfo]:
        return (CommandInfo("help", "What the bot can do", ""),)

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        return asyncio.ensure_future(self._take(msg, out))

    async def _take(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            raise StoreError("the queue's database cannot be reached")
        self.messages.append(msg)
        if self.hold is not None:
            await self.hold.wait()
        if self.answer:
            async with self._lane:
                await out.send_text(f"got {msg.text}")

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        await self.submit(msg, out)

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        if self.fail:
            raise StoreError("the queue's database cannot be reached")
        self.actions.append(action)
        if self.answer:
            await out.send_text(f"pressed {'yes' if action.accepted else 'no'}")

    async def wait_to_serve(self, platform: str) -> None:
        """The poller election: return once this process may poll ``platform``."""
        self.served += 1
        if self.serve_gate is not None:
            await self.serve_gate.wait()
