"""A stand-in engine that fetches the files users send, for testing adapters' attachments.

Every message is recorded. One whose text starts with ``/kb add`` downloads the first of its
attachments (else of the message it replies to) through the channel's ``FileSource`` into
``directory`` and answers ``saved <name>: <n> bytes``, or the refusal's ``user_message``.
Anything else is answered ``noted``. :class:`MediaEngine` fetches every file of every message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from core.errors import ChinwagError
from core.ports import FileSource, ReplyChannel
from core.types import CommandInfo, IncomingAction, IncomingMessage

__all__ = ["FileEngine", "MediaEngine"]


class FileEngine:
    """A ``ConversationEngine`` that downloads what ``/kb add`` points at."""

    bot_name = "files"
    default_model = "none"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.messages: list[IncomingMessage] = []
        self.saved: list[Path] = []
        self._lane = asyncio.Lock()

    def commands(self) -> Sequence[CommandInfo]:
        return (CommandInfo("kb", "The knowledge base", "add|remove ID"),)

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.handle(msg, out))

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        async with self._lane:
            self.messages.append(msg)
            files = msg.attachments or msg.reply_attachments
            if not msg.text.startswith("/kb add") or not files:
                await out.send_text("noted")
                return
            assert isinstance(out, FileSource)
            destination = self.directory / f"download-{len(self.messages)}"
            try:
                size = await out.download(files[0], destination)
            except ChinwagError as exc:
                await out.send_text(f"refused: {exc.user_message}")
                return
            self.saved.append(destination)
            await out.send_text(f"saved {files[0].name}: {size} bytes")

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        await out.send_text("no actions here")


class MediaEngine(FileEngine):
    """A ``ConversationEngine`` that downloads every file of every message, as a turn would.

    Each attachment is fetched into ``directory`` (with ``max_bytes`` as the caller's own
    limit, when set) and answered ``saved <name>: <n> bytes`` or ``refused: <user_message>``;
    a message without files is answered ``noted``.
    """

    def __init__(self, directory: Path, *, max_bytes: int | None = None) -> None:
        super().__init__(directory)
        self.max_bytes = max_bytes

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        async with self._lane:
            self.messages.append(msg)
            if not msg.attachments:
                await out.send_text("noted")
                return
            assert isinstance(out, FileSource)
            for attachment in msg.attachments:
                destination = self.directory / f"download-{len(self.saved) + 1}"
                try:
                    size = await out.download(attachment, destination, max_bytes=self.max_bytes)
                except ChinwagError as exc:
                    await out.send_text(f"refused: {exc.user_message}")
                    continue
                self.saved.append(destination)
                await out.send_text(f"saved {attachment.name}: {size} bytes")
