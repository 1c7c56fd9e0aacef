"""Every command, as a user sends it; and the parsing and registry behind them."""

from __future__ import annotations

import json

import pytest

from core.commands import CommandRegistry, parse_command
from core.types import CommandInfo, ConversationKey, IncomingMessage
from tests.core.conftest import dm
from tests.fakes.channel import RecordingChannel


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("/Model@mybot  big ", ("model", "big")),
        ("  /help", ("help", "")),
        ("/system be brief\nand kind", ("system", "be brief\nand kind")),
        ("/system\nbe brief", ("system", "be brief")),
        ("/export\tjson", ("export", "json")),
        ("/stop@my_bot", ("stop", "")),
        ("/", None),
        ("/ not", None),
        ("hello /help", None),
        ("/what?", None),
        ("", None),
    ],
)
def test_parse_command(text: str, parsed: tuple[str, str] | None) -> None:
    assert parse_command(text) == parsed


class _Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def handler(self, name: str):
        async def handle(key, msg, out, arg) -> None:
            self.seen.append((name, arg))

        return handle


_KEY = ConversationKey("bot", "test", "alice", None, "alice")
_MSG = IncomingMessage(platform="test", chat_id="alice", user_id="alice", text="")


def test_registry_lists_commands_in_order_with_choices_read_when_listed() -> None:
    calls, models = _Calls(), ["a"]
    registry = CommandRegistry()
    registry.register("help", "List", calls.handler("help"))
    registry.register(
        "model", "Switch", calls.handler("model"), argument="name", choices=lambda: models
    )
    registry.register("stats", "Numbers", calls.handler("stats"), admin_only=True)
    models.append("b")
    assert registry.infos() == (
        CommandInfo("help", "List"),
        CommandInfo("model", "Switch", "name", False, ("a", "b")),
        CommandInfo("stats", "Numbers", None, True),
    )
    assert registry.help_text(admin=False) == "Commands:\n/help - List\n/model - Switch"
    assert registry.help_text(admin=True).endswith("\n/stats - Numbers")


def test_registry_refuses_duplicate_and_malformed_names() -> None:
    registry = CommandRegistry()
    registry.register("stop", "Stop", _Calls().handler("stop"), bypasses_lane=True)
    command = registry.get("stop")
    assert command is not None and command.bypasses_lane
    with pytest.raises(ValueError, match="already registered"):
        registry.register("stop", "again", _Calls().handler("stop"))
    for bad in ("Stop", "two words", "", "a@b"):
        with pytest.raises(ValueError, match="not a valid command name"):
            registry.register(bad, "bad", _Calls().handler(bad))


async def test_dispatch_runs_known_refuses_unknown_and_admin_only() -> None:
    calls = _Calls()
    registry = CommandRegistry()
    registry.register("echo", "Echo", calls.handler("echo"))
    registry.register("stats", "Numbers", calls.handler("stats"), admin_only=True)
    out = RecordingChannel()
    await registry.dispatch(_KEY, _MSG, out, "echo", "hi", admin=False)
    await registry.dispatch(_KEY, _MSG, out, "stats", "", admin=False)
    await registry.dispatch(_KEY, _MSG, out, "nope", "", admin=True)
    await registry.dispatch(_KEY, _MSG, out, "stats", "", admin=True)
    assert calls.seen == [("echo", "hi"), ("stats", "")]
    assert out.notices == [
        "/stats is for the bot's admins only.",
        "I don't know the command /nope. Send /help for the list.",
    ]


async def test_leading_space_and_bot_suffix_reach_the_command(make_engine):
    out = RecordingChannel()
    engine = make_engine()
    await engine.handle(dm("  /model@testbot scripted-large"), out)
    assert out.notices == ["Model set to scripted-large."]


async def test_start_and_help_list_commands(make_engine):
    out = RecordingChannel()
    engine = make_engine()
    await engine.handle(dm("/start"), out)
    await engine.handle(dm("/help"), out)
    assert "testbot" in out.notices[0]
    for name in (
        "/reset",
        "/stop",
        "/system",
        "/model",
        "/history",
        "/usage",
        "/forget",
        "/export",
    ):
        assert name in out.notices[1]
    assert "/stats" not in out.notices[1]  # admins only


