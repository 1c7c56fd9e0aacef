"""Wiring: ``MCP_CONFIG`` naming a stdio server gives a bot its tools, and leaves no process."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from bots.toolbox import build_toolbox
from core.bot import Bot
from core.tools import Risk
from tests.adapters.mcp.conftest import stdio_entry

pytestmark = pytest.mark.timeout(60)


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


async def test_mcp_config_gives_the_servers_tools_and_close_stops_the_server(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "mcp.json"
    entry = stdio_entry(state, tools={"echo": "read"})
    config.write_text(json.dumps({"mcpServers": {"home": entry}}))

    toolbox = build_toolbox(Bot(name="m", packs=("mcp",)), mcp_config=config)
    assert toolbox.tools() == {}  # nothing before start: the server is not running yet
    await toolbox.start()
    try:
        tools = toolbox.tools()
        assert {"home__echo", "home__set_light", "home__light_calls"} <= set(tools)
        assert tools["home__echo"].risk is Risk.READ  # the config's word
        assert tools["home__set_light"].risk is Risk.ACT
        echo = tools["home__echo"]
        assert (await echo.invoke(echo.validate('{"text": "hi"}'))).content == "hi"
        pid = int((state / "pid").read_text())
        assert running(pid)
    finally:
        await toolbox.aclose()

    assert toolbox.tools() == {}
    async with asyncio.timeout(10):
        while running(pid):
            await asyncio.sleep(0.05)
