"""Crash recovery in the engine: replies of dead processes are finished once, in place.

The store is seeded as a killed process leaves it (a reply in progress, owned by an
instance that is gone, with its text and message ids saved as it streamed); a fake adapter
reopens the chat and records which messages the new reply takes over.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from core.instance import Instance
from core.recovery import INTERRUPTED_MARK, INTERRUPTED_NOTICE
from core.types import (
    ConversationKey,
    InstanceInfo,
    MessageStatus,
    NewMessage,
    Role,
    StoredMessage,
)
from tests.core.conftest import dm
from tests.core.test_engine import Turnstile, history
from tests.fakes.channel import RecordingChannel

KEY = ConversationKey("testbot", "test", "alice", None, "alice")


class Resumable:
    """A chat adapter that reopens chats into recording channels."""

    name = "test"

    def __init__(self) -> None:
        self.opened: list[tuple[str, str | None, tuple[str, ...]]] = []
        self.channels: list[RecordingChannel] = []

    def resume(
        self, chat_id: str, thread_id: str | None, message_ids: Sequence[str]
    ) -> RecordingChannel:
        self.opened.append((chat_id, thread_id, tuple(message_ids)))
        channel = RecordingChannel()
        self.channels.append(channel)
        return channel


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            found = check()
            if asyncio.iscoroutine(found):
                found = await found
            if found:
                return
            await asyncio.sleep(0.01)


async def stored_status(store, engine, status: MessageStatus) -> bool:
    return (await history(store, engine))[-1].status is status


async def crashed_reply(store, *, owner: str = "dead", text: str = "", ids=()) -> StoredMessage:
    """The rows a process killed mid-reply leaves: the question, a reply in progress."""
    conv = await store.current_conversation(KEY)
    _, reply = await store.append_messages(
        conv.id,
        [
            NewMessage(Role.USER, "question", author_id="alice", platform_message_ids=("u1",)),
            NewMessage(Role.ASSISTANT, "", status=MessageStatus.IN_PROGRESS, owner=owner),
        ],
    )
    await store.save_progress(reply.id, content=text, platform_message_ids=list(ids))
    return reply


async def test_a_recent_reply_of_a_dead_process_is_produced_again_in_its_messages(
    make_engine, store
):
    await crashed_reply(store, text="echo: quest", ids=["m1", "m2"])
    engine = make_engine()
    adapter = Resumable()
    engine.use_adapters([adapter])
    await engine.start()
    assert await engine.recover() == 1
    await until(lambda: adapter.channels and adapter.channels[0].replies)
    assert adapter.opened == [("alice", None, ("m1", "m2"))]  # the messages on screen
    assert adapter.channels[0].replies == ["echo: question | remembered: nothing"]
    rows = await history(store, engine)
    assert [(r.role, r.status) for r in rows] == [
        (Role.USER, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.COMPLETE),
    ]  # one answer: the same row, complete, no second copy
    assert rows[1].content == "echo: question | remembered: nothing"
    assert await engine.recover() == 0  # taken over once


async def test_an_old_interrupted_reply_is_marked_not_produced_again(make_engine, store, clock):
    await crashed_reply(store, text="half an answ", ids=["m1"])
    clock.advance(601)  # the store stamped the reply with the same clock
    engine = make_engine()
    adapter = Resumable()
    engine.use_adapters([adapter])
    await engine.start()
    assert await engine.recover() == 1
    await until(lambda: adapter.channels and adapter.channels[0].replies)
    assert adapter.channels[0].replies == [f"half an answ\n\n{INTERRUPTED_MARK}"]
    await until(lambda: stored_status(store, engine, MessageStatus.INTERRUPTED))
    reply = (await history(store, engine))[-1]
    assert (reply.status, reply.content) == (MessageStatus.INTERRUPTED, "half an answ")


async def test_an_old_reply_with_nothing_on_screen_gets_a_short_notice(make_engine, store, clock):
    await crashed_reply(store)
    clock.advance(601)  # the store stamped the reply with the same clock
    engine = make_engine()
    adapter = Resumable()
    engine.use_adapters([adapter])
    await engine.start()
    await engine.recover()
    await until(lambda: adapter.channels and adapter.channels[0].texts)
    assert adapter.channels[0].texts == [INTERRUPTED_NOTICE]
    await until(lambda: stored_status(store, engine, MessageStatus.INTERRUPTED))


async def test_a_redelivered_message_takes_its_reply_over_instead_of_answering_twice(
    make_engine, store
):
    await crashed_reply(store, text="echo", ids=["m1"])
    engine = make_engine()
    adapter = Resumable()
    engine.use_adapters([adapter])  # not recovering yet: the redelivery comes first
    await engine.start()
    out = RecordingChannel()
    await engine.handle(dm("question", message_id="u1"), out)
    await until(lambda: adapter.channels and adapter.channels[0].replies)
    assert out.texts == []  # nothing new posted: the messages on screen were edited
    assert adapter.opened == [("alice", None, ("m1",))]
    assert len(await history(store, engine)) == 2
    await engine.handle(dm("question", message_id="u1"), out)  # once more: answered already
    assert out.texts == [] and len(adapter.channels) == 1


async def test_a_redelivered_message_whose_reply_a_live_process_writes_is_left(make_engine, store):
    engine = make_engine()
    await engine.start()
    await crashed_reply(store, owner=engine.instance_id, text="echo")
    out = RecordingChannel()
    await engine.handle(dm("question", message_id="u1"), out)
    assert out.texts == []
    assert (await history(store, engine))[-1].status is MessageStatus.IN_PROGRESS


async def test_a_reply_cut_by_the_shutdown_grace_is_finished_by_the_next_start(make_engine, store):
    backend = Turnstile("one")
    first = make_engine(backend_override=backend)
    await first.start()
    pending = first.submit(dm("one"), RecordingChannel())
    await asyncio.wait_for(backend.arrived["one"].wait(), 5)
    await first.aclose(grace=0.05)  # the reply did not finish: left in progress
    await pending
    assert (await history(store, first))[-1].status is MessageStatus.IN_PROGRESS
    backend.release.set()
    second = make_engine(backend_override=backend)
    adapter = Resumable()
    second.use_adapters([adapter])
    await second.start()
    assert await second.recover() == 1  # the first retired itself: no wait for its lease
    await until(lambda: adapter.channels and adapter.channels[0].replies)
    assert adapter.channels[0].replies == ["echo: one | remembered: nothing"]
    assert (await history(store, second))[-1].status is MessageStatus.COMPLETE


async def test_a_process_is_dead_when_its_heartbeat_is_stale_or_its_pid_gone(store, clock):
    me = Instance(store, "testbot", clock, interval=1.0)
    await me.start()
    try:
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        dead_pid = int(gone.stdout)
        host = me.host
        fresh = clock.now
        peers = {
            "same-host-alive": InstanceInfo("a", "testbot", host, os.getppid(), fresh, fresh),
            "same-host-gone": InstanceInfo("b", "testbot", host, dead_pid, fresh, fresh),
            "elsewhere-fresh": InstanceInfo("c", "testbot", "other", dead_pid, fresh, fresh),
            "elsewhere-stale": InstanceInfo(
                "d", "testbot", "other", 1, fresh, fresh - timedelta(seconds=3.5)
            ),
            # Running here with a late heartbeat (a loaded machine): busy, not dead.
            "same-host-late": InstanceInfo(
                "e", "testbot", host, os.getppid(), fresh, fresh - timedelta(seconds=30)
            ),
            # ... unless its heartbeat is so old that its pid must have been reused.
            "same-host-ancient": InstanceInfo(
                "f", "testbot", host, os.getppid(), fresh, fresh - timedelta(hours=1)
            ),
        }
        for peer in peers.values():
            await store.register_instance(peer)
        assert sorted(await me.live()) == sorted([me.id, "a", "c", "e"])
        assert {i.id for i in await me.dead()} == {"b", "d", "f"}
    finally:
        await me.aclose()
    assert me.id not in {i.id for i in await store.instances("testbot")}


async def test_the_prompt_never_holds_a_half_reply_as_complete_nor_a_lost_answer(
    make_engine, backend
):
    from core.errors import BackendUnavailable
    from core.prompt import CUT_OFF_LABEL, NO_REPLY_LABEL

    engine = make_engine()
    out = RecordingChannel()
    backend.failures.append(BackendUnavailable("down"))  # no answer at all
    await engine.handle(dm("first"), out)
    backend.mid_stream_failures.append(BackendUnavailable("cut"))  # half an answer
    backend.chunk_size = 4
    await engine.handle(dm("second"), out)
    backend.chunk_size = 64
    await engine.handle(dm("third"), out)
    prompt = [(m.role, m.content) for m in backend.calls[-1].messages]
    assert prompt[1:] == [
        (Role.USER, "first"),
        (Role.ASSISTANT, NO_REPLY_LABEL),
        (Role.USER, "second"),
        (Role.ASSISTANT, f"echo\n\n{CUT_OFF_LABEL}"),
        (Role.USER, "third"),
    ]


async def test_recovered_replies_go_before_messages_that_arrive_while_adapters_start(
    make_engine, store, backend
):
    await crashed_reply(store, text="echo: quest", ids=["m1"])
    engine = make_engine()
    adapter = Resumable()
    engine.use_adapters([adapter])
    await engine.start()
    assert await engine.recover(adapters_ready=False) == 1  # queued, waiting to edit
    out = RecordingChannel()
    later = engine.submit(dm("next"), out)  # arrives while the adapters start
    await asyncio.sleep(0.05)
    assert backend.calls[0].messages[-1].content == "question"  # already being produced
    assert out.replies == []
    engine.adapters_ready()
    await asyncio.wait_for(later, 5)
    assert adapter.channels[0].replies == ["echo: question | remembered: nothing"]
    # The next answer saw the recovered one complete: no "lost" turn, no half reply.
    assert [(m.role, m.content) for m in backend.calls[1].messages[1:]] == [
        (Role.USER, "question"),
        (Role.ASSISTANT, "echo: question | remembered: nothing"),
        (Role.USER, "next"),
    ]
