"""``ProcrastinateTurnQueue``: ingress's ``core.queue.TurnQueue`` on procrastinate.

One job per turn, task :data:`~adapters.queue.app.TURN_TASK`, locked by the conversation
(``core.queue.conversation_lock``): procrastinate runs the jobs sharing a lock one at a time,
oldest first (``procrastinate_fetch_job_v2`` skips a lock while one of its jobs is doing),
so a conversation's turns are answered in order on whichever worker takes them.

A message with a platform id is recorded in ``queue_inbound`` in the same transaction as
its job: a redelivered event finds its row and makes no second job, and no crash can leave
a recorded event without its job (or a job without its record).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import psycopg
from procrastinate import App
from procrastinate.exceptions import ConnectorException

from adapters.queue.app import QUEUE_NAME, TURN_TASK
from core.errors import StoreError
from core.queue import JobKind, conversation_lock
from core.types import ConversationKey

_log = logging.getLogger(__name__)

_RECORD: Final = """
INSERT INTO queue_inbound (bot, platform, chat_id, message_id, job_id)
VALUES (%(bot)s, %(platform)s, %(chat_id)s, %(message_id)s, 0)
ON CONFLICT DO NOTHING
"""
_LINK: Final = """
UPDATE queue_inbound SET job_id = %(job_id)s
WHERE bot = %(bot)s AND platform = %(platform)s AND chat_id = %(chat_id)s
  AND message_id = %(message_id)s
"""


def job_args(kind: JobKind, key: ConversationKey, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of a turn's job (what the worker's task receives)."""
    return {"kind": kind.value, "bot": key.bot, "payload": dict(payload)}


class ProcrastinateTurnQueue:
    """Turns into the bot's procrastinate queue; implements ``core.queue.TurnQueue``.

    Args:
        app: the procrastinate app (opened and closed by the caller).
    """

    def __init__(self, app: App) -> None:
        self._app = app

    async def enqueue(
        self, kind: JobKind, key: ConversationKey, payload: Mapping[str, Any]
    ) -> bool:
        """Queue one turn behind the earlier ones of ``key``'s conversation (see the port).

        Raises:
            StoreError: the queue's database cannot be reached or refused the job.
        """
        message_id = payload.get("message_id") if kind is JobKind.MESSAGE else None
        record = {
            "bot": key.bot,
            "platform": key.platform,
            "chat_id": str(payload.get("chat_id", key.chat_id)),
            "message_id": str(message_id),
        }
        try:
            pool = self._app.connector.pool  # type: ignore[attr-defined]
            async with pool.connection() as connection, connection.transaction():
                if message_id is not None:
                    cursor = await connection.execute(_RECORD, record)
                    if cursor.rowcount == 0:
                        _log.info(
                            "not queueing %s message %s again: it was queued before",
                            key.platform,
                            message_id,
                        )
                        return False
                deferrer = self._app.configure_task(
                    TURN_TASK,
                    lock=conversation_lock(key),
                    queue=QUEUE_NAME,
                    connection=connection,
                )
                job_id = await deferrer.defer_async(**job_args(kind, key, payload))
                if message_id is not None:
                    await connection.execute(_LINK, {**record, "job_id": job_id})
        except (psycopg.Error, ConnectorException, OSError) as exc:
            raise StoreError(
                f"could not queue a {key.platform} turn: {type(exc).__name__}: {exc}"
            ) from exc
        return True


__all__ = ["ProcrastinateTurnQueue", "job_args"]
