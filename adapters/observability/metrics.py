"""``PrometheusTelemetry``: the ``core.telemetry.Telemetry`` port on ``prometheus-client``.

Every instance has its own ``CollectorRegistry`` (never the library's global one), so tests
and several engines in one process do not clash. The names are documented in the README
("Health checks and metrics").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

__all__ = ["LLM_FAILURE_WINDOW", "PrometheusTelemetry"]

LLM_FAILURE_WINDOW: Final = 300.0
"""Seconds a failed model call keeps readiness down unless a later call succeeds."""

_REPLY_BUCKETS: Final = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
_FIRST_TOKEN_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class PrometheusTelemetry:
    """Counts a running bot into its own registry; :meth:`exposition` renders it.

    Args:
        version: chinwag's version, exported as ``chinwag_build_info``.
        backend: the LLM backend's name (``openai``, ``local``), also in build info.
        clock: monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        *,
        version: str = "",
        backend: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._clock = clock
        self._llm_failed_at: float | None = None
        self._received = Counter(
            "chinwag_messages_received",
            "Messages and commands from users that reached the engine.",
            ["platform"],
            registry=reg,
        )
        self._replies = Counter(
            "chinwag_replies",
            "Replies stored, by final status (complete, cut, interrupted, failed).",
            ["platform", "status"],
            registry=reg,
        )
        self._reply_seconds = Histogram(
            "chinwag_reply_seconds",
            "Seconds from the start of a reply to its record.",
            buckets=_REPLY_BUCKETS,
            registry=reg,
        )
        self._first_token_seconds = Histogram(
            "chinwag_first_token_seconds",
            "Seconds from the start of a reply to the model's first text.",
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=reg,
        )
        self._tokens = Counter(
            "chinwag_llm_tokens",
            "Tokens the LLM backend spent (prompt, completion; cached: the prompt tokens it "
            "served from its cache, part of prompt).",
            ["direction"],
            registry=reg,
        )
        self._llm_calls = Counter(
            "chinwag_llm_calls",
            "Model calls, by whether they reached the backend (ok, unreachable).",
            ["result"],
            registry=reg,
        )
        self._errors = Counter(
            "chinwag_errors",
            "Errors told to a user or logged (backend, store, adapter, delivery, internal).",
            ["kind"],
            registry=reg,
        )
        self._flood_waits = Counter(
            "chinwag_flood_waits",
            "Times a platform asked us to slow down and we waited (Telegram 429).",
            ["platform"],
            registry=reg,
        )
        self._active = Gauge(
            "chinwag_active_replies", "Replies being written right now.", registry=reg
        )
        self._tool_calls = Counter(
            "chinwag_tool_calls",
            "Tool calls the model proposed, by tool and the gate's decision.",
            ["tool", "decision"],
            registry=reg,
        )
        self._kb_searches = Counter(
            "chinwag_kb_searches", "Knowledge-base searches for questions.", registry=reg
        )
        self._queue_depth = Gauge(
            "chinwag_queue_depth", "Turns waiting in the queue (ingress and workers).", registry=reg
        )
        self._queue_doing = Gauge(
            "chinwag_queue_doing", "Turns being answered by a worker now.", registry=reg
        )
        self._queue_oldest = Gauge(
            "chinwag_queue_oldest_seconds",
            "Age of the oldest turn waiting in the queue (0 when none waits).",
            registry=reg,
        )
        self._queue_stalled = Gauge(
            "chinwag_queue_stalled",
            "Turns held by a worker whose heartbeat stopped (about to be retried).",
            registry=reg,
        )
        self._queue_failed = Gauge(
            "chinwag_queue_failed", "Turns whose job failed (`chinwag queue`).", registry=reg
        )
        self._queue_retries = Counter(
            "chinwag_queue_retries",
            "Turns of dead workers this process put back in the queue.",
            registry=reg,
        )
        self._version = version
        self._build = Info("chinwag_build", "chinwag's version and LLM backend.", registry=reg)
        self.describe(backend=backend)

    def describe(self, *, backend: str) -> None:
        """Set the LLM backend's name in ``chinwag_build_info`` (known once it is built)."""
        self._build.info({"version": self._version, "backend": backend})

    # --- the Telemetry port -------------------------------------------------------------

    def message_received(self, platform: str) -> None:
        """Count a message from ``platform``."""
        self._received.labels(platform).inc()

    def reply_started(self) -> None:
        """One more reply in progress."""
        self._active.inc()

    def reply_ended(self) -> None:
        """One fewer reply in progress."""
        self._active.dec()

    def first_token(self, seconds: float) -> None:
        """Observe the time to the first text."""
        self._first_token_seconds.observe(max(seconds, 0.0))

    def reply_finished(self, platform: str, status: str, seconds: float) -> None:
        """Count the stored reply and observe its duration."""
        self._replies.labels(platform, status).inc()
        self._reply_seconds.observe(max(seconds, 0.0))

    def llm_tokens(self, prompt: int, completion: int, cached: int = 0) -> None:
        """Add the tokens of one model call."""
        if prompt > 0:
            self._tokens.labels("prompt").inc(prompt)
        if completion > 0:
            self._tokens.labels("completion").inc(completion)
        if cached > 0:
            self._tokens.labels("cached").inc(cached)

    def llm_result(self, reachable: bool) -> None:
        """Remember whether the backend answered (readiness), and count the call."""
        self._llm_calls.labels("ok" if reachable else "unreachable").inc()
        self._llm_failed_at = None if reachable else self._clock()

    def error(self, kind: str) -> None:
        """Count an error of ``kind``."""
        self._errors.labels(kind).inc()

    def flood_wait(self, platform: str) -> None:
        """Count a flood-control wait on ``platform``."""
        self._flood_waits.labels(platform).inc()

    def tool_call(self, tool: str, decision: str) -> None:
        """Count a tool call and the gate's decision."""
        self._tool_calls.labels(tool, decision).inc()

    def kb_search(self) -> None:
        """Count a knowledge-base search."""
        self._kb_searches.inc()

    # --- readiness and exposition --------------------------------------------------------

    def queue_figures(
        self, *, depth: int, doing: int, stalled: int, failed: int, oldest_seconds: float | None
    ) -> None:
        """Set the turn queue's gauges (read from the queue's database every few seconds)."""
        self._queue_depth.set(depth)
        self._queue_doing.set(doing)
        self._queue_stalled.set(stalled)
        self._queue_failed.set(failed)
        self._queue_oldest.set(oldest_seconds or 0.0)

    def queue_retried(self, count: int) -> None:
        """This process put ``count`` turns of dead workers back in the queue."""
        self._queue_retries.inc(count)

    def llm_problem(self) -> str | None:
        """``"LLM backend not reachable recently"`` while the last model call failed.

        A failure counts for :data:`LLM_FAILURE_WINDOW` seconds unless a call succeeds
        first; with no call since, the backend is assumed back (nothing says otherwise).
        """
        failed = self._llm_failed_at
        if failed is None or self._clock() - failed > LLM_FAILURE_WINDOW:
            return None
        return "LLM backend not reachable recently"

    def exposition(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
