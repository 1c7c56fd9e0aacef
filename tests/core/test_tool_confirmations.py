"""Actions wait for a person: confirm, refuse, expire, strangers, admins, races, restarts."""

from __future__ import annotations

import asyncio

import pytest

from core.rounds import CANCELLED, DECLINED, EXPIRED
from core.tool_actions import ALREADY, DECLINED_NOTICE, EXPIRED_NOTICE, NOT_YOURS, UNKNOWN
from core.types import IncomingAction, MessageStatus, ToolDecision
from tests.core.conftest import dm
from tests.core.test_engine import history
from tests.core.tooling import Home, calls, light, read, rounds, summarise, tool_texts
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import tool_call

POLICY = {"admin_users": ["test:root"], "tools": {"tool_users": ["test:alice"]}}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest):
    """Every test here runs on the in-memory store and on the SQL store (SQLite)."""
    return request.getfixturevalue(f"{request.param}_store")


def press(action_id: str, user: str = "alice", accepted: bool = True, chat: str = "alice"):
    return IncomingAction("test", chat, user, action_id, accepted)


async def settled(engine) -> None:
    """Wait until the engine's lanes and side tasks are idle."""
    async with asyncio.timeout(5):
        while engine._lanes.tasks() or engine._side_tasks:
            await asyncio.sleep(0.01)


async def asked(engine, backend, home, out=None, text="turn on the kitchen light"):
    """Alice asks; the model proposes switching the light; returns the action id."""
    backend._reply = rounds(calls(light(), text="Sure."), summarise)
    out = out or RecordingChannel()
    await engine.handle(dm(text), out)
    prompt, action_id = out.confirmations[-1]
    return out, prompt, action_id


async def test_an_action_runs_only_after_the_press_and_the_bot_states_the_fact(
    make_engine, backend, store
) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, prompt, action_id = await asked(engine, backend, home)
    assert action_id.startswith("t:") and len(action_id) <= 20
    assert "turn on light.kitchen" in prompt and "set_light" in prompt
    assert "expires in 2 min" in prompt and "⚠️" not in prompt
    assert home.switched == []  # nothing before the press
    rows = await history(store, engine)
    assert rows[-1].status is MessageStatus.AWAITING
    assert len(backend.calls) == 1

    await engine.handle_action(press(action_id), out)
    await settled(engine)
    assert home.switched == [("light.kitchen", "on")]
    assert "✅ light.kitchen → on" in out.notices
    assert out.replies[-1] == 'done: {"light.kitchen": "on"}'  # the model read the result
    rows = await history(store, engine)
    assert [r.status for r in rows[-2:]] == [MessageStatus.TOOL_CALLS, MessageStatus.COMPLETE]
    (entry,) = await store.audit_entries(bot="testbot")
    assert (entry.decision, entry.result_status) == (ToolDecision.CONFIRMED, "ok")
    assert entry.duration_ms is not None


async def test_a_refusal_runs_nothing_and_the_model_is_told(make_engine, backend, store) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    await engine.handle_action(press(action_id, accepted=False), out)
    await settled(engine)
    assert home.switched == []
    assert DECLINED_NOTICE in out.notices
    assert tool_texts(backend.calls[-1]) == [DECLINED]
    (entry,) = await store.audit_entries(bot="testbot")
    assert entry.decision is ToolDecision.REFUSED and entry.result_status is None


async def test_an_expired_confirmation_is_refused(make_engine, backend, clock, store) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    clock.advance(121)
    await engine.handle_action(press(action_id), out)
    await settled(engine)
    assert home.switched == []
    assert EXPIRED_NOTICE in out.notices
    assert tool_texts(backend.calls[-1]) == [EXPIRED]
    (entry,) = await store.audit_entries(bot="testbot")
    assert entry.decision is ToolDecision.EXPIRED


