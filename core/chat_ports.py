"""The chat-side ports: what a chat adapter and the engine offer each other.

- :class:`ConversationEngine`, the inbound port a chat adapter calls
  (``core.engine.Engine`` implements it);
- :class:`ReplyChannel`, where the engine sends the answer to one incoming message, built by
  the adapter for each; :class:`FileSource`, a channel that can also fetch the files users
  send;
- :class:`ChatAdapter`, a platform connection's lifecycle; :class:`ResumableAdapter`, one
  that can reopen a reply in a stored chat (crash recovery).

The outbound ports (LLM backends, memory stores) are in :mod:`core.ports`, which re-exports
``ReplyChannel``, ``FileSource`` and ``ConversationEngine`` for their many callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from core.types import Attachment, CommandInfo, IncomingAction, IncomingMessage, ReplyEvent


class ReplyChannel(Protocol):
    """Where the engine sends the answer to one incoming message; built by the adapter.

    Methods raise ``core.errors.AdapterError`` when the platform refuses; the engine logs it
    and goes on serving.
    """

    async def send_text(self, text: str) -> Sequence[str]:
        """Send a short plain-text notice (command output, error); return platform ids."""
        ...

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        """Show the reply while ``events`` yields text, until it ends; return platform ids.

        ``on_posted`` (when given) is called with the ids of every message the reply has on
        screen each time one is posted while the reply streams (not in the final update), so
        the engine can store them before the reply ends. A channel built by
        :meth:`ResumableAdapter.resume` edits the messages it was given instead of posting.

        ``events`` yields text deltas, and a ``QueuePosition`` while the reply waits for a
        busy model: the adapter shows its ``notice`` in place of the reply until text arrives
        (the notice is never part of the reply's text). The iterator ends normally on
        completion, on ``/stop`` and on backend errors (the engine sends the error notice
        afterwards), so the adapter always finalises what it showed. Must deliver the
        complete text it received.
        """
        ...

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        """Ask yes/no; the answer comes back as ``Engine.handle_action(IncomingAction)``."""
        ...

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        """Deliver a document (``/export``)."""
        ...


@runtime_checkable
class FileSource(Protocol):
    """A reply channel whose platform can hand over the files users send (Telegram, Discord).

    The engine checks ``isinstance(out, FileSource)``: a channel without files (the console)
    simply is not one.
    """

    async def download(
        self, attachment: Attachment, destination: Path, *, max_bytes: int | None = None
    ) -> int:
        """Fetch ``attachment`` into the file ``destination`` in pieces; return its size.

        ``max_bytes`` is the caller's own limit (``KB_MAX_FILE_MB`` for ``/kb add``); by
        default the adapter's (``MAX_FILE_MB``). The platform's own limit (Telegram's 20 MB
        for bots) applies in any case. A size over the limit is refused before anything is
        fetched whenever the platform says it.

        Raises ``AdapterError`` with a clear ``user_message`` when the platform refuses it or
        it is over the limit; nothing is left at ``destination`` then.
        """
        ...


@runtime_checkable
class ResumableAdapter(Protocol):
    """A chat adapter that can reopen a reply in a stored chat (crash recovery)."""

    @property
    def name(self) -> str:
        """The platform name, e.g. ``"telegram"``."""
        ...

    def resume(
        self, chat_id: str, thread_id: str | None, message_ids: Sequence[str]
    ) -> ReplyChannel:
        """A channel into ``chat_id`` (and thread) that takes over ``message_ids``.

        Its streamed reply edits those messages (already on screen, in order) into the
        answer, extra parts posted after them, spare ones deleted. A platform that cannot
        edit shows the answer anew.
        """
        ...


@runtime_checkable
class OutboundAdapter(Protocol):
    """A chat adapter a queue worker answers through: the platform's REST API only.

    ``start_outbound()`` connects for sending (Telegram's ``getMe``, Discord's login over
    HTTP): no polling, no webhook server, no gateway connection, no commands registered.
    """

    @property
    def name(self) -> str:
        """The platform name, e.g. ``"telegram"``."""
        ...

    async def start_outbound(self) -> None:
        """Connect for sending only. Idempotent; ``aclose()`` disconnects."""
        ...

    def channel_for(self, msg: IncomingMessage) -> ReplyChannel:
        """The channel answering ``msg`` as a live update's would.

        A ``FileSource`` where the platform has files: ``msg.attachments`` are fetched by
        their ``ref``.
        """
        ...

    def resume(
        self, chat_id: str, thread_id: str | None, message_ids: Sequence[str]
    ) -> ReplyChannel:
        """As :meth:`ResumableAdapter.resume` (crash recovery edits in place)."""
        ...

    async def aclose(self) -> None:
        """Disconnect. Idempotent."""
        ...


class ConversationEngine(Protocol):
    """The inbound port: what a chat adapter calls. ``core.engine.Engine`` implements it.

    Adapters depend on this Protocol, never on the concrete engine, so each can be tested in
    front of a stub and the engine can change shape behind it.
    """

    @property
    def bot_name(self) -> str:
        """The ``BOT_NAME`` memories are stored under."""
        ...

    @property
    def default_model(self) -> str:
        """The model a conversation that chose none is answered by (for banners)."""
        ...

    def commands(self) -> Sequence[CommandInfo]:
        """The commands the engine answers, for adapters to register."""
        ...

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        """Queue ``msg`` behind earlier messages of its conversation (call in arrival order).

        The future resolves once the answer was sent and recorded; it never fails for the
        user's mistakes or the backend's.
        """
        ...

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        """Submit ``msg`` and wait until it is answered."""
        ...

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        """Answer a button press (or console yes/no) for a confirmation the engine asked."""
        ...


class ChatAdapter(Protocol):
    """A chat platform connection feeding the engine."""

    @property
    def name(self) -> str:
        """The platform name, e.g. ``"telegram"``."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the platform connection is up and taking messages (for ``/readyz``).

        ``False`` before ``start()`` finished, after ``stop_intake()``, and while the
        platform cannot be reached (Discord's gateway is reconnecting, say).
        """
        ...

    async def start(self) -> None:
        """Connect and begin serving; returns once serving. Idempotent."""
        ...

    async def wait_closed(self) -> None:
        """Return once the adapter stopped by itself (console end of input); raise if fatal."""
        ...

    async def stop_intake(self) -> None:
        """Stop taking new messages; replies in flight can still be delivered. Idempotent.

        Called at shutdown before the engine drains, so no message meets a closed engine.
        """
        ...

    async def aclose(self) -> None:
        """Stop taking messages, let replies in flight finish, disconnect. Idempotent."""
        ...


__all__ = [
    "ChatAdapter",
    "ConversationEngine",
    "FileSource",
    "OutboundAdapter",
    "ReplyChannel",
    "ResumableAdapter",
]
