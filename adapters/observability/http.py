"""A small asyncio HTTP/1.1 server for ``/healthz``, ``/readyz`` and ``/metrics``.

Only what an orchestrator's probe and a Prometheus scrape need: ``GET`` and ``HEAD``, one
request per connection (``Connection: close``), a request head of at most
:data:`MAX_HEAD` bytes read within :data:`READ_TIMEOUT` seconds. Anything else gets a short
plain-text answer (400, 404, 405, 408, 431) and the server keeps serving. No request body is
ever read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from core.lifecycle import Lifecycle

__all__ = ["MAX_HEAD", "READ_TIMEOUT", "HealthServer", "Readiness"]

_log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192
"""Bytes a request line and its headers may take."""

READ_TIMEOUT: Final = 5.0
"""Seconds a client has to send its request head."""

_WRITE_TIMEOUT: Final = 10.0
_READY_TIMEOUT: Final = 5.0

Readiness = Callable[[], Awaitable[list[str]]]
"""Returns what is not ready, one short phrase each (``database unreachable``); empty when
ready."""

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain; charset=utf-8"


class HealthServer:
    """Serves liveness, readiness and metrics on ``host:port`` until closed.

    Args:
        host: the address to bind (``127.0.0.1``, ``::1``, ``0.0.0.0``).
        port: the port (``0``: any free one, read :attr:`port` after :meth:`start`).
        readiness: what ``/readyz`` asks; 503 naming the problems when it returns any.
        metrics: the Prometheus exposition and its content type, for ``/metrics``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        readiness: Readiness,
        metrics: Callable[[], tuple[bytes, str]],
    ) -> None:
        self._host = host
        self._port = port
        self._readiness = readiness
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._state = Lifecycle.NEW
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start serving. Idempotent.

        Raises:
            RuntimeError: after :meth:`aclose`.
            OSError: the address cannot be bound (in use, not local).
        """
        if not self._state.require_startable("HealthServer"):
            return
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEAD
        )
        self._state = Lifecycle.RUNNING
        _log.info("health and metrics on http://%s:%d", self._host, self.port)

    async def aclose(self) -> None:
        """Stop listening and end the connections still open. Idempotent."""
        if self._state.closed:
            return
        self._state = Lifecycle.CLOSED
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            status, body, content_type, head_only = await self._answer(reader)
            await self._write(writer, status, body, content_type, head_only)
        except (ConnectionError, TimeoutError):
            pass  # the client went away; nothing to tell it
        except Exception:
            _log.exception("the health listener failed to answer a request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), _WRITE_TIMEOUT)
            if task is not None:
                self._handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, str, bool]:
        """Read one request head; return (status, body, content type, HEAD request)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except TimeoutError:
            return 408, b"request timeout\n", _TEXT, False
        except asyncio.LimitOverrunError:
            return 431, b"request head too large\n", _TEXT, False
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                raise ConnectionResetError from None  # connected and left: no answer
            return 400, b"bad request\n", _TEXT, False
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, b"bad request\n", _TEXT, False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/healthz", b"/readyz", b"/metrics"):
            return 404, b"not found: try /healthz, /readyz or /metrics\n", _TEXT, False
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed: GET or HEAD\n", _TEXT, False
        head_only = method == b"HEAD"
        if target == b"/healthz":
            return 200, b"ok\n", _TEXT, head_only
        if target == b"/metrics":
            body, content_type = self._metrics()
            return 200, body, content_type, head_only
        problems = await self._problems()
        if problems:
            return 503, ("not ready: " + "; ".join(problems) + "\n").encode(), _TEXT, head_only
        return 200, b"ready\n", _TEXT, head_only

    async def _problems(self) -> list[str]:
        try:
            return await asyncio.wait_for(self._readiness(), _READY_TIMEOUT)
        except TimeoutError:
            return ["readiness checks timed out"]
        except Exception:
            _log.exception("a readiness check failed")
            return ["readiness check failed (see the log)"]

    async def _write(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        head_only: bool,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        if status == 405:
            lines.append("Allow: GET, HEAD")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        if not head_only:
            writer.write(body)
        await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT)
