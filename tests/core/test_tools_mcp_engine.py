"""The engine with a real MCP server over stdio (the ``mcp`` SDK's, tests/fakes/mcp_servers.py).

A read tool of the server runs at once and its result reaches the model; an act tool waits
for a person's confirmation, and runs (once) only after the press.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from adapters.mcp.source import McpServerSource
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.tools import Toolbox
from core.types import IncomingAction, ToolDecision
from tests.adapters.mcp.conftest import FAST, config, light_log, stdio_entry
from tests.core.conftest import dm
from tests.core.tooling import calls, rounds, summarise, tool_texts
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend, tool_call

pytestmark = pytest.mark.timeout(60)

POLICY = {"tools": {"tool_users": ["test:alice"]}}


@pytest.fixture
def store(sqlite_store: SqlMemoryStore) -> SqlMemoryStore:
    """The SQL store on SQLite (the audit and the pending calls are rows)."""
    return sqlite_store


@pytest.fixture
async def home(tmp_path: Path) -> AsyncIterator[tuple[Toolbox, Path]]:
    """The fake MCP server as a started toolbox (``echo`` is read by config), and its state."""
    state = tmp_path / "mcp-state"
    state.mkdir()
    source = McpServerSource(config("home", stdio_entry(state, tools={"echo": "read"})), **FAST)
    toolbox = Toolbox([source])
    await toolbox.start()
    try:
        yield toolbox, state
    finally:
        await toolbox.aclose()


async def settled(engine: Engine) -> None:
    """Wait until the engine's lanes and side tasks are idle."""
    async with asyncio.timeout(10):
        while engine._lanes.tasks() or engine._side_tasks:
            await asyncio.sleep(0.01)


async def test_a_read_mcp_tool_runs_and_its_result_reaches_the_model(
    make_engine, backend: ScriptedBackend, store: SqlMemoryStore, home
) -> None:
    toolbox, _ = home
    backend._reply = rounds(calls(tool_call("home__echo", {"text": "hello from MCP"})), summarise)
    engine = make_engine(toolbox=toolbox, **POLICY)
    out = RecordingChannel()
    await engine.handle(dm("say hello through the server"), out)

    assert {"home__echo", "home__set_light"} <= {t.name for t in backend.calls[0].tools}
    assert tool_texts(backend.calls[1]) == ["hello from MCP"]
    assert out.replies == ["done: hello from MCP"]
    assert out.confirmations == []  # a read tool asks nobody
    (entry,) = await store.audit_entries(bot="testbot")
    assert (entry.tool, entry.source, entry.decision, entry.result_status) == (
        "home__echo",
        "mcp:home",
        ToolDecision.ALLOWED,
        "ok",
    )


async def test_an_act_mcp_tool_waits_for_a_confirmation(
    make_engine, backend: ScriptedBackend, store: SqlMemoryStore, home
) -> None:
    toolbox, state = home
    switch = tool_call("home__set_light", {"entity": "light.kitchen", "on": True})
    backend._reply = rounds(calls(switch), summarise)
    engine = make_engine(toolbox=toolbox, **POLICY)
    out = RecordingChannel()
    await engine.handle(dm("turn on the kitchen light"), out)

    ((prompt, action_id),) = out.confirmations
    assert "home__set_light" in prompt and "light.kitchen" in prompt
    assert light_log(state) == []  # the server's readOnlyHint is not trusted: it waits
    assert len(backend.calls) == 1

    await engine.handle_action(IncomingAction("test", "alice", "alice", action_id, True), out)
    await settled(engine)
    assert light_log(state) == ["light.kitchen on"]
    assert any(n.startswith("✅") for n in out.notices)
    assert out.replies[-1] == "done: light.kitchen is now on"
    (entry,) = await store.audit_entries(bot="testbot")
    assert (entry.decision, entry.result_status) == (ToolDecision.CONFIRMED, "ok")

    await engine.handle_action(IncomingAction("test", "alice", "alice", action_id, True), out)
    assert light_log(state) == ["light.kitchen on"]  # a second press runs nothing
