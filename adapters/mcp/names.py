"""How an MCP server's tools are named for the model: ``server__tool``, OpenAI-safe.

OpenAI accepts tool names matching ``^[a-zA-Z0-9_-]{1,64}$``; MCP servers may use dots,
slashes, spaces and up to 128 characters. Every other character becomes ``_``; a name
longer than 64 characters, or one that another tool of the same server already took, is
cut and given a suffix from a hash of the tool's real name, so the result depends only on
the server's current tool list (never on the order it arrived in).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MAX_NAME = 64
"""The longest tool name OpenAI accepts."""

MAX_PREFIX = 40
"""The longest server prefix, so that a long server name leaves room for its tools' names."""

SEPARATOR = "__"

_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_CHARS = 8


def sanitise(text: str) -> str:
    """``text`` with every character outside ``[a-zA-Z0-9_-]`` replaced by ``_``."""
    return _NOT_ALLOWED.sub("_", text)


def short_hash(text: str) -> str:
    """Eight hex digits of the SHA-256 of ``text`` (stable across runs and machines)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]


def _hashed(name: str, limit: int, key: str) -> str:
    return f"{name[: limit - _HASH_CHARS - 1]}_{short_hash(key)}"


def server_prefix(server: str) -> str:
    """The prefix of a server's tool names: the server's name, sanitised and at most 40 long.

    Raises:
        ValueError: the name is empty.
    """
    if not server:
        raise ValueError("a server name may not be empty")
    prefix = sanitise(server)
    if len(prefix) > MAX_PREFIX:
        prefix = _hashed(prefix, MAX_PREFIX, server)
    return prefix


def tool_names(prefix: str, remote_names: Iterable[str]) -> dict[str, str]:
    """The model-facing name of each of a server's tools, by the server's own name.

    Names that need no change claim ``prefix__name`` first; the others follow in sorted
    order, and one whose sanitised name is taken or too long gets a hash suffix instead.
    """
    remote = sorted(set(remote_names))
    clean = [r for r in remote if sanitise(r) == r]
    changed = [r for r in remote if sanitise(r) != r]
    taken: set[str] = set()
    names: dict[str, str] = {}
    for original in clean + changed:
        name = f"{prefix}{SEPARATOR}{sanitise(original)}"
        if len(name) > MAX_NAME or name in taken:
            name = _hashed(name, MAX_NAME, original)
        attempt = 0
        while name in taken:  # only if two hashes collide: practically never
            attempt += 1
            name = _hashed(name, MAX_NAME, f"{original}#{attempt}")
        taken.add(name)
        names[original] = name
    return names


__all__ = ["MAX_NAME", "sanitise", "server_prefix", "short_hash", "tool_names"]
