"""Bots as code: the bundled bots, ``--bot`` loading, memory keys and the bot's toolbox."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.settings import MemorySettings
from bots import Bot, CommandRequest, Risk, ToolError, ToolResult, command, tool
from bots import app as app_module
from bots.app import Exit, Settings, running_engine
from bots.audit import parse_since
from bots.cli import main
from bots.loading import BotLoadError, load_bot, persona_of, with_memory_key
from bots.toolbox import PackUnavailable, build_toolbox
from core.engine import Engine
from core.errors import ConfigError
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.tools import Tool
from core.types import AuditEntry, ToolDecision
from tests.fakes.scripted import ScriptedBackend


def tools_of(bot: Bot) -> list[Tool]:
    """The bot's tools (``Bot`` made every function a :class:`Tool`)."""
    found = [t for t in bot.tools if isinstance(t, Tool)]
    assert len(found) == len(bot.tools)
    return found


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = """
from bots import Bot, tool

@tool(risk="act")
def ring(times: int = 1) -> str:
    '''Ring the bell.

    Args:
        times: how often.
    '''
    return "ding " * times

bot = Bot(name="bell", persona="You ring bells.", tools=[ring])
"""


# --- the public API and the bundled bots -------------------------------------------------------


def test_one_import_line_gives_a_bot_file_everything() -> None:
    @tool(risk=Risk.ACT)
    def switch(on: bool) -> ToolResult:
        """Switch the thing."""
        if not isinstance(on, bool):
            raise ToolError("on must be true or false")
        return ToolResult("switched", summary="thing → on" if on else "thing → off")

    @command("ping", "answer pong")
    def ping(request: CommandRequest) -> str:
        return "pong"

    bot = Bot(name="mine", tools=[switch], commands=[ping])
    assert [t.name for t in tools_of(bot)] == ["switch"]
    assert tools_of(bot)[0].risk is Risk.ACT
    assert bot.commands[0].name == "ping"


def test_the_default_bot_is_the_assistant_keeping_the_old_memory_key() -> None:
    bot = load_bot(None)
    assert bot.name == "assistant"
    assert bot.store_key == "chinwag"
    assert bot.tools == ()
    assert bot.packs == ()


def test_home_is_a_careful_home_assistant_bot() -> None:
    bot = load_bot("home")
    assert bot.packs == ("homeassistant",)
    assert bot.store_key == "home"
    assert bot.persona is not None
    assert "ha_call_service" in bot.persona


async def test_the_example_bot_has_a_read_tool_an_act_tool_and_a_command() -> None:
    bot = load_bot("example")
    risks = {t.name: t.risk for t in tools_of(bot)}
    assert risks == {"utc_time": Risk.READ, "add_note": Risk.ACT}
    add_note = next(t for t in tools_of(bot) if t.name == "add_note")
    assert add_note.parameters["required"] == ["text"]
    result = await add_note.invoke(add_note.validate('{"text": "buy milk"}'))
    assert result.summary is not None
    assert "added" in result.summary
    with pytest.raises(ToolError):
        await add_note.invoke(add_note.validate('{"text": "  "}'))
    (notes,) = bot.commands
    request = CommandRequest(arg="", platform="console", chat_id="c", user_id="u")
    assert "buy milk" in str(notes.handler(request))


# --- loading --------------------------------------------------------------------------------------


def test_a_py_file_is_loaded_by_path(tmp_path: Path) -> None:
    path = write(tmp_path / "bell.py", GOOD)
    bot = load_bot(str(path))
    assert bot.name == "bell"
    assert tools_of(bot)[0].risk is Risk.ACT


def test_a_module_path_is_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mybots"
    package.mkdir()
    write(package / "__init__.py", "")
    write(package / "bell.py", GOOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_bot("mybots.bell").name == "bell"


def test_a_function_returning_a_bot_is_called(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.py", "from bots import Bot\ndef bot():\n    return Bot(name='made')\n"
    )
    assert load_bot(str(path)).name == "made"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (None, "no such file"),
        ("x = 1\n", "has no `bot`"),
        ("bot = 3\n", "must be a Bot, not int"),
        ("def bot():\n    return 'no'\n", "bot() must return a Bot, not str"),
        ("def bot():\n    raise RuntimeError('boom')\n", "bot() failed: RuntimeError: boom"),
        ("import not_a_module_anywhere\n", "ModuleNotFoundError: No module named"),
        ("def broken(:\n", "SyntaxError"),
        ("from bots import Bot\nbot = Bot(name='Bad Name')\n", "ValueError: 'Bad Name'"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path: Path, source: str | None, expected: str) -> None:
    path = tmp_path / "bad.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(BotLoadError) as raised:
        load_bot(str(path))
    message = str(raised.value)
    assert message.startswith(f"--bot {path}: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nosuchbot", "no module named 'nosuchbot' (bundled bots: assistant, home, example)"),
        ("nosuch.pkg", "no module named 'nosuch.pkg'"),
        ("json", "has no `bot`"),
        ("two words", "not a bundled bot"),
    ],
)
def test_a_bad_name_is_one_clear_line(name: str, expected: str) -> None:
    with pytest.raises(BotLoadError) as raised:
        load_bot(name, origin="CHINWAG_BOT")
    assert str(raised.value).startswith(f"CHINWAG_BOT={name}: ")
    assert expected in str(raised.value)


