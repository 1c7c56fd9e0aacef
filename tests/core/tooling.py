"""Shared pieces of the tool-loop tests: a fake light whose calls are counted, and scripts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from core.tools import FunctionTools, Toolbox, ToolError, ToolResult, tool
from core.types import ChatMessage, CompletionRequest, Role, TextDelta, ToolCallDelta
from tests.fakes.scripted import Scripted, tool_call


class Home:
    """A fake smart home: a light, a door lock, a thermometer; every call is counted."""

    def __init__(self) -> None:
        self.switched: list[tuple[str, str]] = []  # (entity, state), in call order
        self.unlocked: list[str] = []
        self.reads: list[str] = []
        self.states: dict[str, str] = {"light.kitchen": "off", "light.hall": "on"}
        self.hold: asyncio.Event | None = None  # read calls wait for it when set
        self.reading = 0
        self.peak_reading = 0
        home = self

        @tool(risk="act", describe=lambda a: f"turn {a['state']} {a['entity']}")
        async def set_light(entity: str, state: str) -> ToolResult:
            """Switch a light on or off.

            Args:
                entity: the light, e.g. light.kitchen.
                state: "on" or "off".
            """
            if entity not in home.states:
                raise ToolError(f"there is no light called {entity}")
            home.switched.append((entity, state))
            home.states[entity] = state
            return ToolResult(f'{{"{entity}": "{state}"}}', summary=f"{entity} → {state}")

        @tool
        async def get_light(entity: str) -> str:
            """Read a light's state.

            Args:
                entity: the light, e.g. light.kitchen.
            """
            home.reads.append(entity)
            home.reading += 1
            home.peak_reading = max(home.peak_reading, home.reading)
            try:
                if home.hold is not None:
                    await home.hold.wait()
                return f"{entity} is {home.states.get(entity, 'unknown')}"
            finally:
                home.reading -= 1

        @tool(risk="dangerous", describe=lambda a: f"unlock {a['door']}")
        def unlock(door: str, pin_code: str = "") -> str:
            """Unlock a door.

            Args:
                door: the lock.
                pin_code: the lock's code.
            """
            home.unlocked.append(door)
            return f"{door} unlocked"

        @tool
        async def broken() -> str:
            """A tool that fails in an unexpected way."""
            raise RuntimeError("secret internals")

        @tool
        async def slow() -> str:
            """A tool that never answers."""
            await asyncio.Event().wait()
            return "never"

        self.tools = [set_light, get_light, unlock, broken, slow]

    def toolbox(self) -> Toolbox:
        """The home's tools as a bot's toolbox."""
        return Toolbox([FunctionTools(self.tools)])


def since_user(request: CompletionRequest) -> list[ChatMessage]:
    """The messages after the newest user message of a request."""
    messages = list(request.messages)
    last = max(i for i, m in enumerate(messages) if m.role is Role.USER)
    return messages[last + 1 :]


def tool_texts(request: CompletionRequest) -> list[str]:
    """The tool results the model reads, answering the newest user message."""
    return [m.content for m in since_user(request) if m.role is Role.TOOL]


def summarise(request: CompletionRequest) -> str:
    """A final answer that repeats the tool results the model read."""
    return "done: " + " | ".join(tool_texts(request))


Round = Scripted | Callable[[CompletionRequest], Scripted]


def rounds(*script: Round) -> Callable[[CompletionRequest], Scripted]:
    """A model that answers round ``n`` of every turn with ``script[n]`` (the last repeats)."""

    def reply(request: CompletionRequest) -> Scripted:
        done = sum(1 for m in since_user(request) if m.tool_calls)
        step = script[min(done, len(script) - 1)]
        return step(request) if callable(step) else step

    return reply


def calls(*pieces: list[ToolCallDelta], text: str = "") -> Sequence[TextDelta | ToolCallDelta]:
    """A round's events: optional text, then the calls."""
    events: list[TextDelta | ToolCallDelta] = [TextDelta(text)] if text else []
    for piece in pieces:
        events.extend(piece)
    return events


def light(entity: str = "light.kitchen", state: str = "on", **kw: Any) -> list[ToolCallDelta]:
    """The model's call to switch a light."""
    return tool_call("set_light", {"entity": entity, "state": state}, **kw)


def read(entity: str = "light.kitchen", **kw: Any) -> list[ToolCallDelta]:
    """The model's call to read a light."""
    return tool_call("get_light", {"entity": entity}, **kw)
