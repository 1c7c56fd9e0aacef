"""The conversation engine, through the real SQLite store and an in-process backend."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from core.errors import BackendUnavailable, ContextTooLong, RateLimited
from core.types import (
    BackendEvent,
    CompletionRequest,
    ConversationKey,
    MessageStatus,
    QueuePosition,
    ReplyEvent,
    Role,
)
from tests.core.conftest import dm
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend


class WatchedChannel(RecordingChannel):
    """Sets ``first_text`` when the first piece of reply text reaches the user."""

    def __init__(self) -> None:
        super().__init__()
        self.first_text = asyncio.Event()

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        async def watched() -> AsyncIterator[ReplyEvent]:
            async for event in events:
                if isinstance(event, str):
                    self.first_text.set()
                yield event

        return await super().stream_reply(watched())


class Turnstile(ScriptedBackend):
    """Tells when each request reached the model; holds those for ``hold`` until released."""

    def __init__(self, *hold: str) -> None:
        super().__init__()
        self.hold = set(hold)
        self.release = asyncio.Event()
        self.arrived: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        text = request.messages[-1].content
        self.arrived[text].set()
        if text in self.hold:
            await self.release.wait()
        async for event in super().stream(request):
            yield event


async def history(store, engine, user="alice", platform="test", chat=None):
    """Every stored message of the user's current conversation, whatever its status."""
    key = ConversationKey(engine.bot_name, platform, chat or user, None, user)
    conversation = await store.current_conversation(key)
    exported = await store.export_user(engine.bot_name, platform, user)
    (item,) = [e for e in exported if e.conversation.id == conversation.id]
    return list(item.messages)


async def test_reply_streams_and_is_stored(make_engine, store):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("hello there", message_id="1"), out)
    assert out.replies == ["echo: hello there | remembered: nothing"]
    rows = await history(store, engine)
    assert [(r.role, r.content, r.status) for r in rows] == [
        (Role.USER, "hello there", MessageStatus.COMPLETE),
        (Role.ASSISTANT, "echo: hello there | remembered: nothing", MessageStatus.COMPLETE),
    ]
    assert rows[0].token_count == 2 and rows[0].author_id == "alice"


async def test_memory_recall_and_users_kept_apart(make_engine):
    engine = make_engine()
    a, b = RecordingChannel(), RecordingChannel()
    await engine.handle(dm("my name is Ada", "alice"), a)
    await engine.handle(dm("my name is Bob", "bob"), b)
    await engine.handle(dm("who am I?", "alice"), a)
    assert a.replies[-1] == "echo: who am I? | remembered: my name is Ada"
    assert "Bob" not in a.replies[-1]


@pytest.mark.slow
async def test_many_conversations_at_once_all_answered_in_order(make_engine, store, backend):
    rng = random.Random(7)
    backend.delay_for = lambda request: rng.random() * 0.002
    engine = make_engine(max_concurrency=16)
    outs = {f"u{i}": RecordingChannel() for i in range(100)}
    futures = [
        engine.submit(dm(f"{user} message {n}", user, message_id=f"{user}-{n}"), outs[user])
        for n in range(20)
        for user in outs
    ]
    await asyncio.wait_for(asyncio.gather(*futures), timeout=90)
    for user, out in outs.items():
        assert len(out.replies) == 20
        assert [r.split(" | ")[0] for r in out.replies] == [
            f"echo: {user} message {n}" for n in range(20)
        ]
        rows = await history(store, engine, user)
        assert [r.content for r in rows if r.role is Role.USER] == [
            f"{user} message {n}" for n in range(20)
        ]
        assert [r.seq for r in rows] == sorted(r.seq for r in rows)
        assert all(r.status is MessageStatus.COMPLETE for r in rows)
    assert backend.peak <= 16


async def test_held_reply_does_not_block_other_conversations(make_engine):
    backend = Turnstile("slow")
    engine = make_engine(backend_override=backend)
    slow = RecordingChannel()
    slow_done = engine.submit(dm("slow", "alice"), slow)
    await asyncio.wait_for(backend.arrived["slow"].wait(), 5)
    fast = RecordingChannel()
    await asyncio.wait_for(engine.handle(dm("fast", "bob"), fast), timeout=5)
    assert fast.replies == ["echo: fast | remembered: nothing"]
    assert not slow_done.done()
    backend.release.set()
    await asyncio.wait_for(slow_done, timeout=5)
    assert slow.replies == ["echo: slow | remembered: nothing"]


