"""A queue worker's Telegram adapter: it sends and downloads, and takes no updates."""

from __future__ import annotations

from pathlib import Path

from adapters.telegram import TelegramAdapter
from core.chat_ports import FileSource, OutboundAdapter
from core.types import Attachment, IncomingMessage
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser


class _Unused:
    """The engine a worker's adapter never calls (turns come from the queue)."""


async def test_a_worker_answers_and_downloads_without_taking_updates(tmp_path: Path) -> None:
    async with FakeTelegram() as fake:
        adapter = TelegramAdapter(fast_settings(fake), _Unused())  # type: ignore[arg-type]
        assert isinstance(adapter, OutboundAdapter)
        await adapter.start_outbound()
        try:
            assert adapter.outbound_ready
            ada = FakeUser(5101, "Ada", "ada")
            group = FakeChat(-5200, "supergroup", "Team")
            sent = fake.send_document(group, ada, "notes.txt", b"hello notes")
            msg = IncomingMessage(
                "telegram",
                str(group.id),
                str(ada.id),
                "",
                message_id=str(sent.message_id),
                is_private=False,
                attachments=(Attachment("document", "notes.txt", 11, "text/plain", sent.file_id),),
            )
            out = adapter.channel_for(msg)
            assert isinstance(out, FileSource)
            assert await out.download(msg.attachments[0], tmp_path / "notes.txt") == 11
            await out.send_text("Got your notes.")
            await fake.wait_for(lambda: bool(fake.bot_messages(group.id)))
        finally:
            await adapter.aclose()
        assert (tmp_path / "notes.txt").read_bytes() == b"hello notes"
        [answer] = fake.bot_messages(group.id)
        assert (answer.text, answer.reply_to) == ("Got your notes.", sent.message_id)
        assert fake.calls_to("getMe")
        assert fake.calls_to("getUpdates") == [], "ingress alone takes updates"
        assert fake.calls_to("setMyCommands") == [], "ingress alone registers commands"
        assert fake.calls_to("setWebhook") == []
        assert fake.pending_updates == 1, "the user's message stays for ingress"
