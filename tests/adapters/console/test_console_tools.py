"""Tools in a console chat, end to end: the model proposes, the person types y or n.

The real ``ConsoleAdapter`` reads a pipe; the engine uses the real ``OpenAIBackend`` against
the loopback OpenAI server, scripted to call Home Assistant's ``ha_call_service``; the real
Home Assistant tool pack talks to the fake Home Assistant; the store is the SQL store on a
migrated SQLite file. The chat ends as ``chinwag chat`` ends it: end of input, then the
engine drains (the continuation after an answer is part of the chat).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.console import ConsoleAdapter
from adapters.homeassistant.tools import HomeAssistantTools
from adapters.llm.openai import OpenAIBackend, OpenAISettings
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.rounds import DECLINED
from core.settings import CoreSettings, LLMSettings, ToolSettings
from core.tool_actions import DECLINED_NOTICE
from core.tools import Toolbox
from core.types import ToolDecision
from tests.adapters.homeassistant.helpers import make_settings
from tests.fakes.homeassistant_server import FakeHomeAssistant, ServiceCall
from tests.fakes.openai_server import FakeOpenAIServer, FakeReply, FakeToolCall

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

LIGHT_ON = {"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}
FACT = "✅ light.kitchen → on"
DONE = "The kitchen light is on now."


def home_model(body: Mapping[str, Any]) -> str | FakeReply:
    """Proposes turning the light on; then says what the tool result says."""
    messages = list(body["messages"])
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    results = [str(m["content"]) for m in messages[last_user:] if m["role"] == "tool"]
    if results:
        return DONE if '"state": "on"' in results[-1] else f"It was not done: {results[-1]}"
    if "light" not in str(messages[last_user]["content"]):
        return "You're welcome."
    return FakeReply(
        text="Let me do that.",
        tool_calls=[FakeToolCall("call_1", "ha_call_service", json.dumps(LIGHT_ON))],
    )


class Chat:
    """A console chat with the tool-using bot, on the fakes."""

    def __init__(
        self, ha: FakeHomeAssistant, openai: FakeOpenAIServer, engine: Engine, store: SqlMemoryStore
    ) -> None:
        self.ha = ha
        self.store = store
        self.openai = openai
        self.engine = engine

    async def run(self, stdin: str, files_dir: Path) -> list[str]:
        """Type ``stdin`` into a piped console; the lines printed, once the chat ended."""
        out = io.StringIO()
        adapter = ConsoleAdapter(
            self.engine,
            files_dir=files_dir,
            user_id="ada",
            stdin=io.StringIO(stdin),
            stdout=out,
            interactive=False,
        )
        await adapter.start()
        await asyncio.wait_for(adapter.wait_closed(), 20)
        await adapter.stop_intake()
        await self.engine.aclose(grace=10)
        await adapter.aclose()
        return out.getvalue().splitlines()

    def tool_messages(self) -> list[str]:
        """The tool results the model read in the last request it got."""
        body = self.openai.chat_requests[-1].body
        return [str(m["content"]) for m in body["messages"] if m["role"] == "tool"]


@pytest.fixture
async def chat(store: SqlMemoryStore) -> AsyncIterator[Chat]:
    async with (
        FakeHomeAssistant() as ha,
        FakeOpenAIServer(reply=home_model) as openai,
    ):
        backend = OpenAIBackend(
            OpenAISettings(
                _env_file=None, base_url=openai.base_url, api_key="sk-loopback", model="gpt-4o"
            ),
            timeout=10,
        )
        await backend.start()
        toolbox = Toolbox([HomeAssistantTools(make_settings(ha))])
        await toolbox.start()
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="chinwag"),
            llm=LLMSettings(_env_file=None),
            toolbox=toolbox,
            tool_settings=ToolSettings(_env_file=None, tool_users=["console:ada"]),
        )
        await engine.start()
        try:
            yield Chat(ha, openai, engine, store)
        finally:
            await engine.aclose(grace=5)
            await toolbox.aclose()
            await backend.aclose()


def question_end(lines: list[str]) -> int:
    """The index of the question's last line (it ends with the ``[yes/no]`` hint)."""
    return next(i for i, line in enumerate(lines) if line.endswith("[yes/no]"))


async def test_yes_runs_the_tool_once_and_prints_the_fact(chat: Chat, tmp_path: Path) -> None:
    lines = await chat.run("turn on the kitchen light\ny\nthanks\n", tmp_path)
    end = question_end(lines)
    assert lines[: end - 2] == ["Let me do that."]
    assert lines[end - 2] == "Action: turn on Kitchen light (light.kitchen)"
    # The bot's fact, then the model's words; the next line typed is answered after them.
    assert lines[end + 1 :] == [FACT, DONE, "You're welcome."]
    assert chat.ha.service_calls == [
        ServiceCall("light", "turn_on", {"entity_id": "light.kitchen"}, 200)
    ]
    assert chat.ha.state_of("light.kitchen") == "on"
    (entry,) = await chat.store.audit_entries(bot="chinwag")
    assert entry.decision is ToolDecision.CONFIRMED
    assert entry.result_status == "ok"


async def test_no_runs_nothing_and_the_model_is_told(chat: Chat, tmp_path: Path) -> None:
    lines = await chat.run("turn on the kitchen light\nn\n", tmp_path)
    end = question_end(lines)
    assert lines[end + 1 :] == [DECLINED_NOTICE, f"It was not done: {DECLINED}"]
    assert chat.ha.service_calls == []
    assert chat.ha.state_of("light.kitchen") == "off"
    assert chat.tool_messages() == [DECLINED]
    (entry,) = await chat.store.audit_entries(bot="chinwag")
    assert entry.decision is ToolDecision.REFUSED
    assert entry.result_status is None