async def test_peak_concurrency_equals_cap(make_engine, backend):
    gate = asyncio.Event()
    backend.gate = gate
    engine = make_engine(max_concurrency=3)
    futures = [engine.submit(dm("hi", f"user{i}"), RecordingChannel()) for i in range(10)]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if backend.active == 3:
            break
    await asyncio.sleep(0.05)
    assert backend.active == 3  # the others wait for a slot
    gate.set()
    await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
    assert backend.peak == 3
    assert backend.completed == 10


async def test_trimming_keeps_newest_turns_and_stored_history(make_engine, store, backend):
    # window 120 words minus a 40-word reply reserve: room for only a few turns
    engine = make_engine(context_window=256, max_reply_tokens=128)
    out = RecordingChannel()
    for n in range(12):
        await engine.handle(dm(f"turn {n} " + "word " * 10), out)
    prompt = backend.calls[-1].messages
    assert prompt[0].role is Role.SYSTEM
    users = [m.content for m in prompt if m.role is Role.USER]
    assert users[-1].startswith("turn 11")
    assert not any(u.startswith("turn 0 ") for u in users)
    assert 1 < len(users) < 12
    rows = await history(store, engine)
    assert len(rows) == 24  # trimming never deletes stored turns


async def test_context_too_long_retries_once_with_smaller_budget(make_engine, backend):
    # budget 256 - 64 = 192 words: the 60-word first turn fits; half the budget (96) does not
    engine = make_engine(context_window=256, max_reply_tokens=64)
    out = RecordingChannel()
    await engine.handle(dm("long " * 60), out)
    backend.failures.append(ContextTooLong(limit=100))
    await engine.handle(dm("two"), out)
    assert out.replies[-1] == "echo: two | remembered: nothing"
    assert len(backend.calls) == 3
    first_try, retry = backend.calls[1], backend.calls[2]
    assert any(m.content.startswith("long long") for m in first_try.messages)
    assert not any(m.content.startswith("long long") for m in retry.messages)


async def test_backend_fault_gives_short_message_and_next_message_works(
    make_engine, store, backend
):
    engine = make_engine()
    out = RecordingChannel()
    backend.failures.append(RateLimited(retry_after=3))
    await engine.handle(dm("first"), out)
    assert out.texts == [RateLimited.user_message]
    backend.failures.append(BackendUnavailable("down"))
    await engine.handle(dm("second"), out)
    assert out.texts[-1] == BackendUnavailable.user_message
    await engine.handle(dm("third"), out)
    assert out.replies[-1] == "echo: third | remembered: first; second"
    statuses = [r.status for r in await history(store, engine) if r.role is Role.ASSISTANT]
    assert statuses == [MessageStatus.FAILED, MessageStatus.FAILED, MessageStatus.COMPLETE]


async def test_mid_stream_failure_keeps_partial_reply_as_interrupted(make_engine, store, backend):
    engine = make_engine()
    out = RecordingChannel()
    backend.chunk_size = 4
    backend.mid_stream_failures.append(BackendUnavailable("dropped"))
    await engine.handle(dm("hello"), out)
    assert out.replies == ["echo"]
    assert out.notices == [BackendUnavailable.user_message]
    rows = await history(store, engine)
    assert (rows[-1].content, rows[-1].status) == ("echo", MessageStatus.INTERRUPTED)


async def test_stop_closes_stream_stores_interrupted_and_queue_continues(
    make_engine, store, backend
):
    backend.chunk_size = 2
    backend.delay = 0.02
    engine = make_engine()
    out = WatchedChannel()
    first = engine.submit(dm("a long story please"), out)
    queued = engine.submit(dm("after the stop"), out)
    await asyncio.wait_for(out.first_text.wait(), 5)
    await asyncio.wait_for(engine.handle(dm("/stop"), out), 5)
    await asyncio.wait_for(asyncio.gather(first, queued), 10)
    assert backend.closed_early == 1
    assert "Stopped." in out.notices
    rows = await history(store, engine)
    assistants = [r for r in rows if r.role is Role.ASSISTANT]
    assert assistants[0].status is MessageStatus.INTERRUPTED
    assert 0 < len(assistants[0].content) < len("echo: a long story please | remembered: nothing")
    assert assistants[1].status is MessageStatus.COMPLETE
    assert out.replies[-1].startswith("echo: after the stop")


