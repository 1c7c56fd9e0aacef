"""Token counting: exact offline counts, model families, estimates and their calibration."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from adapters.llm.tokens import (
    CALIBRATION_MAX,
    CALIBRATION_MIN,
    CL100K,
    MESSAGE_OVERHEAD,
    O200K,
    TokenCounter,
    count_exact,
    encoding_for_model,
)

ROOT = Path(__file__).resolve().parents[3]

# Computed once with the real o200k_base / cl100k_base tables and written down: a change in
# tokenizer data or in how we call it shows up here.
FIXED_COUNTS = {
    "Hello, world!": (4, 4),
    "The quick brown fox jumps over the lazy dog.": (10, 10),
    "Привет, мир!": (5, 7),
    "日本語のテキスト": (6, 8),
    "I 💜 emoji 🎉🎉": (8, 10),
    "<|endoftext|>": (7, 7),  # user text is never a special token
    "def count_tokens(text: str) -> int:\n    return len(text)\n": (15, 15),
}

_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, socket, sys

    def _refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    class _NoNetSocket(socket.socket):
        def connect(self, *args):
            _refuse()
        def connect_ex(self, *args):
            _refuse()

    socket.socket = _NoNetSocket
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse

    from adapters.llm.openai import OpenAIBackend, OpenAISettings

    texts = json.loads(sys.stdin.read())
    backend = OpenAIBackend(OpenAISettings(_env_file=None, api_key="sk-offline"))

    async def main():
        return {
            t: [await backend.count_tokens(t, "gpt-4o"), await backend.count_tokens(t, "gpt-4")]
            for t in texts
        }

    print(json.dumps(asyncio.run(main())))
    """
)


@pytest.mark.slow
def test_fixed_counts_offline_without_any_tokenizer_cache(tmp_path: Path) -> None:
    caches = [tmp_path / name for name in ("home", "tiktoken", "xdg", "data_gym")]
    for folder in caches:
        folder.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(caches[0]),
        "TIKTOKEN_CACHE_DIR": str(caches[1]),
        "XDG_CACHE_HOME": str(caches[2]),
        "DATA_GYM_CACHE_DIR": str(caches[3]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", _OFFLINE_SCRIPT],
        input=json.dumps(list(FIXED_COUNTS)),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    counts = {text: tuple(pair) for text, pair in json.loads(result.stdout).items()}
    assert counts == FIXED_COUNTS
    for folder in caches:
        assert list(folder.iterdir()) == [], f"{folder.name} cache was written to"


@pytest.mark.parametrize(("text", "expected"), FIXED_COUNTS.items())
def test_fixed_counts_in_process(text: str, expected: tuple[int, int]) -> None:
    assert (count_exact(text, O200K), count_exact(text, CL100K)) == expected


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", O200K),
        ("gpt-4o-mini", O200K),
        ("gpt-4o-2024-08-06", O200K),
        ("chatgpt-4o-latest", O200K),
        ("gpt-4.1-nano", O200K),
        ("gpt-5", O200K),
        ("o1", O200K),
        ("o3-mini", O200K),
        ("o4-mini", O200K),
        ("openai/gpt-4o", O200K),
        ("GPT-4O", O200K),
        ("gpt-4", CL100K),
        ("gpt-4-turbo", CL100K),
        ("gpt-3.5-turbo", CL100K),
        ("text-embedding-3-small", CL100K),
        ("llama3", None),
        ("llama3.1:8b", None),
        ("mistral", None),
        ("orca-mini", None),
        ("o1x", None),
    ],
)
def test_encoding_per_model_family(model: str, encoding: str | None) -> None:
    assert encoding_for_model(model) == encoding
    counter = TokenCounter()
    assert counter.tokenizer_name(model) == (encoding or "o200k_base~est")
    assert counter.is_estimate(model) is (encoding is None)


def test_cl100k_and_o200k_really_differ_per_model() -> None:
    counter = TokenCounter()
    assert counter.count_sync("Привет, мир!", "gpt-4") == 7
    assert counter.count_sync("Привет, мир!", "gpt-4o") == 5


async def test_empty_text_is_zero_and_overhead_is_documented() -> None:
    counter = TokenCounter()
    assert await counter.count("", "gpt-4o") == 0
    assert await counter.count("", "llama3") == 0
    assert counter.message_overhead("gpt-4o") == MESSAGE_OVERHEAD == 4


async def test_broken_unicode_is_counted_not_raised() -> None:
    counter = TokenCounter()
    assert await counter.count("bad \ud800 surrogate", "gpt-4o") > 0


class _ThreadRecordingCounter(TokenCounter):
    """Records which thread counted."""

    def __init__(self, offload_chars: int) -> None:
        super().__init__(offload_chars=offload_chars)
        self.threads: list[int] = []

    def count_sync(self, text: str, model: str) -> int:
        self.threads.append(threading.get_ident())
        return super().count_sync(text, model)


async def test_big_texts_are_counted_off_the_event_loop() -> None:
    counter = _ThreadRecordingCounter(offload_chars=1000)
    loop_thread = threading.get_ident()
    small = await counter.count("hello world", "gpt-4o")
    big = await counter.count("hello world " * 500, "gpt-4o")
    assert (small, big) == (2, 1001)  # the trailing space is a token of its own
    assert counter.threads[0] == loop_thread
    assert counter.threads[1] != loop_thread


async def test_huge_text_beyond_the_tiktoken_wrapper_limits_is_counted() -> None:
    counter = TokenCounter()
    text = "hello world " * 150_000  # 1.8M characters
    assert await counter.count(text, "gpt-4o") == 300_001


async def test_counting_big_texts_leaves_the_loop_responsive() -> None:
    counter = TokenCounter()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick(), name="ticker")
    try:
        for _ in range(3):
            await counter.count("lorem ipsum dolor sit amet " * 40_000, "gpt-4o")
    finally:
        ticker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ticker
    assert ticks > 3


def test_calibration_moves_towards_the_server_and_is_clamped() -> None:
    counter = TokenCounter()
    assert counter.calibration("llama3") == 1.0
    # the server counted 2x our content tokens (plus its per-message overhead)
    counter.observe("llama3", raw_content_tokens=100, messages=2, reported=200 + 2 * 4 + 3)
    first = counter.calibration("llama3")
    assert 1.0 < first < 2.0
    for _ in range(30):
        counter.observe("llama3", raw_content_tokens=100, messages=2, reported=211)
    assert counter.calibration("llama3") == pytest.approx(2.0, abs=0.01)
    assert counter.count_sync("Hello, world!", "llama3") == 8  # 4 o200k tokens x 2
    for _ in range(30):
        counter.observe("llama3", raw_content_tokens=100, messages=1, reported=100_000)
    assert counter.calibration("llama3") == pytest.approx(CALIBRATION_MAX, abs=1e-3)
    for _ in range(30):
        counter.observe("llama3", raw_content_tokens=1000, messages=1, reported=10)
    assert counter.calibration("llama3") == pytest.approx(CALIBRATION_MIN, abs=1e-3)
    assert CALIBRATION_MIN <= counter.calibration("llama3") <= CALIBRATION_MAX
    # the factor is per model
    assert counter.calibration("mistral") == 1.0


def test_calibration_ignores_exact_models_and_tiny_prompts() -> None:
    counter = TokenCounter()
    counter.observe("gpt-4o", raw_content_tokens=100, messages=1, reported=1000)
    counter.observe("llama3", raw_content_tokens=3, messages=1, reported=1000)
    assert counter.calibration("gpt-4o") == 1.0
    assert counter.calibration("llama3") == 1.0
