"""The README's "Write your own bot" example runs as printed: loaded, offered, called."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from adapters.memory.in_memory import InMemoryStore
from bots.loading import load_bot, persona_of, with_memory_key
from bots.toolbox import build_toolbox
from core.engine import Engine
from core.settings import CoreSettings, LLMSettings
from core.tools import ToolError, spec
from core.types import (
    BackendEvent,
    CompletionRequest,
    Finish,
    IncomingMessage,
    Role,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tests.bots.test_bots import tools_of
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_bot() -> str:
    """The first Python block of the README's "Write your own bot" section, exactly."""
    section = README.read_text().split("\n## Write your own bot\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "no python block in the README's Write your own bot section"
    return found.group(1)


@pytest.fixture
def bot_file(tmp_path: Path) -> Path:
    path = tmp_path / "mybot.py"
    path.write_text(readme_bot())
    return path


def test_the_example_is_a_complete_bot_of_at_most_20_lines(bot_file: Path) -> None:
    code = bot_file.read_text()
    assert len(code.splitlines()) <= 20
    assert "chinwag --bot ./mybot.py chat" in README.read_text()  # how to run it is told
    bot = load_bot(str(bot_file))
    assert [t.name for t in tools_of(bot)] == ["days_until"]


async def test_its_tool_has_a_schema_from_the_hints_and_runs(bot_file: Path) -> None:
    (days_until,) = tools_of(load_bot(str(bot_file)))
    offered = spec(days_until)
    assert offered.description == "Count the days from today until a date."
    assert offered.parameters["required"] == ["day"]
    assert offered.parameters["properties"]["day"]["format"] == "date"
    assert offered.parameters["properties"]["day"]["description"] == "the date, as YYYY-MM-DD."
    soon = date.today() + timedelta(days=3)
    result = await days_until.invoke(days_until.validate(f'{{"day": "{soon}"}}'))
    assert result.content == f"3 days until {soon}"
    with pytest.raises(ToolError, match="has passed"):
        await days_until.invoke(days_until.validate('{"day": "2001-01-01"}'))
    with pytest.raises(ToolError):  # not a date: refused before the function runs
        days_until.validate('{"day": "next week"}')


class CallsTheTool(ScriptedBackend):
    """Asks for ``days_until`` when the user spoke last; then reads the tool's answer out."""

    def __init__(self, day: date) -> None:
        super().__init__()
        self.day = day

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        self.calls.append(request)
        last = request.messages[-1]
        if last.role is Role.USER:
            yield ToolCallDelta(0, id="call_1", name="days_until")
            yield ToolCallDelta(0, arguments=f'{{"day": "{self.day}"}}')
            yield Finish("tool_calls")
        else:
            yield TextDelta(f"The tool says: {last.content}")
            yield Finish("stop")
        yield Usage(prompt_tokens=10, completion_tokens=5)


# The tool loop and the gate live on another branch (s11-loop); until they are merged the engine
# does not call tools. strict: once they are, this passes and the marker must go.
LOOP_MERGED = importlib.util.find_spec("core.gate") is not None


@pytest.mark.xfail(not LOOP_MERGED, reason="the tool loop is not merged yet", strict=True)
async def test_a_chat_calls_its_tool_through_the_engine(bot_file: Path) -> None:
    bot = load_bot(str(bot_file))
    core = with_memory_key(CoreSettings(_env_file=None), bot)
    soon = date.today() + timedelta(days=10)
    backend = CallsTheTool(soon)
    async with InMemoryStore() as store:
        engine = Engine(
            backend=backend,
            store=store,
            core=core,
            llm=LLMSettings(_env_file=None),
            persona=persona_of(core, bot),
            toolbox=build_toolbox(bot),
            extra_commands=bot.commands,
        )
        await engine.start()
        try:
            out = RecordingChannel()
            message = IncomingMessage(
                platform="console",
                chat_id="c1",
                user_id="ada",
                text="How long until my birthday?",
                message_id="1",
            )
            await engine.handle(message, out)
        finally:
            await engine.aclose()
    first = backend.calls[0]
    assert [t.name for t in first.tools] == ["days_until"]
    assert first.messages[0].role is Role.SYSTEM
    assert "You count down to dates." in first.messages[0].content
    assert len(backend.calls) == 2
    assert backend.calls[1].messages[-1].role is Role.TOOL
    assert f"The tool says: 10 days until {soon}" in out.texts
