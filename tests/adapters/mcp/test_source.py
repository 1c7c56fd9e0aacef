"""Supervised MCP servers against the real SDK's servers, over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.mcp.source import McpServerSource, SourceState
from core.tools import Risk, Toolbox, ToolError
from tests.adapters.mcp.conftest import (
    ROOT,
    TOKEN,
    HttpFake,
    config,
    free_port,
    http_entry,
    json_args,
    light_log,
    stdio_entry,
    wait_for_port,
)
from tests.fakes.mcp_servers import WEIRD_NAME

Make = Callable[..., McpServerSource]
OPENAI = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
LOGGER = "adapters.mcp"


async def eventually(check: Callable[[], bool], limit: float = 20.0) -> None:
    """Wait until ``check()`` holds (the supervisor works in the background)."""
    async with asyncio.timeout(limit):
        while not check():
            await asyncio.sleep(0.05)


def names(source: McpServerSource) -> set[str]:
    return {t.name for t in source.tools()}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


async def test_stdio_server_lists_and_calls_tools(sources: Make, state: Path) -> None:
    source = sources(config("home", stdio_entry(state, tools={"echo": "read"})))
    await source.start()

    tools = {t.name: t for t in source.tools()}
    assert {"home__echo", "home__set_light", "home__light_calls", "home__fail"} <= set(tools)
    assert all(OPENAI.match(name) for name in tools)
    echo = tools["home__echo"]
    assert echo.source == "mcp:home"
    assert echo.risk is Risk.READ  # the config's word

    result = await echo.invoke(echo.validate(json_args(text="hello there")))
    assert result.content == "hello there"

    light = tools["home__set_light"]
    assert light.risk is Risk.ACT  # its readOnlyHint is not trusted
    await light.invoke(light.validate(json_args(entity="light.kitchen", on=True)))
    assert light_log(state) == ["light.kitchen on"]
    assert tools["home__wipe"].risk is Risk.DANGEROUS  # destructiveHint raises act

    stats = await tools["home__stats"].invoke({})
    assert '"lights": 3' in stats.content
    picture = await tools["home__picture"].invoke({})
    assert picture.content.startswith("[image: image/png")


async def test_odd_and_long_names_are_usable_and_distinct(sources: Make, state: Path) -> None:
    source = sources(config("my.server", stdio_entry(state)))
    await source.start()

    by_remote = {t.remote: t for t in source.tools()}
    assert by_remote["odd_name"].name == "my_server__odd_name"
    assert by_remote["odd.name"].name != "my_server__odd_name"
    weird = by_remote[WEIRD_NAME]
    assert OPENAI.match(weird.name)
    assert len(weird.name) == 64
    assert (await weird.invoke({})).content == "weird answered"
    assert (await by_remote["odd.name"].invoke({})).content == "odd.name answered"


async def test_an_error_result_and_a_bad_call_come_back_as_tool_errors(
    sources: Make, state: Path
) -> None:
    source = sources(config("home", stdio_entry(state)))
    await source.start()
    tools = {t.name: t for t in source.tools()}

    with pytest.raises(ToolError, match="the bulb is broken"):
        await tools["home__fail"].invoke({"reason": "the bulb is broken"})
    # the session survives both, and the next call works
    assert (await tools["home__echo"].invoke({"text": "still here"})).content == "still here"


async def test_a_call_cut_off_by_the_timeout_leaves_the_session_usable(
    sources: Make, state: Path
) -> None:
    source = sources(config("home", stdio_entry(state)))
    await source.start()
    tools = {t.name: t for t in source.tools()}

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(tools["home__slow"].invoke({"seconds": 30}), 0.5)
    assert (await tools["home__echo"].invoke({"text": "after"})).content == "after"


async def test_a_new_tool_appears_after_list_changed(sources: Make, state: Path) -> None:
    source = sources(config("home", stdio_entry(state, tools={"brand_new": "read"})))
    await source.start()
    assert "home__brand_new" not in names(source)

    add = next(t for t in source.tools() if t.name == "home__add_tool")
    await add.invoke({"name": "brand_new"})

    await eventually(lambda: "home__brand_new" in names(source))
    new = next(t for t in source.tools() if t.name == "home__brand_new")
    assert new.risk is Risk.READ
    assert (await new.invoke({})).content == "hello from brand_new"


@pytest.mark.slow
async def test_a_killed_server_is_restarted_and_its_tools_come_back(
    sources: Make, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    source = sources(config("home", stdio_entry(state)))
    await source.start()
    first_pid = int((state / "pid").read_text())
    light = next(t for t in source.tools() if t.name == "home__set_light")
    await light.invoke({"entity": "light.hall", "on": True})

    os.kill(first_pid, signal.SIGKILL)
    await eventually(lambda: not source.tools())  # gone while the server is away
    await eventually(lambda: source.state is SourceState.CONNECTED and bool(source.tools()))

    assert int((state / "pid").read_text()) != first_pid
    light = next(t for t in source.tools() if t.name == "home__set_light")
    await light.invoke({"entity": "light.hall", "on": False})
    assert light_log(state) == ["light.hall on", "light.hall off"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "home" in warnings[0].getMessage()
    assert any("is back" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
async def test_an_http_server_that_went_away_is_reconnected_when_it_is_back(
    sources: Make, tmp_path: Path
) -> None:
    port = free_port()
    state = tmp_path / "web"
    command = [sys.executable, "-m", "tests.fakes.mcp_servers", "http", "--port", str(port)]
    command += ["--token", TOKEN, "--state", str(state)]

    def serve() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, cwd=ROOT)
        wait_for_port(port, process)
        return process

    process = serve()
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        source = sources(config("web", http_entry(url), environ={"FAKE_TOKEN": TOKEN}))
        await source.start()
        assert "web__echo" in names(source)
        process.kill()
        process.wait()
        await eventually(lambda: not source.tools())

        process = serve()
        await eventually(lambda: "web__echo" in names(source))
        light = next(t for t in source.tools() if t.name == "web__set_light")
        await light.invoke({"entity": "light.garden", "on": True})
        assert light_log(state) == ["light.garden on"]
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_a_call_while_the_server_is_away_is_a_short_tool_error(
    sources: Make, state: Path
) -> None:
    source = sources(config("home", stdio_entry(state)), keepalive_seconds=60, retry_initial=30)
    await source.start()
    echo = next(t for t in source.tools() if t.name == "home__echo")
    os.kill(int((state / "pid").read_text()), signal.SIGKILL)

    with pytest.raises(ToolError, match="MCP server home"):
        async with asyncio.timeout(10):
            await echo.invoke({"text": "anyone?"})
    await eventually(lambda: not source.tools())


async def test_streamable_http_with_a_bearer_header(
    sources: Make, http_fake: HttpFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config("web", http_entry(http_fake.url), environ={"FAKE_TOKEN": TOKEN})
    source = sources(cfg)
    await source.start()

    tools = {t.name: t for t in source.tools()}
    assert tools["web__set_light"].source == "mcp:web"
    await tools["web__set_light"].invoke({"entity": "light.porch", "on": True})
    assert light_log(http_fake.state) == ["light.porch on"]

    await tools["web__add_tool"].invoke({"name": "over_http"})
    await eventually(lambda: "web__over_http" in names(source))


@pytest.mark.slow
async def test_a_bad_bearer_is_reported_once_and_the_other_server_still_works(
    sources: Make, http_fake: HttpFake, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    bad = sources(config("web", http_entry(http_fake.url), environ={"FAKE_TOKEN": "wrong-token"}))
    good = sources(config("home", stdio_entry(state)))
    toolbox = Toolbox([bad, good])
    await toolbox.start()

    await asyncio.sleep(1.0)  # several retries at test speed
    assert not bad.tools()
    assert "home__echo" in toolbox.tools()
    assert not any(name.startswith("web__") for name in toolbox.tools())
    echo = toolbox.get("home__echo")
    assert echo is not None
    assert (await echo.invoke({"text": "fine"})).content == "fine"

    reported = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(reported) == 1
    assert "web" in reported[0].getMessage()
    assert "401" in reported[0].getMessage()
    retries = [r for r in caplog.records if "still unavailable" in r.getMessage()]
    assert retries  # it kept trying, quietly
    assert all(r.levelno == logging.DEBUG for r in retries)
    await toolbox.aclose()


async def test_a_server_that_cannot_start_is_reported_once(
    sources: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    source = sources(config("ghost", {"command": "/nonexistent/mcp-server"}))
    await source.start()
    await asyncio.sleep(0.8)

    assert not source.tools()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w.getMessage() for w in warnings] == [
        "MCP server ghost is unavailable (cannot run '/nonexistent/mcp-server': not found); "
        "its tools are left out until it is back"
    ]


async def test_secrets_never_reach_logs_above_debug_nor_the_tools(
    sources: Make, http_fake: HttpFake, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env_secret = "env-secret-7d1e0b"
    environ = {"FAKE_TOKEN": TOKEN, "STDIO_SECRET": env_secret}
    wrong = "Bearer wrong-9c2f4a"
    web = sources(config("web", http_entry(http_fake.url), environ=environ))
    denied = sources(config("denied", {"url": http_fake.url, "headers": {"Authorization": wrong}}))
    home = sources(config("home", stdio_entry(state, env={"SECRET": "${STDIO_SECRET}"}), environ))
    toolbox = Toolbox([web, denied, home])
    await toolbox.start()
    await asyncio.sleep(0.5)
    offered = toolbox.tools()
    assert {"web__echo", "home__echo"} <= set(offered)
    for name in ("web__echo", "home__echo"):
        await offered[name].invoke({"text": "hi"})
    # nothing a prompt is built from carries them
    for tool in offered.values():
        shown = f"{tool.name} {tool.description} {tool.parameters} {tool.describe({})}"
        assert TOKEN not in shown
        assert env_secret not in shown
    await toolbox.aclose()

    assert toolbox.tools() == {}
    for record in caplog.records:
        if record.levelno > logging.DEBUG:
            text = record.getMessage()
            assert TOKEN not in text
            assert "wrong-9c2f4a" not in text
            assert env_secret not in text


async def test_aclose_stops_the_server_process_cleanly(sources: Make, state: Path) -> None:
    source = sources(config("home", stdio_entry(state)))
    await source.start()
    pid = int((state / "pid").read_text())
    assert pid_alive(pid)

    await source.aclose()
    await source.aclose()  # idempotent
    assert not source.tools()
    assert source.state is SourceState.CLOSED
    await eventually(lambda: not pid_alive(pid), limit=10)
    with pytest.raises(RuntimeError):
        await source.start()


async def test_aclose_while_still_connecting_returns_promptly(
    sources: Make, tmp_path: Path
) -> None:
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(60)\n")  # never answers the handshake
    source = sources(config("slow", {"command": sys.executable, "args": [str(hang)]}))
    start = asyncio.create_task(source.start())
    await asyncio.sleep(0.5)
    async with asyncio.timeout(10):
        await source.aclose()
        await start
    assert source.state is SourceState.CLOSED
