"""Confirmations the engine asked for (``/forget``'s yes/no) and is waiting on.

They live in memory for :data:`CONFIRM_TTL`: an answer after a restart or after the expiry
is told to send the command again. Only the person who asked may answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.notices import notify
from core.ports import ReplyChannel
from core.types import IncomingAction

CONFIRM_TTL = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Pending:
    """A confirmation asked of ``user_id`` on ``platform``, about ``kind`` (e.g. ``"forget"``)."""

    kind: str
    platform: str
    user_id: str
    expires: datetime


class Confirmations:
    """The open confirmations, by action id.

    Args:
        clock: the engine's clock (current UTC time).
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._pending: dict[str, Pending] = {}

    async def ask(
        self, out: ReplyChannel, kind: str, platform: str, user_id: str, prompt: str
    ) -> None:
        """Ask ``prompt`` through ``out``; the answer comes back to :meth:`resolve`.

        Expired confirmations are dropped here, so the table stays small.
        """
        now = self._clock()
        self._pending = {k: p for k, p in self._pending.items() if p.expires > now}
        action_id = f"{kind}:{secrets.token_urlsafe(8)}"
        self._pending[action_id] = Pending(kind, platform, user_id, now + CONFIRM_TTL)
        await out.ask_confirmation(prompt, action_id)

    async def resolve(self, action: IncomingAction, out: ReplyChannel) -> Pending | None:
        """The confirmation ``action`` accepts, or ``None`` (and the user was told why).

        ``None`` when it expired or is unknown, when someone else answered (it stays open),
        or when it was declined (it is closed, and the user told nothing happened).
        """
        pending = self._pending.get(action.action_id)
        if pending is None or pending.expires <= self._clock():
            await notify(out, "That confirmation has expired. Send the command again.")
            return None
        if (pending.platform, pending.user_id) != (action.platform, action.user_id):
            await notify(out, "Only the person who asked can answer this.")
            return None
        del self._pending[action.action_id]
        if not action.accepted:
            await notify(out, "Cancelled: nothing was deleted.")
            return None
        return pending


__all__ = ["CONFIRM_TTL", "Confirmations", "Pending"]
