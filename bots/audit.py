"""``chinwag audit``: the tool calls bots proposed, what was decided, and how they ran."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core.types import AuditEntry

FORMATS = ("text", "json")

_RELATIVE = re.compile(r"^(\d+)\s*(s|m|min|h|d|w)$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or ``30m``/``1h``/``2d``.

    Raises:
        argparse.ArgumentTypeError: neither form.
    """
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        seconds = int(relative.group(1)) * _UNITS[relative.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: use ISO (2025-05-01, 2025-05-01T08:00) or 30m, 1h, 2d, 1w"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_user(value: str) -> tuple[str, str]:
    """``--user PLATFORM:ID`` as ``(platform, id)``.

    Raises:
        argparse.ArgumentTypeError: not of that form.
    """
    platform, sep, ident = value.partition(":")
    if not sep or not platform.strip() or not ident.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not of the form platform:id")
    return platform.strip(), ident.strip()


def positive(value: str) -> int:
    """``--limit``: a whole number from 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1")
    return number


def who(entry: AuditEntry) -> str:
    """The user as ``platform:id``, or their pseudonym once ``/forget`` cleared the id."""
    if entry.user_id:
        return f"{entry.platform}:{entry.user_id}"
    return f"~{entry.user_pseudonym[:12]}" if entry.user_pseudonym else "-"


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def text_lines(entries: Sequence[AuditEntry]) -> list[str]:
    """One aligned line per row, under a header.

    The columns: time, bot, platform, chat, user, tool, decision, result, duration.
    """
    header = ("TIME (UTC)", "BOT", "PLATFORM", "CHAT", "USER", "TOOL", "DECISION", "RESULT", "TOOK")
    rows = [header] + [
        (
            e.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            e.bot,
            e.platform,
            e.chat_id,
            who(e),
            e.tool,
            str(e.decision),
            e.result_status or "-",
            _duration(e.duration_ms),
        )
        for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def as_json(entries: Sequence[AuditEntry]) -> str:
    """The rows as a JSON array (arguments parsed back to objects when they are JSON)."""
    return json.dumps([_record(e) for e in entries], ensure_ascii=False, indent=2)


def _record(entry: AuditEntry) -> dict[str, Any]:
    try:
        arguments: Any = json.loads(entry.arguments)
    except ValueError:
        arguments = entry.arguments
    return {
        "id": entry.id,
        "at": entry.at.astimezone(UTC).isoformat(),
        "bot": entry.bot,
        "platform": entry.platform,
        "chat_id": entry.chat_id,
        "user_id": entry.user_id,
        "user_pseudonym": entry.user_pseudonym,
        "tool": entry.tool,
        "source": entry.source,
        "risk": entry.risk,
        "arguments": arguments,
        "decision": str(entry.decision),
        "result_status": entry.result_status,
        "duration_ms": entry.duration_ms,
    }
