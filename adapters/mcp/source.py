"""One supervised MCP client per server, as a :class:`~core.tools.ToolSource`.

:class:`McpServerSource` connects to its server (a subprocess over stdio, or streamable
HTTP with the configured headers), lists its tools and keeps the connection: a tool-list
change (``notifications/tools/list_changed``) refreshes the list, a quiet connection is
pinged, and a lost or failed one is retried with backoff (1s doubling to 60s, with jitter)
until the source is closed. While the server is away its tools are simply absent.

A server that cannot be reached is reported once, as a warning naming the server and the
reason (never a header or an environment value); the retries after it log at DEBUG, and
its return at INFO. One server's trouble never touches another's: each runs in its own
task, which owns the SDK's connection from start to end (anyio's cancel scopes must be
entered and left in one task).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import sys
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TextIO

import anyio
import httpx2
import mcp.types as mt
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from adapters.mcp.config import McpServerConfig, StdioServer
from adapters.mcp.names import tool_names
from adapters.mcp.tool import InvalidToolSchema, McpTool, tool_risk
from core.tools import ToolError

_log = logging.getLogger(__name__)

_CLIENT = mt.Implementation(name="chinwag", version="0.1.0")
_MAX_PAGES = 100
_LOST = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)


class SourceState(enum.Enum):
    """Where a server's connection stands."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # down: the next attempt is scheduled
    CLOSED = "closed"


class _Lost(ConnectionError):
    """A call found the connection closed: the supervisor reconnects."""