# --- memory key and persona -----------------------------------------------------------------------


def test_bot_name_defaults_to_the_bots_memory_key(monkeypatch: pytest.MonkeyPatch) -> None:
    core = CoreSettings(_env_file=None)
    assert with_memory_key(core, load_bot("assistant")).bot_name == "chinwag"
    assert with_memory_key(core, load_bot("home")).bot_name == "home"
    monkeypatch.setenv("BOT_NAME", "family")
    assert with_memory_key(CoreSettings(_env_file=None), load_bot("home")).bot_name == "family"


def test_system_prompt_when_set_wins_over_the_persona(monkeypatch: pytest.MonkeyPatch) -> None:
    home = load_bot("home")
    assert persona_of(CoreSettings(_env_file=None), home) == home.persona
    assert persona_of(CoreSettings(_env_file=None), load_bot("assistant")) is None
    monkeypatch.setenv("SYSTEM_PROMPT", "Talk like a pirate.")
    assert persona_of(CoreSettings(_env_file=None), home) == "Talk like a pirate."


# --- the toolbox ---------------------------------------------------------------------------------


def test_the_bots_own_tools_are_its_toolbox(tmp_path: Path) -> None:
    box = build_toolbox(load_bot(str(write(tmp_path / "bell.py", GOOD))))
    assert list(box.tools()) == ["ring"]
    assert not build_toolbox(load_bot("assistant"))


def test_home_assistant_named_but_not_configured_names_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        build_toolbox(load_bot("home"))
    assert raised.value.variable == "HOMEASSISTANT_URL"
    assert "home bot" in str(raised.value)


def test_the_mcp_pack_without_mcp_config_names_the_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        build_toolbox(Bot(name="m", packs=("mcp",)))
    assert raised.value.variable == "MCP_CONFIG"


def test_mcp_config_that_is_no_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        build_toolbox(load_bot(None), mcp_config=tmp_path / "missing.json")
    assert raised.value.variable == "MCP_CONFIG"
    assert "missing.json" in str(raised.value)


def test_mcp_config_without_the_sdk_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "mcp.json", '{"mcpServers": {}}')
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mcp" else real(name, *a),
    )
    with pytest.raises(PackUnavailable) as raised:
        build_toolbox(load_bot(None), mcp_config=config)
    assert "chinwag[mcp]" in str(raised.value)
    settings = _settings(tmp_path, mcp_config=config)
    with pytest.raises(Exit) as exited:
        app_module.build_tools(settings)
    assert exited.value.status == 2


class StubSource:
    """A tool source recording its lifecycle in ``log``."""

    name = "stub"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def tools(self) -> Sequence[Tool]:
        return ()

    async def start(self) -> None:
        self.log.append("tools started")

    async def aclose(self) -> None:
        self.log.append("tools closed")


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    from adapters.discord.settings import DiscordSettings
    from adapters.telegram.settings import TelegramSettings

    extra.setdefault("core", CoreSettings(_env_file=None))
    return Settings(
        env_file=None,
        llm=LLMSettings(_env_file=None),
        access=AccessSettings(_env_file=None),
        memory=MemorySettings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"),
        telegram=TelegramSettings(_env_file=None),
        discord=DiscordSettings(_env_file=None),
        **extra,
    )


