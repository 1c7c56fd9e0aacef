"""The tool loop through the engine: read calls, errors, limits, prompts, the audit."""

from __future__ import annotations

import asyncio

import pytest

from core.prompt import PromptBuilder
from core.rounds import NO_RESULT
from core.turns import NO_TOOLS_NOTICE, TOOLS_GUIDANCE
from core.types import MessageStatus, Role, ToolDecision
from tests.core.conftest import dm
from tests.core.test_engine import history
from tests.core.tooling import Home, calls, light, read, rounds, summarise, tool_texts
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import tool_call

ADMIN = {"admin_users": ["test:root"]}


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest):
    """Every test here runs on the in-memory store and on the SQL store (SQLite)."""
    return request.getfixturevalue(f"{request.param}_store")


async def test_a_read_call_runs_and_the_model_answers_from_its_result(
    make_engine, backend, store
) -> None:
    home = Home()
    backend._reply = rounds(calls(read(), text="Let me look."), summarise)
    engine = make_engine(toolbox=home.toolbox())
    out = RecordingChannel()
    await engine.handle(dm("is the kitchen light on?"), out)

    assert home.reads == ["light.kitchen"]
    assert out.replies == ["Let me look.", "done: light.kitchen is off"]
    assert out.notices == []
    # The second request carries the round: the assistant's call, then the tool's result.
    second = backend.calls[1].messages
    assert second[-2].role is Role.ASSISTANT and second[-2].tool_calls[0].name == "get_light"
    assert second[-1].role is Role.TOOL and second[-1].content == "light.kitchen is off"
    assert second[-1].tool_call_id == second[-2].tool_calls[0].id
    # Stored: the round (with its call and result), then the answer.
    rows = await history(store, engine)
    assert [r.status for r in rows] == [
        MessageStatus.COMPLETE,
        MessageStatus.TOOL_CALLS,
        MessageStatus.COMPLETE,
    ]
    round_row = rows[1]
    assert round_row.content == "Let me look."
    assert round_row.extra["tool_results"]["call_1"]["content"] == "light.kitchen is off"
    (entry,) = await store.audit_entries(bot="testbot")
    assert (entry.tool, entry.decision, entry.result_status) == (
        "get_light",
        ToolDecision.ALLOWED,
        "ok",
    )


async def test_tools_and_guidance_are_offered_only_to_those_who_may_use_them(
    make_engine, backend
) -> None:
    backend._reply = "hello"
    engine = make_engine(toolbox=Home().toolbox(), tools={"tool_users": ["test:alice"]})
    await engine.handle(dm("hi", "alice"), RecordingChannel())
    await engine.handle(dm("hi", "bob"), RecordingChannel())
    alice, bob = backend.calls
    assert {"set_light", "get_light"} <= {t.name for t in alice.tools}
    assert "unlock" not in {t.name for t in alice.tools}  # dangerous: admins only
    assert {t.name for t in bob.tools} == {"get_light", "broken", "slow"}
    assert TOOLS_GUIDANCE in alice.messages[0].content


async def test_later_prompts_hold_the_rounds_and_their_results(make_engine, backend) -> None:
    home = Home()
    backend._reply = rounds(calls(read()), summarise)
    engine = make_engine(toolbox=home.toolbox())
    await engine.handle(dm("light?"), RecordingChannel())
    backend._reply = "ok"
    await engine.handle(dm("thanks"), RecordingChannel())
    later = backend.calls[-1].messages
    roles = [m.role for m in later[1:]]
    assert roles == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT, Role.USER]
    assert later[3].content == "light.kitchen is off"


async def test_invalid_arguments_go_back_to_the_model_and_nothing_runs(
    make_engine, backend, store
) -> None:
    home = Home()
    backend._reply = rounds(calls(tool_call("get_light", {"room": "kitchen"})), summarise)
    engine = make_engine(toolbox=home.toolbox())
    out = RecordingChannel()
    await engine.handle(dm("light?"), out)
    assert home.reads == []
    assert "entity" in tool_texts(backend.calls[1])[0]
    assert out.replies[-1].startswith("done: Error:")
    (entry,) = await store.audit_entries(bot="testbot")
    assert entry.decision is ToolDecision.INVALID


