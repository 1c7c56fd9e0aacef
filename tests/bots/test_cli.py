"""The ``chinwag`` command as a user runs it: real processes, a pipe, a loopback LLM server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAIServer

# Every test here starts real `chinwag` processes: seconds each.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def remembering_reply(body: Mapping[str, Any]) -> str:
    """Lists every user message the prompt carries, so memory is visible in the reply."""
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    return "I have: " + " / ".join(users)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "LLM_", "TELEGRAM_", "DISCORD_", "LOCAL_", "DATABASE_"))
    }
    env.update(
        CHINWAG_DATA_DIR=str(tmp_path / "data"),
        LOGNAME="tester",
        USER="tester",
        PYTHONUNBUFFERED="1",
        BOT_NAME="clibot",
    )
    env.update(extra)
    return env


async def chinwag(
    tmp_path: Path, *args: str, stdin: str = "", env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=dict(env or cli_env(tmp_path)),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def llm():
    async with FakeOpenAIServer(reply=remembering_reply, api_key="sk-test-secret-123456") as server:
        yield server


def llm_env(tmp_path: Path, server: FakeOpenAIServer, **extra: str) -> dict[str, str]:
    return cli_env(
        tmp_path,
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="sk-test-secret-123456",
        OPENAI_MODEL="gpt-4o-mini",
        **extra,
    )


async def test_console_through_a_pipe_prints_only_replies_and_remembers_across_restarts(
    tmp_path, llm
):
    env = llm_env(tmp_path, llm)
    code, out, err = await chinwag(tmp_path, "chat", stdin="hello\nmy name is Ada\n", env=env)
    assert code == 0, err
    assert out.splitlines() == ["I have: hello", "I have: hello / my name is Ada"]
    log = (tmp_path / "data" / "chinwag.log").read_text()
    assert "INFO" in log  # the terminal chat logs to a file in the data dir
    assert "my name is Ada" not in log + err  # bodies are never logged above DEBUG
    code, out, err = await chinwag(tmp_path, "chat", stdin="who am I?\n", env=env)
    assert code == 0, err
    assert out.splitlines() == ["I have: hello / my name is Ada / who am I?"]


async def test_console_forget_asks_and_reads_the_next_line(tmp_path, llm):
    env = llm_env(tmp_path, llm)
    code, out, err = await chinwag(
        tmp_path, "chat", stdin="remember this\n/forget\nno\n/forget\nyes\nnew start\n", env=env
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "I have: remember this"
    assert lines[1].endswith("[yes/no]")
    assert lines[2] == "Cancelled: nothing was deleted."
    assert lines[4].startswith("Done: I deleted everything stored about you (2 messages)")
    assert lines[5] == "I have: new start"
    code, document, err = await chinwag(
        tmp_path, "export", "console", "tester", "--format", "json", env=env
    )
    assert code == 0, err
    assert "remember this" not in document
    assert "new start" in document


async def test_export_command_writes_markdown_file(tmp_path, llm):
    env = llm_env(tmp_path, llm)
    await chinwag(tmp_path, "chat", stdin="write this down\n", env=env)
    target = tmp_path / "history.md"
    code, _, err = await chinwag(
        tmp_path, "export", "console", "tester", "-o", str(target), env=env
    )
    assert code == 0, err
    text = target.read_text()
    assert text.startswith("# Conversations with clibot")
    assert "write this down" in text
    assert "I have: write this down" in text


async def test_secret_never_reaches_logs(tmp_path, llm):
    env = llm_env(tmp_path, llm, LOG_LEVEL="DEBUG")
    code, out, err = await chinwag(tmp_path, "chat", stdin="hello\n", env=env)
    assert code == 0, err
    log = (tmp_path / "data" / "chinwag.log").read_text()
    assert "DEBUG" in log  # it did log at DEBUG
    assert "sk-test-secret-123456" not in err + out + log


async def test_backend_failure_gives_plain_message_and_chat_goes_on(tmp_path, llm):
    llm.fail_server_error(times=4)  # the first try and all three retries fail
    env = llm_env(tmp_path, llm, LLM_TIMEOUT_SECONDS="5")
    code, out, err = await chinwag(tmp_path, "chat", stdin="first\nsecond\n", env=env)
    assert code == 0, err
    assert out.splitlines() == [
        "The language model is unavailable right now. Please try again shortly.",
        "I have: first / second",
    ]


async def test_sigterm_finishes_the_reply_in_flight_and_closes_cleanly(tmp_path):
    async with FakeOpenAIServer(reply=remembering_reply, chunk_delay=0.05) as server:
        env = cli_env(tmp_path, OPENAI_BASE_URL=server.base_url)
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
        assert proc.stdin is not None
        proc.stdin.write(b"a message with several words to stream slowly\n")
        await proc.stdin.drain()
        # The signal must land while the reply streams: wait for its request however long
        # the process takes to start on a busy machine (the test's timeout bounds it).
        while not server.chat_requests:
            assert proc.returncode is None, "the process ended before asking the model"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert out.decode().splitlines() == [
            "I have: a message with several words to stream slowly"
        ]
        code, document, _ = await chinwag(
            tmp_path, "export", "console", "tester", "--format", "json", env=env
        )
        assert code == 0
        assert '"status": "complete"' in document
        assert '"status": "in_progress"' not in document


async def test_run_without_platform_and_without_terminal_exits_2(tmp_path, llm):
    code, out, err = await chinwag(tmp_path, "run", env=llm_env(tmp_path, llm))
    assert code == 2
    assert "TELEGRAM_BOT_TOKEN" in err
    assert "DISCORD_BOT_TOKEN" in err
    assert out == ""


@pytest.mark.parametrize(
    ("variable", "value", "example"),
    [
        ("LLM_TEMPERATURE", "hot", "LLM_TEMPERATURE=0.7"),
        ("DATABASE_URL", "mysql://root:hunter2@db/chinwag", "DATABASE_URL=postgresql://"),
        ("MEMORY_SCOPE_GROUPS", "everyone", "MEMORY_SCOPE_GROUPS=user"),
        ("ALLOWED_USERS", "12345", "ALLOWED_USERS=telegram:"),
    ],
)
async def test_malformed_setting_exits_2_with_one_clear_line(
    tmp_path, llm, variable, value, example
):
    code, out, err = await chinwag(
        tmp_path, "chat", env=llm_env(tmp_path, llm, **{variable: value})
    )
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert variable in lines[0]
    assert example in lines[0]
    assert "hunter2" not in err


async def test_env_file_is_read_after_the_environment(tmp_path, llm):
    (tmp_path / ".env").write_text(
        f"OPENAI_BASE_URL={llm.base_url}\nOPENAI_API_KEY=sk-test-secret-123456\n"
    )
    code, out, err = await chinwag(tmp_path, "chat", stdin="from dotenv\n")
    assert code == 0, err
    assert out.splitlines() == ["I have: from dotenv"]


async def test_db_commands(tmp_path):
    env = cli_env(tmp_path)
    code, out, err = await chinwag(tmp_path, "db", "current", env=env)
    assert (code, out.strip()) == (0, "base (empty)"), err
    code, out, err = await chinwag(tmp_path, "db", "upgrade", env=env)
    assert code == 0, err
    head = out.strip().split()[-1]
    code, out, _ = await chinwag(tmp_path, "db", "downgrade", env=env)
    assert code == 0
    assert out.strip().split()[-1] != head
    code, out, _ = await chinwag(tmp_path, "db", "upgrade", env=env)
    assert out.strip().split()[-1] == head


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("run",),
        ("chat",),
        ("db",),
        ("db", "upgrade"),
        ("export",),
        ("audit",),
        ("discord", "sync"),
    ],
)
async def test_help_everywhere(tmp_path, args):
    code, out, _ = await chinwag(tmp_path, *args, "--help")
    assert code == 0
    assert out.startswith("usage: chinwag")