@pytest.mark.parametrize("stop", [" /stop", "/STOP@testbot", "/stop\nplease"])
async def test_stop_in_any_spelling_skips_the_queue(make_engine, store, backend, stop):
    backend.gate = asyncio.Event()  # the reply stays open until /stop ends it
    engine = make_engine()
    out = RecordingChannel()
    first = engine.submit(dm("hold on"), out)
    await asyncio.wait_for(out.stream_started.wait(), 5)
    await asyncio.wait_for(engine.handle(dm(stop), out), 5)  # would wait behind "hold on"
    await asyncio.wait_for(first, 5)
    assert out.notices == ["Stopped."]
    rows = await history(store, engine)
    assert rows[-1].status is MessageStatus.INTERRUPTED


class _BusyBackend(ScriptedBackend):
    """Says the request waits in line (second, then first) before it answers."""

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        yield QueuePosition(2)
        yield QueuePosition(1)
        async for event in super().stream(request):
            yield event


async def test_place_in_line_is_shown_in_the_reply_stream_and_never_stored(make_engine, store):
    engine = make_engine(backend_override=_BusyBackend())
    out = RecordingChannel()
    await engine.handle(dm("hello"), out)
    answer = "echo: hello | remembered: nothing"
    assert out.events == [
        ("queue", QueuePosition(2).notice),
        ("queue", QueuePosition(1).notice),
        ("reply", answer),
    ]
    rows = await history(store, engine)
    assert (rows[-1].content, rows[-1].status) == (answer, MessageStatus.COMPLETE)


async def test_closed_engine_refuses_messages_and_restart(make_engine):
    engine = make_engine()
    await engine.start()
    await engine.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await engine.submit(dm("too late"), RecordingChannel())
    with pytest.raises(RuntimeError, match="after aclose"):
        await engine.start()


async def test_stop_with_nothing_running(make_engine):
    out = RecordingChannel()
    await make_engine().handle(dm("/stop"), out)
    assert out.notices == ["There's no reply in progress to stop."]


async def test_bad_input_gets_clear_reply_and_nothing_stored(make_engine, store, backend):
    engine = make_engine(max_input_chars=100)
    out = RecordingChannel()
    await engine.handle(dm("   "), out)
    await engine.handle(dm("x" * 101), out)
    await engine.handle(dm("", unsupported="sticker"), out)
    assert "empty" in out.notices[0]
    assert "101 characters" in out.notices[1] and "100" in out.notices[1]
    assert "sticker" in out.notices[2] and "text" in out.notices[2]
    assert backend.calls == []
    assert await history(store, engine) == []


async def test_redelivered_message_answered_once(make_engine, backend):
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm("hi", message_id="42"), out)
    await engine.handle(dm("hi", message_id="42"), out)
    assert len(out.replies) == 1 and len(backend.calls) == 1


async def test_redelivered_message_with_interrupted_reply_is_answered(make_engine, store, backend):
    engine = make_engine()
    out = RecordingChannel()
    backend.mid_stream_failures.append(BackendUnavailable("crash"))
    backend.chunk_size = 4
    await engine.handle(dm("hi", message_id="42"), out)
    backend.chunk_size = 64
    await engine.handle(dm("hi", message_id="42"), out)
    assert out.replies[-1] == "echo: hi | remembered: nothing"
    rows = await history(store, engine)
    assert [r.content for r in rows if r.role is Role.USER] == ["hi"]


