"""The command line of many processes, one bot: ``chinwag ingress``, ``worker`` and ``queue``.

:func:`add_scale_parsers` adds the three subcommands and their help to ``chinwag``'s parser
(:mod:`bots.cli`); what they run lives in :mod:`bots.scale`, imported only when one runs.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_scale_parsers"]


def add_scale_parsers(sub: Any, with_bot: argparse.ArgumentParser) -> None:
    """Add ``ingress``, ``worker`` and ``queue`` (with ``queue retry ID``) to ``sub``."""
    needs = "Needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL)."
    sub.add_parser(
        "ingress",
        parents=[with_bot],
        help="take the platforms' events and queue them for workers",
        description=(
            "Connect the configured chat platforms (Telegram polling or webhook, Discord "
            "gateway and slash commands) and queue every message and button press as a turn "
            f"in the PostgreSQL queue; `chinwag worker` processes answer them. {needs} Same "
            "as `chinwag run` with CHINWAG_MODE=ingress."
        ),
    )
    sub.add_parser(
        "worker",
        parents=[with_bot],
        help="answer queued turns (run as many as you like)",
        description=(
            "Take turns from the PostgreSQL queue, WORKER_CONCURRENCY at once, and answer "
            "them through the platforms' REST APIs; a worker silent for "
            "WORKER_HEARTBEAT_TIMEOUT_SECONDS counts as dead and its turns are answered by "
            f"another. {needs} Same as `chinwag run` with CHINWAG_MODE=worker."
        ),
    )
    queue = sub.add_parser(
        "queue",
        help="show the turn queue; retry a failed turn",
        description=(
            "Show the turn queue of `chinwag ingress`/`chinwag worker`: turns waiting (and "
            "the oldest one's age), being answered, stalled (their worker died), failed (id, "
            "age, error). `chinwag queue retry ID` queues a failed turn again."
        ),
    )
    queue.add_argument("--json", action="store_true", help="print the figures as JSON")
    queue_sub = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    retry = queue_sub.add_parser("retry", help="queue a failed turn again")
    retry.add_argument("job_id", type=int, metavar="ID", help="the failed turn's id")
