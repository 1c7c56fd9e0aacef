"""Many processes, one bot: ``chinwag ingress``, ``chinwag worker`` and ``chinwag queue``.

- **Ingress** (:func:`serve_ingress`) connects the chat platforms as ``chinwag run`` does,
  but in front of an :class:`~core.ingress.IngressEngine`: every event becomes a turn in the
  PostgreSQL queue (``adapters.queue``), acknowledged once stored. The bot's engine is built
  for its commands and conversation keys, never started: ingress calls no model.
- **Workers** (:func:`serve_worker`) run the bot's engine (``shared=True``) behind a
  :class:`~adapters.queue.runner.QueueWorker`: each turn is answered through the platforms'
  REST APIs (``OutboundAdapter``: no polling, webhook or gateway) and the job returns once
  the conversation's lane is idle. ``/stop`` arrives through Redis (``bots.shared``).

Both need PostgreSQL (``DATABASE_URL``) and Redis (``REDIS_URL``); each missing one is
said in one line (exit 2). ``CHINWAG_MODE=ingress|worker`` makes ``chinwag run`` one of
them. Every process serves ``CHINWAG_HTTP_LISTEN`` with the queue's gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bots.app import (
    Exit,
    Settings,
    build_backend,
    build_knowledge,
    build_tools,
    open_store,
    platform_adapters,
    running_engine,
    telegram_adapter,
)
from bots.loading import persona_of
from bots.shared import connect_shared, shared_state
from core.chat_ports import ChatAdapter, OutboundAdapter
from core.engine import Engine
from core.errors import StoreError
from core.ingress import IngressEngine
from core.instance import Instance
from core.queue import JobKind, action_from, message_from
from core.telemetry import NO_TELEMETRY, Telemetry
from core.types import IncomingMessage

if TYPE_CHECKING:
    from procrastinate import App

    from adapters.shared import RedisShared
    from bots.health import Health

_log = logging.getLogger(__name__)

_METRICS_EVERY_S = 5.0
_PG_EXAMPLE = "postgresql://chinwag:secret@db:5432/chinwag"
_REDIS_EXAMPLE = "redis://127.0.0.1:6379/0"


def require_scale(settings: Settings, command: str) -> None:
    """Refuse, in one line (exit 2), a scaled process without PostgreSQL or Redis."""
    url = settings.memory.async_url()
    if not url.startswith("postgresql"):
        raise Exit(
            f"chinwag {command} needs PostgreSQL in DATABASE_URL ({_PG_EXAMPLE}): "
            "the turn queue lives in the bot's database"
        )
    if settings.scale.redis_url is None:
        raise Exit(
            f"chinwag {command} needs REDIS_URL ({_REDIS_EXAMPLE}): flood control, rate "
            "limits and /stop are shared through it"
        )


def _quiet_procrastinate() -> None:
    # procrastinate logs each job's arguments (users' text) at INFO.
    logger = logging.getLogger("procrastinate")
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)


def _queue_app(settings: Settings, connections: int) -> App:
    from adapters.queue.app import queue_app

    _quiet_procrastinate()
    return queue_app(settings.memory.async_url(), max_connections=connections)


async def _open(app: App, settings: Settings) -> None:
    """Open the queue's connection pool; ``StoreError`` in one line if it cannot."""
    from adapters.queue.app import check_database

    await check_database(settings.memory.async_url())
    try:
        await app.open_async()
    except Exception as exc:
        raise StoreError(
            f"cannot reach the turn queue's database: {type(exc).__name__}: {exc}"
        ) from exc


@contextlib.asynccontextmanager
async def _signals(stop: asyncio.Event) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _health(settings: Settings) -> AsyncIterator[Health | None]:
    if settings.http_listen is None:
        yield None
        return
    from bots.health import Health

    health = Health(*settings.http_listen)
    await health.start()
    try:
        yield health
    finally:
        await health.aclose()


def _queue_probe(app: App) -> Callable[[], Awaitable[str | None]]:
    async def probe() -> str | None:
        try:
            async with asyncio.timeout(2.0):
                ok = await app.job_manager.check_connection_async()
        except Exception:
            return "queue database unreachable"
        return None if ok else "queue schema missing (run `chinwag db upgrade`)"

    return probe