async def test_the_heartbeat_expires_unanswered_confirmations(make_engine, backend, clock) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    await engine._beat()
    assert not any("expired" in n for n in out.notices)  # not yet
    clock.advance(121)
    await engine._beat()
    await settled(engine)
    assert "The request to run set_light expired: nothing was done." in out.notices
    assert tool_texts(backend.calls[-1]) == [EXPIRED]
    await engine.handle_action(press(action_id), out)
    assert out.notices[-1] == ALREADY
    assert home.switched == []


async def test_a_stranger_cannot_answer_but_an_admin_can(make_engine, backend) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    await engine.handle_action(press(action_id, user="mallory"), out)
    assert out.notices[-1] == NOT_YOURS
    assert home.switched == []
    await engine.handle_action(press(action_id, user="root"), out)
    await settled(engine)
    assert home.switched == [("light.kitchen", "on")]


async def test_a_double_press_runs_the_action_once(make_engine, backend) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    await asyncio.gather(
        engine.handle_action(press(action_id), out), engine.handle_action(press(action_id), out)
    )
    await engine.handle_action(press(action_id), out)
    await settled(engine)
    assert home.switched == [("light.kitchen", "on")]
    assert out.notices.count(ALREADY) == 2
    assert len(out.replies) == 2  # "Sure." and one answer after the action


async def test_two_engines_racing_on_one_store_run_the_action_once(make_engine, backend) -> None:
    await _race(make_engine, backend, None)


async def _race(make_engine, backend, shared) -> None:
    """Two engines (processes) on one store: both get the same press; it runs once."""
    home = Home()
    first = make_engine(toolbox=home.toolbox(), store_override=shared, **POLICY)
    second = make_engine(toolbox=home.toolbox(), store_override=shared, **POLICY)
    await first.start()
    await second.start()
    out, _, action_id = await asked(first, backend, home)
    await asyncio.gather(
        first.handle_action(press(action_id), out), second.handle_action(press(action_id), out)
    )
    await settled(first)
    await settled(second)
    assert home.switched == [("light.kitchen", "on")]
    assert out.notices.count(ALREADY) == 1
    await first.aclose()
    await second.aclose()


async def test_a_restart_between_proposal_and_press_still_runs_once(
    make_engine, backend, store
) -> None:
    home = Home()
    before = make_engine(toolbox=home.toolbox(), **POLICY)
    await before.start()
    _out, _, action_id = await asked(before, backend, home)
    await before.aclose()
    after = make_engine(toolbox=home.toolbox(), **POLICY)  # a new process, same database
    await after.start()
    fresh = RecordingChannel()
    await after.handle_action(press(action_id), fresh)
    await after.handle_action(press(action_id), fresh)
    await settled(after)
    assert home.switched == [("light.kitchen", "on")]
    assert fresh.notices == ["✅ light.kitchen → on", ALREADY]
    assert fresh.replies == ['done: {"light.kitchen": "on"}']  # the model went on


async def test_an_admin_can_answer_after_a_restart_from_another_chat(
    make_engine, backend, store
) -> None:
    home = Home()
    before = make_engine(toolbox=home.toolbox(), **POLICY)
    await before.start()
    _out, _, action_id = await asked(before, backend, home)
    await before.aclose()
    after = make_engine(toolbox=home.toolbox(), **POLICY)
    await after.start()
    fresh = RecordingChannel()
    # The admin presses in their own chat: the call is not in their conversation.
    await after.handle_action(press(action_id, user="root", chat="root"), fresh)
    await settled(after)
    assert home.switched == [("light.kitchen", "on")]
    assert fresh.notices[0] == "✅ light.kitchen → on"


async def test_a_new_message_cancels_waiting_actions(make_engine, backend, store) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    backend._reply = "ok, never mind"
    await engine.handle(dm("actually, leave it"), out)
    assert (
        "I cancelled 1 action(s) that were waiting for your confirmation: nothing was done."
        in out.notices
    )
    # The new message's prompt holds the cancelled round, answered.
    assert [m.content for m in backend.calls[-1].messages if m.tool_call_id] == [CANCELLED]
    await engine.handle_action(press(action_id), out)
    await settled(engine)
    assert out.notices[-1] == ALREADY
    assert home.switched == []
    assert out.replies[-1] == "ok, never mind"
    statuses = [r.status for r in await history(store, engine)]
    assert MessageStatus.AWAITING not in statuses
    (entry,) = await store.audit_entries(bot="testbot")
    assert entry.decision is ToolDecision.CANCELLED


