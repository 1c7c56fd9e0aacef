"""The conversation engine: the facade adapters call through ``core.ports.ConversationEngine``.

Adapters call :meth:`Engine.submit` (or ``await`` :meth:`Engine.handle`) for every incoming
message, in arrival order, and :meth:`Engine.handle_action` for button presses. Messages of one
conversation are handled strictly one after another and none is dropped; different
conversations run in parallel, with a global cap on concurrent LLM calls. ``/stop`` and button
presses never wait in a conversation's queue.

Every message goes through one error hook (:meth:`Engine._guarded`): no exception from a
backend, store or adapter ends the process or an adapter's connection; the user gets a short
message, the log the traceback.

The engine wires the pieces and hands each message to :mod:`core.routing` (its command, its
attachments or a reply; a redelivered message answered once; a reply taken over produced
again); every job lives in its own module:
:mod:`core.lanes` (the ordered queue per conversation), :mod:`core.admission` (allowlist,
rate, quota, size), :mod:`core.commands` (the command registry and parser),
:mod:`core.confirmations` (``/forget``'s yes/no), :mod:`core.sessions` (conversations,
preferences, models, budgets), :mod:`core.reply` (one reply run), :mod:`core.prompt` (the
history within the token budget, with the images of vision turns), :mod:`core.intake`
(photos, voice notes and files sent), :mod:`core.notices` (what users are told); the tools in
:mod:`core.gate`, :mod:`core.turns` and :mod:`core.tool_actions`; the knowledge base in
:mod:`core.kb` and :mod:`core.kb_chat`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from core.access import RateLimits
from core.admission import Admission
from core.bot import BotCommand
from core.commands import BuiltinCommands, CommandRegistry, parse_command
from core.confirmations import Confirmations, PendingStore
from core.errors import ChinwagError
from core.instance import HEARTBEAT_SECONDS, Instance
from core.intake import Intake
from core.kb import KnowledgeBase
from core.kb_chat import KbChat
from core.lanes import Lanes
from core.lifecycle import Lifecycle
from core.media import MediaReader, Transcriber
from core.notices import GENERIC_ERROR, notify
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache, PromptBuilder
from core.queue import StopSignal
from core.recovery import Recovery
from core.reply import Replier
from core.routing import Router
from core.sessions import Sessions
from core.settings import (
    DEFAULT_SYSTEM_PROMPT,
    AccessSettings,
    CoreSettings,
    LLMSettings,
    MediaSettings,
    ToolSettings,
)
from core.telemetry import NO_TELEMETRY, Telemetry, error_kind
from core.tooling import Tooling
from core.tools import Toolbox
from core.turns import Continuation
from core.types import (
    CommandInfo,
    ConversationKey,
    IncomingAction,
    IncomingMessage,
    MemoryScope,
    ReplyInProgress,
)

_Job = tuple[IncomingMessage, ReplyChannel, ReplyInProgress | Continuation | None]
"""A lane's work: a message to answer, a reply in progress to finish (crash recovery), or a
tool round whose confirmations were answered to continue."""

_log = logging.getLogger(__name__)


def _lane_name(key: ConversationKey) -> str:
    return f"chinwag-lane-{key.platform}"


class Engine:
    """The platform-agnostic conversation engine; implements ``ConversationEngine``.

    Args:
        backend: the LLM backend (started and closed by the caller).
        store: the memory store (started and closed by the caller).
        core: bot identity and memory scope.
        llm: generation settings.
        access: allowlists, admins and limits (everyone allowed, no limits if omitted).
        clock: returns the current UTC time; tests pass a fake one.
        heartbeat: seconds between this process's heartbeats in the store (its liveness as
            the owner of replies in progress); tests pass a short one.
        persona: the bot definition's system prompt (``SYSTEM_PROMPT`` overrides it, a
            slot's ``/system`` overrides both).
        toolbox: the tools the model may call (none if omitted).
        tool_settings: who may use tools, and the tool loop's limits.
        extra_commands: the bot definition's own commands.
        knowledge: the knowledge base answers come from (``/kb``, ``/why``; none if omitted).
        telemetry: counts messages, replies, tokens and errors for ``/metrics`` (nothing if
            omitted).
        media: the limits on files users send (``MAX_FILE_MB``...; the defaults if omitted).
        reader: decodes photos and reads text files (without one, both are declined).
        transcriber: speech to text (without one, voice notes are declined in a sentence).
        shared: other processes serve the same conversations (queue workers): nothing a
            peer may change is cached across messages, and a redelivered message whose
            reply a live peer is writing waits for it (see :meth:`settle`).
        rate_limits: the per-user rate windows shared by the bot's processes (Redis); this
            process's own if omitted.
        pending: where ``/forget``'s confirmations wait, shared by the bot's processes so
            the press may reach any of them; this process's memory if omitted.
        stop_signal: ``/stop`` across processes: a stop for a reply this process is not
            writing is published, and stops published by peers are honoured here.
    """

    def __init__(
        self,
        *,
        backend: LLMBackend,
        store: MemoryStore,
        core: CoreSettings,
        llm: LLMSettings,
        access: AccessSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
        persona: str | None = None,
        toolbox: Toolbox | None = None,
        tool_settings: ToolSettings | None = None,
        extra_commands: Sequence[BotCommand] = (),
        knowledge: KnowledgeBase | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
        media: MediaSettings | None = None,
        reader: MediaReader | None = None,
        transcriber: Transcriber | None = None,
        shared: bool = False,
        rate_limits: RateLimits | None = None,
        pending: PendingStore | None = None,
        stop_signal: StopSignal | None = None,
    ) -> None:
        self._shared = shared
        self._stop_signal = stop_signal
        self._stop_listener: asyncio.Task[None] | None = None
        self._telemetry = telemetry
        self._backend = backend
        self._store = store
        self._core = core
        access = access or AccessSettings(_env_file=None)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._history = HistoryCache(contiguous=shared)
        self._prompts = PromptBuilder(backend, store, self._history)
        self._admission = Admission(access, store, core.bot_name, self._clock, rate_limits)
        self._sessions = Sessions(backend, store, llm, cached=not shared)
        self._replier = Replier(
            backend=backend,
            store=store,
            prompts=self._prompts,
            history=self._history,
            llm=llm,
            budgets=self._sessions.budget,
            bot_name=core.bot_name,
            clock=self._clock,
            telemetry=telemetry,
        )
        self._confirmations = Confirmations(self._clock, pending)
        self._default_prompt = core.system_prompt or persona or DEFAULT_SYSTEM_PROMPT
        self._builtins = BuiltinCommands(
            backend=backend,
            store=store,
            core=core,
            access=access,
            admission=self._admission,
            sessions=self._sessions,
            prompts=self._prompts,
            history=self._history,
            replier=self._replier,
            confirmations=self._confirmations,
            clock=self._clock,
            default_prompt=self._default_prompt,
        )
        self._builtins.stop_signal = stop_signal
        self._commands = CommandRegistry()
        self._builtins.register(self._commands)
        self._lanes: Lanes[ConversationKey, _Job] = Lanes(self._run_in_lane, _lane_name)
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._state = Lifecycle.NEW
        self._instance = Instance(store, core.bot_name, self._clock, interval=heartbeat)
        self._recovery = Recovery(
            store=store,
            instance=self._instance,
            bot=core.bot_name,
            within=core.recover_within_seconds,
            clock=self._clock,
            submit=self._queue,
        )
        self._instance.on_beat = self._beat
        self._tools = Tooling(
            toolbox=toolbox or Toolbox(),
            settings=tool_settings or ToolSettings(_env_file=None),
            access=access,
            store=store,
            backend=backend,
            replier=self._replier,
            history=self._history,
            sessions=self._sessions,
            admission=self._admission,
            recovery=self._recovery,
            clock=self._clock,
            bot_name=core.bot_name,
            owner=lambda: self._instance.id,
            submit=self._queue,
            default_prompt=self._default_prompt,
        )
        self._tools.register(self._commands, self._builtins, tuple(extra_commands))
        self._kb: KbChat | None = None
        if knowledge is not None:
            self._kb = KbChat(
                knowledge=knowledge,
                store=store,
                backend=backend,
                sessions=self._sessions,
                history=self._history,
                is_admin=self._admission.is_admin,
                has_tools=lambda: self._tools.enabled,
                telemetry=telemetry,
            )
            self._kb.register(self._commands)
            self._builtins.on_forget = self._kb.forget
            self._builtins.knowledge = knowledge.store
        self._intake = Intake(
            backend=backend,
            store=store,
            admission=self._admission,
            sessions=self._sessions,
            settings=media or MediaSettings(_env_file=None),
            reader=reader,
            transcriber=transcriber,
            kb_on=lambda: self._kb is not None,
        )
        self._router = Router(
            backend=backend,
            store=store,
            admission=self._admission,
            commands=self._commands,
            builtins=self._builtins,
            confirmations=self._confirmations,
            sessions=self._sessions,
            history=self._history,
            intake=self._intake,
            tools=self._tools,
            recovery=self._recovery,
            kb=self._kb,
            shared=shared,
            key_of=self._key,
            owner=lambda: self._instance.id,
        )

    # --- identity and lifecycle ------------------------------------------------------------

    @property
    def bot_name(self) -> str:
        """The ``BOT_NAME`` this engine stores its memories under."""
        return self._core.bot_name

    @property
    def default_model(self) -> str:
        """The model a conversation that chose none is answered by."""
        return self._backend.default_model

    @property
    def state(self) -> Lifecycle:
        """Where the engine is in its life (``NEW`` until :meth:`start`)."""
        return self._state

    @property
    def instance_id(self) -> str:
        """This process's id in the store (the owner of its replies in progress)."""
        return self._instance.id

    async def start(self) -> None:
        """Register this process in the store and start its heartbeat. Idempotent.

        Replies a crash left in progress are finished by :meth:`recover`, once the adapters
        that can edit them are connected.

        Raises:
            RuntimeError: after :meth:`aclose`.
        """
        if not self._state.require_startable("Engine"):
            return
        self._state = Lifecycle.STARTING
        await self._instance.start()
        if self._stop_signal is not None:
            self._stop_listener = asyncio.create_task(
                self._stop_signal.listen(self._replier.stop), name="chinwag-stop-listener"
            )
        self._state = Lifecycle.RUNNING

    def use_adapters(self, adapters: Sequence[object]) -> None:
        """Remember the adapters that can reopen a stored chat (call before starting them)."""
        self._recovery.use(adapters)

    async def wait_to_serve(self, platform: str) -> None:
        """Return once this process may serve ``platform`` (holds its lease for this bot).

        While another live process of the same bot serves it, this waits (logging why once)
        and takes over when that process stops or dies.
        """
        await self._instance.hold_lease(platform)

    async def recover(self, *, adapters_ready: bool = True) -> int:
        """Take over the replies dead processes left in progress; then at every heartbeat.

        Each is queued in its conversation's lane, ahead of messages that arrive later:
        recent ones are produced again into the messages already on screen, older ones
        marked interrupted (see :mod:`core.recovery`). With ``adapters_ready`` false they
        wait for :meth:`adapters_ready` (call this before starting the adapters, so no new
        message overtakes them). Returns how many replies were taken over now.
        """
        self._recovery.enabled = True
        if adapters_ready:
            self._recovery.ready.set()
        else:
            self._recovery.ready.clear()
        return await self._recovery.sweep()

    def adapters_ready(self) -> None:
        """The adapters are connected: recovered replies may edit their messages now."""
        self._recovery.ready.set()

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Stop taking messages and drain. Idempotent.

        From the call on, :meth:`submit` refuses new messages. Replies in flight get
        ``grace`` seconds to finish; then they are stopped and stored as interrupted.
        Returns once every queued message was handled (or, stopped, cancelled).
        """
        if self._state.closed:
            return
        self._state = Lifecycle.CLOSING
        self._recovery.enabled = False
        try:
            tasks = self._lanes.tasks() + list(self._side_tasks)
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=grace)
                # What did not finish in time is stored as far as it got, still in
                # progress: the next start (or a live peer) finishes it in place.
                self._replier.abandon_all()
                if pending:
                    await asyncio.wait(pending, timeout=5)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._state = Lifecycle.CLOSED
            if self._stop_listener is not None:
                self._stop_listener.cancel()
                await asyncio.gather(self._stop_listener, return_exceptions=True)
            await self._instance.aclose()

    # --- the inbound port ------------------------------------------------------------------

    def commands(self) -> Sequence[CommandInfo]:
        """The commands the engine answers, for adapters to register."""
        return self._commands.infos()

    def key_for(
        self,
        platform: str,
        chat_id: str,
        user_id: str,
        thread_id: str | None = None,
        is_private: bool = True,
    ) -> ConversationKey:
        """The conversation slot a message belongs to, following ``MEMORY_SCOPE_GROUPS``."""
        shared = not is_private and self._core.memory_scope_groups is MemoryScope.CHAT
        return ConversationKey(
            self.bot_name, platform, chat_id, thread_id, None if shared else user_id
        )

    def bypasses_lane(self, text: str) -> bool:
        """Whether ``text`` is a command answered at once, not after queued messages (``/stop``)."""
        parsed = parse_command(text) if text else None
        command = self._commands.get(parsed[0]) if parsed is not None else None
        return command is not None and command.bypasses_lane

    async def admits(self, msg: IncomingMessage, out: ReplyChannel) -> bool:
        """The allowlist check of ``msg``'s author (one short refusal per stranger a day)."""
        return await self._admission.allowed(msg, out)

    def stop_reply(self, key: ConversationKey) -> bool:
        """Stop ``key``'s reply in progress in this process; ``False`` if there is none.

        A queue worker calls it for every ``/stop`` published (``core.queue.StopSignal``).
        """
        return self._replier.stop(key)

    def _key(self, msg: IncomingMessage) -> ConversationKey:
        return self.key_for(msg.platform, msg.chat_id, msg.user_id, msg.thread_id, msg.is_private)

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        """Queue ``msg`` behind earlier messages of its conversation; return when it's done.

        Must be called in arrival order. The future never fails for the user's mistakes or the
        backend's; it resolves once the answer was sent and recorded. After :meth:`aclose`
        began, it fails with ``RuntimeError``.
        """
        self._telemetry.message_received(msg.platform)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._state.closed:
            future.set_exception(RuntimeError("the engine is closed"))
            return future
        parsed = parse_command(msg.text) if msg.text else None
        if parsed is not None:
            command = self._commands.get(parsed[0])
            if command is not None and command.bypasses_lane:
                work = self._guarded(msg, out, self._router.bypassing(msg, out, *parsed))
                self._spawn(work, future, parsed[0])
                return future
        self._lanes.submit(self._key(msg), (msg, out, None), future)
        return future

    def _queue(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        out: ReplyChannel,
        job: ReplyInProgress | Continuation,
    ) -> None:
        """Queue a claimed reply or a tool round to continue in its conversation's lane.

        A claimed reply is produced again; a tool round whose confirmations were all
        answered continues the model. After :meth:`aclose` began, nothing is queued: the
        reply stays in progress and the round awaiting, for the next start to finish.
        """
        if self._state.closed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lanes.submit(key, (msg, out, job), future)

    async def _beat(self) -> None:
        """At every heartbeat: take over dead processes' replies, expire tool confirmations."""
        await self._recovery.sweep()
        if not self._state.closed:
            await self._tools.expire()

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        """Submit ``msg`` and wait until it is answered."""
        await self.submit(msg, out)

    async def settle(
        self,
        platform: str,
        chat_id: str,
        user_id: str,
        thread_id: str | None = None,
        is_private: bool = True,
    ) -> None:
        """Return once the conversation slot has nothing queued or running in this process.

        A queue worker calls it before it lets the conversation's job go: work the job set
        off in the lane (a tool round continued after a press, a reply taken over) is done
        before the next job of the conversation starts anywhere.
        """
        await self._lanes.idle(self.key_for(platform, chat_id, user_id, thread_id, is_private))

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        """Answer a button press (or console yes/no) for a confirmation the engine asked."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fake = IncomingMessage(
            platform=action.platform,
            chat_id=action.chat_id,
            user_id=action.user_id,
            text="",
            thread_id=action.thread_id,
            is_private=action.is_private,
        )
        self._spawn(self._guarded(fake, out, self._router.action(action, out)), future, "action")
        await future

    async def export(self, platform: str, user_id: str, fmt: str = "md") -> str:
        """The user's stored history as a Markdown or JSON document (``chinwag export``)."""
        return await self._builtins.export_document(platform, user_id, fmt)

    # --- lanes and the error hook -------------------------------------------------------------

    def _spawn(self, work: Awaitable[None], future: asyncio.Future[None], what: str) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                if not future.done():
                    future.set_result(None)

        task = asyncio.create_task(run(), name=f"chinwag-{what}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _guarded(
        self, msg: IncomingMessage, out: ReplyChannel, work: Awaitable[None]
    ) -> None:
        """The one error hook: log the traceback, tell the user briefly, keep serving."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._telemetry.error(error_kind(exc))
            _log.exception(
                "failed to handle a %s message in chat %s: %s",
                msg.platform,
                msg.chat_id,
                type(exc).__name__,
            )
            notice = exc.user_message if isinstance(exc, ChinwagError) else GENERIC_ERROR
            await notify(out, notice)

    def _run_in_lane(self, key: ConversationKey, job: _Job) -> Awaitable[None]:
        msg, out, resumed = job
        if isinstance(resumed, Continuation):
            return self._guarded(msg, out, self._tools.continue_round(key, msg, out, resumed))
        if resumed is not None:
            return self._guarded(msg, out, self._router.resume(key, msg, out, resumed))
        return self._guarded(msg, out, self._router.process(key, msg, out))


__all__ = ["Engine"]