async def _report_queue(app: App, settings: Settings, health: Health) -> None:
    """Refresh the queue's gauges every few seconds (a failure is logged once)."""
    from adapters.queue.stats import queue_stats

    failing = False
    while True:
        try:
            stats = await queue_stats(
                app, heartbeat_timeout=settings.scale.worker_heartbeat_timeout_seconds
            )
            health.telemetry.queue_figures(
                depth=stats.depth,
                doing=stats.doing,
                stalled=stats.stalled,
                failed=stats.failed,
                oldest_seconds=stats.oldest_age_seconds,
            )
            failing = False
        except StoreError as exc:
            if not failing:
                _log.warning("cannot refresh the queue metrics: %s", exc)
            failing = True
        await asyncio.sleep(_METRICS_EVERY_S)


def _spawn(coro: Awaitable[None], name: str) -> asyncio.Task[None]:
    async def run() -> None:
        await coro

    return asyncio.create_task(run(), name=name)


async def _until_stopped(stop: asyncio.Event, watched: list[asyncio.Task[Any]]) -> None:
    """Wait for ``stop``, or for a watched task to end (its error is raised)."""
    stopper = asyncio.create_task(stop.wait(), name="chinwag-signal")
    done, _ = await asyncio.wait([stopper, *watched], return_when=asyncio.FIRST_COMPLETED)
    if stopper not in done:
        stopper.cancel()
        for task in done:
            task.result()
        raise Exit(f"stopped: {next(iter(done)).get_name()} ended", status=1)
    _log.info("shutting down on a signal")


# --- ingress ----------------------------------------------------------------------------------


