"""``MCP_CONFIG``: the MCP servers a bot uses, in the ``mcpServers`` format of other clients.

The file is the JSON other MCP clients read, plus two keys of chinwag's own per server::

    {
      "mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem"],
                  "env": {"API_KEY": "${FILES_API_KEY}"}, "cwd": "/srv",
                  "tools": {"read_file": "read", "delete_file": "dangerous"}},
        "home":  {"type": "http", "url": "https://mcp.example.com/mcp",
                  "headers": {"Authorization": "Bearer ${HOME_MCP_TOKEN}"}},
        "old":   {"command": "old-server", "enabled": false}
      }
    }

* ``type`` is ``"stdio"`` (``command``, ``args``, ``env``, ``cwd``) or ``"http"`` /
  ``"streamable-http"`` (``url``, ``headers``); without it, ``command`` means stdio and
  ``url`` means HTTP. A relative ``cwd`` is relative to the file.
* ``tools`` maps a tool's name (the server's own, or chinwag's ``server__tool``) to its risk,
  ``"read"``, ``"act"`` or ``"dangerous"``; an unlisted tool is ``act``.
* ``enabled: false`` (or ``disabled: true``) keeps a server in the file but unused.
* ``${VAR}`` in an ``env`` or ``headers`` value is replaced by the environment variable
  ``VAR``, so secrets stay out of the file. Those values are kept as ``SecretStr``: they never
  reach the logs or the prompt.

Other keys are ignored, so a file shared with another client keeps working. Every problem is
one :class:`~core.errors.ConfigError` line naming the file and the server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from adapters.mcp.names import server_prefix
from core.errors import ConfigError
from core.tools import Risk

VARIABLE = "MCP_CONFIG"
EXAMPLE_PATH = "/etc/chinwag/mcp.json"
_STDIO_TYPES = frozenset({"stdio"})
_HTTP_TYPES = frozenset({"http", "streamable-http", "streamable_http", "streamablehttp"})
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class StdioServer:
    """A server chinwag runs as a subprocess and talks to over stdin/stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, SecretStr] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True, slots=True)
