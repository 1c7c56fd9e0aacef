"""One MCP tool as chinwag sees it: risk, schema validation, and what the model reads back."""

from __future__ import annotations

import base64
import json
from typing import Any

import mcp.types as mt
import pytest

from adapters.mcp.tool import InvalidToolSchema, McpTool, result_text, tool_risk
from core.tools import Risk, Tool, ToolArgumentError, ToolError

SCHEMA = {
    "type": "object",
    "properties": {"entity": {"type": "string"}, "on": {"type": "boolean"}},
    "required": ["entity", "on"],
}


def remote(name: str = "set_light", **hints: Any) -> mt.Tool:
    annotations = mt.ToolAnnotations(**hints) if hints else None
    return mt.Tool(
        name=name, description="Switch a light.", input_schema=SCHEMA, annotations=annotations
    )


class Server:
    """Answers tools/call from a canned result and remembers the calls."""

    def __init__(self, result: mt.CallToolResult) -> None:
        self.result = result
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, name: str, arguments: dict[str, Any]) -> mt.CallToolResult:
        self.calls.append((name, arguments))
        return self.result


def text(*parts: str, error: bool = False) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(text=p) for p in parts], is_error=error)


def make(server: Server | None = None, risk: Risk = Risk.ACT, **kw: Any) -> McpTool:
    return McpTool(
        kw.pop("remote", None) or remote(),
        name="home__set_light",
        server="home",
        risk=risk,
        call=server or Server(text("ok")),
    )


@pytest.mark.parametrize(
    ("hints", "override", "expected"),
    [
        ({}, None, Risk.ACT),  # unlisted: act
        ({"read_only_hint": True}, None, Risk.ACT),  # a server saying "read-only" changes nothing
        ({"read_only_hint": True, "destructive_hint": False}, None, Risk.ACT),
        ({"destructive_hint": True}, None, Risk.DANGEROUS),  # a destructive hint raises it
        ({}, Risk.READ, Risk.READ),  # the operator's word
        ({"read_only_hint": True}, Risk.DANGEROUS, Risk.DANGEROUS),
        ({"destructive_hint": True}, Risk.ACT, Risk.ACT),
    ],
)
def test_risk_is_act_unless_the_config_says_and_hints_never_lower_it(
    hints: dict[str, bool], override: Risk | None, expected: Risk
) -> None:
    assert tool_risk(remote("set_light", **hints), override) is expected


def test_it_is_a_chinwag_tool_named_for_the_model() -> None:
    tool = make()
    assert isinstance(tool, Tool)
    assert tool.name == "home__set_light"
    assert tool.source == "mcp:home"
    assert tool.parameters["properties"]["entity"] == {"type": "string"}
    assert tool.description == "Switch a light."
    assert tool.describe({"entity": "light.kitchen", "on": True}) == (
        "set_light(entity=light.kitchen, on=true) on MCP server home"
    )
    assert tool.redact({"entity": "x", "api_key": "s3cret"})["api_key"] != "s3cret"


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ('{"entity": "light.kitchen"}', ["'on' is a required property"]),
        ('{"entity": 5, "on": true}', ["entity", "not of type 'string'"]),
        ('{"entity": "x", "on": "yes"}', ["on", "not of type 'boolean'"]),
        ("[1, 2]", ["JSON object"]),
        ("{oops", ["not valid JSON"]),
    ],
)
def test_arguments_are_checked_against_the_input_schema(arguments: str, words: list[str]) -> None:
    with pytest.raises(ToolArgumentError) as caught:
        make().validate(arguments)
    for word in words:
        assert word in str(caught.value)


def test_valid_arguments_pass_as_they_are() -> None:
    assert make().validate('{"entity": "light.kitchen", "on": true}') == {
        "entity": "light.kitchen",
        "on": True,
    }


def test_a_schema_that_is_not_an_object_or_not_json_schema_is_refused() -> None:
    with pytest.raises(InvalidToolSchema):
        make(remote=mt.Tool(name="t", input_schema={"type": "string"}))
    with pytest.raises(InvalidToolSchema):
        make(remote=mt.Tool(name="t", input_schema={"type": "object", "properties": 5}))


async def test_invoke_calls_the_server_by_its_own_name_and_joins_text() -> None:
    server = Server(text("light.kitchen", "is on"))
    result = await make(server).invoke({"entity": "light.kitchen", "on": True})
    assert server.calls == [("set_light", {"entity": "light.kitchen", "on": True})]
    assert result.content == "light.kitchen\nis on"
    assert result.ok


async def test_an_error_result_is_a_tool_error_with_the_servers_text() -> None:
    with pytest.raises(ToolError, match="the bulb is broken"):
        await make(Server(text("the bulb is broken", error=True))).invoke({})


def test_structured_content_without_text_is_json() -> None:
    result = mt.CallToolResult(content=[], structured_content={"lights": 3})
    assert json.loads(result_text(result)) == {"lights": 3}


def test_images_audio_and_resources_are_described_briefly() -> None:
    png = base64.b64encode(b"\x89PNG" + b"\0" * 96).decode()
    result = mt.CallToolResult(
        content=[
            mt.ImageContent(data=png, mime_type="image/png"),
            mt.AudioContent(data=base64.b64encode(b"abc").decode(), mime_type="audio/wav"),
            mt.ResourceLink(name="report", uri="file:///tmp/report.pdf"),
            mt.EmbeddedResource(
                resource=mt.TextResourceContents(uri="file:///a.txt", text="inline text")
            ),
            mt.EmbeddedResource(
                resource=mt.BlobResourceContents(uri="file:///b.bin", blob=png, mime_type=None)
            ),
        ]
    )
    lines = result_text(result).splitlines()
    assert lines == [
        "[image: image/png, 100 bytes]",
        "[audio: audio/wav, 3 bytes]",
        "[resource link: report file:///tmp/report.pdf]",
        "inline text",
        "[resource: file:///b.bin, binary, 100 bytes]",
    ]
    assert png not in result_text(result)
