"""The health listener answers probes, refuses what it doesn't serve, and keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.observability import HealthServer, http


async def _request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


class _Probe:
    def __init__(self) -> None:
        self.problems: list[str] = []

    async def __call__(self) -> list[str]:
        return list(self.problems)


@pytest.fixture
async def probe() -> _Probe:
    return _Probe()


@pytest.fixture
async def server(probe: _Probe) -> AsyncIterator[HealthServer]:
    served = HealthServer(
        "127.0.0.1",
        0,
        readiness=probe,
        metrics=lambda: (b"chinwag_up 1\n", "text/plain; version=0.0.4"),
    )
    await served.start()
    yield served
    await served.aclose()


async def test_healthz_readyz_and_metrics_answer(server: HealthServer, probe: _Probe) -> None:
    assert await _request(server.port, _get("/healthz")) == (
        200,
        {
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Length": "3",
            "Cache-Control": "no-store",
            "Connection": "close",
        },
        b"ok\n",
    )
    status, headers, body = await _request(server.port, _get("/metrics?x=1"))
    assert (status, headers["Content-Type"], body) == (
        200,
        "text/plain; version=0.0.4",
        b"chinwag_up 1\n",
    )
    assert (await _request(server.port, _get("/readyz")))[::2] == (200, b"ready\n")
    probe.problems = ["database unreachable", "telegram connection down"]
    assert (await _request(server.port, _get("/readyz")))[::2] == (
        503,
        b"not ready: database unreachable; telegram connection down\n",
    )


async def test_head_gets_the_headers_without_the_body(server: HealthServer) -> None:
    status, headers, body = await _request(server.port, _get("/healthz", "HEAD"))
    assert (status, headers["Content-Length"], body) == (200, "3", b"")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (_get("/"), 404),
        (_get("/admin"), 404),
        (_get("/healthz", "POST"), 405),
        (_get("/metrics", "DELETE"), 405),
        (b"nonsense\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /" + b"a" * (http.MAX_HEAD + 10) + b" HTTP/1.1\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nX: " + b"b" * (http.MAX_HEAD * 2) + b"\r\n\r\n", 431),
    ],
)
async def test_bad_requests_get_an_answer_and_the_server_keeps_serving(
    server: HealthServer, raw: bytes, status: int
) -> None:
    answer = await _request(server.port, raw)
    assert answer[0] == status
    if status == 405:
        assert answer[1]["Allow"] == "GET, HEAD"
    assert (await _request(server.port, _get("/healthz")))[::2] == (200, b"ok\n")


async def test_a_client_that_never_finishes_its_request_is_answered_408(
    server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "READ_TIMEOUT", 0.2)
    assert (await _request(server.port, b"GET /healthz HTTP/1.1\r\n"))[0] == 408
    assert (await _request(server.port, _get("/healthz")))[0] == 200


async def test_a_failing_readiness_check_is_a_503_not_a_dead_listener(
    server: HealthServer, probe: _Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> list[str]:
        raise ValueError("boom")

    monkeypatch.setattr(server, "_readiness", broken)
    assert (await _request(server.port, _get("/readyz")))[::2] == (
        503,
        b"not ready: readiness check failed (see the log)\n",
    )
    assert (await _request(server.port, _get("/healthz")))[0] == 200


async def test_closing_releases_the_port_and_is_idempotent(server: HealthServer) -> None:
    port = server.port
    await server.aclose()
    await server.aclose()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(RuntimeError, match="after aclose"):
        await server.start()
