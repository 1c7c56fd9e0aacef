"""The composition root (CLI, settings loading, wiring, the event loop) and the bot API.

A bot file needs one import line::

    from bots import Bot, CommandRequest, Risk, ToolError, ToolResult, command, tool

Importing :mod:`bots` loads no platform, model or database library.
"""

from core.bot import Bot, BotCommand, CommandRequest, command
from core.tools import Risk, ToolError, ToolResult, tool

__all__ = [
    "Bot",
    "BotCommand",
    "CommandRequest",
    "Risk",
    "ToolError",
    "ToolResult",
    "command",
    "tool",
]
