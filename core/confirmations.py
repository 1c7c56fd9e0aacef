"""Confirmations the engine asked for (``/forget``'s yes/no) and is waiting on.

They are kept for :data:`CONFIRM_TTL` in a :class:`PendingStore`: this process's memory by
default (an answer after a restart is told to send the command again), or Redis through
``adapters.shared`` when the bot runs as several processes, so the press may reach any of
them. Only the person who asked may answer, and only once: the store's :meth:`take` is
atomic, so a press delivered twice is carried out once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

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


class PendingStore(Protocol):
    """Where open confirmations wait, by action id."""

    async def put(self, action_id: str, pending: Pending) -> None:
        """Keep ``pending`` until its ``expires`` (or until taken)."""
        ...

    async def get(self, action_id: str) -> Pending | None:
        """The confirmation, or ``None`` when unknown or expired."""
        ...

    async def take(self, action_id: str) -> bool:
        """Close it; ``True`` only for the one caller that closed it."""
        ...


class MemoryPendingStore:
    """:class:`PendingStore` in this process's memory.

    Args:
        clock: the engine's clock (current UTC time); expired entries are dropped on put.
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._pending: dict[str, Pending] = {}

    async def put(self, action_id: str, pending: Pending) -> None:
        """See :meth:`PendingStore.put`."""
        now = self._clock()
        self._pending = {k: p for k, p in self._pending.items() if p.expires > now}
        self._pending[action_id] = pending

    async def get(self, action_id: str) -> Pending | None:
        """See :meth:`PendingStore.get`."""
        return self._pending.get(action_id)

    async def take(self, action_id: str) -> bool:
        """See :meth:`PendingStore.take`."""
        return self._pending.pop(action_id, None) is not None


class Confirmations:
    """The open confirmations, by action id.

    Args:
        clock: the engine's clock (current UTC time).
        store: where they wait; ``None``: this process's memory.
    """

    def __init__(self, clock: Callable[[], datetime], store: PendingStore | None = None) -> None:
        self._clock = clock
        self._store = store or MemoryPendingStore(clock)

    async def ask(
        self, out: ReplyChannel, kind: str, platform: str, user_id: str, prompt: str
    ) -> None:
        """Ask ``prompt`` through ``out``; the answer comes back to :meth:`resolve`."""
        action_id = f"{kind}:{secrets.token_urlsafe(8)}"
        pending = Pending(kind, platform, user_id, self._clock() + CONFIRM_TTL)
        await self._store.put(action_id, pending)
        await out.ask_confirmation(prompt, action_id)

    async def resolve(self, action: IncomingAction, out: ReplyChannel) -> Pending | None:
        """The confirmation ``action`` accepts, or ``None`` (and the user was told why).

        ``None`` when it expired or is unknown (or was answered already), when someone else
        answered (it stays open), or when it was declined (it is closed, and the user told
        nothing happened).
        """
        pending = await self._store.get(action.action_id)
        if pending is None or pending.expires <= self._clock():
            await notify(out, "That confirmation has expired. Send the command again.")
            return None
        if (pending.platform, pending.user_id) != (action.platform, action.user_id):
            await notify(out, "Only the person who asked can answer this.")
            return None
        if not await self._store.take(action.action_id):
            await notify(out, "That confirmation has expired. Send the command again.")
            return None
        if not action.accepted:
            await notify(out, "Cancelled: nothing was deleted.")
            return None
        return pending


__all__ = ["CONFIRM_TTL", "Confirmations", "MemoryPendingStore", "Pending", "PendingStore"]
