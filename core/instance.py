"""This process's identity in the store, its heartbeat, and who else is alive.

Every reply in progress carries its writer's instance id (its owner). A process is alive
while its heartbeat is fresh: newer than :data:`TTL_BEATS` heartbeat intervals. On the same
host a process whose pid is gone is dead at once, so a restart after a crash recovers
without waiting for the heartbeat to go stale, and one whose pid runs is alive even with a
late heartbeat (a busy process's replies are never taken over under it). Recovery takes
over only the replies of dead owners; a second instance, or a worker of the same bot, is
never interfered with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final

from core.errors import StoreError
from core.ports import MemoryStore
from core.types import InstanceInfo

_log = logging.getLogger(__name__)

HEARTBEAT_SECONDS: Final = 5.0
"""How often a process says it is alive."""
TTL_BEATS: Final = 3
"""A heartbeat older than this many intervals means the process is dead."""
_SAME_HOST_GRACE: Final = 20
"""On the same host, where a running pid proves life, a heartbeat may be this many TTLs old."""


def _host() -> str:
    """This host's name, with a mark of its boot and pid namespace where Linux tells them.

    Two containers may share a host name; their pids are only comparable (and only then is
    a missing pid proof of death) when boot and pid namespace are the same too.
    """
    marks = []
    with (
        contextlib.suppress(OSError),
        open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot,
    ):
        marks.append(boot.read().strip())
    with contextlib.suppress(OSError):
        marks.append(str(os.stat("/proc/self/ns/pid").st_ino))
    name = socket.gethostname()
    if not marks:
        return name[:255]
    mark = hashlib.sha256("/".join(marks).encode()).hexdigest()[:12]
    return f"{name[:240]}#{mark}"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class Instance:
    """This process in the store: registered at :meth:`start`, retired at :meth:`aclose`.

    Args:
        store: the memory store (started by the caller).
        bot: the ``BOT_NAME`` served.
        clock: the current UTC time.
        interval: seconds between heartbeats.
        on_beat: awaited after every heartbeat (the engine's recovery of dead owners'
            replies); its errors are logged, never raised.
    """

    def __init__(
        self,
        store: MemoryStore,
        bot: str,
        clock: Callable[[], datetime],
        *,
        interval: float = HEARTBEAT_SECONDS,
        on_beat: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.host = _host()
        self.pid = os.getpid()
        self._store = store
        self._bot = bot
        self._clock = clock
        self.interval = interval
        self.on_beat = on_beat
        self._task: asyncio.Task[None] | None = None

    @property
    def ttl(self) -> timedelta:
        """How old a heartbeat may be for its process to count as alive."""
        return timedelta(seconds=self.interval * TTL_BEATS)

    def _info(self) -> InstanceInfo:
        now = self._clock()
        return InstanceInfo(self.id, self._bot, self.host, self.pid, now, now)

    async def start(self) -> None:
        """Register this process and start the heartbeat. Idempotent."""
        if self._task is not None:
            return
        await self._store.register_instance(self._info())
        self._task = asyncio.create_task(self._beat(), name="chinwag-heartbeat")

    async def aclose(self) -> None:
        """Stop the heartbeat and retire this process: what it left is recovered at once."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self._store.retire_instance(self.id)
        except StoreError as exc:
            _log.warning("could not retire this instance from the store: %s", exc)

    def alive(self, other: InstanceInfo) -> bool:
        """Whether ``other`` counts as alive now."""
        if other.id == self.id:
            return True
        if other.host == self.host and other.pid != self.pid:
            if not pid_alive(other.pid):
                return False
            # Running on this host: a late heartbeat is a busy process (a loaded machine, a
            # slow database), not a dead one; only a far older one (its pid reused by now)
            # is taken for dead.
            return other.heartbeat_at >= self._clock() - self.ttl * _SAME_HOST_GRACE
        return other.heartbeat_at >= self._clock() - self.ttl

    async def live(self) -> list[str]:
        """The ids of the live instances of this bot (this one included)."""
        found = await self._store.instances(self._bot)
        return [self.id, *(i.id for i in found if i.id != self.id and self.alive(i))]

    async def dead(self) -> list[InstanceInfo]:
        """The recorded instances of this bot that are dead."""
        return [i for i in await self._store.instances(self._bot) if not self.alive(i)]

    async def hold_lease(self, platform: str) -> None:
        """Return once this process holds the (bot, ``platform``) lease; wait while another has it.

        A second process on the same token waits here, says why once, and takes over when
        the holder stops (its lease is released) or dies (its heartbeat goes stale).
        """
        told = False
        while True:
            live = await self.live()
            holder = await self._store.acquire_lease(self._bot, platform, self.id, live)
            if holder == self.id:
                if told:
                    _log.warning(
                        "taking over %s for bot %r: the other process stopped", platform, self._bot
                    )
                return
            if not told:
                told = True
                found = {i.id: i for i in await self._store.instances(self._bot)}.get(holder)
                where = f"pid {found.pid} on {found.host}" if found else f"instance {holder}"
                _log.warning(
                    "another chinwag process (%s) serves %s for bot %r; waiting, and taking "
                    "over when it stops",
                    where,
                    platform,
                    self._bot,
                )
            await asyncio.sleep(self.interval)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if not await self._store.heartbeat(self.id, self._clock()):
                    await self._store.register_instance(self._info())
                if self.on_beat is not None:
                    await self.on_beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.warning("the heartbeat failed; retrying", exc_info=True)


__all__ = ["HEARTBEAT_SECONDS", "TTL_BEATS", "Instance", "pid_alive"]