async def test_a_tool_error_an_exception_and_a_timeout_come_back_as_errors(
    make_engine, backend, store
) -> None:
    home = Home()
    backend._reply = rounds(
        calls(
            light("light.garage", index=0, id="a"),
            tool_call("broken", {}, index=1, id="b"),
            tool_call("slow", {}, index=2, id="c"),
        ),
        summarise,
    )
    engine = make_engine(
        toolbox=home.toolbox(), tools={"tool_timeout_seconds": 0.05}, admin_users=["test:alice"]
    )
    out = RecordingChannel()
    await engine.handle(dm("go"), out)
    # set_light is an action: it waits for a confirmation; the read tools ran.
    (_prompt, action) = out.confirmations[0]
    await engine.handle_action(_press(action), out)
    await _settled(engine)
    texts = tool_texts(backend.calls[-1])
    assert texts[0] == "Error: there is no light called light.garage"
    assert texts[1] == "Error: the tool failed unexpectedly."  # no internals leak
    assert "did not answer" in texts[2]
    assert "secret internals" not in " ".join(out.texts)
    assert "❌ turn on light.garage: there is no light called light.garage" in out.notices
    statuses = {e.tool: e.result_status for e in await store.audit_entries(bot="testbot")}
    assert statuses == {"set_light": "error", "broken": "error", "slow": "timeout"}
    # The chat goes on.
    backend._reply = "still here"
    await engine.handle(dm("hello?"), out)
    assert out.replies[-1] == "still here"


async def test_read_calls_of_one_round_run_concurrently(make_engine, backend) -> None:
    home = Home()
    home.hold = asyncio.Event()
    backend._reply = rounds(
        calls(read("light.kitchen", index=0, id="a"), read("light.hall", index=1, id="b")),
        summarise,
    )
    engine = make_engine(toolbox=home.toolbox())
    task = asyncio.ensure_future(engine.handle(dm("both?"), RecordingChannel()))
    async with asyncio.timeout(5):
        while home.reading < 2:  # both calls are running before either is released
            await asyncio.sleep(0.01)
    home.hold.set()
    await task
    assert home.peak_reading == 2
    assert tool_texts(backend.calls[-1]) == ["light.kitchen is off", "light.hall is on"]


async def test_the_round_limit_holds_and_the_bot_says_it_stopped(
    make_engine, backend, store
) -> None:
    home = Home()
    backend._reply = rounds(calls(read()))  # the model never stops calling tools
    engine = make_engine(toolbox=home.toolbox(), tools={"tool_max_rounds": 2})
    out = RecordingChannel()
    await engine.handle(dm("loop"), out)
    assert len(home.reads) == 2
    assert len(backend.calls) == 3
    assert out.notices == [
        "I stopped after 2 tool rounds for this message without a final answer. "
        "Ask again (more precisely, perhaps) if you want me to go on."
    ]
    rows = await history(store, engine)
    last = rows[-1]
    assert last.status is MessageStatus.TOOL_CALLS
    assert last.extra["tool_results"]["call_1"]["content"].startswith("not run: round limit")
    # The stored history stays valid: every call of every round has a result.
    backend._reply = "ok"
    await engine.handle(dm("and now?"), out)
    prompt = backend.calls[-1].messages
    ids = [c.id for m in prompt for c in m.tool_calls]
    answered = [m.tool_call_id for m in prompt if m.role is Role.TOOL]
    assert ids == answered and len(ids) == 3
    assert NO_RESULT not in [m.content for m in prompt]


async def test_a_model_that_cannot_use_tools_gets_none_and_the_user_is_told_once(
    make_engine, backend
) -> None:
    backend.tools = False
    backend._reply = "I turned it on!"
    engine = make_engine(toolbox=Home().toolbox())
    out = RecordingChannel()
    await engine.handle(dm("turn on the light"), out)
    await engine.handle(dm("again"), out)
    assert all(not c.tools for c in backend.calls)
    assert TOOLS_GUIDANCE not in backend.calls[0].messages[0].content
    assert out.notices == [NO_TOOLS_NOTICE.format(model="scripted")]
    await engine.handle(dm("/help"), out)
    assert "can't use tools" in out.notices[-1]


async def test_a_bot_without_tools_behaves_as_before(make_engine, backend) -> None:
    backend._reply = "hi"
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("hello"), out)
    assert out.replies == ["hi"] and out.notices == []
    assert not backend.calls[0].tools
    await engine.handle(dm("/tools"), out)
    assert "don't know the command" in out.notices[-1]


async def test_a_redelivered_message_whose_turn_used_tools_is_not_answered_twice(
    make_engine, backend
) -> None:
    home = Home()
    backend._reply = rounds(calls(read()), summarise)
    engine = make_engine(toolbox=home.toolbox())
    await engine.handle(dm("light?", message_id="m1"), RecordingChannel())
    again = RecordingChannel()
    await engine.handle(dm("light?", message_id="m1"), again)
    assert home.reads == ["light.kitchen"]
    assert again.texts == []
    assert len(backend.calls) == 2


