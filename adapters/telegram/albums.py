"""Albums: the files a Telegram user sends at once, gathered into one turn.

Telegram delivers an album (several photos or files sent together) as one message per file,
back to back, sharing a ``media_group_id``. The adapter hands the first message of an album
to :meth:`Albums.gather` and each further one to :meth:`Albums.join`; the album goes to the
engine as one message, its files in order, :data:`ALBUM_WAIT` seconds after its first file,
or earlier when :meth:`Albums.flush` is called: by the next message for the bot from that chat
(the album came first), at ``stop_intake`` and at ``aclose`` (nothing gathered is lost).
The ingress poller hands albums over at the end of each batch and awaits :meth:`Albums.settle`
before it confirms the batch to Telegram (an album split over two batches is then two turns).

Imports no vendor library: the adapter keys albums by ``(chat id, media group id)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Final

from core.ports import ConversationEngine, ReplyChannel
from core.types import Attachment, IncomingMessage

__all__ = ["ALBUM_WAIT", "AlbumKey", "Albums"]

_log = logging.getLogger(__name__)

# How long the first file of an album waits for the others (they arrive within
# milliseconds of each other, in the same or the next getUpdates batch).
ALBUM_WAIT: Final = 0.5

AlbumKey = tuple[int, str]
"""``(chat id, media group id)``: media group ids are only unique within a chat."""


class Albums:
    """The albums a Telegram adapter is gathering, and those handed to the engine.

    Args:
        engine: where a gathered album is submitted, as one message.

    Call from the event loop only (the timers are the loop's). :meth:`wait` lets the
    adapter's ``aclose`` wait for the albums handed over to be answered.
    """

    def __init__(self, engine: ConversationEngine) -> None:
        self._engine = engine
        self._wait = ALBUM_WAIT
        self._gathering: dict[AlbumKey, _Album] = {}
        self._in_flight: set[asyncio.Future[None]] = set()
        self._failed: int | None = None  # the lowest mark of an album the engine failed

    def gather(
        self,
        key: AlbumKey,
        incoming: IncomingMessage,
        out: ReplyChannel,
        mark: int | None = None,
    ) -> None:
        """Hold the first message of an album while the others arrive (``ALBUM_WAIT``).

        ``mark`` (its Telegram update id) is what :meth:`settle` returns if the album fails.
        """
        timer = asyncio.get_running_loop().call_later(self._wait, self._flush_one, key)
        self._gathering[key] = _Album(incoming, out, timer, mark)

    def join(self, key: AlbumKey, attachments: tuple[Attachment, ...], caption: str) -> bool:
        """Add a further message's files to the album ``key``, if it is being gathered.

        ``caption`` becomes the album's text when its first message had none. Returns
        ``False`` when no album ``key`` is gathering (the message is then a turn of its own).
        """
        album = self._gathering.get(key)
        if album is None:
            return False
        album.add(attachments, caption)
        return True

    def flush(self, chat_id: int | None = None) -> None:
        """Hand over the albums gathering in ``chat_id`` (all chats: ``None``) now."""
        for key in [key for key in self._gathering if chat_id is None or key[0] == chat_id]:
            self._flush_one(key)

    async def wait(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the albums handed over to be answered.

        Returns then even if some are not answered yet (the engine's own shutdown settles
        them); never raises for an album the engine failed (that is logged).
        """
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)

    async def settle(self) -> int | None:
        """Hand over every album gathering and wait until each is taken or failed.

        Returns the lowest ``mark`` of the albums the engine failed since the last call
        (``None``: all taken).
        """
        self.flush()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        failed, self._failed = self._failed, None
        return failed

    def _flush_one(self, key: AlbumKey) -> None:
        """Hand a gathered album to the engine as one message (its files in order)."""
        album = self._gathering.pop(key, None)
        if album is None:
            return
        album.timer.cancel()
        future = self._engine.submit(album.incoming, album.out)
        self._in_flight.add(future)
        future.add_done_callback(lambda done: self._settled(done, album.mark))

    def _settled(self, future: asyncio.Future[None], mark: int | None) -> None:
        self._in_flight.discard(future)
        if (future.cancelled() or future.exception() is not None) and mark is not None:
            self._failed = mark if self._failed is None else min(self._failed, mark)
        if not future.cancelled() and future.exception() is not None:
            _log.error("the engine refused a Telegram album", exc_info=future.exception())


@dataclass(slots=True)
class _Album:
    """An album being gathered: its first message, with the files of the others added."""

    incoming: IncomingMessage
    out: ReplyChannel
    timer: asyncio.TimerHandle
    mark: int | None = None

    def add(self, attachments: tuple[Attachment, ...], caption: str) -> None:
        """Add a further message's files; its caption is the text if the first had none."""
        first = self.incoming
        self.incoming = dataclasses.replace(
            first,
            text=first.text or caption,
            attachments=first.attachments + attachments,
        )
