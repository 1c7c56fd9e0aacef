"""The ``/export`` document shows tool rounds readably (Markdown) and keeps them (JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from adapters.memory.in_memory import InMemoryStore
from core.export import export_document
from core.types import ConversationKey, MessageStatus, NewMessage, Role

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
KEY = ConversationKey("testbot", "telegram", "u1", None, "u1")

LIGHT_ON = {
    "id": "call_1",
    "name": "ha_call_service",
    "arguments": '{"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}',
    "risk": "act",
    "source": "homeassistant",
}
STATE = {
    "id": "call_2",
    "name": "ha_get_state",
    "arguments": '{"entity_id": "sensor.temp"}',
    "risk": "read",
    "source": "homeassistant",
}
LOGIN = {
    "id": "call_3",
    "name": "vault__login",
    "arguments": '{"user": "me", "password": "hunter2"}',
    "risk": "act",
    "source": "mcp:vault",
}


async def _history(store: InMemoryStore) -> None:
    conv = await store.current_conversation(KEY)
    placeholder = NewMessage(role=Role.ASSISTANT, content="", status=MessageStatus.IN_PROGRESS)
    _, round1, answer, round2 = await store.append_messages(
        conv.id,
        [
            NewMessage(role=Role.USER, content="light on, and how warm is it?", author_id="u1"),
            placeholder,
            placeholder,
            placeholder,
        ],
    )
    await store.save_tool_calls(round1.id, [LIGHT_ON, STATE], content="")
    await store.save_tool_result(
        round1.id, "call_2", {"content": "21.5 °C\nfeels like 20", "ok": True, "status": "ok"}
    )
    await store.save_tool_result(
        round1.id, "call_1", {"content": "light.kitchen → on", "ok": True, "status": "ok"}
    )
    await store.finish_message(round1.id, content="", status=MessageStatus.TOOL_CALLS)
    await store.finish_message(
        answer.id, content="Done: the light is on; it is 21.5 °C.", status=MessageStatus.COMPLETE
    )
    await store.save_tool_calls(round2.id, [LOGIN], content="Logging in.")
    await store.finish_message(round2.id, content="Logging in.", status=MessageStatus.AWAITING)


async def test_markdown_shows_each_call_with_its_result() -> None:
    async with InMemoryStore() as store:
        await _history(store)
        text = await export_document(
            store, bot="testbot", platform="telegram", user_id="u1", fmt="md", now=NOW
        )
    lines = text.splitlines()
    assert any(line.endswith("(tool calls)") and line.startswith("**testbot**") for line in lines)
    call = lines.index(
        '- 🔧 `ha_call_service` · domain="light", service="turn_on", entity_id="light.kitchen"'
    )
    assert lines[call + 1] == "  → ok: light.kitchen → on"
    state = lines.index('- 🔧 `ha_get_state` · entity_id="sensor.temp"')
    assert lines[state + 1 : state + 3] == ["  → ok: 21.5 °C", "    feels like 20"]
    assert "Done: the light is on; it is 21.5 °C." in lines
    # the round waiting for a confirmation says so; a secret argument is masked
    assert any(line.endswith("(waiting for a confirmation)") for line in lines)
    login = next(i for i, line in enumerate(lines) if "`vault__login`" in line)
    assert "hunter2" not in text and 'user="me"' in lines[login]
    assert lines[login + 1] == "  → waiting for a confirmation"


async def test_json_keeps_calls_and_results() -> None:
    async with InMemoryStore() as store:
        await _history(store)
        document = await export_document(
            store, bot="testbot", platform="telegram", user_id="u1", fmt="json", now=NOW
        )
    (conversation,) = json.loads(document)["conversations"]
    question, round1, answer, round2 = conversation["messages"]
    assert "tool_calls" not in question and "tool_calls" not in answer
    assert round1["status"] == "tool_calls" and round1["content"] == ""
    assert round1["tool_calls"] == [
        {
            "id": "call_1",
            "name": "ha_call_service",
            "arguments": {"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"},
            "risk": "act",
            "source": "homeassistant",
            "result": {"content": "light.kitchen → on", "ok": True, "status": "ok"},
        },
        {
            "id": "call_2",
            "name": "ha_get_state",
            "arguments": {"entity_id": "sensor.temp"},
            "risk": "read",
            "source": "homeassistant",
            "result": {"content": "21.5 °C\nfeels like 20", "ok": True, "status": "ok"},
        },
    ]
    (login,) = round2["tool_calls"]
    assert round2["status"] == "awaiting" and login["result"] is None
    assert login["arguments"]["user"] == "me"
    assert login["arguments"]["password"] != "hunter2"
