"""``QueueWorker``: a worker process's loop over the turn queue.

A procrastinate ``Worker`` takes turns (``WORKER_CONCURRENCY`` at once, one per
conversation lock) and hands each to the bot's handler; its heartbeat in
``procrastinate_workers`` goes every third of ``WORKER_HEARTBEAT_TIMEOUT_SECONDS``. Beside it,
every worker runs :meth:`QueueWorker.retry_stalled` about once a second: the turns of a
worker silent for longer than the timeout (SIGKILLed, its machine gone) go back to the queue
at their place (their job id keeps them first in their conversation), and another worker
takes them; several workers doing it at once is harmless (the database retries each turn
once, the others' attempts are refused and ignored).

At shutdown (SIGTERM, a deploy) the worker takes no new turn and gives those in progress
``grace`` seconds; one still running then is cut off and queued again at its place, for
another worker to finish (the reply already on screen is completed in place). A turn whose
handler raised is kept as failed (with its error in ``queue_failures``) for
``chinwag queue`` and ``chinwag queue retry``; turns that succeeded are deleted. If the
queue's database goes away, the procrastinate worker stops; this loop says so in one line and
starts a new one every few seconds until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import psycopg
from procrastinate import App, BaseRetryStrategy, JobContext, RetryDecision
from procrastinate.exceptions import ConnectorException, JobAborted
from procrastinate.jobs import Job
from procrastinate.worker import Worker

from adapters.queue.app import QUEUE_NAME, TURN_TASK
from core.queue import JobKind

_log = logging.getLogger(__name__)

TurnHandler = Callable[[JobKind, Mapping[str, Any]], Awaitable[None]]
"""Answers one queued turn (``kind``, ``payload``); raising marks the job failed."""

_RESTART_S: Final = 3.0
_PRUNE_EVERY_S: Final = 600.0
INBOUND_KEEP_HOURS: Final = 48
"""How long ingress remembers an event it queued (platforms redeliver within a day)."""
_DB_ERRORS = (psycopg.Error, ConnectorException, OSError)

_FAILED: Final = """
INSERT INTO queue_failures (job_id, error) VALUES (%(job_id)s, %(error)s)
ON CONFLICT (job_id) DO UPDATE SET error = EXCLUDED.error, failed_at = now()
"""
_PRUNE: Final = """
DELETE FROM queue_inbound WHERE received_at < now() - make_interval(hours => %(hours)s)
"""


class _RetryAtShutdown(BaseRetryStrategy):
    """Queue again a turn cut off by this worker's shutdown (a deploy); keep others failed."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, (asyncio.CancelledError, JobAborted)):
            return RetryDecision(retry_in={"seconds": 0})
        return None


def _worker_name() -> str:
    return f"chinwag-{socket.gethostname()}-{os.getpid()}"


class QueueWorker:
    """Takes queued turns and answers them through ``handler``.

    Args:
        app: the procrastinate app (opened and closed by the caller).
        handler: answers one turn; it returns once the turn is answered and recorded.
        concurrency: turns answered at once (``WORKER_CONCURRENCY``).
        heartbeat_timeout: seconds of silence after which a worker counts as dead and its
            turns are retried elsewhere (``WORKER_HEARTBEAT_TIMEOUT_SECONDS``).
        grace: at shutdown, how long turns in progress may take to finish.
        on_retry: called with the number of stalled turns this worker put back in the queue.
    """

    def __init__(
        self,
        app: App,
        handler: TurnHandler,
        *,
        concurrency: int,
        heartbeat_timeout: float,
        grace: float = 10.0,
        on_retry: Callable[[int], None] | None = None,
    ) -> None:
        self._app = app
        self._handler = handler
        self._concurrency = concurrency
        self._timeout = heartbeat_timeout
        self._grace = grace
        self._on_retry = on_retry or (lambda _n: None)
        self._worker: Worker | None = None
        self._stopping = asyncio.Event()
        self._ready = False
        if TURN_TASK not in app.tasks:
            app.task(name=TURN_TASK, queue=QUEUE_NAME, pass_context=True, retry=_RetryAtShutdown())(
                self._turn
            )

    @property
    def ready(self) -> bool:
        """Whether the worker is registered and its database answered lately (``/readyz``)."""
        return self._ready

    async def _turn(
        self, context: JobContext, kind: str, bot: str, payload: dict[str, Any]
    ) -> None:
        job = context.job
        if job.attempts:
            _log.info("answering turn %s again (attempt %d)", job.id, job.attempts + 1)
        try:
            await self._handler(JobKind(kind), payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("queued turn %s of bot %s failed: %s", job.id, bot, type(exc).__name__)
            with contextlib.suppress(*_DB_ERRORS):
                await self._app.connector.execute_query_async(
                    _FAILED, job_id=job.id, error=f"{type(exc).__name__}: {exc}"[:1000]
                )
            raise

    async def run(self) -> None:
        """Answer turns until :meth:`stop` (or cancellation); survive the database going away."""
        side = asyncio.create_task(self._maintain(), name="chinwag-queue-maintenance")
        try:
            while not self._stopping.is_set():
                self._worker = Worker(
                    self._app,
                    queues=[QUEUE_NAME],
                    name=_worker_name(),
                    concurrency=self._concurrency,
                    delete_jobs="successful",
                    install_signal_handlers=False,
                    update_heartbeat_interval=max(0.5, self._timeout / 3),
                    stalled_worker_timeout=self._timeout,
                    shutdown_graceful_timeout=self._grace,
                    fetch_job_polling_interval=1.0,
                )
                self._ready = True
                try:
                    await self._worker.run()  # type: ignore[no-untyped-call]
                except _DB_ERRORS as exc:
                    _log.error(
                        "the turn queue's database failed (%s: %s); trying again in %.0f s",
                        type(exc).__name__,
                        exc,
                        _RESTART_S,
                    )
                self._ready = False
                if not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), _RESTART_S)
        finally:
            self._ready = False
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await side

    def stop(self) -> None:
        """Take no new turns; :meth:`run` returns once the turns in progress finished."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call]

    async def retry_stalled(self) -> int:
        """Put back in the queue the turns of workers silent past the timeout; how many."""
        jobs = await self._app.job_manager.get_stalled_jobs(
            queue=QUEUE_NAME, task_name=TURN_TASK, seconds_since_heartbeat=self._timeout
        )
        retried = 0
        for job in jobs:
            try:
                await self._app.job_manager.retry_job(job)
            except _DB_ERRORS:
                continue  # another worker put it back first
            retried += 1
            _log.warning(
                "turn %s was held by a worker silent for over %.0f s: queued again",
                job.id,
                self._timeout,
            )
        if retried:
            self._on_retry(retried)
        return retried

    async def prune(self) -> None:
        """Forget the events ingress queued more than :data:`INBOUND_KEEP_HOURS` ago."""
        await self._app.connector.execute_query_async(_PRUNE, hours=INBOUND_KEEP_HOURS)

    async def _maintain(self) -> None:
        since_prune = _PRUNE_EVERY_S
        failing = False
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.retry_stalled()
                since_prune += 1.0
                if since_prune >= _PRUNE_EVERY_S:
                    since_prune = 0.0
                    await self.prune()
                failing = False
            except _DB_ERRORS as exc:
                if not failing:
                    _log.error(
                        "cannot check the turn queue for stalled turns: %s: %s",
                        type(exc).__name__,
                        exc,
                    )
                failing = True


__all__ = ["INBOUND_KEEP_HOURS", "QueueWorker", "TurnHandler"]
