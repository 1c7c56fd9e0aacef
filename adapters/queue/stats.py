"""What the turn queue holds: ``chinwag queue``, its ``retry``, and the ``/metrics`` gauges."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg
from procrastinate import App
from procrastinate.exceptions import ConnectorException

from adapters.queue.app import QUEUE_NAME
from core.errors import StoreError

_COUNTS: Final = """
SELECT
  count(*) FILTER (WHERE j.status = 'todo') AS depth,
  count(*) FILTER (WHERE j.status = 'doing') AS doing,
  count(*) FILTER (WHERE j.status = 'failed') AS failed,
  coalesce(sum(j.attempts), 0) AS retries,
  extract(epoch FROM now() - min(d.at) FILTER (WHERE j.status = 'todo')) AS oldest_age,
  count(*) FILTER (
    WHERE j.status = 'doing' AND (j.worker_id IS NULL OR w.last_heartbeat
      < now() - make_interval(secs => %(timeout)s))
  ) AS stalled,
  (SELECT count(*) FROM procrastinate_workers
    WHERE last_heartbeat >= now() - make_interval(secs => %(timeout)s)) AS workers
FROM procrastinate_jobs j
LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
LEFT JOIN LATERAL (
  SELECT min(e.at) AS at FROM procrastinate_events e
  WHERE e.job_id = j.id AND e.type = 'deferred'
) d ON true
WHERE j.queue_name = %(queue)s
"""
_FAILED: Final = """
SELECT j.id, j.attempts, j.args->>'kind' AS kind, j.lock,
       extract(epoch FROM now() - coalesce(f.failed_at, e.at)) AS age,
       coalesce(f.error, '(no error recorded)') AS error
FROM procrastinate_jobs j
LEFT JOIN queue_failures f ON f.job_id = j.id
LEFT JOIN LATERAL (
  SELECT max(at) AS at FROM procrastinate_events WHERE job_id = j.id
) e ON true
WHERE j.queue_name = %(queue)s AND j.status = 'failed'
ORDER BY j.id
LIMIT %(limit)s
"""
_FORGET_FAILURE: Final = "DELETE FROM queue_failures WHERE job_id = %(job_id)s"
_STATUS: Final = "SELECT status FROM procrastinate_jobs WHERE id = %(job_id)s"
_ERRORS = (psycopg.Error, ConnectorException, OSError)


@dataclass(frozen=True, slots=True)
class FailedTurn:
    """A turn whose job failed: ``chinwag queue retry ID`` queues it again."""

    id: int
    kind: str
    age_seconds: float
    attempts: int
    error: str
    platform: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The queue at one moment (seconds for ages; ``None`` when nothing waits)."""

    depth: int
    doing: int
    stalled: int
    failed: int
    retries: int
    workers: int
    oldest_age_seconds: float | None
    failed_turns: list[FailedTurn] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The figures as JSON-able data (``chinwag queue --json``)."""
        return {
            "depth": self.depth,
            "doing": self.doing,
            "stalled": self.stalled,
            "failed": self.failed,
            "retries": self.retries,
            "workers": self.workers,
            "oldest_age_seconds": self.oldest_age_seconds,
            "failed_turns": [
                {
                    "id": t.id,
                    "kind": t.kind,
                    "platform": t.platform,
                    "age_seconds": round(t.age_seconds, 1),
                    "attempts": t.attempts,
                    "error": t.error,
                }
                for t in self.failed_turns
            ],
        }


def _platform(lock: str | None) -> str:
    parts = (lock or "").removeprefix("chinwag:").split("\x1f")
    return parts[1] if len(parts) > 1 else "?"


async def queue_stats(app: App, *, heartbeat_timeout: float, failed_limit: int = 50) -> QueueStats:
    """The queue's figures, and up to ``failed_limit`` failed turns (oldest first).

    Raises:
        StoreError: the queue's database cannot be reached (or has no queue: run
            ``chinwag db upgrade``).
    """
    connector: Any = app.connector
    try:
        row = await connector.execute_query_one_async(
            _COUNTS, queue=QUEUE_NAME, timeout=heartbeat_timeout
        )
        rows = await connector.execute_query_all_async(
            _FAILED, queue=QUEUE_NAME, limit=failed_limit
        )
    except _ERRORS as exc:
        raise StoreError(f"cannot read the turn queue: {type(exc).__name__}: {exc}") from exc
    age = row["oldest_age"]
    return QueueStats(
        depth=int(row["depth"]),
        doing=int(row["doing"]),
        stalled=int(row["stalled"]),
        failed=int(row["failed"]),
        retries=int(row["retries"]),
        workers=int(row["workers"]),
        oldest_age_seconds=None if age is None else max(0.0, float(age)),
        failed_turns=[
            FailedTurn(
                id=int(r["id"]),
                kind=str(r["kind"]),
                age_seconds=max(0.0, float(r["age"] or 0.0)),
                attempts=int(r["attempts"]),
                error=str(r["error"]),
                platform=_platform(r["lock"]),
            )
            for r in rows
        ],
    )


async def retry_failed(app: App, job_id: int, *, now: datetime | None = None) -> None:
    """Queue the failed turn ``job_id`` again (behind nothing: it keeps its place).

    Raises:
        LookupError: there is no failed turn ``job_id`` (its status is in the message).
        StoreError: the queue's database cannot be reached.
    """
    connector: Any = app.connector
    try:
        rows = await connector.execute_query_all_async(_STATUS, job_id=job_id)
        if not rows:
            raise LookupError(f"there is no queued turn {job_id}")
        if rows[0]["status"] != "failed":
            raise LookupError(f"turn {job_id} is {rows[0]['status']}, not failed")
        await app.job_manager.retry_job_by_id_async(
            job_id=job_id, retry_at=now or datetime.now().astimezone()
        )
        await connector.execute_query_async(_FORGET_FAILURE, job_id=job_id)
    except _ERRORS as exc:
        raise StoreError(f"cannot retry turn {job_id}: {type(exc).__name__}: {exc}") from exc


__all__ = ["FailedTurn", "QueueStats", "queue_stats", "retry_failed"]
