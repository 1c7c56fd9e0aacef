"""Confirmations on their own: only the asker answers, once, before they expire."""

from __future__ import annotations

from core.confirmations import CONFIRM_TTL, Confirmations, Pending
from core.types import IncomingAction
from tests.core.conftest import Clock
from tests.fakes.channel import RecordingChannel


def _answer(action_id: str, *, user: str = "alice", accepted: bool = True) -> IncomingAction:
    return IncomingAction(
        platform="test", chat_id=user, user_id=user, action_id=action_id, accepted=accepted
    )


async def _ask(confirmations: Confirmations, out: RecordingChannel) -> str:
    await confirmations.ask(out, "forget", "test", "alice", "Really?")
    prompt, action_id = out.confirmations[-1]
    assert prompt == "Really?" and action_id.startswith("forget:")
    return action_id


async def test_only_the_asker_accepts_and_only_once() -> None:
    clock = Clock()
    confirmations, out = Confirmations(clock), RecordingChannel()
    action_id = await _ask(confirmations, out)
    assert await confirmations.resolve(_answer(action_id, user="bob"), out) is None
    pending = await confirmations.resolve(_answer(action_id), out)
    assert pending == Pending("forget", "test", "alice", clock.now + CONFIRM_TTL)
    assert await confirmations.resolve(_answer(action_id), out) is None
    assert out.notices == [
        "Only the person who asked can answer this.",
        "That confirmation has expired. Send the command again.",
    ]


async def test_declined_or_expired_confirmations_do_nothing() -> None:
    clock = Clock()
    confirmations, out = Confirmations(clock), RecordingChannel()
    declined = await _ask(confirmations, out)
    assert await confirmations.resolve(_answer(declined, accepted=False), out) is None
    late = await _ask(confirmations, out)
    clock.advance(CONFIRM_TTL.total_seconds())
    assert await confirmations.resolve(_answer(late), out) is None
    assert out.notices == [
        "Cancelled: nothing was deleted.",
        "That confirmation has expired. Send the command again.",
    ]
