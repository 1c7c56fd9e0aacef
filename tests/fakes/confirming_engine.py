"""A stand-in for the engine's tool loop, for testing how adapters show confirmations.

Every message gets a tool confirmation, asked from inside its conversation (holding the
conversation, as the real engine's lanes do), with action ids ``t:<12 characters>`` like
the real ones. A press is recorded; the asker's "yes" runs the (pretend) action in that
same conversation and says so, anyone else's press is refused the way the engine refuses it.
The pending confirmations are kept by this object, not by the adapter, so a test can press a
button through a new adapter instance (a restart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from core.ports import ReplyChannel
from core.types import CommandInfo, IncomingAction, IncomingMessage

__all__ = ["PROMPT", "ConfirmingEngine"]

PROMPT = (
    "Run this?\n"
    "turn on Kitchen light (light.kitchen) with brightness_pct=60\n"
    "tool: ha_call_service (act), asked by Alice\n"
    "Expires in 2 minutes.\n" + "Details: " + "x" * 380
)
"""A multi-line, ~500-character question like the gate's."""


class ConfirmingEngine:
    """A ``ConversationEngine`` whose every message asks a tool confirmation."""

    bot_name = "home"
    default_model = "scripted"

    def __init__(self, prompt: str = PROMPT) -> None:
        self.prompt = prompt
        self.lane = asyncio.Lock()  # one conversation at a time: strictly ordered
        self.asked: dict[str, str] = {}  # action id -> the asker's user id
        self.actions: list[IncomingAction] = []
        self.ran: list[str] = []
        self._n = 0

    def commands(self) -> Sequence[CommandInfo]:
        return ()

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.handle(msg, out))

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        async with self.lane:
            self._n += 1
            action_id = f"t:{self._n:012d}"
            self.asked[action_id] = msg.user_id
            await out.ask_confirmation(self.prompt, action_id)

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        self.actions.append(action)
        asker = self.asked.get(action.action_id)
        if asker is None:
            await out.send_text("That confirmation has expired.")
            return
        if asker != action.user_id:
            await out.send_text("Only the person who asked can answer this.")
            return
        del self.asked[action.action_id]
        async with self.lane:  # the confirmed call continues its conversation
            if action.accepted:
                self.ran.append(action.action_id)
                await out.send_text("✅ light.kitchen → on")
            else:
                await out.send_text("Declined: nothing was done.")
