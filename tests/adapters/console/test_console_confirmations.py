"""Tool confirmations on the console: a multi-line question, answered by the next line.

A stand-in engine plays the part of the tool loop: a message asks a confirmation from
inside its conversation (holding it, as the real engine's lanes do), and the confirmed
action continues in that same conversation.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from tests.fakes.confirming_engine import PROMPT, ConfirmingEngine

pytestmark = pytest.mark.timeout(30)


async def run(engine: ConfirmingEngine, stdin: str, tmp_path: Path) -> list[str]:
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
    engine = ConfirmingEngine()
    lines = await run(engine, "turn on the kitchen light\nyes\nand again\nno\n", tmp_path)
    question = PROMPT.splitlines()
    question[-1] += " [yes/no]"
    assert lines == [*question, "✅ light.kitchen → on", *question, "Declined: nothing was done."]
    assert engine.ran == ["t:000000000001"]
    assert [(a.action_id, a.accepted, a.user_id) for a in engine.actions] == [
        ("t:000000000001", True, "ada"),
        ("t:000000000002", False, "ada"),
    ]


async def test_the_end_of_input_declines_an_open_question(tmp_path: Path) -> None:
    engine = ConfirmingEngine()
    lines = await run(engine, "turn on the kitchen light\n", tmp_path)
    assert lines[-1] == "Declined: nothing was done."
    assert engine.ran == []