async def serve_ingress(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Take the platforms' events and queue them until SIGINT/SIGTERM (or ``stop``)."""
    require_scale(settings, "ingress")
    stop = stop or asyncio.Event()
    async with _health(settings) as health:
        telemetry: Telemetry = health.telemetry if health is not None else NO_TELEMETRY
        store = await open_store(settings.memory)  # migrates, under the migration lock
        # For the model names /model offers: an API backend reads its server's list; a
        # local one knows them without loading any (ingress calls no model).
        backend = build_backend(settings)
        knowledge = build_knowledge(settings, store)
        app = _queue_app(settings, connections=10)
        adapters: list[ChatAdapter] = []
        side: list[asyncio.Task[None]] = []
        shared: RedisShared | None = None
        instance = Instance(store, settings.core.bot_name, lambda: datetime.now(UTC))
        try:
            shared = await connect_shared(settings.scale, settings.core.bot_name)
            assert shared is not None  # require_scale: REDIS_URL is set
            await instance.start()  # for the elections: who polls, who holds which shard
            await _open(app, settings)
            if backend.name != "local":
                await backend.start()
            engine = Engine(
                backend=backend,
                store=store,
                core=settings.core,
                llm=settings.llm,
                access=settings.access,
                persona=persona_of(settings.core, settings.bot),
                toolbox=build_tools(settings),
                tool_settings=settings.tools,
                extra_commands=settings.bot.commands,
                knowledge=knowledge,
                telemetry=telemetry,
                media=settings.media,
            )
            from adapters.queue.turns import ProcrastinateTurnQueue

            ingress = IngressEngine(
                engine, ProcrastinateTurnQueue(app), shared.stop_signal, telemetry=telemetry
            )
            adapters = platform_adapters(settings, ingress, telemetry, shared, ingress=True)
            if not adapters:
                raise Exit("chinwag ingress needs TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN")
            if health is not None:
                health.store = store
                health.checks.append(_queue_probe(app))
                side.append(_spawn(_report_queue(app, settings, health), "chinwag-queue-metrics"))
            async with _signals(stop):
                started: list[ChatAdapter] = []
                for adapter in adapters:
                    # What must be served by one process alone (Telegram's poller, each
                    # Discord shard) is elected; webhook replicas name nothing.
                    for lease in getattr(adapter, "leases", ()):
                        await instance.hold_lease(lease)
                    await adapter.start()
                    started.append(adapter)
                    _log.info("%s adapter started (ingress)", adapter.name)
                if health is not None:
                    health.adapters = started
                waiters = [
                    asyncio.create_task(a.wait_closed(), name=f"chinwag-{a.name}") for a in started
                ]
                try:
                    await _until_stopped(stop, waiters)
                finally:
                    for task in waiters:
                        task.cancel()
            for adapter in reversed(adapters):
                with contextlib.suppress(Exception):
                    await adapter.stop_intake()
            await ingress.aclose()
        finally:
            for task in side:
                task.cancel()
            for adapter in reversed(adapters):
                try:
                    await adapter.aclose()
                except Exception:
                    _log.exception("closing the %s adapter failed", adapter.name)
            await app.close_async()
            await instance.aclose()
            if shared is not None:
                await shared.aclose()
            await backend.aclose()
            await knowledge.embedder.aclose()
            await knowledge.store.aclose()
            await store.aclose()


# --- worker -----------------------------------------------------------------------------------


def outbound_adapters(
    settings: Settings,
    engine: Engine,
    telemetry: Telemetry = NO_TELEMETRY,
    shared: RedisShared | None = None,
) -> list[OutboundAdapter]:
    """The platforms a worker answers on (REST only), those whose tokens are configured."""
    found: list[OutboundAdapter] = []
    if settings.telegram.bot_token is not None:
        found.append(telegram_adapter(settings, engine, telemetry, shared))
    if settings.discord.bot_token is not None:
        from adapters.discord.outbound import DiscordOutbound

        found.append(DiscordOutbound(settings.discord, max_file_mb=settings.media.max_file_mb))
    return found


def turn_handler(
    engine: Engine, adapters: Mapping[str, OutboundAdapter]
) -> Callable[[JobKind, Mapping[str, Any]], Awaitable[None]]:
    """Answer one queued turn; return once its conversation is idle in this process.

    Raises:
        ValueError: the job is not a turn this version understands, or names a platform
            this worker does not serve (the job is kept as failed for ``chinwag queue``).
    """

    async def handle(kind: JobKind, payload: Mapping[str, Any]) -> None:
        if kind is JobKind.MESSAGE:
            msg = message_from(payload)
            out = _adapter(adapters, msg.platform).channel_for(msg)
            await engine.handle(msg, out)
        else:
            action = action_from(payload)
            msg = IncomingMessage(
                action.platform,
                action.chat_id,
                action.user_id,
                "",
                thread_id=action.thread_id,
                is_private=action.is_private,
            )
            adapter = _adapter(adapters, action.platform)
            # Discord answers a press through the interaction it came with.
            for_action = getattr(adapter, "channel_for_action", None)
            out = for_action(action) if for_action is not None else adapter.channel_for(msg)
            await engine.handle_action(action, out)
        await engine.settle(msg.platform, msg.chat_id, msg.user_id, msg.thread_id, msg.is_private)

    return handle


def _adapter(adapters: Mapping[str, OutboundAdapter], platform: str) -> OutboundAdapter:
    adapter = adapters.get(platform)
    if adapter is None:
        raise ValueError(f"no {platform} token configured on this worker")
    return adapter


async def serve_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Answer queued turns until SIGINT/SIGTERM (or ``stop``)."""
    from adapters.queue.runner import QueueWorker

    require_scale(settings, "worker")
    stop = stop or asyncio.Event()
    scale = settings.scale
    timeout = scale.worker_heartbeat_timeout_seconds
    async with contextlib.AsyncExitStack() as stack:
        health = await stack.enter_async_context(_health(settings))
        telemetry: Telemetry = health.telemetry if health is not None else NO_TELEMETRY
        app = _queue_app(settings, connections=scale.worker_concurrency + 4)
        outbound: list[OutboundAdapter] = []

        async def close_outbound() -> None:
            for adapter in reversed(outbound):
                try:
                    await adapter.aclose()
                except Exception:
                    _log.exception("closing the %s adapter failed", adapter.name)

        # Closed last: replies in flight are delivered while the engine drains.
        stack.push_async_callback(close_outbound)
        stack.push_async_callback(app.close_async)
        shared = await stack.enter_async_context(
            shared_state(settings.scale, settings.core.bot_name)
        )
        engine = await stack.enter_async_context(
            running_engine(settings, health, shared, worker=True, heartbeat=timeout / 3)
        )
        outbound.extend(outbound_adapters(settings, engine, telemetry, shared))
        if not outbound:
            raise Exit("chinwag worker needs TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN")
        engine.use_adapters(outbound)
        await _open(app, settings)
        for adapter in outbound:
            await adapter.start_outbound()
            _log.info("%s adapter started (worker: sending only)", adapter.name)
        try:
            await engine.recover(adapters_ready=True)
        except Exception:
            _log.exception("recovering interrupted replies failed; retried at a heartbeat")
        on_retry = getattr(telemetry, "queue_retried", None)
        worker = QueueWorker(
            app,
            turn_handler(engine, {a.name: a for a in outbound}),
            concurrency=scale.worker_concurrency,
            heartbeat_timeout=timeout,
            grace=settings.core.shutdown_grace_seconds,
            on_retry=on_retry,
        )
        side: list[asyncio.Task[None]] = []  # the engine listens for /stop itself
        if health is not None:
            health.needs_platforms = False
            health.checks.append(_queue_probe(app))
            health.checks.append(_worker_probe(worker, outbound))
            side.append(_spawn(_report_queue(app, settings, health), "chinwag-queue-metrics"))
        running = asyncio.create_task(worker.run(), name="chinwag-queue-worker")
        try:
            async with _signals(stop):
                await _until_stopped(stop, [running])
        finally:
            worker.stop()
            await asyncio.gather(running, return_exceptions=True)
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)


def _worker_probe(
    worker: Any, outbound: list[OutboundAdapter]
) -> Callable[[], Awaitable[str | None]]:
    """Ready: the worker takes turns and every platform it answers on is connected."""

    async def probe() -> str | None:
        down = [a.name for a in outbound if not getattr(a, "outbound_ready", True)]
        if down:
            return f"{', '.join(down)} not connected for sending"
        return None if worker.ready else "queue worker not running"

    return probe


# --- chinwag queue ----------------------------------------------------------------------------


async def queue_command(
    settings: Settings, action: str | None, job_id: int | None, as_json: bool
) -> None:
    """``chinwag queue`` (figures and failed turns) and ``chinwag queue retry ID``."""
    from adapters.queue.stats import queue_stats, retry_failed

    if not settings.memory.async_url().startswith("postgresql"):
        raise Exit(f"chinwag queue needs PostgreSQL in DATABASE_URL ({_PG_EXAMPLE})")
    app = _queue_app(settings, connections=2)
    await _open(app, settings)
    try:
        if action == "retry":
            assert job_id is not None
            try:
                await retry_failed(app, job_id)
            except LookupError as exc:
                raise Exit(str(exc), status=1) from None
            print(f"turn {job_id} queued again")
            return
        stats = await queue_stats(
            app, heartbeat_timeout=settings.scale.worker_heartbeat_timeout_seconds
        )
    finally:
        await app.close_async()
    if as_json:
        print(json.dumps(stats.as_json(), indent=2))
        return
    oldest = "-" if stats.oldest_age_seconds is None else f"{stats.oldest_age_seconds:.1f} s"
    print(f"waiting: {stats.depth} (oldest {oldest})")
    print(f"being answered: {stats.doing} by {stats.workers} live worker(s)")
    print(f"stalled: {stats.stalled}")
    print(f"retries: {stats.retries}")
    print(f"failed: {stats.failed}")
    for turn in stats.failed_turns:
        print(
            f"  {turn.id}  {turn.platform} {turn.kind}  {turn.age_seconds:.0f} s ago  "
            f"attempts {turn.attempts + 1}  {turn.error}"
        )
    if stats.failed_turns:
        print("retry one with: chinwag queue retry ID")


__all__ = [
    "outbound_adapters",
    "queue_command",
    "require_scale",
    "serve_ingress",
    "serve_worker",
    "turn_handler",
]
