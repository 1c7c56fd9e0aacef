"""llama-cpp-python's real OpenAI-compatible server (``python -m llama_cpp.server``) for tests.

Serves the project's tiny chat model (``tests/fixtures/tiny-chat.gguf``) on a loopback port,
with a small context so a test can overflow it. Skips (or fails, under
``CHINWAG_TEST_REQUIRE=llama``) where llama-cpp-python or its ``[server]`` extra is missing.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from adapters.llm.local import local_backend_available
from tests._require import require_or_skip

TINY = Path(__file__).resolve().parent / "fixtures" / "tiny-chat.gguf"
TINY_TOOLS = Path(__file__).resolve().parent / "fixtures" / "tiny-tools.gguf"


@asynccontextmanager
async def llama_cpp_server(n_ctx: int = 256, model: Path = TINY) -> AsyncIterator[str]:
    """Run the server on ``model`` with an ``n_ctx``-token context; yield its base URL."""
    reason = local_backend_available()
    if reason is not None:
        require_or_skip("llama", reason)
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        require_or_skip("llama", f"llama_cpp.server cannot be imported: {exc}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--n_ctx",
            str(n_ctx),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if process.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited with {process.returncode}")
                try:
                    if (await client.get(f"{base_url}/models")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("llama_cpp.server did not answer within 30 s")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
