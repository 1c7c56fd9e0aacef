"""The conversation engine.

It orders each conversation's messages, answers commands, builds the prompt within the token
budget, streams the reply to the adapter and records it.

Adapters call :meth:`Engine.submit` (or ``await`` :meth:`Engine.handle`) for every incoming
message, in arrival order, and :meth:`Engine.handle_action` for button presses. Messages of one
conversation are handled strictly one after another and none is dropped; different
conversations run in parallel, with a global cap on concurrent LLM calls. ``/stop`` and button
presses never wait in a conversation's queue.

Every message goes through one error hook: no exception from a backend, store or adapter ends
the process or an adapter's connection; the user gets a short message, the log the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from core.access import AccessPolicy, RateLimiter, format_wait, until_next_utc_day
from core.errors import BackendError, ChinwagError, ContextTooLong, DuplicateMessage
from core.export import FORMATS as EXPORT_FORMATS
from core.export import export_document
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache, PromptBuilder
from core.settings import AccessSettings, CoreSettings, LLMSettings
from core.types import (
    CommandInfo,
    CompletionRequest,
    ConversationKey,
    IncomingAction,
    IncomingMessage,
    MemoryScope,
    MessageStatus,
    NewMessage,
    Preferences,
    QueuePosition,
    Role,
    StoredMessage,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageRecord,
)

_log = logging.getLogger(__name__)

UNSUPPORTED_REPLY = (
    "I can only read text messages for now, so I can't use that {kind}. "
    "Please send your question as text."
)
EMPTY_REPLY = "Your message is empty. Send me some text and I'll answer."
EMPTY_MODEL_REPLY = "The model returned an empty answer. Please try rephrasing your message."
GENERIC_ERROR = "Something went wrong on my side. Please try again."
REFUSAL = "Sorry, this bot is private and you're not on its list of allowed users."
CONFIRM_TTL = timedelta(minutes=10)
_CACHE_SIZE = 10_000

_COMMANDS: tuple[CommandInfo, ...] = (
    CommandInfo("start", "Say hello and show what I can do"),
    CommandInfo("help", "List the commands"),
    CommandInfo("reset", "Start a new conversation (persona and model stay)"),
    CommandInfo("stop", "Stop the reply being written"),
    CommandInfo("system", "Show or set the persona: /system <text> | /system reset", "text"),
    CommandInfo("model", "Show or switch the model: /model <name>", "name"),
    CommandInfo("history", "How much of this conversation I currently keep in mind"),
    CommandInfo("usage", "Your token usage today and in total"),
    CommandInfo("forget", "Delete everything stored about you"),
    CommandInfo("export", "Download your history: /export [md|json]", "format"),
    CommandInfo("stats", "Users, conversations, messages and tokens (admins)", admin_only=True),
)


def parse_command(text: str) -> tuple[str, str] | None:
    """``"/Model@mybot  gpt-4o "`` -> ``("model", "gpt-4o")``; ``None`` if not a command."""
    if not text.startswith("/") or len(text) < 2:
        return None
    head, _, rest = text[1:].partition(" ")
    if "\n" in head:
        head, _, more = head.partition("\n")
        rest = f"{more} {rest}".strip()
    name = head.split("@", 1)[0].lower()
    if not name or not name.replace("_", "").isalnum():
        return None
    return name, rest.strip()


@dataclass(slots=True)
class _Job:
    message: IncomingMessage
    out: ReplyChannel
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Lane:
    """One conversation's queue and the task draining it."""

    jobs: deque[_Job] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Active:
    """A reply being generated, so ``/stop`` can end it."""

    producer: asyncio.Task[None] | None = None
    stopped: bool = False


@dataclass(slots=True)
class _Pending:
    """A confirmation the engine asked for and waits on."""

    kind: str
    platform: str
    user_id: str
    expires: datetime
    data: dict[str, Any] = field(default_factory=dict)


