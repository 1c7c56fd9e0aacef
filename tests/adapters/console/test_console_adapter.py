"""The console adapter as a user meets it: lines in, replies out, in front of the real engine.

Input is a pipe (``io.StringIO``) or a pretend terminal (``interactive=True``); the engine is the
real one with the scripted backend, so every reply below is what a person would read.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from core.engine import Engine
from core.ports import MemoryStore
from core.settings import CoreSettings, LLMSettings
from core.types import BackendEvent, CompletionRequest, QueuePosition
from tests.fakes.scripted import ScriptedBackend

pytestmark = pytest.mark.timeout(30)


class QueuedBackend(ScriptedBackend):
    """Says the request waits behind another conversation before it answers."""

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        yield QueuePosition(2)
        async for event in super().stream(request):
            yield event


@pytest.fixture
async def make_engine(store: MemoryStore) -> AsyncIterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def factory(backend: ScriptedBackend | None = None) -> Engine:
        engine = Engine(
            backend=backend or ScriptedBackend(),
            store=store,
            core=CoreSettings(_env_file=None, bot_name="consolebot"),
            llm=LLMSettings(_env_file=None),
        )
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.aclose(grace=1)


async def converse(
    engine: Engine, stdin: str, tmp_path: Path, *, interactive: bool = False
) -> list[str]:
    """Run a console session over ``stdin`` to its end; the lines it printed."""
    out = io.StringIO()
    adapter = ConsoleAdapter(
        engine,
        files_dir=tmp_path / "exports",
        user_id="ada",
        stdin=io.StringIO(stdin),
        stdout=out,
        interactive=interactive,
    )
    await engine.start()
    await adapter.start()
    await asyncio.wait_for(adapter.wait_closed(), 20)  # returns at the end of input
    await adapter.aclose()
    return out.getvalue().splitlines()


async def test_a_pipe_gets_only_the_replies_one_line_each_in_order(make_engine, tmp_path):
    lines = await converse(make_engine(), "hello\nmy name is Ada\n", tmp_path)
    assert lines == [
        "echo: hello | remembered: nothing",
        "echo: my name is Ada | remembered: hello",
    ]


async def test_forget_reads_yes_or_no_from_the_next_line(make_engine, tmp_path):
    lines = await converse(
        make_engine(), "remember this\n/forget\nno\n/forget\nyes\nnew start\n", tmp_path
    )
    assert lines[0] == "echo: remember this | remembered: nothing"
    assert lines[1].endswith("[yes/no]")
    assert lines[2] == "Cancelled: nothing was deleted."
    assert lines[3].endswith("[yes/no]")
    assert lines[4].startswith("Done: I deleted everything stored about you")
    # The answers were not taken as messages, and the history is gone.
    assert lines[5:] == ["echo: new start | remembered: nothing"]


async def test_a_confirmation_at_the_end_of_input_deletes_nothing(make_engine, tmp_path):
    engine = make_engine()
    lines = await converse(engine, "keep me\n/forget\n", tmp_path)
    assert lines[1].endswith("[yes/no]")
    assert lines[2:] == ["Cancelled: nothing was deleted."]
    lines = await converse(engine, "still there?\n", tmp_path)
    assert lines == ["echo: still there? | remembered: keep me"]


async def test_a_queue_notice_stands_on_its_own_line_above_the_answer(make_engine, tmp_path):
    lines = await converse(make_engine(QueuedBackend()), "hello\n", tmp_path)
    assert lines == [QueuePosition(2).notice, "echo: hello | remembered: nothing"]


async def test_the_end_of_input_closes_the_adapter_after_every_line_is_answered(
    make_engine, tmp_path
):
    backend = ScriptedBackend(chunk_size=2)
    lines = await converse(make_engine(backend), "one\ntwo\nthree\n", tmp_path)
    assert len(lines) == 3
    assert lines[2].startswith("echo: three")
    assert backend.completed == 3


async def test_a_terminal_shows_a_banner_and_prompts_and_skips_empty_lines(make_engine, tmp_path):
    lines = await converse(make_engine(), "hello\n\n   \nbye\n", tmp_path, interactive=True)
    assert lines[0].startswith("chinwag console: chatting with consolebot as ada (model scripted)")
    replies = [line for line in lines if "echo:" in line]
    assert replies == [
        "you> consolebot> echo: hello | remembered: nothing",
        "you> you> you> consolebot> echo: bye | remembered: hello",
    ]


async def test_an_export_is_saved_to_a_file_and_its_path_printed(make_engine, tmp_path):
    lines = await converse(make_engine(), "note this\n/export\n", tmp_path)
    saved = lines[-1].rsplit("Saved to ", 1)[1]
    assert Path(saved).parent == tmp_path / "exports"
    assert "note this" in Path(saved).read_text(encoding="utf-8")


async def test_misuse_is_a_clear_runtime_error(make_engine, tmp_path):
    adapter = ConsoleAdapter(
        make_engine(), files_dir=tmp_path, user_id="ada", stdin=io.StringIO(""), interactive=False
    )
    with pytest.raises(RuntimeError, match="before start"):
        await adapter.wait_closed()
    await adapter.aclose()
    await adapter.aclose()
    with pytest.raises(RuntimeError, match="after aclose"):
        await adapter.start()
