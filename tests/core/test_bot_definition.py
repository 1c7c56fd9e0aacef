"""What the engine takes from a bot definition: the persona and extra commands."""

from __future__ import annotations

import pytest

from core.bot import CommandRequest, command
from core.settings import DEFAULT_SYSTEM_PROMPT
from tests.core.conftest import dm
from tests.fakes.channel import RecordingChannel


@pytest.mark.parametrize(
    ("system_prompt", "persona", "expected"),
    [
        (None, "You are Home.", "You are Home."),  # the bot's persona
        ("You are set.", "You are Home.", "You are set."),  # SYSTEM_PROMPT overrides it
        (None, None, DEFAULT_SYSTEM_PROMPT),  # neither: the built-in default
    ],
)
async def test_persona_precedence(make_engine, backend, system_prompt, persona, expected) -> None:
    engine = make_engine(system_prompt=system_prompt, persona=persona)
    out = RecordingChannel()
    await engine.handle(dm("hi"), out)
    assert backend.calls[-1].messages[0].content == expected
    await engine.handle(dm("/system"), out)
    assert out.notices[-1] == f"Default persona:\n{expected}"
    await engine.handle(dm("/system You are mine."), out)  # the slot's own beats all
    await engine.handle(dm("hi again"), out)
    assert backend.calls[-1].messages[0].content == "You are mine."


async def test_extra_commands_answer_and_are_listed(make_engine) -> None:
    seen: list[CommandRequest] = []

    @command("dice", "Roll a die", argument="sides")
    def dice(request: CommandRequest) -> str:
        seen.append(request)
        return f"rolled a d{request.arg or 6}: 4"

    @command("secret", "Admins only", admin_only=True)
    async def secret(request: CommandRequest) -> str:
        return "the secret"

    engine = make_engine(extra_commands=[dice, secret], admin_users=["test:root"])
    assert {"dice", "secret"} <= {c.name for c in engine.commands()}
    out = RecordingChannel()
    await engine.handle(dm("/dice 20", user_name="Alice"), out)
    assert out.notices[-1] == "rolled a d20: 4"
    assert (seen[0].user_id, seen[0].user_name, seen[0].is_admin) == ("alice", "Alice", False)
    await engine.handle(dm("/secret"), out)
    assert "admins only" in out.notices[-1]
    await engine.handle(dm("/secret", "root"), out)
    assert out.notices[-1] == "the secret"
    await engine.handle(dm("/help"), out)
    assert "/dice - Roll a die" in out.notices[-1]


def test_an_extra_command_may_not_replace_a_builtin(make_engine) -> None:
    @command("reset", "Not the real reset")
    def fake(request: CommandRequest) -> str:
        return "nope"

    with pytest.raises(ValueError, match="already registered"):
        make_engine(extra_commands=[fake])
