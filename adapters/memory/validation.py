"""Argument rules every ``MemoryStore`` implementation applies, and the usage pseudonym.

Vendor-free, so that :class:`adapters.memory.in_memory.InMemoryStore` and
:class:`adapters.memory.store.SqlMemoryStore` refuse the same arguments the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from core.media import MediaBlob, content_hash
from core.text import safe_text
from core.types import AuditEntry, NewMessage, PendingToolCall, UsageRecord

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_extra(extra: Any) -> None:
    """Raise ``ValueError`` unless ``extra`` (a ``NewMessage.extra``) is JSON-serialisable."""
    if extra is None:
        return
    try:
        json.dumps(dict(extra))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"NewMessage.extra must be JSON-serialisable: {exc}") from exc


def storable(messages: Iterable[NewMessage]) -> tuple[NewMessage, ...]:
    """``messages`` with their content made storable (:func:`core.text.safe_text`).

    The store boundary for text that did not come through ``IncomingMessage`` (a model's
    reply): every store keeps a NUL byte or lone surrogate the same way, as U+FFFD.
    """
    return tuple(
        m if safe_text(m.content) is m.content else replace(m, content=safe_text(m.content))
        for m in messages
    )


def check_hashes(hashes: Sequence[str]) -> None:
    """Raise ``ValueError`` unless each of ``hashes`` (``NewMessage.media``) is a hex SHA-256."""
    for value in hashes:
        if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
            raise ValueError(f"NewMessage.media holds {value!r}, not a hex SHA-256")


def check_media(blob: MediaBlob) -> None:
    """Raise ``ValueError`` unless ``blob.sha256`` is the SHA-256 of its bytes (the key)."""
    if content_hash(blob.data) != blob.sha256:
        raise ValueError(f"{blob!r}: sha256 is not the SHA-256 of its data")


def check_usage(usage: UsageRecord) -> None:
    """Raise ``ValueError`` if a count of ``usage`` is negative."""
    if min(usage.prompt_tokens, usage.completion_tokens, usage.messages) < 0:
        raise ValueError("usage counts cannot be negative")


def usage_pseudonym(secret: bytes, bot: str, platform: str, user_id: str) -> str:
    """The key of a user's usage counters: HMAC-SHA256 of (bot, platform, user id).

    The counters never hold the user id itself, and survive ``forget_user``.
    """
    message = json.dumps([bot, platform, user_id], ensure_ascii=False).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def audit_pseudonyms(secret: bytes, places: Iterable[tuple[str, str]], user_id: str) -> list[str]:
    """The user's pseudonym in each (bot, platform) of ``places`` (the usage counters' own)."""
    return [usage_pseudonym(secret, bot, platform, user_id) for bot, platform in places]


def _json_copy(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable: {exc}") from exc


def check_tool_calls(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A JSON copy of a round's tool calls; ``ValueError`` unless each has id, name, arguments."""
    copied: list[dict[str, Any]] = []
    for call in calls:
        missing = [k for k in ("id", "name", "arguments") if k not in call]
        if missing:
            raise ValueError(f"a tool call lacks {', '.join(missing)}")
        copied.append(_json_copy(dict(call), "a tool call"))
    return copied


def check_tool_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON copy of one call's result; ``ValueError`` if it cannot be stored."""
    copied: dict[str, Any] = _json_copy(dict(result), "a tool result")
    return copied


def check_aware(value: datetime, name: str) -> None:
    """Raise ``ValueError`` if the timestamp ``value`` (called ``name``) is naive."""
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")


def check_pending(call: PendingToolCall) -> None:
    """Raise ``ValueError`` if a pending call's timestamps are naive."""
    check_aware(call.created_at, "PendingToolCall.created_at")
    check_aware(call.expires_at, "PendingToolCall.expires_at")


def check_audit(entry: AuditEntry) -> None:
    """Raise ``ValueError`` if an audit entry's time is naive."""
    check_aware(entry.at, "AuditEntry.at")


def is_expired(expires_at: datetime, now: datetime) -> bool:
    """Whether a confirmation asked until ``expires_at`` is too late at ``now``.

    Raises:
        ValueError: ``now`` is naive.
    """
    check_aware(now, "now")
    return now >= expires_at
