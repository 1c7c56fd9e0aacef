"""How a model round that ended with tool calls is stored, and read back.

One assistant row per model round. A round that ended with tool calls keeps its text as
``content``, the calls in ``extra["tool_calls"]`` (``{"id", "name", "arguments", "risk",
"source"}``) and each call's result in ``extra["tool_results"][call_id]`` (``{"content",
"ok", "status"}``). Its status is ``tool_calls`` once every call is resolved, ``awaiting``
while some wait for a person.

This module only reads and words those rows; :mod:`core.turns` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from core.types import ChatMessage, MessageStatus, Role, StoredMessage, ToolCall

ROUND_STATUSES: Final = (MessageStatus.TOOL_CALLS, MessageStatus.AWAITING)
"""The statuses of a stored round that ended with tool calls."""

NO_RESULT: Final = "no result (not run)"
"""What the model reads for a call without a stored result (the history stays valid)."""

# What the model reads when a call did not run, by result status.
DECLINED: Final = "The user declined this action: it was not run."
EXPIRED: Final = "Nobody confirmed this action in time: it was not run."
CANCELLED: Final = "cancelled: the conversation moved on (it was not run)"
ROUND_LIMIT: Final = "not run: round limit (too many tool rounds for one message)"
TOOL_FAILED: Final = "Error: the tool failed unexpectedly."


def result(content: str, status: str) -> dict[str, Any]:
    """A call's stored result: ``{"content", "ok", "status"}`` (``ok`` when status is ok)."""
    return {"content": content, "ok": status == "ok", "status": status}


def calls_of(message: StoredMessage) -> list[dict[str, Any]]:
    """The tool calls a stored assistant row ended with (``[]`` for a plain reply)."""
    extra = message.extra or {}
    calls = extra.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [c for c in calls if isinstance(c, Mapping) and c.get("id")]  # type: ignore[misc]


def results_of(message: StoredMessage) -> dict[str, Mapping[str, Any]]:
    """The stored results of a round's calls, by call id."""
    extra = message.extra or {}
    found = extra.get("tool_results")
    if not isinstance(found, Mapping):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, Mapping)}


def is_round(message: StoredMessage) -> bool:
    """Whether ``message`` is a stored round with tool calls (expanded in prompts)."""
    return (
        message.role is Role.ASSISTANT
        and message.status in ROUND_STATUSES
        and bool(calls_of(message))
    )


def round_text(content: str, calls: list[dict[str, Any]], results: Mapping[str, Any]) -> str:
    """Everything of a round a prompt carries, as one text (for counting its tokens)."""
    parts = [content]
    for call in calls:
        parts.append(f"{call.get('name', '')} {call.get('arguments', '')}")
        found = results.get(str(call.get("id")))
        parts.append(str(found.get("content", "")) if isinstance(found, Mapping) else NO_RESULT)
    return "\n".join(p for p in parts if p)


def message_text(message: StoredMessage) -> str:
    """What a prompt carries of ``message`` (a round's calls and results included)."""
    if not is_round(message):
        return message.content
    return round_text(message.content, calls_of(message), results_of(message))


def round_messages(message: StoredMessage) -> tuple[ChatMessage, ...]:
    """A round as a prompt holds it: the assistant's calls, then one tool message per call."""
    calls = calls_of(message)
    results = results_of(message)
    chats = [
        ChatMessage(
            role=Role.ASSISTANT,
            content=message.content,
            tool_calls=tuple(
                ToolCall(str(c["id"]), str(c.get("name", "")), str(c.get("arguments") or "{}"))
                for c in calls
            ),
        )
    ]
    for call in calls:
        found = results.get(str(call["id"]))
        content = str(found.get("content", "")) if found is not None else NO_RESULT
        chats.append(ChatMessage(role=Role.TOOL, content=content, tool_call_id=str(call["id"])))
    return tuple(chats)


__all__ = [
    "CANCELLED",
    "DECLINED",
    "EXPIRED",
    "NO_RESULT",
    "ROUND_LIMIT",
    "ROUND_STATUSES",
    "TOOL_FAILED",
    "calls_of",
    "is_round",
    "message_text",
    "result",
    "results_of",
    "round_messages",
    "round_text",
]
