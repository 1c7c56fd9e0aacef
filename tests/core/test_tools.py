"""Tools from typed Python functions: schema, description, validation, invocation, redaction."""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

import pytest

from core.bot import Bot, BotCommand, command
from core.tools import (
    REDACTED,
    FunctionTool,
    FunctionTools,
    Risk,
    Tool,
    ToolArgumentError,
    Toolbox,
    ToolResult,
    plain_call,
    redact_secrets,
    spec,
    tool,
)


@tool(risk="act")
def set_light(entity: str, on: bool = True, brightness: int | None = None) -> str:
    """Switch a light on or off.

    Args:
        entity: the light's entity id, e.g. light.kitchen.
        on: true to switch it on.
        brightness: 0-255, when switching on.

    Returns:
        The new state.
    """
    return f"{entity} -> {'on' if on else 'off'}"


@tool
async def weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, object]:
    """Today's weather in a city."""
    return {"city": city, "temp": 21, "unit": unit}


def test_schema_comes_from_type_hints_and_docstring() -> None:
    params = set_light.parameters
    assert set_light.description == "Switch a light on or off."
    assert params["type"] == "object"
    assert params["required"] == ["entity"]
    props = params["properties"]
    assert props["entity"]["type"] == "string"
    assert props["entity"]["description"] == "the light's entity id, e.g. light.kitchen."
    assert props["on"]["type"] == "boolean"
    assert props["brightness"]["description"] == "0-255, when switching on."
    assert "Returns" not in set_light.description
    assert weather.parameters["properties"]["unit"]["enum"] == ["c", "f"]
    assert spec(set_light).name == "set_light"


def test_risk_is_declared_and_read_is_the_default() -> None:
    assert set_light.risk is Risk.ACT
    assert weather.risk is Risk.READ
    assert isinstance(set_light, Tool)
    assert Risk.highest(Risk.READ, Risk.DANGEROUS, Risk.ACT) is Risk.DANGEROUS
    assert not Risk.READ.needs_confirmation
    assert Risk.ACT.needs_confirmation


def test_valid_arguments_are_coerced_to_the_declared_types() -> None:
    assert set_light.validate('{"entity": "light.kitchen"}') == {
        "entity": "light.kitchen",
        "on": True,
        "brightness": None,
    }
    assert set_light.validate('{"entity": "light.x", "brightness": "12"}')["brightness"] == 12


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("{}", "entity"),
        ('{"entity": "x", "colour": "red"}', "colour"),
        ('{"entity": "x", "brightness": "bright"}', "brightness"),
    ],
)
def test_invalid_arguments_are_refused_with_the_reason(arguments: str, says: str) -> None:
    with pytest.raises(ToolArgumentError, match=says):
        set_light.validate(arguments)


async def test_sync_tools_run_off_the_event_loop_and_async_ones_on_it() -> None:
    seen: list[bool] = []

    @tool
    def where() -> str:
        """Which thread runs this."""
        seen.append(threading.current_thread() is threading.main_thread())
        return "ok"

    assert (await where.invoke({})).content == "ok"
    assert seen == [False]
    result = await weather.invoke(weather.validate('{"city": "Oslo"}'))
    assert result == ToolResult('{"city": "Oslo", "temp": 21, "unit": "c"}')
    assert (await set_light.invoke({"entity": "light.k", "on": False})).content == "light.k -> off"


async def test_a_tool_stays_callable_as_the_function_it_wraps() -> None:
    assert set_light("light.k") == "light.k -> on"
    assert await asyncio.wait_for(weather("Rome"), 1) == {"city": "Rome", "temp": 21, "unit": "c"}


def test_a_tool_needs_a_docstring_type_hints_and_a_valid_name() -> None:
    def bare(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="docstring"):
        tool(bare)

    def untyped(x):
        """Untyped."""

    with pytest.raises(ValueError, match="type hint"):
        tool(untyped)
    with pytest.raises(ValueError, match="valid tool name"):
        tool(name="no spaces allowed")(set_light.__call__)


def test_secrets_are_redacted_in_what_is_shown_and_audited() -> None:
    arguments = {"code": "1234", "entity": "lock.door", "apiKey": "k", "nested": {"token": "t"}}
    assert redact_secrets(arguments) == {
        "code": REDACTED,
        "entity": "lock.door",
        "apiKey": REDACTED,
        "nested": {"token": REDACTED},
    }
    # words that merely contain a secret word are kept
    assert redact_secrets({"mapping": "a", "spin": 1}) == {"mapping": "a", "spin": 1}

    @tool(risk="dangerous")
    def unlock(entity: str, pin: str) -> str:
        """Unlock a door."""
        return "unlocked"

    assert "1234" not in unlock.describe({"entity": "lock.door", "pin": "1234"})
    assert plain_call("f", {"text": "x" * 100}).endswith("...)")


def test_a_toolbox_offers_every_source_and_the_first_wins_a_clash() -> None:
    @tool(name="weather")
    def other(city: str) -> str:
        """Another weather."""
        return city

    box = Toolbox([FunctionTools([weather, set_light]), FunctionTools([other], name="more")])
    assert sorted(box.tools()) == ["set_light", "weather"]
    assert box.get("weather") is weather
    assert box.clashes() == ["weather"]
    assert box.get("missing") is None


def test_a_bot_checks_its_definition() -> None:
    def plain(x: int) -> int:
        """Double x."""
        return 2 * x

    bot = Bot(name="mine", tools=[set_light, plain])
    assert [t.name for t in bot.python_tools] == ["set_light", "plain"]
    assert isinstance(bot.python_tools[1], FunctionTool)
    assert bot.python_tools[1].risk is Risk.READ
    assert bot.store_key == "mine"
    assert Bot(name="assistant", memory_key="chinwag").store_key == "chinwag"
    with pytest.raises(ValueError, match="bot name"):
        Bot(name="Bad Name")
    with pytest.raises(ValueError, match="unknown tool pack"):
        Bot(name="b", packs=["zigbee"])
    with pytest.raises(ValueError, match="two tools"):
        Bot(name="b", tools=[set_light, set_light])


def test_commands_are_checked() -> None:
    @command("roll", "Roll a die")
    def roll(request: object) -> str:
        return "4"

    assert isinstance(roll, BotCommand)
    assert roll.name == "roll"
    with pytest.raises(ValueError, match="command name"):
        command("Roll!", "x")(lambda r: "")