class _End:
    """Sentinels passed through the producer queue."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Engine:
    """The platform-agnostic conversation engine.

    Args:
        backend: the LLM backend (started and closed by the caller).
        store: the memory store (started and closed by the caller).
        core: bot identity and memory scope.
        llm: generation settings.
        access: allowlists, admins and limits (everyone allowed, no limits if omitted).
        clock: returns the current UTC time; tests pass a fake one.
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
    ) -> None:
        self._backend = backend
        self._store = store
        self._core = core
        self._llm = llm
        self._access_settings = access or AccessSettings(_env_file=None)
        self._access = AccessPolicy(self._access_settings)
        per_minute = self._access_settings.rate_limit_per_minute
        self._rate = RateLimiter(per_minute) if per_minute else None
        self._rate_noticed: dict[str, float] = {}
        self._clock = clock or (lambda: datetime.now(UTC))
        self._history = HistoryCache()
        self._prompts = PromptBuilder(backend, store, self._history)
        self._llm_slots = asyncio.Semaphore(llm.max_concurrency)
        self._lanes: dict[ConversationKey, _Lane] = {}
        self._active: dict[ConversationKey, _Active] = {}
        self._pending: dict[str, _Pending] = {}
        self._refused: dict[str, datetime] = {}
        self._conversations: OrderedDict[ConversationKey, int] = OrderedDict()
        self._preferences: OrderedDict[ConversationKey, Preferences] = OrderedDict()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._state = "new"

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def bot_name(self) -> str:
        """The ``BOT_NAME`` this engine stores its memories under."""
        return self._core.bot_name

    @property
    def default_model(self) -> str:
        """The model a conversation that chose none is answered by."""
        return self._backend.default_model

    @property
    def backend(self) -> LLMBackend:
        """The LLM backend in use."""
        return self._backend

    async def start(self) -> None:
        """Mark replies a crash left in progress as interrupted. Idempotent."""
        if self._state == "started":
            return
        if self._state == "closed":
            raise RuntimeError("Engine.start() after aclose()")
        swept = await self._store.mark_interrupted(self.bot_name)
        if swept:
            _log.warning("marked %d reply(ies) left in progress by a crash as interrupted", swept)
        self._state = "started"

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Stop taking messages and wind down. Idempotent.

        Replies in flight get ``grace`` seconds to finish; then they are stopped and stored
        as interrupted.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        tasks = [lane.task for lane in self._lanes.values() if lane.task] + list(self._side_tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for active in list(self._active.values()):
                self._stop(active)
            if pending:
                await asyncio.wait(pending, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- intake --------------------------------------------------------------------------

    def commands(self) -> Sequence[CommandInfo]:
        """The commands the engine answers, for adapters to register."""
        models = tuple(self._backend.models())
        return tuple(
            CommandInfo(c.name, c.description, c.argument, c.admin_only, models)
            if c.name == "model"
            else c
            for c in _COMMANDS
        )

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

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        """Queue ``msg`` behind earlier messages of its conversation; return when it's done.

        Must be called in arrival order. The future never fails for the user's mistakes or the
        backend's; it resolves once the answer was sent and recorded.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._state == "closed":
            future.set_exception(RuntimeError("the engine is closed"))
            return future
        parsed = parse_command(msg.text) if msg.text else None
        if parsed and parsed[0] == "stop":
            self._spawn(self._guarded(msg, out, self._command_stop(msg, out)), future, "stop")
            return future
        key = self.key_for(msg.platform, msg.chat_id, msg.user_id, msg.thread_id, msg.is_private)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.jobs.append(_Job(msg, out, future))
        if lane.task is None:
            lane.task = asyncio.create_task(
                self._drain(key, lane), name=f"chinwag-lane-{key.platform}"
            )
        return future

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        """Submit ``msg`` and wait until it is answered."""
        await self.submit(msg, out)

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
        self._spawn(self._guarded(fake, out, self._action(action, out)), future, "action")
        await future

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

    async def _drain(self, key: ConversationKey, lane: _Lane) -> None:
        try:
            while lane.jobs:
                job = lane.jobs[0]
                try:
                    await self._guarded(
                        job.message, job.out, self._process(key, job.message, job.out)
                    )
                finally:
                    lane.jobs.popleft()
                    if not job.future.done():
                        job.future.set_result(None)
        finally:
            lane.task = None
            if not lane.jobs and self._lanes.get(key) is lane:
                del self._lanes[key]
            for job in lane.jobs:  # only when cancelled: nothing may wait forever
                if not job.future.done():
                    job.future.cancel()

    async def _guarded(
        self, msg: IncomingMessage, out: ReplyChannel, work: Awaitable[None]
    ) -> None:
        """The one error hook: log the traceback, tell the user briefly, keep serving."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception(
                "failed to handle a %s message in chat %s: %s",
                msg.platform,
                msg.chat_id,
                type(exc).__name__,
            )
            notice = exc.user_message if isinstance(exc, ChinwagError) else GENERIC_ERROR
            await self._notify(out, notice)

    async def _notify(self, out: ReplyChannel, text: str) -> Sequence[str]:
        try:
            return await out.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("could not deliver a notice")
            return ()

    # --- processing ----------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock()

    def _is_admin(self, msg: IncomingMessage) -> bool:
        return self._access.is_admin(msg.platform, msg.user_id)

    async def _admit(self, msg: IncomingMessage, out: ReplyChannel) -> bool:
        """Allowlist check: one short refusal per stranger per day, nothing stored."""
        if self._access.is_allowed(msg.platform, msg.user_id, msg.chat_id):
            return True
        subject = f"{msg.platform}:{msg.user_id}@{msg.chat_id}"
        now = self._now()
        last = self._refused.get(subject)
        if last is None or now - last > timedelta(days=1):
            self._refused[subject] = now
            _log.info("refused a message from %s user %s (not allowed)", msg.platform, msg.user_id)
            await self._notify(out, REFUSAL)
        return False

    async def _within_limits(self, msg: IncomingMessage, out: ReplyChannel) -> bool:
        if self._is_admin(msg):
            return True
        now = self._now()
        subject = f"{msg.platform}:{msg.user_id}"
        if self._rate is not None:
            wait = self._rate.check(subject, now.timestamp())
            if wait > 0:
                noticed = self._rate_noticed.get(subject, 0.0)
                if now.timestamp() - noticed >= wait:  # one notice per full window, no storm
                    self._rate_noticed[subject] = now.timestamp()
                    limit = self._access_settings.rate_limit_per_minute
                    await self._notify(
                        out,
                        f"You're sending messages too fast (limit: {limit} per minute). "
                        f"Please try again in {format_wait(wait)}.",
                    )
                return False
        quota = self._access_settings.daily_token_quota
        if quota is not None:
            usage = await self._store.get_usage(
                self.bot_name, msg.platform, msg.user_id, now.date()
            )
            if usage.tokens_today >= quota:
                await self._notify(
                    out,
                    f"You've used your daily quota of {quota:,} tokens. It resets at 00:00 UTC, "
                    f"in {format_wait(until_next_utc_day(now))}.",
                )
                return False
        return True

    async def _process(self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel) -> None:
        if not await self._admit(msg, out):
            return
        if msg.unsupported:
            await self._notify(out, UNSUPPORTED_REPLY.format(kind=msg.unsupported))
            return
        text = msg.text.strip()
        if not text:
            await self._notify(out, EMPTY_REPLY)
            return
        parsed = parse_command(text)
        if parsed is not None:
            if await self._within_limits(msg, out):
                await self._command(key, msg, out, *parsed)
            return
        limit = self._access_settings.max_input_chars
        if len(text) > limit:
            await self._notify(
                out,
                f"Your message is too long: {len(text):,} characters, and I accept at most "
                f"{limit:,}. Please shorten it or send it in parts.",
            )
            return
        if not await self._within_limits(msg, out):
            return
        await self._converse(key, msg, text, out)

    async def _conversation_id(self, key: ConversationKey) -> int:
        cached = self._conversations.get(key)
        if cached is not None:
            self._conversations.move_to_end(key)
            return cached
        conversation = await self._store.current_conversation(key)
        self._remember(self._conversations, key, conversation.id)
        return conversation.id

    @staticmethod
    def _remember(
        cache: OrderedDict[ConversationKey, Any], key: ConversationKey, value: Any
    ) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    async def _preferences_for(self, key: ConversationKey) -> Preferences:
        cached = self._preferences.get(key)
        if cached is None:
            cached = await self._store.get_preferences(key)
            self._remember(self._preferences, key, cached)
        return cached

    async def _save_preferences(self, key: ConversationKey, prefs: Preferences) -> None:
        await self._store.save_preferences(key, prefs)
        self._remember(self._preferences, key, prefs)

    def _model_for(self, prefs: Preferences) -> str:
        models = self._backend.models()
        if prefs.model and prefs.model in models:
            return prefs.model
        return self._backend.default_model

    def _budget(self, model: str) -> int:
        window = self._backend.context_window(model)
        if self._llm.context_window:
            window = min(window, self._llm.context_window)
        reserve = min(self._llm.max_reply_tokens, window // 2)
        return window - reserve

    async def _converse(
        self, key: ConversationKey, msg: IncomingMessage, text: str, out: ReplyChannel
    ) -> None:
        prefs = await self._preferences_for(key)
        model = self._model_for(prefs)
        tokenizer = self._backend.tokenizer_name(model)
        conversation_id = await self._conversation_id(key)
        extra = {"author_name": msg.user_name} if msg.user_name else None
        user_tokens = await self._backend.count_tokens(text, model)
        try:
            user_message, placeholder = await self._store.append_messages(
                conversation_id,
                [
                    NewMessage(
                        role=Role.USER,
                        content=text,
                        author_id=msg.user_id,
                        token_count=user_tokens,
                        tokenizer=tokenizer,
                        extra=extra,
                        platform_chat_id=msg.chat_id,
                        platform_message_ids=(msg.message_id,) if msg.message_id else (),
                    ),
                    NewMessage(role=Role.ASSISTANT, content="", status=MessageStatus.IN_PROGRESS),
                ],
            )
        except DuplicateMessage as duplicate:
            assert isinstance(duplicate.existing, StoredMessage)
            await self._redelivered(key, msg, duplicate.existing, out, model, prefs)
            return
        self._history.add(user_message)
        await self._reply(key, msg, out, conversation_id, placeholder, model, prefs)

    async def _redelivered(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        seen: StoredMessage,
        out: ReplyChannel,
        model: str,
        prefs: Preferences,
    ) -> None:
        """A message we stored before: answered once; re-answered if its reply broke off."""
        self._history.drop(seen.conversation_id)
        reply = await self._store.reply_to(seen) if seen.role is Role.USER else seen
        if reply is not None and reply.status is MessageStatus.COMPLETE:
            _log.info(
                "ignoring redelivered %s message %s: already answered", msg.platform, msg.message_id
            )
            return
        if reply is not None:
            await self._store.finish_message(
                reply.id, content=reply.content, status=MessageStatus.FAILED
            )
        _log.info("answering redelivered %s message %s again", msg.platform, msg.message_id)
        (placeholder,) = await self._store.append_messages(
            seen.conversation_id,
            [NewMessage(role=Role.ASSISTANT, content="", status=MessageStatus.IN_PROGRESS)],
        )
        await self._reply(key, msg, out, seen.conversation_id, placeholder, model, prefs)

    async def _reply(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        out: ReplyChannel,
        conversation_id: int,
        placeholder: StoredMessage,
        model: str,
        prefs: Preferences,
    ) -> None:
        """Stream the reply for the history before ``placeholder`` and record it there."""
        system_prompt = prefs.persona or self._core.system_prompt
        shared = key.user_id is None
        budget = self._budget(model)
        prompt_tokens = 0

        async def make_request(shrink: int) -> CompletionRequest:
            nonlocal prompt_tokens
            prompt = await self._prompts.build(
                conversation_id=conversation_id,
                before_seq=placeholder.seq,
                system_prompt=system_prompt,
                model=model,
                budget=budget // shrink,
                shared=shared,
            )
            prompt_tokens = prompt.tokens
            return CompletionRequest(
                messages=prompt.messages,
                model=model,
                temperature=self._llm.temperature,
                max_tokens=self._llm.max_reply_tokens,
            )

        parts: list[str] = []
        tool_calls: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        error: BaseException | None = None
        active = _Active()
        self._active[key] = active
        queue: asyncio.Queue[object] = asyncio.Queue()

        async def produce() -> None:
            sent_any = False
            for attempt in (1, 2):
                try:
                    request = await make_request(attempt)
                    async with self._llm_slots:
                        stream = self._backend.stream(request)
                        try:
                            async for event in stream:
                                if isinstance(event, TextDelta) and event.text:
                                    sent_any = True
                                queue.put_nowait(event)
                        finally:
                            closer = getattr(stream, "aclose", None)
                            if closer is not None:
                                await closer()
                    queue.put_nowait(_End())
                    return
                except ContextTooLong as exc:
                    if attempt == 1 and not sent_any:
                        _log.info("context too long for %s; retrying with half the budget", model)
                        continue
                    queue.put_nowait(_End(exc))
                    return
                except asyncio.CancelledError:
                    queue.put_nowait(_End())
                    raise
                except Exception as exc:
                    queue.put_nowait(_End(exc))
                    return

        async def deltas() -> AsyncGenerator[str, None]:
            nonlocal usage, error
            while True:
                event = await queue.get()
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    yield event.text
                elif isinstance(event, _End):
                    error = event.error
                    return
                elif isinstance(event, Usage):
                    usage = event
                elif isinstance(event, QueuePosition):
                    await self._notify(
                        out,
                        f"The model is busy with other conversations: you're number "
                        f"{event.position} in line. Your answer will follow.",
                    )
                elif isinstance(event, ToolCallDelta):
                    call = tool_calls.setdefault(
                        event.index, {"id": "", "name": "", "arguments": ""}
                    )
                    call["id"] = event.id or call["id"]
                    call["name"] = event.name or call["name"]
                    call["arguments"] += event.arguments

        active.producer = asyncio.create_task(produce(), name=f"chinwag-llm-{key.platform}")
        platform_ids: Sequence[str] = ()
        delivery_failed = False
        try:
            stream = deltas()
            try:
                platform_ids = await out.stream_reply(stream)
            finally:
                await stream.aclose()
        except asyncio.CancelledError:
            self._stop(active)
            raise
        except Exception:
            delivery_failed = True
            _log.exception("the %s adapter failed to deliver a reply", msg.platform)
        finally:
            if active.producer is not None and not active.producer.done():
                active.producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await active.producer
            if self._active.get(key) is active:
                del self._active[key]
            text = "".join(parts)
            if delivery_failed:
                status = MessageStatus.FAILED
            elif active.stopped:
                status = MessageStatus.INTERRUPTED
            elif error is not None:
                status = MessageStatus.INTERRUPTED if text else MessageStatus.FAILED
            else:
                status = MessageStatus.COMPLETE
            if usage is not None:
                reply_tokens = usage.completion_tokens
            else:
                reply_tokens = await self._backend.count_tokens(text, model) if text else 0
            await asyncio.shield(
                self._record_reply(
                    msg,
                    placeholder,
                    text,
                    status,
                    reply_tokens,
                    model,
                    platform_ids,
                    usage.prompt_tokens if usage else prompt_tokens,
                    bool(tool_calls),
                )
            )
        if error is not None:
            if isinstance(error, ChinwagError):
                _log.warning("backend error in %s chat %s: %s", msg.platform, msg.chat_id, error)
                await self._notify(out, error.user_message)
            else:
                _log.error("unexpected backend failure", exc_info=error)
                await self._notify(out, BackendError.user_message)
        elif active.stopped:
            _log.info("reply stopped by the user in %s chat %s", msg.platform, msg.chat_id)
        elif not delivery_failed and not text.strip():
            await self._notify(out, EMPTY_MODEL_REPLY)

    async def _record_reply(
        self,
        msg: IncomingMessage,
        placeholder: StoredMessage,
        text: str,
        status: MessageStatus,
        reply_tokens: int,
        model: str,
        platform_ids: Sequence[str],
        prompt_tokens: int,
        had_tool_calls: bool,
    ) -> None:
        if had_tool_calls:
            _log.info("the model asked for tools, which this bot does not offer yet")
        spent = status is not MessageStatus.FAILED or bool(text)
        tokenizer = self._backend.tokenizer_name(model)
        await self._store.finish_message(
            placeholder.id,
            content=text,
            status=status,
            token_count=reply_tokens,
            tokenizer=tokenizer,
            platform_chat_id=msg.chat_id,
            platform_message_ids=tuple(platform_ids),
            usage=UsageRecord(
                self.bot_name,
                msg.platform,
                msg.user_id,
                self._now().date(),
                prompt_tokens=prompt_tokens,
                completion_tokens=reply_tokens,
            )
            if spent
            else None,
        )
        self._history.add(
            replace(
                placeholder,
                content=text,
                status=status,
                token_count=reply_tokens,
                tokenizer=tokenizer,
            )
        )

    @staticmethod
    def _stop(active: _Active) -> None:
        active.stopped = True
        if active.producer is not None and not active.producer.done():
            active.producer.cancel()

    # --- commands ------------------------------------------------------------------------

    async def _command(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, name: str, arg: str
    ) -> None:
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None:
            await self._notify(out, f"I don't know the command /{name}. Send /help for the list.")
            return
        info = next(c for c in _COMMANDS if c.name == name)
        if info.admin_only and not self._is_admin(msg):
            await self._notify(out, f"/{name} is for the bot's admins only.")
            return
        await handler(key, msg, out, arg)

    def _help_text(self, msg: IncomingMessage) -> str:
        admin = self._is_admin(msg)
        lines = [f"/{c.name} - {c.description}" for c in _COMMANDS if admin or not c.admin_only]
        return "Commands:\n" + "\n".join(lines)

    async def _cmd_start(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        greeting = (
            f"Hi! I'm {self.bot_name}, an assistant that remembers our conversation. "
            "Just write to me.\n\n"
        )
        await self._notify(out, greeting + self._help_text(msg))

    async def _cmd_help(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        await self._notify(out, self._help_text(msg))

    async def _cmd_reset(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        conversation = await self._store.new_conversation(key)
        self._remember(self._conversations, key, conversation.id)
        await self._notify(out, "Started a new conversation. Your persona and model settings stay.")

    async def _command_stop(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        if not await self._admit(msg, out):
            return
        key = self.key_for(msg.platform, msg.chat_id, msg.user_id, msg.thread_id, msg.is_private)
        active = self._active.get(key)
        if active is None or active.stopped:
            await self._notify(out, "There's no reply in progress to stop.")
            return
        self._stop(active)
        await self._notify(out, "Stopped.")

    async def _cmd_system(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        prefs = await self._preferences_for(key)
        if not arg:
            if prefs.persona:
                await self._notify(
                    out, f"Current persona:\n{prefs.persona}\n\n/system reset restores the default."
                )
            else:
                await self._notify(out, f"Default persona:\n{self._core.system_prompt}")
            return
        if arg.lower() == "reset":
            await self._save_preferences(key, Preferences(persona=None, model=prefs.model))
            await self._notify(out, "Persona reset to the default.")
            return
        limit = min(self._access_settings.max_input_chars, 4000)
        if len(arg) > limit:
            await self._notify(
                out, f"That persona is too long ({len(arg):,} characters; at most {limit:,})."
            )
            return
        await self._save_preferences(key, Preferences(persona=arg, model=prefs.model))
        await self._notify(out, "Persona set. It applies from your next message.")

    async def _cmd_model(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        prefs = await self._preferences_for(key)
        current = self._model_for(prefs)
        models = list(self._backend.models())
        if not arg:
            listing = "\n".join(f"{'* ' if m == current else '  '}{m}" for m in models)
            await self._notify(
                out, f"Models (* = in use):\n{listing}\n\nSwitch with /model <name>."
            )
            return
        if arg not in models:
            await self._notify(out, f"Unknown model {arg!r}. Available: {', '.join(models)}.")
            return
        await self._backend.check_model(arg)
        await self._save_preferences(key, Preferences(persona=prefs.persona, model=arg))
        await self._notify(out, f"Model set to {arg}.")

    async def _cmd_history(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        prefs = await self._preferences_for(key)
        model = self._model_for(prefs)
        conversation_id = await self._conversation_id(key)
        budget = self._budget(model)
        prompt = await self._prompts.build(
            conversation_id=conversation_id,
            before_seq=None,
            system_prompt=prefs.persona or self._core.system_prompt,
            model=model,
            budget=budget,
            shared=key.user_id is None,
        )
        note = "" if prompt.complete else " Older messages are stored but no longer fit."
        await self._notify(
            out,
            f"In context: {prompt.turns} message(s), {prompt.tokens:,} of {budget:,} tokens "
            f"(model {model}).{note}",
        )

    async def _cmd_usage(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        now = self._now()
        usage = await self._store.get_usage(self.bot_name, msg.platform, msg.user_id, now.date())
        quota = self._access_settings.daily_token_quota
        lines = [
            f"Tokens today: {usage.tokens_today:,}",
            f"Tokens in total: {usage.tokens_total:,}",
        ]
        if self._is_admin(msg):
            lines.append("Daily quota: none (admin)")
        elif quota:
            left = max(quota - usage.tokens_today, 0)
            lines.append(f"Daily quota: {quota:,} ({left:,} left, resets at 00:00 UTC)")
        else:
            lines.append("Daily quota: none")
        await self._notify(out, "\n".join(lines))

    async def _cmd_forget(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        now = self._now()
        self._pending = {k: p for k, p in self._pending.items() if p.expires > now}
        action_id = f"forget:{secrets.token_urlsafe(8)}"
        self._pending[action_id] = _Pending("forget", msg.platform, msg.user_id, now + CONFIRM_TTL)
        await out.ask_confirmation(
            "Delete everything I have stored about you: your messages, conversations and "
            "settings? This cannot be undone. (Usage counters are kept without your id, so "
            "quotas still apply.)",
            action_id,
        )

    async def _action(self, action: IncomingAction, out: ReplyChannel) -> None:
        pending = self._pending.get(action.action_id)
        if pending is None or pending.expires <= self._now():
            await self._notify(out, "That confirmation has expired. Send the command again.")
            return
        if (pending.platform, pending.user_id) != (action.platform, action.user_id):
            await self._notify(out, "Only the person who asked can answer this.")
            return
        del self._pending[action.action_id]
        if not action.accepted:
            await self._notify(out, "Cancelled: nothing was deleted.")
            return
        if pending.kind == "forget":
            await self._forget(action.platform, action.user_id, out)

    async def _forget(self, platform: str, user_id: str, out: ReplyChannel) -> None:
        deleted = await self._store.forget_user(self.bot_name, platform, user_id)
        # Forgetting is rare; dropping both caches whole also covers shared conversations.
        self._conversations.clear()
        self._preferences.clear()
        self._history.clear()
        _log.info("forgot a %s user on request (%d messages deleted)", platform, deleted)
        await self._notify(
            out, f"Done: I deleted everything stored about you ({deleted} messages)."
        )

    async def _cmd_export(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        fmt = (arg or "md").lower().lstrip(".")
        if fmt == "markdown":
            fmt = "md"
        if fmt not in EXPORT_FORMATS:
            await self._notify(out, "Choose a format: /export md (the default) or /export json.")
            return
        document = await self.export(msg.platform, msg.user_id, fmt)
        stamp = self._now().strftime("%Y%m%d-%H%M%S")
        await out.send_file(
            f"{self.bot_name}-history-{stamp}.{fmt}",
            document.encode("utf-8"),
            "Your history with me.",
        )

    async def export(self, platform: str, user_id: str, fmt: str = "md") -> str:
        """The user's stored history as a Markdown or JSON document (``chinwag export``)."""
        return await export_document(
            self._store,
            bot=self.bot_name,
            platform=platform,
            user_id=user_id,
            fmt=fmt,
            now=self._now(),
        )

    async def _cmd_stats(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        now = self._now()
        rows = await self._store.stats(self.bot_name, now.date())
        if not rows:
            await self._notify(out, "No activity recorded yet.")
            return
        lines = [f"Stats for {self.bot_name} (today = {now.date().isoformat()} UTC):"]
        for r in rows:
            lines.append(
                f"{r.platform}: users {r.users_today:,} today / {r.users_total:,} total; "
                f"conversations {r.conversations_today:,} / {r.conversations_total:,}; "
                f"messages {r.messages_today:,} / {r.messages_total:,}; "
                f"tokens {r.tokens_today:,} / {r.tokens_total:,}"
            )
        await self._notify(out, "\n".join(lines))
