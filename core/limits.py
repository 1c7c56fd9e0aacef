"""Platform limits every process of one bot must hold together: flood gates and pacing.

A platform's 429 closes a *gate* ("nothing under this name before T"); a chat's edits are
*paced* ("the next call here at T at the earliest"). One process keeps both in memory
(:class:`LocalLimits`); processes of one bot (``chinwag worker`` replicas) share them
through ``adapters.shared`` (Redis), so N workers together never exceed one chat's or one
bot's limits. Times are wall-clock seconds (``time.time()``): they are compared across
processes and machines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol


class SharedLimits(Protocol):
    """Gates and pacing slots by name (``"telegram:bot"``, ``"telegram:chat:42"``)."""

    async def closed_until(self, names: Sequence[str]) -> float:
        """The wall time before which nothing may be sent under any of ``names``.

        A time already past (or 0) means open.
        """
        ...

    async def close(self, name: str, until: float) -> None:
        """Close gate ``name`` until wall time ``until``; a later closing is never shortened."""
        ...

    async def reserve(self, name: str, interval: float, *, now: bool = False) -> float:
        """Take the next call slot of ``name``; return the wall time the call may be made.

        Slots of one name are at least ``interval`` seconds apart, whoever takes them. With
        ``now`` (a new message, which Telegram does not ask to pace like edits), the call
        is made at once and only the next slot is pushed ``interval`` past it.
        """
        ...


class LocalLimits:
    """:class:`SharedLimits` in this process's memory (no peers to share with)."""

    def __init__(self) -> None:
        self._gates: dict[str, float] = {}
        self._slots: dict[str, float] = {}

    async def closed_until(self, names: Sequence[str]) -> float:
        """See :meth:`SharedLimits.closed_until`."""
        if len(self._gates) > 10_000:  # forget open gates so memory stays bounded
            now = time.time()
            self._gates = {k: v for k, v in self._gates.items() if v > now}
        return max((self._gates.get(name, 0.0) for name in names), default=0.0)

    async def close(self, name: str, until: float) -> None:
        """See :meth:`SharedLimits.close`."""
        self._gates[name] = max(self._gates.get(name, 0.0), until)

    async def reserve(self, name: str, interval: float, *, now: bool = False) -> float:
        """See :meth:`SharedLimits.reserve`."""
        wall = time.time()
        if len(self._slots) > 100_000:  # forget idle chats so memory stays bounded
            self._slots = {k: v for k, v in self._slots.items() if v > wall}
        booked = self._slots.get(name, 0.0)
        at = wall if now else max(wall, booked)
        self._slots[name] = max(booked, at + interval)
        return at


__all__ = ["LocalLimits", "SharedLimits"]
