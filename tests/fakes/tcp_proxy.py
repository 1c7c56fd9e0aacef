"""A loopback TCP proxy that makes database outages on demand, without stopping the server.

Put it in front of the shared PostgreSQL and point the store at :attr:`TcpProxy.port`:

* :meth:`TcpProxy.cut` starts an outage: every open connection is reset (both sides, as a
  crashed server or a broken network would) and every new connection is reset as soon as it
  is accepted, so clients see their connections lost and their reconnects fail;
* :meth:`TcpProxy.restore` ends it: new connections reach the server again;
* :meth:`TcpProxy.cut_at` arms a one-shot cut on the next client chunk holding a marker (say
  ``b"COMMIT"``): forwarded first and the server's answer withheld (the ambiguous "did my
  COMMIT land?" case), or dropped (the transaction certainly aborts).

Vendor-free: asyncio streams only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Literal

_log = logging.getLogger(__name__)

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's writer and the server's."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    cut_on_answer: bool = False  # the server's next bytes are dropped and start an outage
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.server)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket at once (the peer sees a reset, not an orderly close)."""
    with contextlib.suppress(Exception):
        writer.transport.abort()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` until told to cut.

    Attributes:
        refused: connections reset at accept during outages (a test waits on it to know
            that clients are retrying).
        accepted: connections passed to the server.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._down = False
        self._trigger: tuple[bytes, Literal["after", "before"]] | None = None
        self._triggered = asyncio.Event()
        self._refused_changed = asyncio.Event()
        self.refused = 0
        self.accepted = 0

    @property
    def port(self) -> int:
        """The loopback port clients connect to."""
        assert self._server is not None, "start() the proxy first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def down(self) -> bool:
        """Whether an outage is in progress."""
        return self._down

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def aclose(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
            self._reset_all()
            await self._server.wait_closed()
            self._server = None
        self._reset_all()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def cut(self) -> None:
        """Start an outage: reset every open connection and every new one."""
        self._down = True
        self._reset_all()

    def restore(self) -> None:
        """End the outage: new connections reach the server again."""
        self._down = False

    def cut_at(self, marker: bytes, *, forward: bool) -> None:
        """Cut (as :meth:`cut`) on the next client chunk that contains ``marker``.

        Args:
            marker: bytes to look for in what a client sends, e.g. ``b"COMMIT"``.
            forward: pass the chunk to the server and cut when the server answers, the
                answer withheld (the command took effect, but the client cannot know), or
                drop the chunk unseen (the command never ran).
        """
        self._trigger = (marker, "after" if forward else "before")
        self._triggered.clear()

    async def wait_triggered(self) -> None:
        """Return once the cut armed by :meth:`cut_at` has happened."""
        await self._triggered.wait()

    async def wait_refused(self, count: int) -> None:
        """Return once ``count`` connections in all have been refused during outages."""
        while self.refused < count:
            self._refused_changed.clear()
            await self._refused_changed.wait()

    def _reset_all(self) -> None:
        for link in list(self._links):
            link.reset()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            self.refused += 1
            self._refused_changed.set()
            _reset(writer)
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _log.warning("proxy cannot reach %s:%d", *self._target)
            _reset(writer)
            return
        if self._down:  # the outage began while this connection was being made
            _reset(server_writer)
            _reset(writer)
            return
        self.accepted += 1
        link = _Link(writer, server_writer)
        self._links.add(link)
        upstream = asyncio.create_task(self._pipe(reader, link, upstream=True), name="proxy-up")
        downstream = asyncio.create_task(
            self._pipe(server_reader, link, upstream=False), name="proxy-down"
        )
        link.tasks = [upstream, downstream]
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in link.tasks:
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            self._links.discard(link)
            link.reset()

    async def _pipe(self, reader: asyncio.StreamReader, link: _Link, *, upstream: bool) -> None:
        target = link.server if upstream else link.client
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                if not upstream and link.cut_on_answer:
                    # The server has acted on the command (it answered): the client never
                    # learns how.
                    self._fire()
                    return
                if upstream and self._trigger is not None and self._trigger[0] in data:
                    _, mode = self._trigger
                    self._trigger = None
                    if mode == "before":
                        self._fire()
                        return
                    link.cut_on_answer = True
                target.write(data)
                await target.drain()

    def _fire(self) -> None:
        self.cut()
        self._triggered.set()
