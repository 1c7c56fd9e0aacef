"""A turn is never acted twice: a crashed tool round replays its stored results."""

from __future__ import annotations

import pytest

from core.rounds import result
from core.types import MessageStatus, NewMessage, Role
from tests.core.conftest import dm
from tests.core.test_engine import history
from tests.core.test_recovery import KEY, Resumable, until
from tests.core.tooling import Home, calls, light, read, rounds, summarise, tool_texts
from tests.fakes.channel import RecordingChannel

POLICY = {"admin_users": ["test:root"], "tools": {"tool_users": ["test:alice"]}}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest):
    """Every test here runs on the in-memory store and on the SQL store (SQLite)."""
    return request.getfixturevalue(f"{request.param}_store")


async def crashed_round(store, tool_calls, results=(), *, status=MessageStatus.IN_PROGRESS):
    """What a process killed inside a tool round leaves: the question, the round in progress."""
    conv = await store.current_conversation(KEY)
    _, row = await store.append_messages(
        conv.id,
        [
            NewMessage(Role.USER, "lights?", author_id="alice", platform_message_ids=("u1",)),
            NewMessage(Role.ASSISTANT, "", status=MessageStatus.IN_PROGRESS, owner="dead"),
        ],
    )
    await store.save_tool_calls(row.id, tool_calls, content="Checking.")
    for call_id, found in results:
        await store.save_tool_result(row.id, call_id, found)
    return row


def stored_call(call_id, name, arguments, risk="read"):
    return {"id": call_id, "name": name, "arguments": arguments, "risk": risk, "source": "python"}


async def recovered(make_engine, home, **kw):
    engine = make_engine(toolbox=home.toolbox(), **POLICY, **kw)
    adapter = Resumable()
    engine.use_adapters([adapter])
    await engine.start()
    assert await engine.recover() == 1
    return engine, adapter


async def test_a_replayed_round_runs_only_the_calls_without_a_stored_result(
    make_engine, backend, store
) -> None:
    home = Home()
    await crashed_round(
        store,
        [
            stored_call("a", "get_light", '{"entity": "light.kitchen"}'),
            stored_call("b", "get_light", '{"entity": "light.hall"}'),
        ],
        [("a", result("light.kitchen was off (stored)", "ok"))],
    )
    backend._reply = rounds(summarise)
    engine, adapter = await recovered(make_engine, home)
    await until(lambda: adapter.channels and adapter.channels[0].replies)
    assert home.reads == ["light.hall"]  # the stored call is not run again
    assert len(backend.calls) == 1  # nor is the model asked for the round again
    assert tool_texts(backend.calls[0]) == ["light.kitchen was off (stored)", "light.hall is on"]
    assert adapter.channels[0].replies == [
        "done: light.kitchen was off (stored) | light.hall is on"
    ]
    await until(lambda: _statuses(store, engine, MessageStatus.COMPLETE))
    rows = await history(store, engine)
    assert [r.status for r in rows] == [
        MessageStatus.COMPLETE,
        MessageStatus.TOOL_CALLS,
        MessageStatus.COMPLETE,
    ]


async def test_a_replayed_action_is_never_run_without_a_confirmation(
    make_engine, backend, store
) -> None:
    home = Home()
    arguments = '{"entity": "light.kitchen", "state": "on"}'
    await crashed_round(store, [stored_call("a", "set_light", arguments, "act")])
    backend._reply = rounds(summarise)
    engine, adapter = await recovered(make_engine, home)
    await until(lambda: adapter.channels and adapter.channels[0].confirmations)
    assert home.switched == []
    assert backend.calls == []
    await until(lambda: _statuses(store, engine, MessageStatus.AWAITING))


async def test_an_awaiting_round_is_left_alone_by_recovery(make_engine, backend, store) -> None:
    home = Home()
    engine = make_engine(toolbox=home.toolbox(), **POLICY)
    backend._reply = rounds(calls(read(index=0, id="r"), light(index=1, id="l")), summarise)
    out = RecordingChannel()
    await engine.start()
    await engine.handle(dm("go"), out)
    assert await engine.recover() == 0
    assert home.reads == ["light.kitchen"]
    assert (await history(store, engine))[-1].status is MessageStatus.AWAITING


async def test_a_crash_after_a_round_produces_the_next_round_without_running_it_again(
    make_engine, backend, store
) -> None:
    home = Home()
    row = await crashed_round(
        store,
        [stored_call("a", "get_light", '{"entity": "light.kitchen"}')],
        [("a", result("light.kitchen is off", "ok"))],
    )
    await store.finish_message(row.id, content="Checking.", status=MessageStatus.TOOL_CALLS)
    await store.append_messages(
        row.conversation_id,
        [NewMessage(Role.ASSISTANT, "", status=MessageStatus.IN_PROGRESS, owner="dead")],
    )
    backend._reply = rounds(summarise)
    _engine, adapter = await recovered(make_engine, home)
    await until(lambda: adapter.channels and adapter.channels[0].replies)
    assert home.reads == []
    assert adapter.channels[0].replies == ["done: light.kitchen is off"]


async def _statuses(store, engine, status) -> bool:
    return (await history(store, engine))[-1].status is status
