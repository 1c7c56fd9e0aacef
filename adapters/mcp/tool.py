"""One MCP server tool as a chinwag :class:`~core.tools.Tool`.

* Its name is ``server__tool`` (see :mod:`adapters.mcp.names`), its source ``mcp:<server>``.
* Its risk is ``act`` unless ``MCP_CONFIG`` says ``read`` or ``dangerous`` for it. The
  server's own annotations are hints and never lower a risk: ``readOnlyHint`` is ignored,
  and an explicit ``destructiveHint: true`` raises an unlisted tool from ``act`` to
  ``dangerous`` (a tool the operator listed keeps the operator's risk: that is a decision a
  person made, the hint is the server's word).
* Its arguments are checked against the tool's ``inputSchema`` (JSON Schema) before anything
  is sent.
* A result with ``isError`` becomes a :class:`~core.tools.ToolError` carrying the server's
  text; otherwise the text blocks are joined (a result with no text but structured content
  becomes that content as JSON), and images, audio and resources are described in a short
  bracketed line, since the model only reads text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mcp.types as mt
from jsonschema import SchemaError
from jsonschema.validators import Draft202012Validator, validator_for

from core.tools import (
    Risk,
    ToolArgumentError,
    ToolError,
    ToolResult,
    parse_arguments,
    plain_call,
    redact_secrets,
)

Caller = Callable[[str, dict[str, Any]], Awaitable[mt.CallToolResult]]
"""Calls a tool by the server's own name: the supervised session's ``call_tool``."""

_MAX_ERROR = 1000


class InvalidToolSchema(ValueError):
    """A server's tool has an input schema that is not a valid JSON Schema object."""


def tool_risk(tool: mt.Tool, override: Risk | None) -> Risk:
    """The risk a server's tool is offered at (see the module docstring)."""
    if override is not None:
        return override
    hints = tool.annotations
    if hints is not None and hints.destructive_hint is True and not hints.read_only_hint:
        return Risk.DANGEROUS
    return Risk.ACT


def _validator(schema: Mapping[str, Any]) -> Any:
    if schema.get("type", "object") != "object":
        raise InvalidToolSchema("the input schema must describe an object")
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidToolSchema(f"invalid input schema: {exc.message}") from None
    return cls(schema)


class McpTool:
    """A tool of one MCP server, called through that server's supervised session.

    Built by :class:`~adapters.mcp.source.McpServerSource` from the server's tool list.

    Raises:
        InvalidToolSchema: (from the constructor) the tool's input schema is unusable.
    """

    __slots__ = (
        "_call",
        "_validator",
        "description",
        "name",
        "parameters",
        "remote",
        "risk",
        "server",
    )

    def __init__(
        self,
        remote: mt.Tool,
        *,
        name: str,
        server: str,
        risk: Risk,
        call: Caller,
    ) -> None:
        self.name = name
        self.remote = remote.name
        self.server = server
        self.risk = risk
        self._call = call
        schema = dict(remote.input_schema)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self._validator = _validator(schema)
        self.parameters: Mapping[str, Any] = schema
        title = remote.title or (remote.annotations.title if remote.annotations else None)
        self.description = (
            remote.description or title or f"The {remote.name} tool of the MCP server {server}."
        )

    @property
    def source(self) -> str:
        """``mcp:<server>``, for the audit."""
        return f"mcp:{self.server}"

    def validate(self, arguments: str) -> dict[str, Any]:
        """Parse the model's JSON arguments and check them against the input schema.

        Raises:
            ToolArgumentError: not a JSON object, or not what the schema allows.
        """
        values = parse_arguments(arguments)
        errors = sorted(self._validator.iter_errors(values), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}"
                for e in errors[:3]
            )
            raise ToolArgumentError(f"invalid arguments for {self.name}: {problems}")
        return values

    def risk_of(self, arguments: Mapping[str, Any]) -> Risk:
        """An MCP tool's risk does not depend on its arguments."""
        return self.risk

    def describe(self, arguments: Mapping[str, Any]) -> str:
        """``tool(key=value, ...) on MCP server <server>``, secrets masked."""
        return f"{plain_call(self.remote, self.redact(arguments))} on MCP server {self.server}"

    def redact(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Secret-looking arguments masked."""
        return redact_secrets(arguments)

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Call the tool on its server (the caller's gate puts the time limit around it).

        Raises:
            ToolError: the server is down, refused the call, or the tool reported an error.
        """
        result = await self._call(self.remote, dict(arguments))
        text = result_text(result)
        if result.is_error:
            raise ToolError(
                text[:_MAX_ERROR] or f"{self.remote} failed on MCP server {self.server}"
            )
        return ToolResult(text)

    def __repr__(self) -> str:
        return f"<mcp tool {self.name} ({self.risk})>"


def result_text(result: mt.CallToolResult) -> str:
    """What the model reads of a tool's result (see the module docstring)."""
    parts = [describe_block(block) for block in result.content]
    has_text = any(isinstance(block, mt.TextContent) for block in result.content)
    if not has_text and result.structured_content is not None:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(p for p in parts if p)


def _size(data: str) -> int:
    """The decoded size of base64 ``data``, in bytes."""
    return len(data) * 3 // 4 - data[-2:].count("=")


def describe_block(block: mt.ContentBlock) -> str:
    """One content block as text: text as it is, anything else in a bracketed line."""
    if isinstance(block, mt.TextContent):
        return block.text
    if isinstance(block, mt.ImageContent | mt.AudioContent):
        return f"[{block.type}: {block.mime_type}, {_size(block.data)} bytes]"
    if isinstance(block, mt.ResourceLink):
        return f"[resource link: {block.name} {block.uri}]"
    if isinstance(block, mt.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, mt.TextResourceContents):
            return resource.text
        kind = resource.mime_type or "binary"
        return f"[resource: {resource.uri}, {kind}, {_size(resource.blob)} bytes]"
    return f"[{getattr(block, 'type', 'unknown')} content]"


__all__ = ["Caller", "InvalidToolSchema", "McpTool", "describe_block", "result_text", "tool_risk"]
