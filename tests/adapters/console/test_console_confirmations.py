"""Tool confirmations on the console: a multi-line question, answered by the next line.

A stand-in engine plays the part of the tool loop: a message asks a confirmation from
inside its conversation (holding the conversation, as the real engine's lanes do), and the
confirmed action continues in that same conversation.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from core.ports import ReplyChannel
from core.types import CommandInfo, IncomingAction, IncomingMessage

pytestmark = pytest.mark.timeout(30)

PROMPT = "Run this?\nturn on Kitchen light (light.kitchen)\ntool: ha_call_service (act)"


class ToolLoopEngine:
    """Asks ``t:`` confirmations for every message; runs the action when confirmed."""

    bot_name = "home"
    default_model = "scripted"

    def __init__(self) -> None:
        self.lane = asyncio.Lock()  # one conversation: strictly ordered
        self.actions: list[IncomingAction] = []
        self.ran: list[str] = []
        self._ids = iter(f"t:{n:012d}" for n in range(100))

    def commands(self) -> Sequence[CommandInfo]:
        return ()

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.handle(msg, out))

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        async with self.lane:
            await out.ask_confirmation(PROMPT, next(self._ids))

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        self.actions.append(action)
        async with self.lane:  # the confirmed call continues its conversation
            if action.accepted:
                self.ran.append(action.action_id)
                await out.send_text("✅ light.kitchen → on")
            else:
                await out.send_text("Declined: nothing was done.")


async def run(engine: ToolLoopEngine, stdin: str, tmp_path: Path) -> list[str]:
    out = io.StringIO()
    adapter = ConsoleAdapter(
        engine,
        files_dir=tmp_path,
        user_id="ada",
        stdin=io.StringIO(stdin),
        stdout=out,
        interactive=False,
    )
    await adapter.start()
    await asyncio.wait_for(adapter.wait_closed(), 10)
    await adapter.aclose()
    return out.getvalue().splitlines()


async def test_a_tool_confirmation_is_answered_by_the_next_line(tmp_path: Path) -> None:
    engine = ToolLoopEngine()
    lines = await run(engine, "turn on the kitchen light\nyes\nand again\nno\n", tmp_path)
    assert lines == [
        "Run this?",
        "turn on Kitchen light (light.kitchen)",
        "tool: ha_call_service (act) [yes/no]",
        "✅ light.kitchen → on",
        "Run this?",
        "turn on Kitchen light (light.kitchen)",
        "tool: ha_call_service (act) [yes/no]",
        "Declined: nothing was done.",
    ]
    assert engine.ran == ["t:000000000000"]
    assert [(a.action_id, a.accepted, a.user_id) for a in engine.actions] == [
        ("t:000000000000", True, "ada"),
        ("t:000000000001", False, "ada"),
    ]


async def test_the_end_of_input_declines_an_open_question(tmp_path: Path) -> None:
    engine = ToolLoopEngine()
    lines = await run(engine, "turn on the kitchen light\n", tmp_path)
    assert lines[-1] == "Declined: nothing was done."
    assert engine.ran == []
