"""The fake MCP servers (tests/fakes/mcp_servers.py) as running processes, and configs for them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from adapters.mcp.config import McpServerConfig, parse_config
from adapters.mcp.source import McpServerSource

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "tok-3f9a1c-very-secret"

# Fast supervision for tests: a dead connection is noticed within a fifth of a second.
FAST: dict[str, Any] = {
    "connect_timeout": 15.0,
    "keepalive_seconds": 0.2,
    "retry_initial": 0.1,
    "retry_max": 0.5,
}


def stdio_entry(state: Path, **extra: Any) -> dict[str, Any]:
    """An ``mcpServers`` entry running the fake over stdio with its state in ``state``."""
    return {
        "command": sys.executable,
        "args": ["-m", "tests.fakes.mcp_servers", "stdio", "--state", str(state)],
        "cwd": str(ROOT),
        **extra,
    }


def configs(
    servers: dict[str, Any], environ: dict[str, str] | None = None
) -> list[McpServerConfig]:
    """Parse an ``mcpServers`` mapping as chinwag parses the file."""
    return parse_config({"mcpServers": servers}, origin=Path("mcp.json"), environ=environ or {})


def config(
    name: str, entry: dict[str, Any], environ: dict[str, str] | None = None
) -> McpServerConfig:
    """One server's parsed config."""
    return configs({name: entry}, environ)[0]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """Where a stdio fake writes its pid and its log of set_light calls."""
    path = tmp_path / "stdio-state"
    path.mkdir()
    return path


@pytest.fixture
async def sources() -> AsyncIterator[Callable[..., McpServerSource]]:
    """Builds sources with fast supervision; closes every one at the end of the test."""
    made: list[McpServerSource] = []

    def make(cfg: McpServerConfig, **options: Any) -> McpServerSource:
        source = McpServerSource(cfg, **{**FAST, **options})
        made.append(source)
        return source

    yield make
    for source in made:
        await source.aclose()


def free_port() -> int:
    """A loopback port nobody listens on (for a server started right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HttpFake:
    """The fake over streamable HTTP, in its own process."""

    url: str
    state: Path
    process: subprocess.Popen[bytes]


def wait_for_port(port: int, process: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    """Return once ``port`` accepts connections (fail if the process died or took too long)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the fake MCP server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the fake MCP server did not start listening")


@pytest.fixture
def http_fake(tmp_path: Path) -> Iterator[HttpFake]:
    """The HTTP fake on a free loopback port, requiring ``Bearer TOKEN``."""
    port = free_port()
    state = tmp_path / "http-state"
    args = ["http", "--port", str(port), "--token", TOKEN, "--state", str(state)]
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.mcp_servers", *args], cwd=ROOT)
    try:
        wait_for_port(port, process)
        yield HttpFake(url=f"http://127.0.0.1:{port}/mcp", state=state, process=process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def http_entry(url: str, **extra: Any) -> dict[str, Any]:
    """An ``mcpServers`` entry for the HTTP fake, with a bearer header from ``$FAKE_TOKEN``."""
    return {
        "type": "http",
        "url": url,
        "headers": {"Authorization": "Bearer ${FAKE_TOKEN}"},
        **extra,
    }


def light_log(state: Path) -> list[str]:
    """The set_light calls the fake executed."""
    path = state / "set_light.log"
    return path.read_text().splitlines() if path.exists() else []


def json_args(**values: Any) -> str:
    """Arguments as the model sends them."""
    return json.dumps(values)
