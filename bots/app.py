"""Wiring: the LLM backend, the memory store, the bot's tools, the engine and the chat adapters.

Everything is built once from settings loaded in :mod:`bots.cli` and torn down in reverse
order. The bot (``--bot``) brings the persona, its own tools, the tool packs it names (Home
Assistant) and extra commands; the MCP servers of ``MCP_CONFIG`` are offered to every bot.
Adapters run side by side in one process. At shutdown the adapters stop taking messages
first, then the engine finishes replies in flight (or stores them as interrupted) while the
adapters can still deliver them, then the adapters close, the tools, and the database last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.discord.settings import DiscordSettings
from adapters.memory import migrate
from adapters.memory.settings import MemorySettings, render_url
from adapters.memory.store import SqlMemoryStore
from adapters.telegram.settings import TelegramSettings
from bots.loading import load_bot, persona_of
from bots.toolbox import PackUnavailable, build_toolbox, log_toolbox
from core.bot import Bot
from core.chat_ports import ChatAdapter, ConversationEngine
from core.engine import Engine
from core.errors import ConfigError
from core.instance import HEARTBEAT_SECONDS
from core.kb import KnowledgeBase
from core.knowledge import AddReport, KbScope
from core.media import Transcriber
from core.ports import LLMBackend
from core.settings import (
    AccessSettings,
    CoreSettings,
    KbSettings,
    LLMSettings,
    MediaSettings,
    ScaleSettings,
    ToolSettings,
)
from core.telemetry import NO_TELEMETRY, Telemetry
from core.tools import Toolbox

if TYPE_CHECKING:
    from adapters.homeassistant.settings import HomeAssistantSettings
    from adapters.shared import RedisShared
    from adapters.telegram.adapter import TelegramAdapter
    from bots.health import Health

_log = logging.getLogger(__name__)

NO_LLM = (
    "No language model is available: no API backend is configured and the local model\n"
    "backend is not installed. Choose one in .env (see .env.example):\n"
    "  - an OpenAI-compatible API: OPENAI_API_KEY=sk-... (OpenAI, OpenRouter), or\n"
    "    OPENAI_BASE_URL=http://localhost:11434/v1 (Ollama, vLLM, LM Studio, llama.cpp server)\n"
    "  - the local model: run `make install-local` (or `pip install 'chinwag[local]'`), which\n"
    "    builds llama-cpp-python; it answers with the bundled tiny SmolLM2, or with the GGUF\n"
    "    file in LOCAL_MODEL_PATH=/path/to/model.gguf"
)


class Exit(Exception):
    """Stop the program with a message and an exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _no_tool_settings() -> ToolSettings:
    return ToolSettings(_env_file=None)


def _default_bot() -> Bot:
    return load_bot(None)


@dataclass(slots=True)
class Settings:
    """All settings, loaded once by the CLI, and the bot to run.

    ``core.bot_name`` is already the memory key (``BOT_NAME``, else the bot's own).
    ``homeassistant`` is loaded only for a bot that names the ``homeassistant`` pack.
    """

    env_file: Path | None
    core: CoreSettings
    llm: LLMSettings
    access: AccessSettings
    memory: MemorySettings
    telegram: TelegramSettings
    discord: DiscordSettings
    tools: ToolSettings = field(default_factory=_no_tool_settings)
    bot: Bot = field(default_factory=_default_bot)
    mcp_config: Path | None = None
    homeassistant: HomeAssistantSettings | None = None
    kb: KbSettings = field(default_factory=lambda: KbSettings(_env_file=None))
    media: MediaSettings = field(default_factory=lambda: MediaSettings(_env_file=None))
    # CHINWAG_HTTP_LISTEN as (host, port): where health and metrics are served; None = off.
    http_listen: tuple[str, int] | None = None
    # CHINWAG_MODE, REDIS_URL and the queue workers' settings.
    scale: ScaleSettings = field(default_factory=lambda: ScaleSettings(_env_file=None))

    @property
    def data_dir(self) -> Path:
        """Where chinwag keeps its files (SQLite database, exports, command hashes)."""
        return self.memory.data_dir()


