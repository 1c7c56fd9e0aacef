"""``chinwag run`` in-process for the media end-to-end tests: the real wiring, loopback fakes.

:func:`serving` runs what :func:`bots.app.serve` runs (``running_engine``: the SQL store on a
SQLite file in the data directory, the real ``OpenAIBackend``, ``LocalMediaReader`` with
Pillow, ``OpenAITranscriber``; ``platform_adapters``), configured as an operator would: the
environment names the loopback OpenAI server for chat and speech to text. Files the bot
downloads go to a temporary folder of the test's own (``tempfile.tempdir``), so a test can
check that none is left behind. :func:`photo` makes real JPEG photos.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from adapters.discord.settings import DiscordSettings
from adapters.memory.settings import MemorySettings
from adapters.telegram.settings import TelegramSettings
from bots.app import Settings, platform_adapters, run_adapters, running_engine
from core.settings import AccessSettings, CoreSettings, LLMSettings, MediaSettings
from tests._db import UpgradeHead
from tests.fakes.openai_server import FakeOpenAIServer

API_KEY = "sk-loopback-media"
MEDIA_TABLES = ("media", "message_media", "messages")


def seen_reply(body: Mapping[str, Any]) -> str:
    """The fake model's answer: how many images the request showed it, and the last user text."""
    images = 0
    last = ""
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            images += sum(1 for part in content if part.get("type") == "image_url")
            text = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        else:
            text = str(content or "")
        if message.get("role") == "user":
            last = text
    return f"Seeing {images} image(s). You said: {last}"


def photo(width: int, height: int, colour: str = "seagreen") -> bytes:
    """A real JPEG photo: a ``colour`` leaf on a light background."""
    image = Image.new("RGB", (width, height), "ivory")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 4, width * 4 // 5, height * 3 // 4), fill=colour)
    draw.line((width // 5, height // 2, width * 4 // 5, height // 2), fill="darkgreen", width=9)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def jpeg_size(data: bytes) -> tuple[str | None, tuple[int, int]]:
    """The format and pixel size Pillow reads from ``data``."""
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.size


@dataclass
class Deployment:
    """Where one bot keeps its things, and what it is configured with."""

    data_dir: Path
    temp_dir: Path
    openai: FakeOpenAIServer

    @property
    def database(self) -> Path:
        return self.data_dir / "chinwag.db"

    def settings(
        self,
        *,
        telegram: TelegramSettings | None = None,
        discord: DiscordSettings | None = None,
        max_file_mb: float = 20.0,
    ) -> Settings:
        return Settings(
            env_file=None,
            core=CoreSettings(_env_file=None, bot_name="mediabot"),
            llm=LLMSettings(_env_file=None),
            access=AccessSettings(_env_file=None),
            memory=MemorySettings(_env_file=None, chinwag_data_dir=self.data_dir),
            telegram=telegram or TelegramSettings(_env_file=None),
            discord=discord or DiscordSettings(_env_file=None),
            media=MediaSettings(_env_file=None, max_file_mb=max_file_mb),
        )

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of ``table`` in the bot's SQLite database."""
        assert table in MEDIA_TABLES
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            return db.execute(f"SELECT * FROM {table}").fetchall()

    def user_texts(self) -> list[str]:
        """The stored user messages' text, oldest first."""
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            rows = db.execute("SELECT content FROM messages WHERE role = 'user' ORDER BY id")
            return [str(content) for (content,) in rows.fetchall()]

    def files(self) -> list[str]:
        """Everything in the data and temporary directories, as paths relative to ``tmp_path``."""
        root = self.data_dir.parent
        return sorted(
            str(path.relative_to(root))
            for folder in (self.data_dir, self.temp_dir)
            for path in folder.rglob("*")
        )


async def deployment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    upgrade_head: UpgradeHead,
    openai: FakeOpenAIServer,
    *,
    model: str,
) -> Deployment:
    """A data directory with a migrated database, and the environment naming ``openai``.

    ``OPENAI_BASE_URL`` means speech to text is only on through ``STT_BASE_URL``, set to the
    same server (its key defaults to ``OPENAI_API_KEY``).
    """
    data_dir, temp_dir = tmp_path / "data", tmp_path / "tmp"
    data_dir.mkdir(mode=0o700)
    temp_dir.mkdir()
    found = Deployment(data_dir, temp_dir, openai)
    await upgrade_head(f"sqlite+aiosqlite:///{found.database}")
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    for name, value in {
        "OPENAI_BASE_URL": openai.base_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_MODEL": model,
        "STT_BASE_URL": openai.base_url,
    }.items():
        monkeypatch.setenv(name, value)
    return found


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[None]:
    """The bot serving as ``chinwag run`` does, from when every adapter started.

    What :func:`bots.app.serve` runs without a terminal, signals or health endpoint:
    :func:`~bots.app.running_engine`, :func:`~bots.app.platform_adapters` and
    :func:`~bots.app.run_adapters`, stopped at the end as by SIGTERM and awaited.
    """
    stop, started = asyncio.Event(), asyncio.Event()

    async def run() -> BaseException | None:
        async with running_engine(settings) as engine:
            adapters = platform_adapters(settings, engine)
            return await run_adapters(engine, adapters, stop, grace=5, on_serving=started.set)

    task = asyncio.create_task(run(), name="media-serve")
    waiter = asyncio.create_task(started.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            raise AssertionError(f"the bot did not start: {task}")
        yield
    finally:
        waiter.cancel()
        stop.set()
        fatal = await asyncio.wait_for(task, 30)
    assert fatal is None, fatal
