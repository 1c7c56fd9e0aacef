"""The telemetry port: what the engine and the adapters report for metrics and readiness.

The engine and the chat adapters call a :class:`Telemetry` as things happen (a message
arrives, a reply ends, the model answers or cannot be reached, Telegram asks to wait). The
composition root passes the Prometheus implementation
(``adapters.observability.PrometheusTelemetry``) when ``CHINWAG_HTTP_LISTEN`` is set, and
:data:`NO_TELEMETRY` otherwise, so nothing changes (and nothing is counted) when the
listener is off. Every method is cheap, synchronous and never raises.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from core.errors import AdapterError, BackendError, ConfigError, StoreError

__all__ = ["NO_TELEMETRY", "NullTelemetry", "Telemetry", "error_kind"]


@runtime_checkable
class Telemetry(Protocol):
    """Counts what a running bot does; implemented in ``adapters/`` (Prometheus).

    ``platform`` is the adapter's name (``telegram``, ``discord``, ``console``); ``status``
    a stored reply status (``complete``, ``cut``, ``interrupted``, ``failed``).
    """

    def message_received(self, platform: str) -> None:
        """A message (or command) from a user reached the engine."""
        ...

    def reply_started(self) -> None:
        """A reply run began (one more active reply)."""
        ...

    def reply_ended(self) -> None:
        """A reply run ended, however it ended (one fewer active reply)."""
        ...

    def first_token(self, seconds: float) -> None:
        """The reply's first text arrived ``seconds`` after it began."""
        ...

    def reply_finished(self, platform: str, status: str, seconds: float) -> None:
        """A reply was stored with its final ``status``, ``seconds`` after its run began."""
        ...

    def llm_tokens(self, prompt: int, completion: int, cached: int = 0) -> None:
        """The backend spent ``prompt`` and ``completion`` tokens on one model call.

        ``cached``: prompt tokens the backend served from its cache (part of ``prompt``).
        """
        ...

    def llm_result(self, reachable: bool) -> None:
        """A model call reached the backend (``True``) or could not reach it (``False``)."""
        ...

    def error(self, kind: str) -> None:
        """An error was told to a user or logged (``kind`` from :func:`error_kind`)."""
        ...

    def flood_wait(self, platform: str) -> None:
        """The platform asked to slow down (Telegram 429, Discord rate limit) and we wait."""
        ...

    def tool_call(self, tool: str, decision: str) -> None:
        """The gate decided about a tool call (``allowed``, ``denied``, ``confirmed``, ...)."""
        ...

    def kb_search(self) -> None:
        """The knowledge base was searched for a question."""
        ...


class NullTelemetry:
    """Counts nothing: the default while ``CHINWAG_HTTP_LISTEN`` is unset."""

    def message_received(self, platform: str) -> None:
        """Ignore it."""

    def reply_started(self) -> None:
        """Ignore it."""

    def reply_ended(self) -> None:
        """Ignore it."""

    def first_token(self, seconds: float) -> None:
        """Ignore it."""

    def reply_finished(self, platform: str, status: str, seconds: float) -> None:
        """Ignore it."""

    def llm_tokens(self, prompt: int, completion: int, cached: int = 0) -> None:
        """Ignore it."""

    def llm_result(self, reachable: bool) -> None:
        """Ignore it."""

    def error(self, kind: str) -> None:
        """Ignore it."""

    def flood_wait(self, platform: str) -> None:
        """Ignore it."""

    def tool_call(self, tool: str, decision: str) -> None:
        """Ignore it."""

    def kb_search(self) -> None:
        """Ignore it."""


NO_TELEMETRY: Final[Telemetry] = NullTelemetry()


def error_kind(exc: BaseException) -> str:
    """A small, fixed label for ``exc``: ``backend``, ``store``, ``adapter``, ``config``, ...

    Metrics labels must stay few, so the exception's class never becomes one.
    """
    if isinstance(exc, BackendError):
        return "backend"
    if isinstance(exc, StoreError):
        return "store"
    if isinstance(exc, AdapterError):
        return "adapter"
    if isinstance(exc, ConfigError):
        return "config"
    return "internal"
