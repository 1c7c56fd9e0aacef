"""MCP servers as tool sources, through the official ``mcp`` SDK (the ``mcp`` extra).

The composition root calls :func:`mcp_sources` with the path in ``MCP_CONFIG``
(read by ``bots.config.BotSettings``) and adds the sources it returns to the bot's
:class:`~core.tools.Toolbox`. This package imports the SDK only from there, so chinwag
without the extra starts as long as ``MCP_CONFIG`` is unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.mcp.config import VARIABLE, McpServerConfig, load_config
from core.errors import ConfigError

if TYPE_CHECKING:
    from adapters.mcp.source import McpServerSource

MISSING_SDK = (
    "is set, but the MCP SDK is not installed; "
    "install it with pip install 'chinwag[mcp]' (or unset MCP_CONFIG)"
)


def sdk_available() -> bool:
    """Whether the ``mcp`` SDK can be imported (the ``mcp`` extra is installed)."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        return False
    return True


def mcp_sources(
    config_path: Path, *, environ: Mapping[str, str] | None = None, **options: Any
) -> list[McpServerSource]:
    """One tool source per enabled server of the ``MCP_CONFIG`` file (not started yet).

    Args:
        config_path: the file ``MCP_CONFIG`` names.
        environ: where ``${VAR}`` references are looked up (default: ``os.environ``).
        **options: passed to each :class:`~adapters.mcp.source.McpServerSource`
            (``connect_timeout``, ``keepalive_seconds``, ``retry_initial``...).

    Raises:
        ConfigError: the SDK is not installed, or the file is missing or malformed (one
            line naming the file and the server).
    """
    if not sdk_available():
        raise ConfigError(VARIABLE, MISSING_SDK)
    servers = load_config(config_path, environ)
    from adapters.mcp.source import McpServerSource

    return [McpServerSource(server, **options) for server in servers if server.enabled]


__all__ = ["McpServerConfig", "load_config", "mcp_sources", "sdk_available"]