async def test_tools_and_audit_commands(make_engine, backend) -> None:
    backend._reply = rounds(calls(read()), summarise)
    engine = make_engine(toolbox=Home().toolbox(), **ADMIN)
    out = RecordingChannel()
    await engine.handle(dm("/tools", "bob"), out)
    assert "get_light (read)" in out.notices[-1] and "set_light" not in out.notices[-1]
    await engine.handle(dm("/tools", "root"), out)
    assert "unlock (dangerous)" in out.notices[-1]
    await engine.handle(dm("light?", "bob"), out)
    await engine.handle(dm("/audit", "bob"), out)
    assert "admins only" in out.notices[-1]
    await engine.handle(dm("/audit", "root"), out)
    assert "get_light" in out.notices[-1] and "allowed, ok" in out.notices[-1]
    group = dm("/tools", "root", chat_id="g", is_private=False)
    await engine.handle(group, out)
    assert "group chats" in out.notices[-1]


def _press(action_id: str, user: str = "alice", accepted: bool = True):
    from core.types import IncomingAction

    return IncomingAction("test", user, user, action_id, accepted)


async def _settled(engine) -> None:
    """Wait until the engine's lanes and side tasks are idle."""
    async with asyncio.timeout(5):
        while engine._lanes.tasks() or engine._side_tasks:
            await asyncio.sleep(0.01)


async def test_the_budget_keeps_or_drops_a_round_whole(store, backend) -> None:
    from core.prompt import PromptBuilder
    from core.rounds import result as tool_result
    from core.types import ConversationKey, NewMessage

    key = ConversationKey("testbot", "test", "alice", None, "alice")
    conv = await store.current_conversation(key)
    _, row, _, question = await store.append_messages(
        conv.id,
        [
            NewMessage(Role.USER, "what is on?"),
            NewMessage(Role.ASSISTANT, "", status=MessageStatus.IN_PROGRESS),
            NewMessage(Role.ASSISTANT, "the kitchen light"),
            NewMessage(Role.USER, "thanks"),
        ],
    )
    call = {"id": "c", "name": "get_light", "arguments": "{}", "risk": "read", "source": "python"}
    await store.save_tool_calls(row.id, [call], content="")
    await store.save_tool_result(row.id, "c", tool_result("word " * 50, "ok"))
    await store.finish_message(row.id, content="", status=MessageStatus.TOOL_CALLS)
    builder = PromptBuilder(backend, store)

    async def prompt(budget: int):
        return await builder.build(
            conversation_id=conv.id,
            before_seq=question.seq + 1,
            system_prompt="sys",
            model="scripted",
            budget=budget,
            shared=False,
        )

    small = await prompt(40)  # the round's 50-word result does not fit: the round goes whole
    assert [m.role for m in small.messages] == [Role.SYSTEM, Role.ASSISTANT, Role.USER]
    assert not any(m.tool_calls for m in small.messages)
    large = await prompt(200)
    assert [m.role for m in large.messages] == [
        Role.SYSTEM,
        Role.USER,
        Role.ASSISTANT,
        Role.TOOL,
        Role.ASSISTANT,
        Role.USER,
    ]
    assert large.tokens >= 50


async def test_the_next_round_prompt_comes_from_the_cache_and_matches_the_store(
    make_engine, backend, store
) -> None:
    home = Home()
    backend._reply = rounds(calls(read(), text="Let me look."), summarise)
    engine = make_engine(toolbox=home.toolbox())
    await engine.handle(dm("light?"), RecordingChannel())  # fills the history cache
    reads = 0
    recent = store.recent_messages

    async def counted(*args, **kwargs):
        nonlocal reads
        reads += 1
        return await recent(*args, **kwargs)

    store.recent_messages = counted
    await engine.handle(dm("and now?"), RecordingChannel())
    store.recent_messages = recent
    assert reads == 0  # the finished round went into the cache, not dropped from it
    # What the model read equals a prompt built from the store alone.
    rows = await history(store, engine)
    fresh = await PromptBuilder(backend, store).build(
        conversation_id=rows[-1].conversation_id,
        before_seq=rows[-1].seq,
        system_prompt=backend.calls[-1].messages[0].content,
        model=backend.default_model,
        budget=4000,
        shared=False,
    )
    assert backend.calls[-1].messages == fresh.messages
    assert [m.role for m in fresh.messages[-3:]] == [Role.USER, Role.ASSISTANT, Role.TOOL]
