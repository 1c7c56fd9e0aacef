"""The terminal chat shows only the conversation; its log goes to a private file.

Real ``chinwag chat`` processes, stdin piped, answered by the loopback OpenAI server.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRET = "sk-log-secret-987654"


def echo_reply(body: Mapping[str, Any]) -> str:
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    return f"reply to {users[-1]}"


@pytest.fixture
async def llm():
    async with FakeOpenAIServer(reply=echo_reply, api_key=SECRET) as server:
        yield server


def chat_env(tmp_path: Path, server: FakeOpenAIServer, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "LLM_", "TELEGRAM_", "DISCORD_", "LOCAL_", "LOG_"))
    }
    env.update(
        CHINWAG_DATA_DIR=str(tmp_path / "data"),
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY=SECRET,
        OPENAI_MODEL="gpt-4o-mini",
        LOGNAME="tester",
        USER="tester",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


async def chat(tmp_path: Path, server: FakeOpenAIServer, stdin: str, **extra: str):
    env = chat_env(tmp_path, server, **extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "chat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 90)
    return proc.returncode, out.decode(), err.decode()


async def test_terminal_chat_prints_only_replies_and_logs_to_a_private_file(tmp_path, llm):
    code, out, err = await chat(tmp_path, llm, "hello\nhow are you\n", LOG_LEVEL="INFO")
    assert code == 0, err
    assert out.splitlines() == ["reply to hello", "reply to how are you"]
    assert err == ""  # nothing below WARNING reaches the screen
    log_file = tmp_path / "data" / "chinwag.log"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    log = log_file.read_text()
    assert " INFO bots.app: LLM backend: openai" in log
    assert " DEBUG " not in log
    assert SECRET not in out + err + log


async def test_at_debug_in_json_the_screen_still_holds_only_replies(tmp_path, llm):
    code, out, err = await chat(
        tmp_path, llm, "hello\nhow are you\n", LOG_LEVEL="DEBUG", LOG_FORMAT="json"
    )
    assert code == 0, err
    assert out.splitlines() == ["reply to hello", "reply to how are you"]
    assert err == ""
    lines = (tmp_path / "data" / "chinwag.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert {"level": "INFO", "logger": "bots.app"}.items() <= next(
        r for r in records if r["message"].startswith("LLM backend")
    ).items()
    assert any(r["level"] == "DEBUG" and "how are you" in r["message"] for r in records)
    assert SECRET not in out + err + "\n".join(lines)


async def test_run_falls_back_to_the_terminal_chat_and_says_where_the_log_is(tmp_path, llm):
    # Standard input is a terminal (a pseudo-terminal here), so `run` opens the console chat.
    controller, terminal = pty.openpty()
    try:
        env = chat_env(tmp_path, llm, LOG_LEVEL="DEBUG")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots.cli",
            "run",
            stdin=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
            env=env,
        )
        os.write(controller, b"hello\n\x04")  # a line, then Ctrl-D
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, err
    assert "reply to hello" in out.decode()
    log_file = tmp_path / "data" / "chinwag.log"
    assert err.decode() == f"chinwag: logging to {log_file}\n"
    assert " DEBUG " in log_file.read_text()
