"""Per-conversation lanes: strictly ordered within a key, parallel across keys.

A lane is the ordered queue of one key (a conversation slot) and the one task draining it.
The task exists only while the lane holds work: the first item submitted to an idle key
starts it, and it ends (and the lane is forgotten) when the queue runs dry. Nothing
submitted is ever dropped: each item's future resolves once its work ran, whatever the
work raised, and is cancelled only if the draining task itself is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_log = logging.getLogger(__name__)


class _Lane(Generic[T]):
    """One key's queue of ``(item, future)`` and the task draining it."""

    __slots__ = ("jobs", "task")

    def __init__(self) -> None:
        self.jobs: deque[tuple[T, asyncio.Future[None]]] = deque()
        self.task: asyncio.Task[None] | None = None


class Lanes(Generic[K, T]):
    """Runs ``work(key, item)`` for every submitted item, one at a time per key.

    Args:
        work: what to do with one item; it handles its own errors (an exception it raises
            is logged as a bug, the item's future still resolves and the lane goes on).
        task_name: the name of the task draining ``key``'s lane (for debugging and logs).
    """

    def __init__(
        self,
        work: Callable[[K, T], Awaitable[None]],
        task_name: Callable[[K], str],
    ) -> None:
        self._work = work
        self._task_name = task_name
        self._lanes: dict[K, _Lane[T]] = {}

    def submit(self, key: K, item: T, future: asyncio.Future[None]) -> None:
        """Queue ``item`` behind ``key``'s earlier items; resolve ``future`` when it is done.

        Must be called from the running event loop, in the order items should run.
        """
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.jobs.append((item, future))
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(key, lane), name=self._task_name(key))

    def __len__(self) -> int:
        """How many keys have work queued or running."""
        return len(self._lanes)

    async def idle(self, key: K) -> None:
        """Return once ``key`` has no work queued or running (at once if it has none).

        A queue worker holds a conversation's job until its lane ran dry: work the job set
        off in the lane (a recovered reply, a tool round continued after a press) finishes
        before the conversation's next job may start on any process.
        """
        while (lane := self._lanes.get(key)) is not None and lane.task is not None:
            await asyncio.wait([lane.task])

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks draining lanes now (to wait on at shutdown)."""
        return [lane.task for lane in self._lanes.values() if lane.task is not None]

    async def _drain(self, key: K, lane: _Lane[T]) -> None:
        try:
            while lane.jobs:
                item, future = lane.jobs[0]
                try:
                    await self._work(key, item)
                except Exception:  # the work reports its own errors; this is a bug
                    _log.exception("unhandled error in a lane's work")
                finally:
                    lane.jobs.popleft()
                    if not future.done():
                        future.set_result(None)
        finally:
            lane.task = None
            if not lane.jobs and self._lanes.get(key) is lane:
                del self._lanes[key]
            for _, future in lane.jobs:  # only when cancelled: nothing may wait forever
                if not future.done():
                    future.cancel()


__all__ = ["Lanes"]
