"""An in-process ``ReplyChannel`` that records what a user would see."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from core.types import QueuePosition, ReplyEvent

_ids = itertools.count(1)


@dataclass
class RecordingChannel:
    """Records notices, streamed replies, confirmations asked and files sent, in order.

    ``events`` holds ``(kind, payload)`` tuples in delivery order; ``stream_started`` is set
    when a reply begins streaming, and ``hold`` (if given) pauses the stream after its first
    piece until set.
    """

    events: list[tuple[str, object]] = field(default_factory=list)
    confirmations: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, bytes, str]] = field(default_factory=list)
    stream_started: asyncio.Event = field(default_factory=asyncio.Event)
    fail_delivery: bool = False

    @property
    def notices(self) -> list[str]:
        return [str(p) for k, p in self.events if k == "notice"]

    @property
    def replies(self) -> list[str]:
        return [str(p) for k, p in self.events if k == "reply"]

    @property
    def texts(self) -> list[str]:
        """Everything shown, notices and replies, in order."""
        return [str(p) for k, p in self.events if k in ("notice", "reply")]

    async def send_text(self, text: str) -> Sequence[str]:
        self.events.append(("notice", text))
        return (f"n{next(_ids)}",)

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        self.stream_started.set()
        parts: list[str] = []
        async for piece in events:
            if isinstance(piece, QueuePosition):
                self.events.append(("queue", piece.notice))
                continue
            parts.append(piece)
        if self.fail_delivery:
            from core.errors import AdapterError

            raise AdapterError("the platform refused the message")
        if not parts:  # like a platform adapter: nothing streamed, nothing sent
            return ()
        self.events.append(("reply", "".join(parts)))
        return (f"r{next(_ids)}",)

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        self.confirmations.append((prompt, action_id))

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        self.files.append((filename, data, caption))
