"""Telegram chat adapter on python-telegram-bot 22.x.

``TelegramSettings`` imports no vendor library; the adapter classes load python-telegram-bot
on first access, so commands that only read settings (``chinwag --help``, ``chinwag db``)
start without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adapters.telegram.settings import TelegramSettings

if TYPE_CHECKING:
    from adapters.telegram.adapter import TelegramAdapter
    from adapters.telegram.channel import TelegramReplyChannel

__all__ = ["TelegramAdapter", "TelegramReplyChannel", "TelegramSettings"]

_LAZY = {
    "TelegramAdapter": "adapters.telegram.adapter",
    "TelegramReplyChannel": "adapters.telegram.channel",
}


def __getattr__(name: str) -> Any:
    """Import the adapter modules when one of their classes is first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
