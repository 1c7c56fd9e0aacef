"""A loopback round-robin HTTP load balancer, as an operator puts in front of webhook replicas.

Each request goes to the next backend in turn (per request, not per connection, as nginx
or a cloud load balancer does). A backend that refuses the connection is skipped for the
next one (nginx's ``proxy_next_upstream error``); one that fails after the request was sent
(the process died while handling it) is not retried, since a POST may have taken effect:
the client gets 502, as from nginx. :attr:`HttpBalancer.served` records which backend
answered each request and how.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import aiohttp
from aiohttp import web

__all__ = ["HttpBalancer", "Served"]

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


@dataclass(frozen=True)
class Served:
    """One request: the backend (its index) that answered, and the status the client got."""

    backend: int | None
    status: int


class HttpBalancer:
    """Listens on ``127.0.0.1:<port>``; spreads requests over ``backends`` ((host, port))."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.served: list[Served] = []
        self._turn = itertools.count()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    async def __aenter__(self) -> HttpBalancer:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # A fresh connection per request: a dead backend's pooled socket is never reused.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        start = next(self._turn)
        for step in range(len(self.backends)):
            index = (start + step) % len(self.backends)
            host, port = self.backends[index]
            try:
                async with self._session.request(
                    request.method,
                    f"http://{host}:{port}{request.path_qs}",
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as response:
                    payload = await response.read()
                    self.served.append(Served(index, response.status))
                    return web.Response(status=response.status, body=payload)
            except aiohttp.ClientConnectorError:
                continue  # refused before anything was sent: try the next backend
            except (aiohttp.ClientError, TimeoutError):
                self.served.append(Served(index, 502))
                return web.Response(status=502, text="bad gateway")
        self.served.append(Served(None, 502))
        return web.Response(status=502, text="no backend")

    def by_backend(self, status: int = 200) -> dict[int, int]:
        """How many requests each backend answered with ``status``."""
        counts: dict[int, int] = {}
        for item in self.served:
            if item.backend is not None and item.status == status:
                counts[item.backend] = counts.get(item.backend, 0) + 1
        return counts
