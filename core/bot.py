"""A bot definition: the persona, the tools and tool packs, and extra commands.

A bot is a Python module that builds one :class:`Bot` (see ``bots/example.py`` and the
README's "Write your own bot")::

    from bots import Bot, tool

    @tool
    def dice(sides: int = 6) -> int:
        \"\"\"Roll a die with the given number of sides.\"\"\"
        ...

    bot = Bot(name="dicey", persona="You roll dice for people.", tools=[dice])

The composition root (``bots/``) turns the packs into tool sources, builds the
:class:`~core.tools.Toolbox` and hands the engine the persona, the tools and the commands.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.tools import FunctionTool, Risk, Tool

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")

PACKS = ("homeassistant", "mcp")
"""The tool packs a bot may name: Home Assistant (``HOMEASSISTANT_*``) and the MCP servers
of ``MCP_CONFIG``."""


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What an extra command's handler is given."""

    arg: str
    platform: str
    chat_id: str
    user_id: str
    user_name: str | None = None
    is_admin: bool = False


CommandHandler = Callable[[CommandRequest], Awaitable[str | None] | str | None]


@dataclass(frozen=True, slots=True)
class BotCommand:
    """An extra ``/name`` command a bot answers; the handler's text is sent back.

    Built by :func:`command`. ``name`` is lower-case letters, digits and ``_``.
    """

    name: str
    description: str
    handler: CommandHandler
    argument: str | None = None
    admin_only: bool = False

    def __post_init__(self) -> None:
        if not _COMMAND.match(self.name):
            raise ValueError(f"{self.name!r} is not a valid command name (a-z, 0-9, _)")
        if not self.description.strip():
            raise ValueError(f"the command /{self.name} needs a description")


def command(
    name: str, description: str, *, argument: str | None = None, admin_only: bool = False
) -> Callable[[CommandHandler], BotCommand]:
    """Make a function (sync or async, given a :class:`CommandRequest`) a bot command."""

    def wrap(handler: CommandHandler) -> BotCommand:
        return BotCommand(name, description, handler, argument, admin_only)

    return wrap


@dataclass(frozen=True, slots=True)
class Bot:
    """One bot: who it is, what it can do.

    Attributes:
        name: the bot's name (``--bot``, logs); also its memory key (``BOT_NAME``) unless
            ``memory_key`` or ``BOT_NAME`` says otherwise.
        persona: the system prompt (``SYSTEM_PROMPT`` and ``/system`` override it).
        tools: tools (``@tool`` functions; plain typed functions become ``read`` tools).
        packs: tool packs by name: ``"homeassistant"``, ``"mcp"``.
        commands: extra commands (``@command``).
        memory_key: the ``BOT_NAME`` memories are kept under when it is not set; ``None``
            means ``name``. The bundled ``assistant`` keeps ``"chinwag"``, the key from
            before bots existed, so no history disappears on upgrade.
    """

    name: str
    persona: str | None = None
    tools: Sequence[Tool | Callable[..., Any]] = ()
    packs: Sequence[str] = ()
    commands: Sequence[BotCommand] = field(default=())
    memory_key: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a valid bot name (a-z, 0-9, _ and -)")
        unknown = [p for p in self.packs if p not in PACKS]
        if unknown:
            raise ValueError(f"unknown tool pack(s) {unknown}; known: {', '.join(PACKS)}")
        object.__setattr__(
            self,
            "tools",
            tuple(
                t if isinstance(t, Tool) else FunctionTool(t, risk=Risk.READ) for t in self.tools
            ),
        )
        names = [t.name for t in self.python_tools]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two tools are named {', '.join(twice)}")
        object.__setattr__(self, "packs", tuple(self.packs))
        object.__setattr__(self, "commands", tuple(self.commands))

    @property
    def python_tools(self) -> tuple[Tool, ...]:
        """The bot's own tools, each as a :class:`~core.tools.Tool`."""
        return tuple(t for t in self.tools if isinstance(t, Tool))

    @property
    def store_key(self) -> str:
        """The default ``BOT_NAME`` for this bot."""
        return self.memory_key or self.name


__all__ = ["PACKS", "Bot", "BotCommand", "CommandHandler", "CommandRequest", "command"]
