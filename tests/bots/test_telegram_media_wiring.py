"""The chat adapters built by the wiring download within MAX_FILE_MB, not KB_MAX_FILE_MB."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from adapters.discord.settings import DiscordSettings
from adapters.memory.settings import MemorySettings
from adapters.telegram.settings import TelegramSettings
from bots.app import Settings, platform_adapters
from core.engine import Engine
from core.settings import AccessSettings, CoreSettings, KbSettings, LLMSettings, MediaSettings
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.file_engine import MediaEngine
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser


def _settings(telegram: TelegramSettings, **media: Any) -> Settings:
    return Settings(
        env_file=None,
        core=CoreSettings(_env_file=None),
        llm=LLMSettings(_env_file=None),
        access=AccessSettings(_env_file=None),
        memory=MemorySettings(_env_file=None),
        telegram=telegram,
        discord=DiscordSettings(_env_file=None),
        kb=KbSettings(_env_file=None, max_file_mb=20),
        media=MediaSettings(_env_file=None, **media),
    )


async def test_a_voice_note_over_max_file_mb_is_refused_by_the_wired_adapter(
    tmp_path: Path,
) -> None:
    async with FakeTelegram() as fake:
        engine = MediaEngine(tmp_path)
        settings = _settings(fast_settings(fake), max_file_mb=0.001)
        [adapter] = platform_adapters(settings, cast(Engine, engine))
        await adapter.start()
        try:
            alice = FakeUser(701, "Alice", "alice")
            chat = FakeChat(alice.id, "private")
            fake.send_voice(chat, alice, b"OggS" + b"\x00" * 4000, 5)
            await fake.wait_for(lambda: len(fake.bot_messages(chat.id)) >= 1)
        finally:
            await adapter.aclose()
        assert [m.text for m in fake.bot_messages(chat.id)] == [
            "refused: This file is 0.1 MB; the limit is 0 MB."
        ]
        assert fake.calls_to("getFile") == []
