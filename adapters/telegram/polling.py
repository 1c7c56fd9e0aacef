"""Long polling for ``chinwag ingress``: an update is confirmed to Telegram only once queued.

python-telegram-bot's ``Updater`` confirms a batch of updates (the next ``getUpdates``'
``offset``) as soon as it is in the application's in-memory queue, before any handler ran:
right for one process, which answers from that same memory, but an ingress killed between
the two would lose those updates for good. So ingress polls itself: each update of a batch,
in order, is handed to the application's handlers (``Application.process_update``, awaited:
the adapter's handlers await the engine's ``submit``, which resolves once the turn is
durably queued), and only then is the offset moved past it. An update that could not be
queued (the database is down) stops the batch there: it and the ones after it are fetched
again after a backoff, in order. An album's files are confirmed once the album, handed over
at the end of the batch, is queued. Whatever Telegram delivers twice (after a kill) carries
the same message id, which the queue stores once.

Network errors and 409 Conflict (another process polls this token) go to the adapter's
error callback, with a backoff of 1 s growing to 30 s; ``RetryAfter`` is honoured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Final

from telegram import Update
from telegram.error import InvalidToken, RetryAfter, TelegramError, TimedOut

from adapters.telegram.transport import AnyApplication, retry_seconds
from adapters.telegram.webhook import refusals

__all__ = ["QueuedPoller"]

_log = logging.getLogger(__name__)

_FIRST_BACKOFF: Final = 1.0
_MAX_BACKOFF: Final = 30.0
_STOP_GRACE: Final = 10.0  # a batch being queued at stop; what is left is fetched again


class QueuedPoller:
    """Telegram long polling for one ingress process (started after the application).

    Args:
        app: the initialized, started application whose handlers queue each turn.
        timeout: ``getUpdates``' long-poll seconds (``TELEGRAM_POLL_TIMEOUT``).
        allowed_updates: the update kinds asked for.
        on_error: told of every ``TelegramError`` from ``getUpdates``; polling stops after
            :class:`~telegram.error.InvalidToken` (the token was revoked).
        settle: awaited after each batch; returns the lowest update id whose turn it could
            not queue (an album), or ``None``: the offset is not moved past that one.
    """

    def __init__(
        self,
        app: AnyApplication,
        *,
        timeout: int,
        allowed_updates: list[str],
        on_error: Callable[[TelegramError], None],
        settle: Callable[[], Awaitable[int | None]],
    ) -> None:
        self._app = app
        self._timeout = timeout
        self._allowed = allowed_updates
        self._on_error = on_error
        self._settle = settle
        self._offset = 0  # the next getUpdates' offset: every update below it is queued
        self._confirmed = 0  # the offset Telegram was last sent
        self._task: asyncio.Task[None] | None = None
        self._waiting = False
        self._stopping = False

    @property
    def running(self) -> bool:
        """Whether the polling loop runs."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Delete any webhook (polling and a webhook never run at once), then poll."""
        await self._app.bot.delete_webhook()
        self._task = asyncio.create_task(self._loop(), name="chinwag-telegram-polling")

    async def stop(self) -> None:
        """Stop fetching; confirm what was queued. Idempotent.

        A long poll or a backoff is cancelled (what a poll fetched is not confirmed); a batch
        being queued finishes the update at hand, up to a grace period.
        """
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        if self._waiting:
            task.cancel()
        _, pending = await asyncio.wait({task}, timeout=_STOP_GRACE)
        if pending:  # cut short while queueing: confirm nothing more, Telegram sends it again
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._offset > self._confirmed and not pending:
            try:  # limit=1, no wait: confirms what was queued and fetches nothing to keep
                await self._app.bot.get_updates(offset=self._offset, limit=1, timeout=timedelta(0))
            except TelegramError as exc:
                _log.warning(
                    "Telegram polling: could not confirm the last updates (%s); they are "
                    "fetched again at the next start and queued once",
                    exc,
                )

    async def _loop(self) -> None:
        backoff = 0.0  # after a failed getUpdates
        refused = 0.0  # after an update that could not be queued: grows while it cannot
        while not self._stopping:
            self._waiting = True  # stop() cancels a sleep or a long poll: nothing is lost
            try:
                if backoff or refused:
                    await asyncio.sleep(max(backoff, refused) * random.uniform(0.8, 1.2))
                updates = await self._app.bot.get_updates(
                    offset=self._offset,
                    timeout=timedelta(seconds=self._timeout),
                    allowed_updates=self._allowed,
                )
            except RetryAfter as exc:
                backoff = retry_seconds(exc) + 0.5
                continue
            except TimedOut:
                backoff = 0.0  # the long poll outlived the HTTP timeout: ask again
                continue
            except InvalidToken as exc:
                self._on_error(exc)
                return
            except TelegramError as exc:
                self._on_error(exc)
                backoff = min(_MAX_BACKOFF, max(_FIRST_BACKOFF, backoff * 1.5))
                continue
            finally:
                self._waiting = False
            backoff = 0.0
            self._confirmed = self._offset
            if await self._queue(updates):
                refused = 0.0
            else:
                refused = min(_MAX_BACKOFF, max(_FIRST_BACKOFF, refused * 1.5))

    async def _queue(self, updates: tuple[Update, ...]) -> bool:
        """Hand each update to the handlers in order; ``False`` when one was not queued."""
        for update in updates:
            if self._stopping:
                break  # the rest stays with Telegram; an album begun is still settled
            with refusals() as refused:
                await self._app.process_update(update)
            if refused:
                _log.warning(
                    "Telegram update %s could not be queued (%s); it is fetched again",
                    update.update_id,
                    type(refused[0]).__name__,
                )
                break
            self._offset = update.update_id + 1
        held = await self._settle()
        if held is not None and held < self._offset:
            _log.warning("Telegram update %s (an album) could not be queued; fetched again", held)
            self._offset = held
            return False
        return not updates or self._offset > updates[-1].update_id