async def test_a_second_process_never_touches_replies_a_live_one_writes(make_engine, store):
    backend = Turnstile("one", "two")
    first = make_engine(bot_name="testbot", backend_override=backend)
    other = make_engine(bot_name="otherbot", backend_override=backend)
    await first.start()
    await other.start()
    out = RecordingChannel()
    pending = [first.submit(dm("one"), out), other.submit(dm("two"), RecordingChannel())]
    await asyncio.wait_for(backend.arrived["one"].wait(), 5)  # both replies are in progress
    await asyncio.wait_for(backend.arrived["two"].wait(), 5)
    # A second process of "testbot" starts while the first one streams: the first is alive
    # (its heartbeat is fresh), so its reply is left alone; "otherbot" is not its business.
    second = make_engine(bot_name="testbot", backend_override=backend)
    await second.start()
    assert await second.recover() == 0
    assert (await history(store, first))[-1].status is MessageStatus.IN_PROGRESS
    assert (await history(store, other))[-1].status is MessageStatus.IN_PROGRESS
    backend.release.set()
    await asyncio.gather(*pending)
    assert out.replies == ["echo: one | remembered: nothing"]
    assert (await history(store, first))[-1].status is MessageStatus.COMPLETE


async def test_adapter_failure_does_not_break_the_engine(make_engine, store):
    engine = make_engine()
    broken = RecordingChannel(fail_delivery=True)
    await engine.handle(dm("one"), broken)
    ok = RecordingChannel()
    await engine.handle(dm("two"), ok)
    assert ok.replies == ["echo: two | remembered: one"]
    rows = await history(store, engine)
    assert rows[1].status is MessageStatus.FAILED


async def test_group_shared_memory_names_speakers(make_engine, backend):
    engine = make_engine(memory_scope="chat")
    out = RecordingChannel()
    await engine.handle(
        dm("I like tea", "alice", chat_id="g1", is_private=False, user_name="Alice"), out
    )
    await engine.handle(
        dm("I like coffee", "bob", chat_id="g1", is_private=False, user_name="Bob"), out
    )
    users = [m.content for m in backend.calls[-1].messages if m.role is Role.USER]
    assert users == ["Alice: I like tea", "Bob: I like coffee"]


async def test_group_user_scope_keeps_members_apart(make_engine, backend):
    engine = make_engine(memory_scope="user")
    out = RecordingChannel()
    await engine.handle(dm("secret of alice", "alice", chat_id="g1", is_private=False), out)
    await engine.handle(dm("hello", "bob", chat_id="g1", is_private=False), out)
    assert out.replies[-1] == "echo: hello | remembered: nothing"


async def test_two_bots_sharing_a_database_never_mix(make_engine):
    first, second = make_engine(bot_name="one"), make_engine(bot_name="two")
    out = RecordingChannel()
    await first.handle(dm("remember apples"), out)
    await second.handle(dm("what do you know?"), out)
    assert out.replies[-1] == "echo: what do you know? | remembered: nothing"


async def test_prompt_from_history_cache_equals_prompt_read_from_store(make_engine, store, backend):
    from core.prompt import CUT_OFF_LABEL, PromptBuilder

    engine = make_engine(context_window=300, max_reply_tokens=100)
    out = RecordingChannel()
    for n in range(15):  # enough turns that trimming applies
        await engine.handle(dm(f"turn {n} with some padding words"), out)
    backend.mid_stream_failures.append(BackendUnavailable("cut"))  # an interrupted reply too
    backend.chunk_size = 5
    await engine.handle(dm("cut me off"), out)
    backend.chunk_size = 16
    await engine.handle(dm("last turn"), out)
    rows = await history(store, engine)
    fresh = PromptBuilder(backend, store)  # no cache: reads the store
    prompt = await fresh.build(
        conversation_id=rows[-1].conversation_id,
        before_seq=rows[-1].seq,
        system_prompt="You are a test bot.",
        model="scripted",
        budget=200,
        shared=False,
    )
    assert list(backend.calls[-1].messages) == prompt.messages
    # the interrupted partial, labelled as such
    assert any(m.content == f"echo:\n\n{CUT_OFF_LABEL}" for m in prompt.messages)


async def test_blank_model_reply_gets_a_notice(make_engine, backend):
    from core.notices import EMPTY_MODEL_REPLY

    backend._reply = "   "
    out = RecordingChannel()
    await make_engine().handle(dm("say nothing"), out)
    assert out.notices == [EMPTY_MODEL_REPLY]
