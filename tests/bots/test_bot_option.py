"""``--bot`` and ``chinwag audit`` as a user runs them: real processes."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from core.types import AuditEntry, ToolDecision
from tests.bots.test_cli import chinwag, cli_env, llm_env
from tests.bots.test_readme_bot import readme_bot
from tests.fakes.openai_server import FakeOpenAIServer

# Every test here starts real `chinwag` processes: seconds each.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def no_bot_name(env: dict[str, str]) -> dict[str, str]:
    """``env`` without ``BOT_NAME``: the bot's own memory key applies."""
    return {k: v for k, v in env.items() if k != "BOT_NAME"}


@pytest.mark.parametrize(
    ("value", "source", "expected"),
    [
        ("./missing.py", None, "--bot ./missing.py: no such file"),
        ("nosuch.module", None, "--bot nosuch.module: no module named 'nosuch.module'"),
        ("./broken.py", "import not_installed_anywhere\n", "ModuleNotFoundError"),
        ("./nobot.py", "x = 1\n", "has no `bot`"),
        ("./wrong.py", "bot = 'assistant'\n", "`bot` must be a Bot, not str"),
    ],
)
async def test_a_bad_bot_is_one_line_and_exit_2(
    tmp_path: Path, value: str, source: str | None, expected: str
) -> None:
    if source is not None:
        (tmp_path / value).write_text(source)
    code, out, err = await chinwag(tmp_path, "--bot", value, "chat", env=cli_env(tmp_path))
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]


async def test_chinwag_bot_in_the_environment_is_checked_too(tmp_path: Path) -> None:
    env = cli_env(tmp_path, CHINWAG_BOT="nosuchbot")
    code, out, err = await chinwag(tmp_path, "chat", env=env)
    assert (code, out) == (2, "")
    assert err.strip() == (
        "chinwag: CHINWAG_BOT=nosuchbot: no module named 'nosuchbot' "
        "(bundled bots: assistant, home, example)"
    )


async def test_the_readme_bot_chats_and_keeps_its_own_memory(tmp_path: Path) -> None:
    (tmp_path / "mybot.py").write_text(readme_bot())
    async with FakeOpenAIServer(reply=lambda body: "hi there") as llm:
        env = no_bot_name(llm_env(tmp_path, llm))
        code, out, err = await chinwag(
            tmp_path, "--bot", "./mybot.py", "chat", stdin="remember me\n", env=env
        )
        assert code == 0, err
        assert out.splitlines() == ["hi there"]
    code, mine, err = await chinwag(
        tmp_path, "export", "--bot", "./mybot.py", "console", "tester", "--format", "json", env=env
    )
    assert code == 0, err
    assert "remember me" in mine
    code, assistants, err = await chinwag(
        tmp_path, "export", "console", "tester", "--format", "json", env=env
    )
    assert code == 0, err
    assert "remember me" not in assistants  # the default bot keeps its own key, "chinwag"


@pytest.mark.skipif(
    importlib.util.find_spec("adapters.homeassistant") is None,
    reason="the Home Assistant pack (s11-ha) is not merged yet",
)
async def test_home_without_home_assistant_settings_names_the_variable(tmp_path: Path) -> None:
    code, out, err = await chinwag(tmp_path, "--bot", "home", "chat", env=cli_env(tmp_path))
    assert (code, out) == (2, "")
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "HOMEASSISTANT_URL" in lines[0]


NOW = datetime.now(UTC).replace(microsecond=0)


async def _audit_rows(url: str) -> None:
    await migrate.upgrade(url)
    store = SqlMemoryStore(url)
    await store.start()
    try:
        rows = [
            ("home", "telegram", "42", "ha_call_service", ToolDecision.CONFIRMED, "ok", 3, 12.5),
            ("home", "discord", "7", "ha_get_state", ToolDecision.ALLOWED, "ok", 1, 0.8),
            ("chinwag", "console", "ada", "web__search", ToolDecision.DENIED, None, 30, None),
        ]
        for bot, platform, user, tool, decision, result, hours_ago, ms in rows:
            entry = AuditEntry(
                at=NOW - timedelta(hours=hours_ago),
                bot=bot,
                platform=platform,
                chat_id=f"chat-{user}",
                user_id=user,
                tool=tool,
                source="python",
                arguments=json.dumps({"entity_id": "light.kitchen", "token": "[redacted]"}),
                risk="act",
                decision=ToolDecision.PENDING,
            )
            audit_id = await store.add_audit(entry)
            await store.finish_audit(
                audit_id, decision=decision, result_status=result, duration_ms=ms
            )
    finally:
        await store.aclose()


@pytest.mark.skipif(
    not hasattr(SqlMemoryStore, "add_audit"), reason="the SQL audit (s11-store) is not merged yet"
)
async def test_audit_prints_rows_of_every_bot_filtered_on_request(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    await _audit_rows(f"sqlite+aiosqlite:///{db}")
    env = no_bot_name(cli_env(tmp_path, DATABASE_URL=f"sqlite:///{db}", LOG_LEVEL="WARNING"))

    code, out, err = await chinwag(tmp_path, "audit", env=env)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["TIME", "(UTC)", "BOT"]
    assert [line.split()[2:] for line in lines] == [
        ["home", "discord", "chat-7", "discord:7", "ha_get_state", "allowed", "ok", "0.8", "ms"],
        [
            "home",
            "telegram",
            "chat-42",
            "telegram:42",
            "ha_call_service",
            "confirmed",
            "ok",
            "12",
            "ms",
        ],
        ["chinwag", "console", "chat-ada", "console:ada", "web__search", "denied", "-", "-"],
    ]

    code, out, err = await chinwag(tmp_path, "audit", "--bot", "home", "--since", "2h", env=env)
    assert code == 0, err
    assert [line.split()[6] for line in out.splitlines()[1:]] == ["ha_get_state"]

    code, out, err = await chinwag(
        tmp_path, "audit", "--user", "telegram:42", "--format", "json", env=env
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["tool"] == "ha_call_service"
    assert row["decision"] == "confirmed"
    assert row["duration_ms"] == 12.5
    assert row["arguments"] == {"entity_id": "light.kitchen", "token": "[redacted]"}

    code, out, err = await chinwag(tmp_path, "audit", "--limit", "1", "--bot", "assistant", env=env)
    assert code == 0, err
    assert [line.split()[6] for line in out.splitlines()[1:]] == ["web__search"]


async def test_audit_refuses_a_malformed_filter(tmp_path: Path) -> None:
    code, _out, err = await chinwag(
        tmp_path, "audit", "--since", "last tuesday", env=cli_env(tmp_path)
    )
    assert code == 2
    assert "--since" in err
    assert "30m, 1h, 2d" in err