async def test_tools_start_before_serving_and_close_after_the_engine_drained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    bot = load_bot(str(write(tmp_path / "bell.py", GOOD)))
    settings = _settings(tmp_path, bot=bot, core=with_memory_key(CoreSettings(_env_file=None), bot))
    backend = ScriptedBackend()
    monkeypatch.setattr(app_module, "build_backend", lambda s: backend)
    real_build = build_toolbox

    def with_stub(*args: Any, **kwargs: Any) -> Any:
        box = real_build(*args, **kwargs)
        box.sources = (*box.sources, StubSource(log))
        return box

    monkeypatch.setattr("bots.app.build_toolbox", with_stub)
    real_aclose = Engine.aclose

    async def aclose(self: Engine, *args: Any, **kwargs: Any) -> None:
        log.append("engine closed")
        await real_aclose(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "aclose", aclose)
    async with running_engine(settings) as engine:
        log.append("serving")
        assert engine.bot_name == "bell"
        assert engine._tools.gate.toolbox.get("ring") is not None
        assert engine._default_prompt == "You ring bells."
    assert log == ["tools started", "serving", "engine closed", "tools closed"]
    assert backend.closed


# --- chinwag audit, in process (the real-process test needs the SQL audit) ----------------------


class AuditStore:
    """Just enough of a store for ``chinwag audit``: rows, and the filters it was asked for."""

    def __init__(self, rows: list[AuditEntry]) -> None:
        self.rows = rows
        self.asked: list[dict[str, Any]] = []

    async def audit_entries(self, **filters: Any) -> list[AuditEntry]:
        self.asked.append(filters)
        return self.rows[: filters["limit"]]

    async def aclose(self) -> None:
        pass


def entry(tool_name: str, *, user_id: str | None = "42", ms: float | None = 3.0) -> AuditEntry:
    return AuditEntry(
        at=datetime(2025, 5, 1, 8, 30, tzinfo=UTC),
        bot="home",
        platform="telegram",
        chat_id="-100",
        user_id=user_id,
        tool=tool_name,
        source="homeassistant",
        arguments='{"entity_id": "lock.front"}',
        risk="dangerous",
        decision=ToolDecision.REFUSED,
        user_pseudonym="abcdef0123456789",
        duration_ms=ms,
    )


@pytest.fixture
def audit_store(monkeypatch: pytest.MonkeyPatch) -> AuditStore:
    store = AuditStore([entry("ha_call_service"), entry("ha_get_state", user_id=None, ms=None)])

    async def open_store(settings: MemorySettings) -> AuditStore:
        return store

    monkeypatch.setattr(app_module, "open_store", open_store)
    return store


def test_audit_of_every_bot_prints_one_line_per_row(
    audit_store: AuditStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit"]) == 0
    assert audit_store.asked == [
        {"bot": None, "platform": None, "user_id": None, "since": None, "limit": 50}
    ]
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == [
        "2025-05-01", "08:30:00", "home", "telegram", "-100", "telegram:42",
        "ha_call_service", "refused", "-", "3.0", "ms",
    ]  # fmt: skip
    assert lines[2].split()[5:] == ["~abcdef012345", "ha_get_state", "refused", "-", "-"]


def test_audit_filters_by_the_bots_memory_key_user_and_time(
    audit_store: AuditStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["--bot", "assistant", "audit", "--user", "telegram:42", "--limit", "1"]) == 0
    assert main(["audit", "--bot", "home", "--since", "2025-05-01", "--format", "json"]) == 0
    monkeypatch.setenv("BOT_NAME", "family")
    assert main(["audit", "--bot", "home"]) == 0
    first, second, third = audit_store.asked
    assert (first["bot"], first["platform"], first["user_id"], first["limit"]) == (
        "chinwag", "telegram", "42", 1
    )  # fmt: skip
    assert second["bot"] == "home"
    assert second["since"] == datetime(2025, 5, 1, tzinfo=UTC)
    assert third["bot"] == "family"
    document = capsys.readouterr().out
    rows = json.loads(document[document.index("[") : document.rindex("]") + 1])
    assert rows[0]["arguments"] == {"entity_id": "lock.front"}
    assert rows[1]["user_id"] is None
    assert rows[1]["user_pseudonym"] == "abcdef0123456789"


def test_audit_ignores_chinwag_bot_unless_bot_is_given(
    audit_store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHINWAG_BOT", "home")
    assert main(["audit"]) == 0
    assert audit_store.asked[0]["bot"] is None


def test_relative_since_counts_back_from_now() -> None:
    now = datetime(2025, 5, 3, 12, tzinfo=UTC)
    assert parse_since("2d", now=now) == datetime(2025, 5, 1, 12, tzinfo=UTC)
    assert parse_since("90m", now=now) == datetime(2025, 5, 3, 10, 30, tzinfo=UTC)
    assert parse_since("2025-05-01T10:00+02:00") == datetime(2025, 5, 1, 8, tzinfo=UTC)