def build_backend(settings: Settings) -> LLMBackend:
    """Choose and build the LLM backend (``LLM_BACKEND``, or automatically).

    Automatic: ``openai`` if ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set; else ``local``
    if llama-cpp-python is installed (``LOCAL_MODEL_PATH``/``LOCAL_MODELS`` or the bundled
    SmolLM2); else :class:`Exit` with the ways to configure one.
    """
    from bots.config import load

    choice = settings.llm.backend
    if choice in (None, "openai"):
        from adapters.llm.openai import OpenAIBackend, OpenAISettings

        openai_settings = load(OpenAISettings, settings.env_file)
        configured = openai_settings.api_key is not None or openai_settings.base_url is not None
        if choice == "openai" and not configured:
            raise ConfigError(
                "OPENAI_API_KEY",
                "LLM_BACKEND=openai needs an API key (or OPENAI_BASE_URL for a local server)",
                example="sk-...",
            )
        if configured:
            return OpenAIBackend(openai_settings, timeout=settings.llm.timeout_seconds)
    return _local_backend(settings, explicit=choice == "local")


def build_transcriber(settings: Settings) -> Transcriber | None:
    """Speech to text for voice notes, or ``None`` when it is not configured.

    Configured when ``STT_BASE_URL`` is set, or when ``OPENAI_API_KEY`` is set for
    api.openai.com itself (no ``OPENAI_BASE_URL``); see
    :func:`adapters.llm.stt.stt_configured`. Nothing is contacted until the first voice
    note; the caller closes it (``aclose``).
    """
    from adapters.llm.openai_wire import OpenAISettings
    from adapters.llm.stt import OpenAITranscriber, STTSettings, stt_configured
    from bots.config import load

    stt = load(STTSettings, settings.env_file)
    openai_settings = load(OpenAISettings, settings.env_file)
    if not stt_configured(stt, openai_settings):
        _log.info("speech to text: off (set STT_BASE_URL, or OPENAI_API_KEY for OpenAI)")
        return None
    transcriber = OpenAITranscriber.from_settings(stt, openai_settings)
    _log.info("speech to text: %s at %s", transcriber.model, transcriber.where)
    return transcriber


def _local_backend(settings: Settings, *, explicit: bool) -> LLMBackend:
    from bots.config import load

    try:
        from adapters.llm import local
    except ImportError as exc:  # pragma: no cover - the module ships with chinwag
        raise Exit(f"{NO_LLM}\n(local backend unavailable: {exc})") from None
    reason = local.local_backend_available()
    local_settings = load(local.LocalSettings, settings.env_file)
    has_model = local_settings.model_path is not None or bool(local_settings.models)
    default_path = None if has_model else local.default_model_path()
    if reason is not None:
        if explicit or has_model:
            raise ConfigError(
                "LLM_BACKEND", f"the local backend can't run here: {reason}", "openai"
            )
        raise Exit(NO_LLM)
    if not has_model and default_path is None:
        if explicit:
            raise ConfigError(
                "LOCAL_MODEL_PATH", "no GGUF model given and none bundled", "/models/model.gguf"
            )
        raise Exit(NO_LLM)
    if local_settings.parallel > settings.llm.max_concurrency:
        _log.warning(
            "LOCAL_PARALLEL=%d but LLM_MAX_CONCURRENCY=%d: at most %d conversations are "
            "answered at once (raise LLM_MAX_CONCURRENCY to use every sequence)",
            local_settings.parallel,
            settings.llm.max_concurrency,
            settings.llm.max_concurrency,
        )
    return local.LocalBackend(local_settings, default_path=default_path)


async def open_store(settings: MemorySettings) -> SqlMemoryStore:
    """Migrate (unless ``DB_AUTO_MIGRATE=false``) and open the memory store."""
    url = settings.async_url()
    if settings.db_auto_migrate:
        await migrate.upgrade(url)
    elif await migrate.pending(url):
        _log.warning("the database has pending migrations; run `chinwag db upgrade`")
    store = SqlMemoryStore(url, outage_grace=settings.db_outage_grace_seconds)
    await store.start()
    _log.info("memory: %s", render_url(url))
    return store


