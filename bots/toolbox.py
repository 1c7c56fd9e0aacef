"""A bot's tools: its own functions, the packs it names, and the MCP servers of ``MCP_CONFIG``.

The pack modules are imported only when used: a bot without Home Assistant never loads its
client, and chinwag without the ``mcp`` extra starts as long as ``MCP_CONFIG`` is unset.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from core.bot import Bot
from core.errors import ConfigError
from core.tools import FunctionTools, Toolbox, ToolSource

if TYPE_CHECKING:
    from adapters.homeassistant.settings import HomeAssistantSettings

_log = logging.getLogger(__name__)

MCP_EXAMPLE = "./mcp.json"


class PackUnavailable(Exception):
    """A pack the configuration asks for can't be loaded here (its extra is not installed)."""


def build_toolbox(
    bot: Bot,
    *,
    mcp_config: Path | None = None,
    homeassistant: HomeAssistantSettings | None = None,
) -> Toolbox:
    """The tool sources of ``bot``, in order: its functions, Home Assistant, MCP servers.

    Args:
        bot: the bot definition.
        mcp_config: ``MCP_CONFIG``: every bot gets the servers' tools when it is set.
        homeassistant: the Home Assistant settings, for a bot naming the pack.

    Raises:
        ConfigError: a pack is named but not configured (``HOMEASSISTANT_URL`` or
            ``HOMEASSISTANT_TOKEN`` missing, ``MCP_CONFIG`` unset or not a file).
        PackUnavailable: ``MCP_CONFIG`` is set but the ``mcp`` extra is not installed.
    """
    sources: list[ToolSource] = []
    if bot.tools:
        sources.append(FunctionTools(bot.tools))
    if "homeassistant" in bot.packs:
        sources.append(homeassistant_source(bot, homeassistant))
    if mcp_config is not None:
        sources.extend(mcp_sources(mcp_config))
    elif "mcp" in bot.packs:
        raise ConfigError(
            "MCP_CONFIG",
            f"the {bot.name} bot uses MCP servers: set the path of an mcpServers JSON file",
            example=MCP_EXAMPLE,
        )
    return Toolbox(sources)


def homeassistant_source(bot: Bot, settings: HomeAssistantSettings | None) -> ToolSource:
    """The Home Assistant pack, from its settings (both URL and token are needed)."""
    if settings is None or settings.url is None:
        raise ConfigError(
            "HOMEASSISTANT_URL",
            f"the {bot.name} bot controls Home Assistant: set its address",
            example="http://homeassistant.local:8123",
        )
    if settings.token is None:
        raise ConfigError(
            "HOMEASSISTANT_TOKEN",
            f"the {bot.name} bot controls Home Assistant: set a long-lived access token "
            "(your Home Assistant profile, Security tab)",
            example="eyJhbGciOi...",
        )
    from adapters.homeassistant import HomeAssistantTools

    source: ToolSource = HomeAssistantTools(settings)
    return source


def mcp_sources(path: Path) -> list[ToolSource]:
    """The MCP servers configured in ``path`` (``MCP_CONFIG``), one tool source each."""
    if not path.expanduser().is_file():
        raise ConfigError("MCP_CONFIG", f"{path}: no such file", example=MCP_EXAMPLE)
    if importlib.util.find_spec("mcp") is None:
        raise PackUnavailable(
            "MCP_CONFIG is set but the MCP SDK is not installed: "
            "pip install 'chinwag[mcp]' (or unset MCP_CONFIG)"
        )
    from adapters import mcp

    return list(mcp.mcp_sources(path.expanduser()))


def log_toolbox(bot: Bot, toolbox: Toolbox) -> None:
    """Say once which tools the bot has, and which names two sources both offer."""
    names = sorted(toolbox.tools())
    _log.info("bot %s: %d tools%s", bot.name, len(names), f" ({', '.join(names)})" * bool(names))
    for name in toolbox.clashes():
        _log.warning("two tool sources offer a tool named %s; the first one is used", name)
