"""One live message: how a streamed reply is shown by posting and editing chat messages.

The policy both chat platforms share, written once and free of vendor libraries (an
import-linter contract keeps it so). A platform plugs in through a :class:`LiveSurface`:
render and split a text into message parts, post, edit and delete one message, show
"typing", and say when the next edit may be made (pacing and flood control). Splitting
rules and flood control stay with the platform, behind that surface.

The policy:

* The whole text so far is rendered and split on every flush, so the messages always show
  exactly ``surface.render(text)``: changed parts are edited, unchanged ones are not sent
  again, new parts are posted, spare parts (the text re-split shorter) are deleted.
* The first flush waits ``first_flush_delay`` after the first text, so a short reply is
  posted once and never edited; later flushes wait for ``surface.next_edit_at()``.
* An intermediate edit the platform cannot make now (flood control) is skipped: the next
  flush shows the text. The final flush waits for its slot and always shows the complete
  text; it is tried once more after a failure, unless the platform refuses the chat for good
  (:class:`ChatRefused`).
* A message someone deleted (:class:`MessageGone` on edit) is posted again.
* "typing" is shown while no text arrived for ``typing_delay``, repeated every
  ``typing_repeat`` seconds.
* A reply whose markup renders to nothing (only ``"```"``, ``"# "``, ``"> "``, backticks) is
  shown at the end as its literal characters (``surface.plain``): the user always gets a
  message when the model wrote something.
* A :class:`~core.types.QueuePosition` shows its notice in the live message until the first
  text arrives; that message then becomes the answer. The notice is never part of the reply.

Deltas are taken by the caller's task; flushes and "typing" run on loop timers, so a reply
that arrives at once costs no extra task and is posted in one message. :meth:`LiveMessage.adopt`
starts from messages already on screen (their platform ids), so a later step can edit them
into a complete answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from core.errors import AdapterError
from core.types import ReplyEvent

__all__ = [
    "ChatRefused",
    "LiveMessage",
    "LivePacing",
    "LiveSurface",
    "MessageGone",
]

_log = logging.getLogger(__name__)

P = TypeVar("P")  # one rendered message part (compared with ==)
H = TypeVar("H")  # a platform's handle on a posted message


class MessageGone(AdapterError):
    """The message to edit or delete no longer exists (someone deleted it)."""


class ChatRefused(AdapterError):
    """The platform refuses this chat for good (the user blocked the bot, no permission)."""


class LiveSurface(Protocol[P, H]):
    """What a platform offers a live message; one surface per reply.

    Methods raise :class:`~core.errors.AdapterError` (or its subclasses above) when the
    platform refuses.
    """

    def render(self, text: str) -> Sequence[P]:
        """Render ``text`` and split it into message parts (empty when nothing is visible)."""
        ...

    def plain(self, text: str) -> Sequence[P]:
        """``text`` as its literal characters, no markup, split into message parts."""
        ...

    async def post(self, part: P, index: int) -> H:
        """Post ``part`` as a new message (``index`` 0 is the first of the reply)."""
        ...

    async def edit(self, handle: H, part: P, *, final: bool) -> bool:
        """Edit a posted message to ``part``; ``False`` when skipped for flood control.

        Only an edit with ``final`` false may be skipped. Raises :class:`MessageGone` when
        the message was deleted.
        """
        ...

    async def delete(self, handle: H) -> None:
        """Delete a posted message; one already gone is no error."""
        ...

    async def typing(self) -> None:
        """Show "typing" (failures are the surface's to log, never raised)."""
        ...

    def next_edit_at(self) -> float:
        """The earliest loop time the next edit may be made (pacing and flood control)."""
        ...

    def platform_id(self, handle: H) -> str:
        """The platform's id of a posted message."""
        ...

    def handle_for(self, platform_id: str) -> H:
        """A handle on a message already on screen, from its platform id."""
        ...


@dataclass(frozen=True, slots=True)
class LivePacing:
    """The timings of a live message, in seconds.

    Attributes:
        first_flush_delay: wait after the first text before the first post.
        typing_delay: no new text for this long shows "typing".
        typing_repeat: how often "typing" is renewed while the pause lasts.
    """

    first_flush_delay: float
    typing_delay: float
    typing_repeat: float


class _Slot(Generic[P, H]):
    """One message of the reply as last shown (``part`` ``None``: content unknown)."""

    __slots__ = ("handle", "part")

    def __init__(self, handle: H, part: P | None) -> None:
        self.handle = handle
        self.part = part


class LiveMessage(Generic[P, H]):
    """The messages of one streamed reply, kept equal to the text received so far.

    Built by a platform's ``ReplyChannel.stream_reply`` for each reply; drive it with
    :meth:`run` (or :meth:`add` / :meth:`notice` and then :meth:`finish`).
    """

    def __init__(
        self,
        surface: LiveSurface[P, H],
        pacing: LivePacing,
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self._surface = surface
        self._pacing = pacing
        # Told the ids of every message on screen when one is posted before the final
        # flush (the engine stores them, so a restart can edit them); never on the final one.
        self._on_posted = on_posted
        self._loop = asyncio.get_running_loop()
        self._chunks: list[str] = []
        self._notice: str | None = None
        self._version = 0  # bumped by every change of what should be shown
        self._flushed = 0  # the version the last flush showed
        self._shown: list[_Slot[P, H]] = []
        self._first_text_at: float | None = None
        self._last_text_at = self._loop.time()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._typing_timer: asyncio.TimerHandle | None = None
        self._typing_tasks: set[asyncio.Task[None]] = set()
        self._fatal: ChatRefused | None = None
        self._done = False
        self._arm_typing(pacing.typing_delay)

    @classmethod
    def adopt(
        cls,
        surface: LiveSurface[P, H],
        pacing: LivePacing,
        platform_ids: Sequence[str],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> LiveMessage[P, H]:
        """A live message that starts from messages already on screen, in order.

        Their content is taken as unknown, so the next flush edits each of them; extra
        parts are posted after them and spare ones deleted. Use: ``adopt(...)``,
        ``add(text)``, ``await finish()``.
        """
        live = cls(surface, pacing, on_posted)
        live._shown = [_Slot(surface.handle_for(pid), None) for pid in platform_ids]
        return live

    # --- taking the reply -----------------------------------------------------------

    async def run(self, events: AsyncIterator[ReplyEvent]) -> list[str]:
        """Show ``events`` as they arrive; return the platform ids of the reply's messages.

        On a failure of ``events`` what was received is delivered (unless the platform
        refuses), then the failure is raised; a cancellation stops everything at once.
        """
        try:
            async for event in events:
                if isinstance(event, str):
                    if event:
                        self.add(event)
                else:
                    self.notice(event.notice)
        except asyncio.CancelledError:
            self.cancel()
            raise
        except Exception:
            try:
                await self.finish()
            except AdapterError as exc:
                _log.debug("could not deliver a failed reply: %s", exc)
            raise
        return await self.finish()

    def add(self, delta: str) -> None:
        """Take one piece of reply text; raise :class:`ChatRefused` once the chat refused."""
        if self._fatal is not None:
            raise self._fatal
        self._chunks.append(delta)
        self._version += 1
        now = self._last_text_at = self._loop.time()
        if self._first_text_at is None:
            self._first_text_at = now
            if self._notice is not None:
                self._notice = None  # the notice's message becomes the answer
        self._arm_flush()

    def notice(self, text: str) -> None:
        """Show ``text`` (a queue notice) until the first reply text arrives."""
        if self._first_text_at is not None or text == self._notice:
            return
        self._notice = text
        self._version += 1
        self._arm_flush()

    # --- flushing ---------------------------------------------------------------------

    def _text(self) -> str:
        return "".join(self._chunks) if self._notice is None else self._notice

    def _arm_flush(self) -> None:
        if self._done or self._flush_timer is not None or self._flushing is not None:
            return
        if self._shown:
            due = self._surface.next_edit_at()
        elif self._first_text_at is None:
            due = self._loop.time()  # a notice shows at once
        else:
            due = max(
                self._first_text_at + self._pacing.first_flush_delay,
                self._surface.next_edit_at(),
            )
        self._flush_timer = self._loop.call_at(due, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        self._flushing = asyncio.create_task(self._flush(), name="chinwag-live-flush")

    async def _flush(self) -> None:
        version = self._version
        try:
            if await self._show(final=False):
                self._flushed = version
        except ChatRefused as exc:
            self._fatal = exc
            self._stop_timers()
        except AdapterError as exc:
            _log.warning("could not show a partial reply: %s", exc)
        finally:
            self._flushing = None
        if self._version > self._flushed:
            self._arm_flush()

    async def _show(self, *, final: bool) -> bool:
        """Make the messages show the text; ``False`` if an edit was left to a later flush."""
        surface = self._surface
        text = self._text()
        parts = surface.render(text)
        if final and not parts and text.strip():
            parts = surface.plain(text)  # markup that renders to nothing: show the characters
        last = len(parts) - 1
        for index, part in enumerate(parts):
            if index >= len(self._shown):
                self._shown.append(_Slot(await surface.post(part, index), part))
                self._arm_typing(self._pacing.typing_delay)  # a new message hides "typing"
                self._posted(final)
                continue
            slot = self._shown[index]
            if slot.part == part:
                continue
            wait = surface.next_edit_at() - self._loop.time()
            if wait > 0:
                if not final and index == last:
                    return False  # the next flush shows it
                await asyncio.sleep(wait)
            try:
                if not await surface.edit(slot.handle, part, final=final or index < last):
                    return False
            except MessageGone:
                # Someone deleted the message: show the part anew rather than lose it.
                slot.handle = await surface.post(part, index)
                self._posted(final)
            slot.part = part
        while len(self._shown) > len(parts):
            # The text re-split into fewer messages (or a notice gave way to nothing).
            await surface.delete(self._shown[-1].handle)
            self._shown.pop()
        return True

    def _posted(self, final: bool) -> None:
        if self._on_posted is not None and not final:
            self._on_posted([self._surface.platform_id(slot.handle) for slot in self._shown])

    # --- "typing" ---------------------------------------------------------------------

    def _arm_typing(self, delay: float) -> None:
        if self._done:
            return
        if self._typing_timer is not None:
            self._typing_timer.cancel()
        self._typing_timer = self._loop.call_later(delay, self._start_typing)

    def _start_typing(self) -> None:
        self._typing_timer = None
        if self._done:
            return
        idle = self._loop.time() - self._last_text_at
        if idle < self._pacing.typing_delay:
            # Text came since the timer was set: wait for a real pause.
            self._arm_typing(self._pacing.typing_delay - idle)
            return
        task = asyncio.create_task(self._surface.typing(), name="chinwag-live-typing")
        self._typing_tasks.add(task)
        task.add_done_callback(self._typing_tasks.discard)
        self._typing_timer = self._loop.call_later(self._pacing.typing_repeat, self._start_typing)

    # --- ending -----------------------------------------------------------------------

    def _stop_timers(self) -> None:
        self._done = True
        for timer in (self._flush_timer, self._typing_timer):
            if timer is not None:
                timer.cancel()
        self._flush_timer = self._typing_timer = None

    def cancel(self) -> None:
        """Stop everything at once (the caller was cancelled)."""
        self._stop_timers()
        if self._flushing is not None:
            self._flushing.cancel()
        for task in self._typing_tasks:
            task.cancel()

    async def finish(self) -> list[str]:
        """Show the complete text; return the platform ids of every message of the reply.

        Raises :class:`~core.errors.AdapterError` when the platform refused the final text
        twice, or :class:`ChatRefused` at once.
        """
        self._stop_timers()
        if self._flushing is not None:
            await asyncio.wait([self._flushing])  # its edit lands before the final one
        if self._fatal is not None:
            raise self._fatal
        if self._notice is not None:
            self._notice = None  # a notice never followed by text was never the reply
            self._version += 1
        if (
            self._version > self._flushed
            or not self._shown
            or any(slot.part is None for slot in self._shown)
        ):
            try:
                await self._show(final=True)
            except ChatRefused:
                raise
            except AdapterError as exc:
                _log.warning("the final update failed, retrying once: %s", exc)
                await self._show(final=True)
            self._flushed = self._version
        return [self._surface.platform_id(slot.handle) for slot in self._shown]