def build_tools(settings: Settings) -> Toolbox:
    """The bot's toolbox (see :func:`bots.toolbox.build_toolbox`); nothing is started yet.

    Raises:
        ConfigError: a pack the bot names is not configured.
        Exit: ``MCP_CONFIG`` is set but the ``mcp`` extra is not installed.
    """
    try:
        return build_toolbox(
            settings.bot, mcp_config=settings.mcp_config, homeassistant=settings.homeassistant
        )
    except PackUnavailable as exc:
        raise Exit(str(exc)) from None


@contextlib.asynccontextmanager
async def running_engine(
    settings: Settings,
    health: Health | None = None,
    shared: RedisShared | None = None,
    *,
    worker: bool = False,
    heartbeat: float | None = None,
) -> AsyncIterator[Engine]:
    """Backend, store, the bot's tools and the engine, started, and closed in reverse order.

    The tools close after the engine drained (a reply in flight may still call one). With
    ``health``, the engine counts into its telemetry and readiness probes the store. With
    ``shared`` (``REDIS_URL``), rate limits, confirmations and ``/stop`` are the bot's
    processes' shared ones.
    With ``worker``, the engine is a queue worker's (``Engine(shared=True)``) and beats every
    ``heartbeat`` seconds.
    """
    toolbox = build_tools(settings)
    backend = build_backend(settings)
    store = await open_store(settings.memory)
    if health is not None:
        health.store = store
        health.telemetry.describe(backend=backend.name)
    knowledge = build_knowledge(settings, store)
    from adapters.media import LocalMediaReader  # Pillow: only for a serving engine

    transcriber = build_transcriber(settings)
    try:
        await backend.start()
        _log.info("LLM backend: %s, model %s", backend.name, backend.default_model)
        await toolbox.start()
        try:
            log_toolbox(settings.bot, toolbox)
            engine = Engine(
                backend=backend,
                store=store,
                core=settings.core,
                llm=settings.llm,
                access=settings.access,
                persona=persona_of(settings.core, settings.bot),
                toolbox=toolbox,
                tool_settings=settings.tools,
                extra_commands=settings.bot.commands,
                knowledge=knowledge,
                telemetry=health.telemetry if health is not None else NO_TELEMETRY,
                media=settings.media,
                reader=LocalMediaReader(),
                transcriber=transcriber,
                rate_limits=shared.rate_limits if shared is not None else None,
                pending=shared.pending if shared is not None else None,
                stop_signal=shared.stop_signal if shared is not None else None,
                shared=worker,
                heartbeat=HEARTBEAT_SECONDS if heartbeat is None else heartbeat,
            )
            await engine.start()
            try:
                yield engine
            finally:
                await engine.aclose()
        finally:
            await toolbox.aclose()
    finally:
        if transcriber is not None:
            await transcriber.aclose()
        await backend.aclose()
        await knowledge.embedder.aclose()
        await knowledge.store.aclose()
        await store.aclose()


def build_knowledge(settings: Settings, store: SqlMemoryStore) -> KnowledgeBase:
    """The knowledge base answers come from, on the memory database; nothing is loaded yet.

    The embedder starts on the first question that meets a document in scope, so a bot
    without documents never loads a model. ``/kb add`` in chats ingests with the same
    embedder and ``KB_CHUNK_*``.
    """
    from adapters.kb.ingest import Ingestor
    from adapters.llm.openai_wire import OpenAISettings
    from adapters.memory.knowledge import SqlKnowledgeStore
    from bots.config import load
    from bots.kb import build_embedder

    kb = settings.kb
    knowledge_store = SqlKnowledgeStore(store)
    embedder = build_embedder(kb, load(OpenAISettings, settings.env_file))
    ingestor = Ingestor(knowledge_store, embedder, kb.chunk_chars, kb.chunk_overlap)

    async def add_file(path: Path, scope: KbScope, added_by: str, name: str) -> AddReport:
        source = f"{added_by.partition(':')[0]} upload: {name}"
        return await ingestor.add(path, scope, added_by=added_by, source=source, title=None)

    return KnowledgeBase(knowledge_store, embedder, kb, add_file=add_file)


