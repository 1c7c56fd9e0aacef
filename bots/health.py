"""The health and metrics listener (``CHINWAG_HTTP_LISTEN``), wired to the running pieces.

:class:`Health` owns the Prometheus telemetry the engine and adapters count into, and the
listener that serves it. Readiness (``/readyz``) asks, at each probe: does the database
answer (a ``SELECT 1`` within two seconds), did the last model call reach the LLM backend,
is every chat platform connected. The pieces are filled in as :func:`bots.app.serve` starts
them; until then readiness says what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Final

from adapters.memory.store import SqlMemoryStore
from adapters.observability import HealthServer, PrometheusTelemetry
from core.chat_ports import ChatAdapter
from core.errors import ConfigError

__all__ = ["DB_PING_TIMEOUT", "Health", "version"]

_log = logging.getLogger(__name__)

DB_PING_TIMEOUT: Final = 2.0
"""Seconds the database has to answer a readiness probe."""


def version() -> str:
    """The installed chinwag's version (``0+unknown`` when run from a tree not installed)."""
    try:
        return metadata.version("chinwag")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Health:
    """Telemetry and the listener serving ``/healthz``, ``/readyz`` and ``/metrics``.

    Args:
        host: the address to listen on.
        port: the port (0: any free one, see :attr:`port`).
    """

    def __init__(self, host: str, port: int) -> None:
        self.telemetry = PrometheusTelemetry(version=version())
        self.store: SqlMemoryStore | None = None
        self.adapters: Sequence[ChatAdapter] = ()
        # Further readiness probes (a queue worker's queue and outbound adapters): each
        # returns what is not ready, or None.
        self.checks: list[Callable[[], Awaitable[str | None]]] = []
        # A queue worker connects no platform intake: its checks say what it needs instead.
        self.needs_platforms = True
        self._server = HealthServer(
            host, port, readiness=self.problems, metrics=self.telemetry.exposition
        )
        self._address = f"{host}:{port}"

    @property
    def port(self) -> int:
        """The port listened on."""
        return self._server.port

    async def start(self) -> None:
        """Start listening.

        Raises:
            ConfigError: naming ``CHINWAG_HTTP_LISTEN`` when the address cannot be bound.
        """
        try:
            await self._server.start()
        except OSError as exc:
            raise ConfigError(
                "CHINWAG_HTTP_LISTEN",
                f"cannot listen on {self._address} ({exc.strerror or exc})",
                example="127.0.0.1:9464",
            ) from exc

    async def aclose(self) -> None:
        """Stop listening. Idempotent."""
        await self._server.aclose()

    async def problems(self) -> list[str]:
        """What is not ready, one short phrase each; empty when ready."""
        found: list[str] = []
        if self.store is None:
            found.append("database not opened yet")
        elif not await self.store.ping(DB_PING_TIMEOUT):
            found.append("database unreachable")
        llm = self.telemetry.llm_problem()
        if llm is not None:
            found.append(llm)
        if self.needs_platforms and not self.adapters:
            found.append("chat platforms not started yet")
        found.extend(
            f"{adapter.name} connection down" for adapter in self.adapters if not adapter.connected
        )
        for check in self.checks:
            problem = await check()
            if problem is not None:
                found.append(problem)
        return found
