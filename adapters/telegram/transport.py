"""What every Telegram reply channel shares: the bot, per-chat pacing and flood gates.

Pacing: edits in a chat are at most one per ``TELEGRAM_EDIT_INTERVAL`` seconds (groups:
``TELEGRAM_GROUP_EDIT_INTERVAL``). A 429 from Telegram closes the *flood gate*: no call is
made before ``retry_after`` has run out; intermediate edits are skipped, final ones wait and
retry, so the complete text always arrives. The gate closes for the whole bot, not only the
chat that got the 429: Telegram does not say whether a 429 is the chat's limit or its
bot-wide one (~30 messages a second across chats), and calls to other chats inside a
bot-wide wait only prolong it. python-telegram-bot's ``AIORateLimiter`` makes the same
choice; the edit intervals keep a single chat's 429s rare.

Timeouts: a call that timed out on our side may still have been applied by Telegram. An edit
is idempotent (editing to the same text again answers "message is not modified"), so a final
one is simply made again; an intermediate one is left to the next flush. A send is not: one
that timed out is first looked for (:meth:`Transport.send`) and only sent again if absent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final, TypeVar

from telegram import InlineKeyboardMarkup, LinkPreviewOptions, Message
from telegram.error import BadRequest, RetryAfter, TelegramError, TimedOut
from telegram.ext import Application
from telegram.warnings import PTBDeprecationWarning

from adapters.live import LivePacing
from adapters.telegram.settings import TelegramSettings
from core.limits import SharedLimits
from core.telemetry import NO_TELEMETRY, Telemetry

__all__ = [
    "AnyApplication",
    "Throttled",
    "Transport",
    "is_gone",
    "is_not_modified",
    "is_parse_error",
    "retry_seconds",
]

_log = logging.getLogger(__name__)

_FLOOD_MARGIN: Final = 0.05
_BOT_GATE: Final = "telegram:bot"
_PROBES: Final = 3  # ids after the last one seen where a timed-out send's message may be
_TYPING_REPEAT: Final = 4.5  # Telegram shows "typing" for 5 seconds

_T = TypeVar("_T")
AnyApplication = Application[Any, Any, Any, Any, Any, Any]


def retry_seconds(exc: RetryAfter) -> float:
    """The seconds a 429 asks to wait (PTB 22 gives an int or a ``timedelta``)."""
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


def _chat_gate(chat_id: int) -> str:
    return f"telegram:chat:{chat_id}"


class Transport:
    """What reply channels share: the bot, per-chat pacing and the flood gates.

    Args:
        app: the PTB application whose bot makes the calls.
        settings: the adapter's settings (edit intervals, pacing delays).
        telemetry: where flood waits are counted.
        limits: flood gates and pacing shared with the bot's other processes; ``None``
            keeps them in this process only.
    """

    def __init__(
        self,
        app: AnyApplication,
        settings: TelegramSettings,
        telemetry: Telemetry = NO_TELEMETRY,
        limits: SharedLimits | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.telemetry = telemetry
        self.settings = settings
        self._flood_until: dict[int, float] = {}
        self._bot_flood_until = 0.0  # a 429 anywhere pauses every chat until then
        self._seen: dict[int, int] = {}  # the highest message id seen in each chat
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

    def saw(self, chat_id: int, message_id: int) -> None:
        """Note a message id in ``chat_id`` (a lost send's message would come after it)."""
        if message_id > self._seen.get(chat_id, 0):
            self._seen[chat_id] = message_id

    async def send(
        self,
        chat_id: int,
        make: Callable[[], Awaitable[Message]],
        *,
        text: str,
        parse_mode: str | None,
        markup: InlineKeyboardMarkup | None = None,
        pace: float | None = None,
    ) -> int:
        """Send a message with ``make`` (its ``text`` and ``parse_mode``); return its id.

        A send that timed out may have been applied: before sending again, the few ids after
        the last one seen in the chat are probed with an edit to the same text, and
        "message is not modified" proves the message is there. So a slow Telegram never
        makes a reply show twice. Raises what the second send raises.
        """
        for attempt in (1, 2):
            try:
                message = await self.call(chat_id, make, pace=pace, send=True)
            except TimedOut:
                found = await self._find_sent(chat_id, text, parse_mode, markup)
                if found is not None:
                    _log.info("a send that timed out in chat %s had arrived", chat_id)
                    return found
                if attempt == 2:
                    raise
                continue
            self.saw(chat_id, message.message_id)
            return message.message_id
        raise AssertionError("unreachable")

    async def _find_sent(
        self,
        chat_id: int,
        text: str,
        parse_mode: str | None,
        markup: InlineKeyboardMarkup | None,
    ) -> int | None:
        last = self._seen.get(chat_id)
        if last is None:
            return None
        bot = self.app.bot
        for message_id in range(last + 1, last + 1 + _PROBES):
            try:
                await self.call(
                    chat_id,
                    functools.partial(
                        bot.edit_message_text,
                        text,
                        chat_id=chat_id,
                        message_id=message_id,
                        parse_mode=parse_mode,
                        reply_markup=markup,
                        link_preview_options=LinkPreviewOptions(is_disabled=True),
                    ),
                )
            except BadRequest as exc:
                if not is_not_modified(exc):
                    continue  # no message there, or someone else's
            except TelegramError:
                return None
            # Unchanged, or an unseen message of ours now showing this text: either way, ours.
            self.saw(chat_id, message_id)
            return message_id
        return None

    async def call(
        self,
        chat_id: int,
        make: Callable[[], Awaitable[_T]],
        *,
        wait_flood: bool = True,
        repeat_on_timeout: int = 0,
        pace: float | None = None,
        send: bool = False,
    ) -> _T:
        """Run one Bot API call for ``chat_id``, honouring its flood gate.

        With ``wait_flood`` a 429 closes the gate for ``retry_after`` and the call is retried
        after it; without, the ``RetryAfter`` propagates (after closing the gate). An
        idempotent call (an edit) that timed out is made again up to ``repeat_on_timeout``
        times. With shared ``limits`` the shared gates are honoured too, and a call with
        ``pace`` (a send or an edit) first takes the chat's next slot, ``pace`` seconds after
        the previous one of any process; a ``send`` goes at once, as in one process, and
        only pushes the chat's next slot (its edits wait ``pace`` after it).
        """
        paced = pace is None or self.limits is None
        while True:
            # Re-read after each sleep: a 429 elsewhere may have pushed the gate further.
            while (wait := self.gate(chat_id) - self.now()) > 0:
                if not wait_flood:
                    raise Throttled(wait)
                await asyncio.sleep(wait)
            if self.limits is not None:
                until = await self.limits.closed_until((_BOT_GATE, _chat_gate(chat_id)))
                if (wait := until - time.time()) > 0:
                    if not wait_flood:
                        raise Throttled(wait)
                    await asyncio.sleep(wait)
                    continue
                if not paced:
                    paced = True
                    slot = await self.limits.reserve(_chat_gate(chat_id), pace or 0.0, now=send)
                    if (wait := slot - time.time()) > 0:
                        await asyncio.sleep(wait)
                        continue  # a peer's 429 may have come meanwhile
            try:
                return await make()
            except TimedOut:
                if repeat_on_timeout <= 0:
                    raise
                repeat_on_timeout -= 1
                _log.info("a call in chat %s timed out; making it again", chat_id)
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                until = self.now() + seconds + _FLOOD_MARGIN
                self._flood_until[chat_id] = max(self.gate(chat_id), until)
                self._bot_flood_until = max(self._bot_flood_until, until)
                if self.limits is not None:
                    wall = time.time() + seconds + _FLOOD_MARGIN
                    await self.limits.close(_chat_gate(chat_id), wall)
                    await self.limits.close(_BOT_GATE, wall)
                self.telemetry.flood_wait("telegram")
                _log.info("flood control in chat %s: waiting %.1fs", chat_id, seconds)
                if not wait_flood:
                    raise
