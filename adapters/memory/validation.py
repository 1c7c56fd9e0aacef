"""Argument rules every ``MemoryStore`` implementation applies, and the usage pseudonym.

Vendor-free, so that :class:`adapters.memory.in_memory.InMemoryStore` and
:class:`adapters.memory.store.SqlMemoryStore` refuse the same arguments the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from core.text import safe_text
from core.types import NewMessage, UsageRecord


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
