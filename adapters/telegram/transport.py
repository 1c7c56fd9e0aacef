"""What every Telegram reply channel shares: the bot, per-chat pacing and flood gates.

Pacing: edits in a chat are at most one per ``TELEGRAM_EDIT_INTERVAL`` seconds (groups:
``TELEGRAM_GROUP_EDIT_INTERVAL``). A 429 from Telegram closes the *flood gate*: no call is
made before ``retry_after`` has run out; intermediate edits are skipped, final ones wait and
retry, so the complete text always arrives. The gate closes for the whole bot, not only the
chat that got the 429: Telegram does not say whether a 429 is the chat's limit or its
bot-wide one (~30 messages a second across chats), and calls to other chats inside a
bot-wide wait only prolong it. python-telegram-bot's ``AIORateLimiter`` makes the same
choice; the edit intervals keep a single chat's 429s rare.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final, TypeVar

from telegram.error import BadRequest, RetryAfter
from telegram.ext import Application
from telegram.warnings import PTBDeprecationWarning

from adapters.live import LivePacing
from adapters.telegram.settings import TelegramSettings

__all__ = [
    "AnyApplication",
    "Throttled",
    "Transport",
    "is_gone",
    "is_not_modified",
    "is_parse_error",
]

_log = logging.getLogger(__name__)

_FLOOD_MARGIN: Final = 0.05
_TYPING_REPEAT: Final = 4.5  # Telegram shows "typing" for 5 seconds

_T = TypeVar("_T")
AnyApplication = Application[Any, Any, Any, Any, Any, Any]


def _retry_seconds(exc: RetryAfter) -> float:
    # PTB 22 warns when reading retry_after as int; accept both shapes quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def is_parse_error(exc: BadRequest) -> bool:
    """Telegram refused the HTML of a message."""
    return "can't parse entities" in exc.message.lower()


def is_not_modified(exc: BadRequest) -> bool:
    """An edit to the text the message already holds."""
    return "message is not modified" in exc.message.lower()


def is_gone(exc: BadRequest) -> bool:
    """The message to edit was deleted (or can no longer be edited)."""
    text = exc.message.lower()
    return "message to edit not found" in text or "message can't be edited" in text


class Throttled(Exception):
    """A call skipped because its chat's flood gate is closed (``retry_after`` pending)."""


class Transport:
    """What reply channels share: the bot, per-chat pacing and the flood gates."""

    def __init__(self, app: AnyApplication, settings: TelegramSettings) -> None:
        self.app = app
        self.settings = settings
        self._flood_until: dict[int, float] = {}
        self._bot_flood_until = 0.0  # a 429 anywhere pauses every chat until then
        self._last_edit: dict[int, float] = {}
        self.confirmations: dict[str, str] = {}  # long action ids by short token
        self.askers: dict[tuple[int, int], str] = {}  # (chat, message) -> asking user id
        self.pacing = LivePacing(
            first_flush_delay=settings.first_flush_delay,
            typing_delay=settings.typing_delay,
            typing_repeat=_TYPING_REPEAT,
        )

    @staticmethod
    def now() -> float:
        """The loop's clock."""
        return asyncio.get_running_loop().time()

    def gate(self, chat_id: int) -> float:
        """The loop time before which nothing may be sent to ``chat_id``."""
        return max(self._flood_until.get(chat_id, 0.0), self._bot_flood_until)

    def edit_slot(self, chat_id: int, interval: float) -> float:
        """The earliest loop time the next edit in ``chat_id`` may be made."""
        return max(self._last_edit.get(chat_id, float("-inf")) + interval, self.gate(chat_id))

    def note_edit(self, chat_id: int) -> None:
        """Record a send or edit in ``chat_id`` now (the next edit waits its interval)."""
        self._last_edit[chat_id] = self.now()

    async def call(
        self, chat_id: int, make: Callable[[], Awaitable[_T]], *, wait_flood: bool = True
    ) -> _T:
        """Run one Bot API call for ``chat_id``, honouring its flood gate.

        With ``wait_flood`` a 429 closes the gate for ``retry_after`` and the call is retried
        after it; without, the ``RetryAfter`` propagates (after closing the gate).
        """
        while True:
            # Re-read after each sleep: a 429 elsewhere may have pushed the gate further.
            while (wait := self.gate(chat_id) - self.now()) > 0:
                if not wait_flood:
                    raise Throttled(wait)
                await asyncio.sleep(wait)
            try:
                return await make()
            except RetryAfter as exc:
                seconds = _retry_seconds(exc)
                until = self.now() + seconds + _FLOOD_MARGIN
                self._flood_until[chat_id] = max(self.gate(chat_id), until)
                self._bot_flood_until = max(self._bot_flood_until, until)
                _log.info("flood control in chat %s: waiting %.1fs", chat_id, seconds)
                if not wait_flood:
                    raise