def tune_gc() -> None:
    """Keep the garbage collector's pauses out of reply latency (call once, after start-up).

    Everything allocated until now (modules, settings, the models' metadata) lives as long as
    the process: frozen, no collection scans it again. A larger first generation makes the
    young collections rarer; per-reply garbage is short-lived, so they stay cheap. Measured
    with bench.core: p99 overhead at 1,000 msg/s fell from about 45 ms to a few ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def platform_adapters(
    settings: Settings,
    engine: ConversationEngine,
    telemetry: Telemetry = NO_TELEMETRY,
    shared: RedisShared | None = None,
    *,
    ingress: bool = False,
) -> list[ChatAdapter]:
    """The chat adapters whose tokens are configured, counting into ``telemetry``.

    With ``shared``, Telegram's flood gates and pacing are shared with the bot's other
    processes. Discord's are not (discord.py paces each process on its own). ``ingress``:
    the adapters of ``chinwag ingress`` (events queued for workers, see ``bots.scale``).
    """
    adapters: list[ChatAdapter] = []
    if settings.telegram.bot_token is not None:
        adapters.append(telegram_adapter(settings, engine, telemetry, shared, ingress=ingress))
    if settings.discord.bot_token is not None:
        from adapters.discord.adapter import DiscordAdapter

        adapters.append(
            DiscordAdapter(
                settings.discord,
                engine,
                data_dir=settings.data_dir,
                max_file_mb=settings.media.max_file_mb,  # /kb add passes KB_MAX_FILE_MB
                telemetry=telemetry,
                ingress=ingress,
            )
        )
    return adapters


def telegram_adapter(
    settings: Settings,
    engine: ConversationEngine,
    telemetry: Telemetry = NO_TELEMETRY,
    shared: RedisShared | None = None,
    *,
    ingress: bool = False,
) -> TelegramAdapter:
    """The Telegram adapter (``TELEGRAM_BOT_TOKEN`` set): a live one, or a worker's sender."""
    from adapters.telegram.adapter import TelegramAdapter

    return TelegramAdapter(
        settings.telegram,
        engine,
        max_file_mb=settings.media.max_file_mb,  # /kb add passes KB_MAX_FILE_MB
        telemetry=telemetry,
        limits=shared.limits if shared is not None else None,
        ingress=ingress,
    )


def has_platform_token(settings: Settings) -> bool:
    """Whether ``TELEGRAM_BOT_TOKEN`` or ``DISCORD_BOT_TOKEN`` is set."""
    return settings.telegram.bot_token is not None or settings.discord.bot_token is not None


async def serve(settings: Settings, *, console: bool, stop: asyncio.Event | None = None) -> None:
    """Run the configured adapters (or the console) until a signal or the end of input.

    Setting ``stop`` (tests, an embedding program) shuts down as SIGTERM does. With
    ``CHINWAG_HTTP_LISTEN`` set, health and metrics are served from before the engine
    starts (``/healthz`` answers, ``/readyz`` says what is still missing) until it closed.
    """
    health = None
    if settings.http_listen is not None:
        from bots.health import Health

        health = Health(*settings.http_listen)
        await health.start()
    try:
        await _serve(settings, console=console, health=health, stop=stop or asyncio.Event())
    finally:
        if health is not None:
            await health.aclose()


async def _serve(
    settings: Settings, *, console: bool, health: Health | None, stop: asyncio.Event
) -> None:
    from bots.shared import shared_state

    async with (
        shared_state(settings.scale, settings.core.bot_name) as shared,
        running_engine(settings, health, shared) as engine,
    ):
        terminal = None
        if console:
            from adapters.console import ConsoleAdapter

            terminal = ConsoleAdapter(engine, files_dir=settings.data_dir / "exports")
            adapters: list[ChatAdapter] = [terminal]
        else:
            adapters = platform_adapters(
                settings, engine, health.telemetry if health is not None else NO_TELEMETRY, shared
            )
        if health is not None:
            health.adapters = adapters
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            # Ctrl-C stops the reply streaming in the terminal; again (or at the prompt) quits.
            if terminal is None or not terminal.interrupt():
                stop.set()

        for sig, handler in ((signal.SIGINT, on_sigint), (signal.SIGTERM, stop.set)):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
        try:
            fatal = await run_adapters(
                engine,
                adapters,
                stop,
                grace=settings.core.shutdown_grace_seconds,
                on_serving=tune_gc,
            )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        if fatal is not None:
            raise Exit(f"stopped: {fatal}", status=1)