async def test_unknown_command(make_engine):
    out = RecordingChannel()
    await make_engine().handle(dm("/frobnicate"), out)
    assert out.notices == ["I don't know the command /frobnicate. Send /help for the list."]


async def test_reset_starts_new_conversation_persona_and_model_stay(make_engine, backend):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("/system You are a pirate."), out)
    await engine.handle(dm("/model scripted-large"), out)
    await engine.handle(dm("remember me"), out)
    await engine.handle(dm("/reset"), out)
    await engine.handle(dm("who?"), out)
    assert out.replies[-1] == "echo: who? | remembered: nothing"
    request = backend.calls[-1]
    assert request.messages[0].content == "You are a pirate."
    assert request.model == "scripted-large"


async def test_system_show_set_reset(make_engine, backend):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("/system"), out)
    assert "You are a test bot." in out.notices[-1]
    await engine.handle(dm("/system Speak French."), out)
    await engine.handle(dm("/system"), out)
    assert "Speak French." in out.notices[-1]
    await engine.handle(dm("hi"), out)
    assert backend.calls[-1].messages[0].content == "Speak French."
    await engine.handle(dm("/system reset"), out)
    await engine.handle(dm("hi again"), out)
    assert backend.calls[-1].messages[0].content == "You are a test bot."


async def test_model_list_switch_unknown(make_engine, backend):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("/model"), out)
    assert "* scripted" in out.notices[-1] and "scripted-large" in out.notices[-1]
    await engine.handle(dm("/model gpt-99"), out)
    assert "Unknown model 'gpt-99'" in out.notices[-1]
    await engine.handle(dm("/model scripted-large"), out)
    assert out.notices[-1] == "Model set to scripted-large."
    await engine.handle(dm("hi"), out)
    assert backend.calls[-1].model == "scripted-large"
    choices = next(c for c in engine.commands() if c.name == "model").choices
    assert choices == ("scripted", "scripted-large")


async def test_model_list_says_which_models_see_images(make_engine, backend):
    backend.vision = {"scripted-large"}
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("/model"), out)
    lines = out.notices[-1].splitlines()
    assert "* scripted" in lines
    assert "  scripted-large (sees images)" in lines


async def test_history_reports_turns_and_tokens(make_engine):
    engine = make_engine(context_window=1000, max_reply_tokens=100)
    out = RecordingChannel()
    await engine.handle(dm("one two three"), out)
    await engine.handle(dm("/history"), out)
    assert out.notices[-1].startswith("In context: 2 message(s),")
    assert "of 900 tokens" in out.notices[-1]


async def test_usage_counts_tokens(make_engine, clock):
    engine = make_engine(daily_token_quota=10_000)
    out = RecordingChannel()
    await engine.handle(dm("count these words please"), out)
    await engine.handle(dm("/usage"), out)
    lines = out.notices[-1].splitlines()
    today = int(lines[0].split(": ")[1].replace(",", ""))
    assert today > 0
    assert lines[1] == f"Tokens in total: {today:,}"
    assert "10,000" in lines[2]
    clock.advance(24 * 3600)
    await engine.handle(dm("/usage"), out)
    assert out.notices[-1].splitlines()[0] == "Tokens today: 0"


async def test_export_markdown_and_json(make_engine):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("export me"), out)
    await engine.handle(dm("/export"), out)
    await engine.handle(dm("/export json"), out)
    await engine.handle(dm("/export pdf"), out)
    (md_name, md, _), (json_name, js, _) = out.files
    assert md_name.endswith(".md") and json_name.endswith(".json")
    text = md.decode()
    assert text.startswith("# Conversations with testbot")
    assert "export me" in text and "echo: export me" in text
    doc = json.loads(js)
    messages = doc["conversations"][0]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "export me"),
        ("assistant", "echo: export me | remembered: nothing"),
    ]
    assert "md" in out.notices[-1] and "json" in out.notices[-1]


async def test_export_holds_only_the_users_own_history(make_engine):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("alice's words", "alice"), out)
    await engine.handle(dm("bob's words", "bob"), out)
    document = await engine.export("test", "alice", "md")
    assert "alice's words" in document and "bob's words" not in document
