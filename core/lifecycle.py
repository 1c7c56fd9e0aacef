"""The one way a component says where it is in its life: engine, adapters, backends, store.

Every component with ``start()`` / ``aclose()`` holds a :class:`Lifecycle` (the model is
httpx's ``ClientState``): ``start()`` is idempotent while running, ``aclose()`` is idempotent
always, and using a component that is not running is a ``RuntimeError`` that says why.
"""

from __future__ import annotations

from enum import Enum


class Lifecycle(Enum):
    """``NEW`` -> ``STARTING`` -> ``RUNNING`` -> ``CLOSING`` -> ``CLOSED``.

    ``STARTING`` and ``CLOSING`` are for components whose start or close awaits (a platform
    connection, a drain); others go straight from ``NEW`` to ``RUNNING`` and to ``CLOSED``.
    """

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"

    def require_running(self, owner: str) -> None:
        """Raise ``RuntimeError`` naming ``owner`` unless this state is ``RUNNING``."""
        if self is Lifecycle.RUNNING:
            return
        if self is Lifecycle.NEW:
            raise RuntimeError(f"{owner} used before start()")
        raise RuntimeError(f"{owner} used after aclose() (state: {self.value})")

    def require_startable(self, owner: str) -> bool:
        """Return ``False`` when already started (nothing to do); raise after ``aclose()``.

        ``True`` means the caller should start now (the state is ``NEW``).
        """
        if self in (Lifecycle.STARTING, Lifecycle.RUNNING):
            return False
        if self in (Lifecycle.CLOSING, Lifecycle.CLOSED):
            raise RuntimeError(f"{owner}.start() after aclose()")
        return True

    @property
    def closed(self) -> bool:
        """``True`` once ``aclose()`` has begun."""
        return self in (Lifecycle.CLOSING, Lifecycle.CLOSED)


__all__ = ["Lifecycle"]
