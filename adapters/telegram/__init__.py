"""Telegram chat adapter on python-telegram-bot 22.x.

``TelegramSettings`` imports no vendor library; the adapter classes load python-telegram-bot
on first access, so commands that only read settings (``chinwag --help``, ``chinwag db``)
start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.telegram.settings import TelegramSettings

if TYPE_CHECKING:
    from adapters.telegram.adapter import TelegramAdapter, TelegramReplyChannel

__all__ = ["TelegramAdapter", "TelegramReplyChannel", "TelegramSettings"]

_LAZY = frozenset({"TelegramAdapter", "TelegramReplyChannel"})


def __getattr__(name: str) -> Any:
    """Import the adapter module when one of its classes is first asked for (PEP 562)."""
    if name in _LAZY:
        from adapters.telegram import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