class McpServerSource:
    """The tools of one MCP server, kept connected.

    Args:
        config: the server's entry of ``MCP_CONFIG``.
        connect_timeout: seconds for one connection attempt (start, handshake and tool
            list) and for a tool-list refresh or a ping.
        keepalive_seconds: how long a quiet connection goes before it is pinged.
        retry_initial: the first delay before reconnecting, in seconds; it doubles per
            failed attempt up to ``retry_max``, and starts again after a connection worked.
        retry_max: the longest delay between attempts.
        errlog: where a stdio server's stderr goes (default: this process's stderr).
    """

    def __init__(
        self,
        config: McpServerConfig,
        *,
        connect_timeout: float = 20.0,
        keepalive_seconds: float = 15.0,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        errlog: TextIO | None = None,
    ) -> None:
        self.config = config
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_seconds
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._errlog = errlog
        self._state = SourceState.NEW
        self._task: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._tools: tuple[McpTool, ...] = ()
        self._wake = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._refresh = False
        self._lost = False
        self._was_up = False
        self._reported = False
        self._http_status: int | None = None
        self._warned: set[str] = set()

    @property
    def name(self) -> str:
        """``mcp:<server>``, for logs."""
        return f"mcp:{self.config.name}"

    @property
    def server(self) -> str:
        """The server's name in ``MCP_CONFIG``."""
        return self.config.name

    @property
    def state(self) -> SourceState:
        """Where the connection stands now."""
        return self._state

    def tools(self) -> Sequence[McpTool]:
        """The server's tools now; none while it is away."""
        return self._tools

    async def start(self) -> None:
        """Start supervising; return once the first attempt connected or failed.

        Never raises for a server that is down (it is reported and retried). Idempotent.

        Raises:
            RuntimeError: the source was closed.
        """
        if self._state is SourceState.CLOSED:
            raise RuntimeError(f"the MCP source {self.server} is closed")
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._supervise(), name=f"mcp-{self.server}")
        try:
            async with asyncio.timeout(self._connect_timeout + 5):
                await self._first_attempt.wait()
        except TimeoutError:
            _log.debug("MCP server %s: still connecting", self.server)

    async def aclose(self) -> None:
        """Disconnect and stop a stdio server's process. Idempotent."""
        if self._state is SourceState.CLOSED:
            return
        connecting = self._state is SourceState.CONNECTING
        self._state = SourceState.CLOSED
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        if connecting:  # nothing to say goodbye to: stop the attempt now
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self._connect_timeout)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.warning("MCP server %s: closing failed: %s", self.server, self._summary(exc))

    # --- supervision ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self._retry_initial
        while self._state is not SourceState.CLOSED:
            self._state = SourceState.CONNECTING
            try:
                await self._connect_and_serve()
            except Exception as exc:
                if self._state is not SourceState.CLOSED:
                    self._report(exc)
            finally:
                self._session = None
                self._tools = ()
                self._first_attempt.set()
            if self._state is SourceState.CLOSED:
                break
            if self._was_up:
                self._was_up = False
                delay = self._retry_initial
            self._state = SourceState.WAITING
            with anyio.move_on_after(delay * random.uniform(0.8, 1.2)):
                await self._wake.wait()
            self._wake.clear()
            delay = min(delay * 2, self._retry_max)

    async def _connect_and_serve(self) -> None:
        self._http_status = None
        self._refresh = self._lost = False
        async with AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(await self._transport(stack))
            session = await stack.enter_async_context(
                ClientSession(read, write, message_handler=self._on_message, client_info=_CLIENT)
            )
            with anyio.fail_after(self._connect_timeout):
                await session.initialize()
                await self._load_tools(session)
            if self._state is SourceState.CLOSED:
                return
            self._session = session
            self._state = SourceState.CONNECTED
            self._was_up = True
            if self._reported:
                _log.info("MCP server %s is back: %d tools", self.server, len(self._tools))
            else:
                _log.info("MCP server %s connected: %d tools", self.server, len(self._tools))
            self._reported = False
            self._first_attempt.set()
            await self._watch(session)

    async def _transport(
        self, stack: AsyncExitStack
    ) -> AbstractAsyncContextManager[tuple[Any, Any]]:
        transport = self.config.transport
        if isinstance(transport, StdioServer):
            params = StdioServerParameters(
                command=transport.command,
                args=list(transport.args),
                env={k: v.get_secret_value() for k, v in transport.env.items()} or None,
                cwd=transport.cwd,
            )
            return stdio_client(params, errlog=self._errlog or sys.stderr)
        http = httpx2.AsyncClient(
            headers={k: v.get_secret_value() for k, v in transport.headers.items()},
            timeout=httpx2.Timeout(30.0, read=300.0),
            event_hooks={"response": [self._note_response]},
        )
        await stack.enter_async_context(http)
        return streamable_http_client(transport.url, http_client=http)

    async def _note_response(self, response: httpx2.Response) -> None:
        if response.status_code in (401, 403):
            self._http_status = response.status_code

    async def _watch(self, session: ClientSession) -> None:
        """Serve until closed or lost: refresh the tool list on change, ping when quiet."""
        while True:
            with anyio.move_on_after(self._keepalive):
                await self._wake.wait()
            self._wake.clear()
            if self._state is SourceState.CLOSED:
                return
            if self._lost:
                raise _Lost("the connection was lost")
            with anyio.fail_after(self._connect_timeout):
                if self._refresh:
                    self._refresh = False
                    await self._load_tools(session)
                    _log.info(
                        "MCP server %s: tool list now %d tools", self.server, len(self._tools)
                    )
                else:  # quiet for a while, or the transport hiccuped: still there?
                    await session.send_ping()

    async def _on_message(self, message: Any) -> None:
        """The session's notifications: never do session I/O here, only wake the watcher."""
        if isinstance(message, mt.ToolListChangedNotification):
            self._refresh = True
            self._wake.set()
        elif isinstance(message, Exception):
            _log.debug("MCP server %s: transport error: %s", self.server, self._summary(message))
            self._wake.set()  # a ping tells whether the connection survived it

    def _report(self, exc: BaseException) -> None:
        summary = self._summary(exc)
        _log.debug("MCP server %s failed", self.server, exc_info=exc)
        if self._reported:
            _log.debug("MCP server %s still unavailable: %s", self.server, summary)
            return
        self._reported = True
        _log.warning(
            "MCP server %s is unavailable (%s); its tools are left out until it is back",
            self.server,
            summary,
        )

    def _summary(self, exc: BaseException) -> str:
        """A short reason for the log, with every configured secret value masked."""
        leaf = _leaf(exc)
        if self._http_status is not None:
            text = f"HTTP {self._http_status}: check its headers in MCP_CONFIG"
        elif isinstance(leaf, TimeoutError):
            text = f"no answer within {self._connect_timeout:g}s"
        elif isinstance(leaf, FileNotFoundError) and isinstance(self.config.transport, StdioServer):
            text = f"cannot run {self.config.transport.command!r}: not found"
        elif isinstance(leaf, MCPError | _Lost):
            text = leaf.message if isinstance(leaf, MCPError) else str(leaf)
        else:
            text = f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
        for secret in self._secrets():
            text = text.replace(secret, "[redacted]")
        return text[:300]

    def _secrets(self) -> Iterable[str]:
        transport = self.config.transport
        values = transport.env if isinstance(transport, StdioServer) else transport.headers
        return [v.get_secret_value() for v in values.values() if len(v.get_secret_value()) >= 4]

    # --- tools ------------------------------------------------------------------------------

    async def _load_tools(self, session: ClientSession) -> None:
        listed: list[mt.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            params = mt.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._tools = self._build(listed)

    def _build(self, listed: list[mt.Tool]) -> tuple[McpTool, ...]:
        names = tool_names(self.config.prefix, [t.name for t in listed])
        risks = self.config.risks
        built: dict[str, McpTool] = {}
        for remote in listed:
            name = names[remote.name]
            override = risks.get(remote.name, risks.get(name))
            risk = tool_risk(remote, override)
            try:
                built[name] = McpTool(
                    remote, name=name, server=self.server, risk=risk, call=self._call
                )
            except InvalidToolSchema as exc:
                self._warn_once(f"tool {remote.name!r} is left out: {exc}")
        unknown = sorted(set(risks) - set(names) - set(names.values()))
        if unknown:
            self._warn_once(
                f"MCP_CONFIG sets the risk of tools it does not offer: {', '.join(unknown)}"
            )
        return tuple(built[n] for n in sorted(built))

    def _warn_once(self, problem: str) -> None:
        if problem not in self._warned:
            self._warned.add(problem)
            _log.warning("MCP server %s: %s", self.server, problem)

    async def _call(self, remote: str, arguments: dict[str, Any]) -> mt.CallToolResult:
        """Call a tool by the server's name on the live session (the tools' caller).

        Raises:
            ToolError: the server is not connected, the connection broke, or it refused.
        """
        session = self._session
        if session is None:
            raise ToolError(f"the MCP server {self.server} is not connected right now")
        try:
            return await session.call_tool(remote, arguments)
        except MCPError as exc:
            if exc.code == mt.CONNECTION_CLOSED:
                self._connection_lost()
                raise ToolError(f"the MCP server {self.server} disconnected") from exc
            raise ToolError(
                f"the MCP server {self.server} refused the call: {exc.message}"
            ) from exc
        except _LOST as exc:
            self._connection_lost()
            raise ToolError(f"the MCP server {self.server} disconnected") from exc
        except RuntimeError as exc:  # e.g. structured output that breaks the tool's own schema
            raise ToolError(f"the MCP server {self.server} answered wrongly: {exc}") from exc

    def _connection_lost(self) -> None:
        if self._state is SourceState.CONNECTED:
            self._lost = True
            self._wake.set()


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


__all__ = ["McpServerSource", "SourceState"]
