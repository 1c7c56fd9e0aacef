"""Tools in local models' prompts: which models get them, and how tool traffic is rendered.

A GGUF's chat template decides whether a model was trained for tools: templates of
tool-trained models (Qwen 2.5/3, Llama 3.1+, Hermes, Mistral...) read a ``tools`` variable
and render ``tool_calls`` and ``tool`` messages themselves. ``LOCAL_TOOLS`` overrides it:

* ``auto`` (the default): tools only for a model whose template mentions ``tools``;
* ``on``: every model; where the template knows nothing of tools, chinwag writes the tool
  list into the system prompt and the history's calls and results as Hermes-style text;
* ``off``: no model gets tools; tool traffic in the history is left out of prompts.

The calls a model writes in its reply are parsed out of the streamed text
(:func:`parsed_events`, with :mod:`adapters.llm.tool_markup`). Imports no ``llama_cpp``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from adapters.llm.tool_markup import ToolCallParser
from core.types import (
    BackendEvent,
    ChatMessage,
    Finish,
    ImagePart,
    Role,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

TOOLS_SETTING: Final = ("auto", "on", "off")


class ToolPrompt(enum.Enum):
    """How a model's prompt carries tools and tool traffic."""

    NONE = "none"
    """No tools; tool messages and content-less calls are left out (models without tools)."""
    TEMPLATE = "template"
    """The chat template renders ``tools``, ``tool_calls`` and ``tool`` messages itself."""
    TEXT = "text"
    """chinwag writes tools, calls and results as Hermes-style text (``LOCAL_TOOLS=on``)."""


def template_handles_tools(template: str | None) -> bool:
    """Whether a chat template reads the ``tools`` variable (the model was trained for them)."""
    return template is not None and "tools" in template


def tool_prompt(setting: str, template: str | None) -> ToolPrompt:
    """How to prompt a model with this chat template under ``LOCAL_TOOLS=setting``."""
    if setting == "off":
        return ToolPrompt.NONE
    if template_handles_tools(template):
        return ToolPrompt.TEMPLATE
    return ToolPrompt.TEXT if setting == "on" else ToolPrompt.NONE


def tool_dicts(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Offered tools as chat templates expect them (OpenAI's ``tools`` entries)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in tools
    ]


def chat_dicts(
    messages: Sequence[ChatMessage],
    mode: ToolPrompt = ToolPrompt.NONE,
    tools: Sequence[ToolSpec] = (),
    *,
    image_marker: str | None = None,
) -> list[dict[str, Any]]:
    """Our messages as chat-template dicts, tool traffic rendered as ``mode`` says.

    With :attr:`ToolPrompt.TEXT` and ``tools``, the tool list joins the system message.
    With ``image_marker`` (a model with a vision projector), a user message's images are
    marked where they go, one marker each before its text, in the order of
    :func:`prompt_images`; without it images are left out.
    """
    if image_marker is not None:
        messages = [_with_markers(message, image_marker) for message in messages]
    if mode is ToolPrompt.TEMPLATE:
        return [_template_dict(message) for message in messages]
    out: list[dict[str, Any]] = []
    for message in messages:
        if mode is ToolPrompt.TEXT and (message.role is Role.TOOL or message.tool_calls):
            out.append(_text_dict(message))
            continue
        if message.role is Role.TOOL or (message.tool_calls and not message.content):
            continue
        out.append({"role": message.role.value, "content": message.content})
    if mode is ToolPrompt.TEXT and tools:
        listing = hermes_tools(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{listing}"}
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out


def prompt_images(messages: Sequence[ChatMessage]) -> tuple[ImagePart, ...]:
    """The images of ``messages``' user turns, in the order :func:`chat_dicts` marks them."""
    return tuple(
        image for message in messages if message.role is Role.USER for image in message.images
    )


def _with_markers(message: ChatMessage, marker: str) -> ChatMessage:
    if message.role is not Role.USER or not message.images:
        return message
    marks = marker * len(message.images)
    content = f"{marks}\n{message.content}" if message.content else marks
    return replace(message, content=content)


def hermes_tools(tools: Sequence[ToolSpec]) -> str:
    """The Hermes-style instructions and tool list for a template that has none."""
    listing = "\n".join(json.dumps(entry, ensure_ascii=False) for entry in tool_dicts(tools))
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query. "
        "The function signatures are within <tools></tools> XML tags:\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "For each function call, return a JSON object with the function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def _arguments(call: ToolCall) -> Any:
    """A call's arguments as an object (what templates ``tojson``), else the raw text."""
    try:
        return json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return call.arguments


def _template_dict(message: ChatMessage) -> dict[str, Any]:
    """One message in the Hugging Face chat-template shape, tool fields included."""
    out: dict[str, Any] = {"role": message.role.value, "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call)},
            }
            for call in message.tool_calls
        ]
    if message.role is Role.TOOL:
        out["tool_call_id"] = message.tool_call_id or ""
        if message.name:
            out["name"] = message.name
    return out


def _text_dict(message: ChatMessage) -> dict[str, Any]:
    """A call or a result written as Hermes-style text, for a template without tools."""
    if message.role is Role.TOOL:
        return {
            "role": "user",
            "content": f"<tool_response>\n{message.content}\n</tool_response>",
        }
    calls = "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": call.name, "arguments": _arguments(call)}, ensure_ascii=False)
        + "\n</tool_call>"
        for call in message.tool_calls
    )
    content = f"{message.content}\n{calls}" if message.content else calls
    return {"role": "assistant", "content": content}


def parsed_events(parser: ToolCallParser, item: TextDelta | Finish | Usage) -> list[BackendEvent]:
    """The events of ``item`` once tool-call markup is parsed out of the reply's text."""
    if isinstance(item, TextDelta):
        return list(parser.feed(item.text))
    if isinstance(item, Finish):
        events: list[BackendEvent] = list(parser.close())
        reason = "tool_calls" if parser.calls and item.reason == "stop" else item.reason
        return [*events, Finish(reason)]
    return [item]


__all__ = [
    "TOOLS_SETTING",
    "ToolPrompt",
    "chat_dicts",
    "hermes_tools",
    "parsed_events",
    "prompt_images",
    "template_handles_tools",
    "tool_dicts",
    "tool_prompt",
]