class HttpServer:
    """A server reached over streamable HTTP."""

    url: str
    headers: Mapping[str, SecretStr] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """One entry of ``mcpServers``.

    Attributes:
        name: the key in ``mcpServers`` (logs, the audit's ``mcp:<name>``).
        prefix: what its tools' names start with (``<prefix>__<tool>``).
        transport: how to reach it.
        risks: risk overrides by tool name (the server's name or chinwag's).
        enabled: ``False`` for a server kept in the file but not used.
    """

    name: str
    prefix: str
    transport: StdioServer | HttpServer
    risks: Mapping[str, Risk] = field(default_factory=dict)
    enabled: bool = True


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> list[McpServerConfig]:
    """Read and check the file ``MCP_CONFIG`` names: every server in it, enabled or not.

    Args:
        path: the JSON file.
        environ: where ``${VAR}`` references are looked up (default: ``os.environ``).

    Raises:
        ConfigError: the file is missing, unreadable, not JSON, or malformed; the message
            names the file and the server.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            VARIABLE, f"cannot read {path}: {exc.strerror or exc}", EXAMPLE_PATH
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(VARIABLE, f"{path} is not valid JSON: {exc}") from None
    return parse_config(data, origin=path, environ=environ)


def parse_config(
    data: Any, *, origin: Path, environ: Mapping[str, str] | None = None
) -> list[McpServerConfig]:
    """Check the decoded JSON of an ``MCP_CONFIG`` file (see the module docstring).

    Raises:
        ConfigError: the first problem found, naming the file and the server.
    """
    env = os.environ if environ is None else environ
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
        raise ConfigError(
            VARIABLE,
            f'{origin} needs an object "mcpServers" mapping server names to servers, e.g. '
            '{"mcpServers": {"files": {"command": "mcp-files", "args": []}}}',
        )
    servers: list[McpServerConfig] = []
    prefixes: dict[str, str] = {}
    for name, entry in data["mcpServers"].items():
        server = _Server(origin, name)
        config = server.parse(entry, env)
        if config.prefix in prefixes:
            raise server.error(
                f"its tools would be named like those of server {prefixes[config.prefix]!r} "
                f"({config.prefix}__...); rename one of them"
            )
        prefixes[config.prefix] = name
        servers.append(config)
    return servers


@dataclass(frozen=True, slots=True)
class _Server:
    """Parses one server's entry, and words its errors."""

    origin: Path
    name: str

    def error(self, problem: str) -> ConfigError:
        return ConfigError(VARIABLE, f"{self.origin}: server {self.name!r}: {problem}")

    def parse(self, entry: Any, env: Mapping[str, str]) -> McpServerConfig:
        if not isinstance(entry, dict):
            raise self.error('must be an object like {"command": "...", "args": [...]}')
        try:
            prefix = server_prefix(self.name)
        except ValueError:
            raise self.error("a server needs a non-empty name") from None
        enabled = self._flag(entry, "enabled", True) and not self._flag(entry, "disabled", False)
        return McpServerConfig(
            name=self.name,
            prefix=prefix,
            transport=self._transport(entry, env),
            risks=self._risks(entry.get("tools", {})),
            enabled=enabled,
        )

    def _flag(self, entry: dict[str, Any], key: str, default: bool) -> bool:
        value = entry.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f'"{key}" must be true or false')
        return value

    def _transport(self, entry: dict[str, Any], env: Mapping[str, str]) -> StdioServer | HttpServer:
        kind = entry.get("type")
        if kind is None:
            if "command" in entry and "url" in entry:
                raise self.error('has both "command" and "url"; add "type": "stdio" or "http"')
            if "command" not in entry and "url" not in entry:
                raise self.error('needs "command" (a program to run) or "url" (an HTTP server)')
            kind = "stdio" if "command" in entry else "http"
        if not isinstance(kind, str):
            raise self.error('"type" must be "stdio" or "http"')
        if kind.lower() in _STDIO_TYPES:
            return self._stdio(entry, env)
        if kind.lower() in _HTTP_TYPES:
            return self._http(entry, env)
        if kind.lower() == "sse":
            raise self.error('the old SSE transport is not supported; use "type": "http"')
        raise self.error(f'unknown "type" {kind!r}; use "stdio" or "http"')

    def _stdio(self, entry: dict[str, Any], env: Mapping[str, str]) -> StdioServer:
        command = entry.get("command")
        if not isinstance(command, str) or not command.strip():
            raise self.error('"command" must be the program to run, e.g. "npx"')
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise self.error('"args" must be a list of strings, e.g. ["-m", "my_server"]')
        cwd = entry.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise self.error('"cwd" must be a directory path')
        directory = None if cwd is None else self.origin.parent / Path(cwd).expanduser()
        return StdioServer(
            command=command,
            args=tuple(args),
            env=self._secrets(entry.get("env", {}), "env", env),
            cwd=directory,
        )

    def _http(self, entry: dict[str, Any], env: Mapping[str, str]) -> HttpServer:
        url = entry.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            raise self.error('"url" must be an http(s) URL, e.g. "https://mcp.example.com/mcp"')
        return HttpServer(url=url, headers=self._secrets(entry.get("headers", {}), "headers", env))

    def _secrets(self, values: Any, key: str, env: Mapping[str, str]) -> dict[str, SecretStr]:
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise self.error(
                f'"{key}" must be an object of strings, e.g. {{"API_KEY": "${{MY_KEY}}"}}'
            )
        out: dict[str, SecretStr] = {}
        for name, value in values.items():
            missing = [v for v in _REFERENCE.findall(value) if v not in env]
            if missing:
                raise self.error(
                    f'{key} "{name}" uses ${{{missing[0]}}}, which is not set in the environment'
                )
            out[name] = SecretStr(_REFERENCE.sub(lambda m: env[m.group(1)], value))
        return out

    def _risks(self, tools: Any) -> dict[str, Risk]:
        if not isinstance(tools, dict):
            raise self.error('"tools" must map tool names to "read", "act" or "dangerous"')
        risks: dict[str, Risk] = {}
        for tool, risk in tools.items():
            try:
                risks[tool] = Risk(risk)
            except (ValueError, TypeError):
                raise self.error(
                    f'tool {tool!r}: risk must be "read", "act" or "dangerous", not {risk!r}'
                ) from None
        return risks


__all__ = [
    "VARIABLE",
    "HttpServer",
    "McpServerConfig",
    "StdioServer",
    "load_config",
    "parse_config",
]