async def test_reset_cancels_waiting_actions(make_engine, backend, store) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    await engine.handle(dm("/reset"), out)
    assert any(n.startswith("I cancelled 1 action") for n in out.notices)
    await engine.handle_action(press(action_id), out)
    assert home.switched == []


async def test_dangerous_actions_say_so_and_are_for_admins(make_engine, backend) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    unlock = calls(tool_call("unlock", {"door": "front", "pin_code": "4321"}))
    backend._reply = rounds(unlock, summarise)
    out = RecordingChannel()
    await engine.handle(dm("open the door"), out)  # alice: act only
    assert out.confirmations == []
    assert (
        "may not" in tool_texts(backend.calls[-1])[0]
        or "not available" in tool_texts(backend.calls[-1])[0]
    )
    root = RecordingChannel()
    await engine.handle(dm("open the door", "root"), root)
    (prompt, action_id) = root.confirmations[0]
    assert prompt.startswith("⚠️ Dangerous action: unlock front")
    assert "4321" not in prompt
    await engine.handle_action(press(action_id, user="root", chat="root"), root)
    await settled(engine)
    assert home.unlocked == ["front"]


async def test_reads_of_a_round_run_at_once_and_the_model_waits_for_every_answer(
    make_engine, backend
) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    backend._reply = rounds(
        calls(
            read(index=0, id="r"),
            light("light.kitchen", "on", index=1, id="a"),
            light("light.hall", "off", index=2, id="b"),
        ),
        summarise,
    )
    out = RecordingChannel()
    await engine.handle(dm("kitchen on, hall off"), out)
    assert home.reads == ["light.kitchen"]
    (first, second) = [a for _, a in out.confirmations]
    await engine.handle_action(press(first), out)
    await settled(engine)
    assert len(backend.calls) == 1  # one call still waits
    await engine.handle_action(press(second, accepted=False), out)
    await settled(engine)
    assert len(backend.calls) == 2
    assert tool_texts(backend.calls[-1]) == [
        "light.kitchen is off",
        '{"light.kitchen": "on"}',
        DECLINED,
    ]
    assert home.switched == [("light.kitchen", "on")]


async def test_two_processes_answering_a_rounds_last_questions_continue_it_once(
    make_engine, backend, store
) -> None:
    home = Home()
    first = make_engine(toolbox=home.toolbox(), **POLICY)
    second = make_engine(toolbox=home.toolbox(), **POLICY)  # another process, same store
    await first.start()
    await second.start()
    backend._reply = rounds(
        calls(light("light.kitchen", "on", index=0, id="a"), light("light.hall", "on", index=1)),
        summarise,
    )
    out = RecordingChannel()
    await first.handle(dm("kitchen and hall on"), out)
    (one, two) = [a for _, a in out.confirmations]
    await asyncio.gather(
        first.handle_action(press(one), out), second.handle_action(press(two), out)
    )
    await settled(first)
    await settled(second)
    assert sorted(home.switched) == [("light.hall", "on"), ("light.kitchen", "on")]
    assert len(backend.calls) == 2  # the question round, and one continuation
    assert len([r for r in out.replies if r.startswith("done:")]) == 1
    await first.aclose()
    await second.aclose()


async def test_forget_removes_waiting_actions(make_engine, backend, store) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    out, _, action_id = await asked(engine, backend, home)
    await engine.handle(dm("/forget"), out)
    (_, forget_id) = out.confirmations[-1]
    await engine.handle_action(press(forget_id), out)
    await engine.handle_action(press(action_id), out)
    assert out.notices[-1] in (UNKNOWN, ALREADY)
    assert home.switched == []
    conv = await store.current_conversation(engine.key_for("test", "alice", "alice"))
    assert await store.pending_calls(conv.id) == []