async def run_adapters(
    engine: Engine,
    adapters: Sequence[ChatAdapter],
    stop: asyncio.Event,
    *,
    grace: float = 10.0,
    on_serving: Callable[[], None] | None = None,
) -> BaseException | None:
    """Start ``adapters``, serve until ``stop`` is set or one ends, then shut down.

    ``on_serving`` runs once every adapter started and the replies a crash left unfinished
    were taken over (:meth:`Engine.recover`). Shutdown always happens, in the order
    :func:`shut_down` gives, even when starting an adapter failed. Replies in flight get
    ``grace`` seconds (``SHUTDOWN_GRACE_SECONDS``); the rest are left to recovery.

    Returns:
        The error an adapter stopped with, if one did (it was logged).
    """
    started: list[ChatAdapter] = []
    fatal: BaseException | None = None
    engine.use_adapters(adapters)
    try:
        serving = True
        for adapter in adapters:
            if not await _wait_to_serve(engine, adapter, stop):
                serving = False
                break
        if serving:
            # Replies a crash or restart left unfinished: queued first, so that no message
            # arriving while the adapters start overtakes them; they edit once connected.
            try:
                await engine.recover(adapters_ready=False)
            except Exception:
                _log.exception("recovering interrupted replies failed; retried at a heartbeat")
            for adapter in adapters:
                await adapter.start()
                started.append(adapter)
                _log.info("%s adapter started", adapter.name)
            engine.adapters_ready()
        if on_serving is not None:
            on_serving()
        waiters = [
            asyncio.create_task(a.wait_closed(), name=f"chinwag-wait-{a.name}") for a in started
        ]
        stopper = asyncio.create_task(stop.wait(), name="chinwag-signal")
        done, _ = await asyncio.wait([*waiters, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in [*waiters, stopper]:
            if task not in done:
                task.cancel()
        for task in done:
            if task is not stopper and task.exception() is not None:
                fatal = task.exception()
                _log.error("an adapter stopped with an error", exc_info=fatal)
        if stop.is_set():
            _log.info("shutting down on a signal")
    finally:
        await shut_down(engine, started, grace=grace)
    return fatal


async def _wait_to_serve(engine: Engine, adapter: ChatAdapter, stop: asyncio.Event) -> bool:
    """Wait until no other live process of this bot serves ``adapter``'s platform.

    Two processes on one token would fight over it (Telegram answers 409, Discord sends both
    every event): the second waits for the first to stop. ``False`` if ``stop`` came first.
    """
    if adapter.name == "console":
        return True
    # An adapter names what it must hold alone (``leases``): Telegram's poller, each Discord
    # shard; webhook ingress replicas hold nothing and start at once.
    leases: tuple[str, ...] = getattr(adapter, "leases", (adapter.name,))
    if not leases:
        return True
    waiting = asyncio.create_task(_hold_all(engine, leases), name=f"chinwag-lease-{adapter.name}")
    stopper = asyncio.create_task(stop.wait(), name="chinwag-lease-signal")
    done, pending = await asyncio.wait({waiting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if waiting in done:
        waiting.result()
        return True
    return False


async def _hold_all(engine: Engine, leases: Sequence[str]) -> None:
    for lease in leases:
        await engine.wait_to_serve(lease)


async def shut_down(engine: Engine, adapters: Sequence[ChatAdapter], *, grace: float) -> None:
    """Stop intake everywhere, let the engine drain, then close the adapters.

    Adapters stop taking messages first, so no message meets a closed engine; they close
    only after the engine drained, so replies in flight (``grace`` seconds at most) are still
    delivered. A failing adapter is logged and does not keep the others open.
    """
    for adapter in reversed(adapters):
        try:
            await adapter.stop_intake()
        except Exception:
            _log.exception("stopping the %s adapter's intake failed", adapter.name)
    try:
        await engine.aclose(grace=grace)
    finally:
        for adapter in reversed(adapters):
            try:
                await adapter.aclose()
            except Exception:
                _log.exception("closing the %s adapter failed", adapter.name)


def stdin_is_terminal() -> bool:
    """Whether standard input is an interactive terminal."""
    return sys.stdin is not None and sys.stdin.isatty()
