"""The local backend behind the real engine and SQL memory: exact replies a user would see."""

from __future__ import annotations

import asyncio

import pytest

from adapters.llm.local import LocalBackend
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.notices import CUT_NOTICE
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.types import IncomingMessage, MessageStatus, Role
from tests.adapters.llm.local.conftest import local_settings
from tests.fakes.channel import RecordingChannel


@pytest.fixture
async def make_engine(store: SqlMemoryStore):
    made: list[tuple[Engine, LocalBackend]] = []

    async def factory(system_prompt: str = "You are a helpful assistant.", **llm) -> Engine:
        backend = LocalBackend(local_settings())
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="tiny", system_prompt=system_prompt),
            llm=LLMSettings(_env_file=None, **llm),
            access=AccessSettings(_env_file=None),
        )
        await backend.start()
        await engine.start()
        made.append((engine, backend))
        return engine

    yield factory
    for engine, backend in made:
        await engine.aclose(grace=1)
        await backend.aclose()


def dm(text: str, user: str = "alice", message_id: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        platform="test", chat_id=user, user_id=user, text=text, message_id=message_id
    )


async def test_the_system_prompt_reaches_the_model(make_engine) -> None:
    engine = await make_engine(system_prompt="You are a pirate.")
    out = RecordingChannel()
    await engine.handle(dm("Say hello."), out)
    assert out.replies == ["Ahoy, matey!"]


async def test_memory_of_an_earlier_turn_survives_a_restart(make_engine) -> None:
    engine = await make_engine(temperature=0.0)
    alice = RecordingChannel()
    await engine.handle(dm("My name is Zed.", message_id="1"), alice)
    assert alice.replies == ["Nice to meet you, Zed."]
    await engine.aclose(grace=1)
    again = await make_engine(temperature=0.0)  # same store: the dialogue is remembered
    await again.handle(dm("What is my name?", message_id="2"), alice)
    assert alice.replies[-1] == "Your name is Zed."
    bob = RecordingChannel()
    await again.handle(dm("What is my name?", "bob", message_id="3"), bob)
    assert bob.replies == ["I do not know."]


@pytest.mark.slow
async def test_ten_users_at_once_are_told_their_place_and_all_answered(make_engine) -> None:
    engine = await make_engine(max_concurrency=16)
    names = ["Zed", "Amy"] * 5
    outs = [RecordingChannel() for _ in names]
    firsts = [
        engine.submit(dm(f"My name is {name}.", f"user{i}", f"a{i}"), outs[i])
        for i, name in enumerate(names)
    ]
    await asyncio.wait_for(asyncio.gather(*firsts), 30)
    for i, name in enumerate(names):
        assert outs[i].replies == [f"Nice to meet you, {name}."]
    told = [next((str(n) for k, n in out.events if k == "queue"), None) for out in outs]
    # The place in line is shown in the live reply, never sent or stored as a notice.
    assert not any("in line" in n for out in outs for n in out.notices)
    # The engine reaches the backend in its own order (memory writes interleave); whoever
    # found the model busy was told their place, and nobody was dropped.
    waited = [t for t in told if t is not None]
    assert waited
    assert any("number 1 in line" in t for t in waited)
    assert len(waited) < len(names)
    seconds = [
        engine.submit(dm("What is my name?", f"user{i}", f"b{i}"), outs[i])
        for i in range(len(names))
    ]
    await asyncio.wait_for(asyncio.gather(*seconds), 30)
    for i, name in enumerate(names):
        assert outs[i].replies[-1] == f"Your name is {name}."


async def test_a_reply_cut_by_the_token_limit_is_marked_and_stored_as_cut(
    make_engine, store: SqlMemoryStore
) -> None:
    engine = await make_engine(temperature=0.0, max_reply_tokens=3)
    out = RecordingChannel()
    await engine.handle(dm("My name is Zed."), out)
    [shown] = out.replies
    assert shown.endswith(f"\n\n{CUT_NOTICE}")
    text = shown.removesuffix(f"\n\n{CUT_NOTICE}")
    assert text == "Nice to meet"  # three tokens of "Nice to meet you, Zed."
    key = engine.key_for("test", "alice", "alice")
    conversation = await store.current_conversation(key)
    [reply, _] = await store.recent_messages(conversation.id, limit=2)
    assert (reply.role, reply.status, reply.content) == (Role.ASSISTANT, MessageStatus.CUT, text)
