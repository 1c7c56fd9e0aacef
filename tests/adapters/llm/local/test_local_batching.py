"""Many conversations at once on the tiny GGUF: continuous batching and each one's warm cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.llm.local import LocalBackend
from adapters.llm.local_batch import choose_slot
from adapters.llm.local_context import Slot
from core.errors import ConfigError, ContextTooLong
from core.types import BackendEvent, Finish, QueuePosition, TextDelta, Usage
from tests.adapters.llm.backend_helpers import generator
from tests.adapters.llm.local.conftest import EXPECTED
from tests.adapters.llm.local.test_local_backend import (
    chat,
    collect,
    text_of,
    write_model_header,
)

MakeBackend = Callable[..., LocalBackend]


def usage_of(events: list[BackendEvent]) -> Usage:
    usage = events[-1]
    assert isinstance(usage, Usage)
    return usage


async def test_eight_conversations_at_once_give_the_texts_they_give_one_at_a_time(
    make_backend: MakeBackend,
) -> None:
    cases = [EXPECTED[i % len(EXPECTED)] for i in range(8)]
    alone = make_backend(parallel=1)
    await alone.start()
    singles = [await collect(alone.stream(chat(s, t, temperature=0.0))) for s, t, _ in cases]
    one_at_a_time = [text_of(events) for events in singles]
    assert one_at_a_time == [reply for _, _, reply in cases]

    batched = make_backend(parallel=8)
    await batched.start()
    order: list[tuple[str, int]] = []  # (what, conversation) in the order it reached us

    async def converse(i: int) -> list[BackendEvent]:
        system, turns, _ = cases[i]
        events: list[BackendEvent] = []
        async for event in batched.stream(chat(system, turns, temperature=0.0)):
            if isinstance(event, TextDelta) and not any(isinstance(e, TextDelta) for e in events):
                order.append(("first", i))
            if isinstance(event, Finish):
                order.append(("finish", i))
            events.append(event)
        return events

    results = await asyncio.gather(*(converse(i) for i in range(8)))
    assert [text_of(events) for events in results] == one_at_a_time
    assert not any(isinstance(e, QueuePosition) for events in results for e in events)
    # Decoded together: every conversation had its first words before any had finished.
    firsts = [n for n, (what, _) in enumerate(order) if what == "first"]
    finishes = [n for n, (what, _) in enumerate(order) if what == "finish"]
    assert max(firsts) < min(finishes)
    # The counts are each conversation's own, exactly as when it runs alone.
    counts = [(u.prompt_tokens, u.completion_tokens) for u in map(usage_of, results)]
    assert counts == [(u.prompt_tokens, u.completion_tokens) for u in map(usage_of, singles)]
    assert not batched.busy


async def test_a_full_set_of_slots_queues_the_next_request_with_its_position(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend(parallel=2)
    await backend.start()
    first = generator(backend.stream(chat("You are a pirate.", ["Say hello."])))
    second = generator(backend.stream(chat("You are a robot.", ["Say hello."])))
    assert isinstance(await anext(first), TextDelta)  # both hold a sequence
    assert isinstance(await anext(second), TextDelta)
    third = generator(backend.stream(chat(None, ["My name is Zed."])))
    fourth = generator(backend.stream(chat(None, ["What is my name?"])))
    assert await anext(third) == QueuePosition(1)
    assert await anext(fourth) == QueuePosition(2)
    waiting = asyncio.gather(collect(third), collect(fourth))
    assert "Ahoy" + text_of(await collect(first)) == "Ahoy, matey!"
    assert "Beep" + text_of(await collect(second)) == "Beep boop."
    replies = await asyncio.wait_for(waiting, 10)
    assert [text_of(events) for events in replies] == ["Nice to meet you, Zed.", "I do not know."]
    assert not backend.busy


async def test_stopping_one_conversation_leaves_the_others_texts_unchanged(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend(parallel=4)
    await backend.start()
    stopped = generator(backend.stream(chat(None, ["My name is Zed."])))
    assert isinstance(await anext(stopped), TextDelta)  # decoding now
    others = [
        asyncio.create_task(collect(backend.stream(chat(s, t))), name=f"other-{i}")
        for i, (s, t, _) in enumerate(EXPECTED[:3])
    ]
    await asyncio.sleep(0)
    await stopped.aclose()  # /stop in the middle of the batch
    replies = await asyncio.wait_for(asyncio.gather(*others), 10)
    assert [text_of(events) for events in replies] == [reply for _, _, reply in EXPECTED[:3]]
    # The stopped sequence is free and clean: the same conversation answers in full.
    again = await collect(backend.stream(chat(None, ["My name is Zed."])))
    assert text_of(again) == "Nice to meet you, Zed."
    assert not backend.busy


async def test_a_failing_conversation_fails_alone(make_backend: MakeBackend) -> None:
    backend = make_backend(parallel=4, context=64)
    await backend.start()
    good = asyncio.create_task(collect(backend.stream(chat("You are a robot.", ["Say hello."]))))
    limited = asyncio.create_task(
        collect(backend.stream(chat(None, ["My name is Zed."], max_tokens=2)))
    )
    with pytest.raises(ContextTooLong):
        await collect(backend.stream(chat(None, ["Say hello. " * 40])))
    assert text_of(await good) == "Beep boop."
    cut = await limited
    assert text_of(cut) == "Nice to"  # max_tokens holds for its own sequence only
    assert usage_of(cut).completion_tokens == 2


async def test_a_second_turn_reads_only_its_new_tokens_and_says_the_same(
    make_backend: MakeBackend,
) -> None:
    warm = make_backend(parallel=2)
    await warm.start()
    first_turn = await collect(warm.stream(chat(None, ["My name is Zed."], temperature=0.0)))
    assert text_of(first_turn) == "Nice to meet you, Zed."
    assert usage_of(first_turn).cached_tokens == 0
    history = ["My name is Zed.", "Nice to meet you, Zed.", "What is my name?"]
    second_turn = await collect(warm.stream(chat(None, history, temperature=0.0)))
    cold = make_backend(parallel=2)
    await cold.start()
    cold_turn = await collect(cold.stream(chat(None, history, temperature=0.0)))

    assert text_of(second_turn) == text_of(cold_turn) == "Your name is Zed."
    warm_usage, cold_usage = usage_of(second_turn), usage_of(cold_turn)
    assert warm_usage.prompt_tokens == cold_usage.prompt_tokens  # exact counts, as before
    assert cold_usage.cached_tokens == 0
    # Cached: the whole first turn, its prompt and the reply the model wrote; evaluated: only
    # what the second turn adds (the end of the reply, the new question, the assistant cue).
    first = usage_of(first_turn)
    assert warm_usage.cached_tokens == first.prompt_tokens + first.completion_tokens
    new = await warm.count_tokens("What is my name?", "tiny-chat")
    evaluated = warm_usage.prompt_tokens - warm_usage.cached_tokens
    overhead = warm.message_overhead("tiny-chat")
    # The reply's closing, the new message and the assistant cue: nothing older.
    assert new < evaluated <= new + 2 * overhead


async def test_each_conversation_keeps_its_cache_until_its_slot_is_the_least_recently_used(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend(parallel=2)
    await backend.start()
    zed = ["My name is Zed.", "Nice to meet you, Zed.", "What is my name?"]
    amy = ["My name is Amy.", "Nice to meet you, Amy.", "What is my name?"]
    for turns in (zed[:1], amy[:1]):
        await collect(backend.stream(chat(None, turns)))
    # Both caches are kept: each conversation's next turn is warm, whatever the order.
    amy_next = await collect(backend.stream(chat(None, amy)))
    zed_next = await collect(backend.stream(chat(None, zed)))
    assert (text_of(zed_next), text_of(amy_next)) == ("Your name is Zed.", "Your name is Amy.")
    assert usage_of(zed_next).cached_tokens > 0
    assert usage_of(amy_next).cached_tokens > 0
    # A third conversation takes the least recently used slot (Amy's); Zed's stays warm.
    await collect(backend.stream(chat("You are a pirate.", ["Say hello."])))
    zed_again = await collect(backend.stream(chat(None, zed)))
    assert text_of(zed_again) == "Your name is Zed."
    assert usage_of(zed_again).cached_tokens == usage_of(zed_again).prompt_tokens - 1
    amy_again = await collect(backend.stream(chat(None, amy)))
    assert text_of(amy_again) == "Your name is Amy."  # cold, and still right
    assert usage_of(amy_again).cached_tokens < usage_of(amy_again).prompt_tokens // 4


def test_a_retried_reply_reuses_its_slot_and_a_new_conversation_takes_the_oldest() -> None:
    prompt = list(range(100, 130))
    retried = Slot(0, cached=[*prompt, *range(500, 700)], used=2)  # a long reply after it
    empty = Slot(1, used=1)
    # The same prompt again (/retry): its cache holds all of it though the reply is longer.
    assert choose_slot([retried, empty], prompt) == (retried, len(prompt))
    # A new conversation sharing only the system prompt's first tokens keeps that cache.
    other = [*prompt[:5], *range(900, 925)]
    assert choose_slot([retried, empty], other) == (empty, 0)
    # The conversation's next turn continues its cache.
    assert choose_slot([empty, retried], [*retried.cached, 7, 8]) == (retried, len(retried.cached))


async def test_start_up_refuses_more_conversations_than_memory_holds(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    path = tmp_path / "seven-b.gguf"
    # A 7B-like model: 128 KiB of KV cache per token.
    write_model_header(path, context=8192, width=4096, blocks=32, heads=32, kv_heads=8)
    # One 8,192-token conversation needs about 1.5 GiB; 256 of them, hundreds.
    backend = make_backend(model_path=path, parallel=256)
    with pytest.raises(ConfigError) as info:
        await backend.start()
    message = str(info.value)
    assert "256 conversations of 8192 tokens" in message
    assert "LOCAL_PARALLEL or LOCAL_CONTEXT" in message
    assert info.value.variable == "LOCAL_MODEL_PATH"
    one = make_backend(model_path=path, parallel=1)
    with pytest.raises(ConfigError) as info:
        await one.start()  # memory is no objection: llama.cpp then finds no weights
    assert "memory" not in str(info.value)
