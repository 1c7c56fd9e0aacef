"""``/attach PATH [caption]`` in the console: local files sent to the real engine."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from adapters.console.attach import kind_of, parse_attach
from adapters.memory.in_memory import InMemoryStore
from core.engine import Engine
from core.settings import CoreSettings, LLMSettings
from core.types import Role
from tests.fakes.media import FakeReader, FakeTranscriber, image_bytes
from tests.fakes.scripted import ScriptedBackend

pytestmark = pytest.mark.timeout(30)


async def converse(backend: ScriptedBackend, stdin: str, tmp_path: Path) -> list[str]:
    """A piped console session with a reader and a transcriber; the lines it printed."""
    out = io.StringIO()
    async with InMemoryStore() as store:
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="consolebot"),
            llm=LLMSettings(_env_file=None),
            reader=FakeReader(),
            transcriber=FakeTranscriber("hello from my voice"),
        )
        adapter = ConsoleAdapter(
            engine,
            files_dir=tmp_path / "exports",
            user_id="ada",
            stdin=io.StringIO(stdin),
            stdout=out,
        )
        await engine.start()
        await adapter.start()
        await asyncio.wait_for(adapter.wait_closed(), 20)
        await adapter.aclose()
        await engine.aclose(grace=1)
    return out.getvalue().splitlines()


async def test_attach_sends_a_text_file_a_photo_and_a_voice_note(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("eggs, milk\n")
    (tmp_path / "my plant.jpg").write_bytes(image_bytes(640, 480))
    (tmp_path / "memo.ogg").write_bytes(b"OggS" + b"\0" * 64)
    backend = ScriptedBackend()
    backend.vision = True
    lines = await converse(
        backend,
        f"/attach {tmp_path}/notes.txt what do I need?\n"
        f'/attach "{tmp_path}/my plant.jpg" what is this?\n'
        f"/attach {tmp_path}/memo.ogg\n",
        tmp_path,
    )
    first, second, third = (
        [m for m in c.messages if m.role is Role.USER][-1] for c in backend.calls
    )
    assert first.content == "what do I need?\n\nnotes.txt:\n```\neggs, milk\n```"
    assert second.content == "what is this?"
    assert [(i.width, i.height) for i in second.images] == [(640, 480)]
    assert third.content == "hello from my voice"
    assert "🎤 “hello from my voice”" in lines


async def test_attach_names_a_missing_path_and_keeps_going(tmp_path: Path) -> None:
    lines = await converse(
        ScriptedBackend(), f"/attach {tmp_path}/nope.png\n/attach\nhi\n", tmp_path
    )
    assert lines == [
        f"No file at {tmp_path}/nope.png.",
        "Usage: /attach PATH [caption], e.g. /attach ~/photos/plant.jpg what is this plant?",
        "echo: hi | remembered: nothing",
    ]


def test_the_kind_follows_the_extension(tmp_path: Path) -> None:
    assert kind_of("image/png") == "photo"
    assert kind_of("audio/mpeg") == "voice"
    assert kind_of("text/csv") == "document"
    assert parse_attach('"unclosed') == (
        "The path's closing quote is missing. Usage: /attach PATH [caption], "
        "e.g. /attach ~/photos/plant.jpg what is this plant?"
    )
