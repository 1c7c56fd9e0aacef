"""MCP_CONFIG: the mcpServers file format, chinwag's own keys, and one clear line per mistake."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.mcp import mcp_sources
from adapters.mcp.config import HttpServer, StdioServer, load_config, parse_config
from core.errors import ConfigError
from core.tools import Risk


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_the_format_other_clients_use_parses(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "mcpServers": {
                "files": {
                    "command": "npx",
                    "args": ["-y", "server-files"],
                    "env": {"API_KEY": "${FILES_KEY}"},
                    "cwd": "work",
                    "tools": {"read_file": "read", "delete_file": "dangerous"},
                    "autoApprove": ["read_file"],  # another client's key: ignored
                },
                "home": {
                    "url": "https://mcp.example.com/mcp",
                    "headers": {"Authorization": "Bearer ${HOME_TOKEN}"},
                },
                "typed": {"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"},
                "old": {"type": "stdio", "command": "old", "enabled": False},
            }
        },
    )
    env = {"FILES_KEY": "k-123", "HOME_TOKEN": "t-456"}
    files, home, typed, old = load_config(path, environ=env)

    assert isinstance(files.transport, StdioServer)
    assert files.transport.command == "npx"
    assert files.transport.args == ("-y", "server-files")
    assert files.transport.env["API_KEY"].get_secret_value() == "k-123"
    assert files.transport.cwd == tmp_path / "work"  # relative to the file
    assert files.risks == {"read_file": Risk.READ, "delete_file": Risk.DANGEROUS}
    assert isinstance(home.transport, HttpServer)
    assert home.transport.headers["Authorization"].get_secret_value() == "Bearer t-456"
    assert isinstance(typed.transport, HttpServer)
    assert (files.enabled, home.enabled, old.enabled) == (True, True, False)
    # the secret values are not in what a log line or traceback would print
    assert "t-456" not in repr(home)
    assert "k-123" not in repr(files)


@pytest.mark.parametrize(
    ("servers", "words"),
    [
        ({"files": {"args": []}}, ["'files'", '"command"', '"url"']),
        ({"files": {"command": "x", "url": "http://h/mcp"}}, ["'files'", '"type"']),
        ({"files": {"command": "x", "args": "-v"}}, ["'files'", '"args"', "list of strings"]),
        ({"files": {"command": ""}}, ["'files'", '"command"']),
        ({"web": {"url": "ftp://h/mcp"}}, ["'web'", '"url"', "http"]),
        ({"web": {"url": "http://h/mcp", "headers": ["x"]}}, ["'web'", '"headers"']),
        ({"web": {"type": "sse", "url": "http://h/sse"}}, ["'web'", "SSE", '"http"']),
        ({"web": {"type": "carrier-pigeon", "url": "http://h"}}, ["'web'", "carrier-pigeon"]),
        ({"files": {"command": "x", "tools": {"rm": "risky"}}}, ["'files'", "'rm'", "'risky'"]),
        ({"files": {"command": "x", "tools": ["rm"]}}, ["'files'", '"tools"']),
        ({"files": {"command": "x", "enabled": "no"}}, ["'files'", '"enabled"']),
        ({"files": "npx server"}, ["'files'", "object"]),
        ({"a.b": {"command": "x"}, "a_b": {"command": "y"}}, ["'a_b'", "'a.b'", "rename"]),
        ({"web": {"url": "http://h/mcp", "headers": {"X": "${NOPE}"}}}, ["'web'", "${NOPE}"]),
    ],
)
def test_a_malformed_server_is_one_line_naming_it(
    tmp_path: Path, servers: dict[str, Any], words: list[str]
) -> None:
    path = write(tmp_path, {"mcpServers": servers})
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("MCP_CONFIG: ")
    assert str(path) in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"mcpServers": {', ["not valid JSON", "line 1"]),
        ('{"servers": {}}', ['"mcpServers"']),
        ("[]", ['"mcpServers"']),
    ],
)
def test_a_malformed_file_is_one_line(tmp_path: Path, content: str, words: list[str]) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_a_missing_file_names_the_variable_and_an_example(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.json")
    assert caught.value.variable == "MCP_CONFIG"
    assert "nope.json" in str(caught.value)
    assert "MCP_CONFIG=/" in str(caught.value)


def test_an_unset_variable_names_it_but_never_a_value(tmp_path: Path) -> None:
    servers = {"web": {"url": "http://h/mcp", "headers": {"Authorization": "Bearer ${TOKEN_X}"}}}
    with pytest.raises(ConfigError) as caught:
        parse_config({"mcpServers": servers}, origin=tmp_path / "m.json", environ={"TOKEN": "abc"})
    assert "${TOKEN_X}" in str(caught.value)
    assert "Authorization" in str(caught.value)


def test_sources_are_built_for_enabled_servers_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"mcpServers": {"a": {"command": "x"}, "b": {"command": "y", "disabled": True}}},
    )
    sources = mcp_sources(path)
    assert [s.name for s in sources] == ["mcp:a"]


def test_without_the_sdk_mcp_config_is_one_clear_line(monkeypatch, tmp_path: Path) -> None:
    path = write(tmp_path, {"mcpServers": {"a": {"command": "x"}}})
    monkeypatch.setitem(sys.modules, "mcp", None)  # what `import mcp` sees without the extra
    with pytest.raises(ConfigError) as caught:
        mcp_sources(path)
    message = str(caught.value)
    assert message.startswith("MCP_CONFIG: ")
    assert "chinwag[mcp]" in message
    assert "\n" not in message
