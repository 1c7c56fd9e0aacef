"""Writing one reply: build the prompt, stream the model's answer to the user, record it.

A :class:`ReplyRun` owns everything about one reply: the producer task that reads the
backend (:mod:`core.reply_producer`), the stream of events the adapter shows (text deltas,
and ``QueuePosition`` while a busy model keeps the reply waiting), ``/stop``, the final
status and the record in the store (:mod:`core.reply_record`, with the progress saved while
the reply streams), then the notice the user gets about an error or an empty answer.

A reply the token limit cut (the backend's ``Finish`` says ``length``) is stored as ``CUT``
and shown with its open code block closed and a notice after it; the notice is the bot's,
never part of the stored text, so the user's "continue" resumes the reply from the model's
own words. A continuation that starts inside the cut reply's code block is shown with the
block's opening line before it (unless the model opened one itself), so its code renders as
code.

:class:`Replier` holds what all runs share (the backend, the store, the global cap on
concurrent LLM calls) and the runs in progress, so ``/stop`` and shutdown can reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from functools import partial

from core.errors import (
    BackendError,
    ChinwagError,
)
from core.kb import (
    Grounding,
    sources_text,
)
from core.knowledge import Source
from core.notices import (
    EMPTY_MODEL_REPLY,
    cut_ending,
    images_refused_notice,
    notify,
    reopening,
)
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache, PromptBuilder
from core.reply_producer import End, produce
from core.reply_record import PROGRESS_INTERVAL, cut, posted, record, save_progress, status_of
from core.sessions import Budget
from core.settings import LLMSettings
from core.telemetry import NO_TELEMETRY, Telemetry, error_kind
from core.types import (
    ConversationKey,
    Finish,
    IncomingMessage,
    QueuePosition,
    ReplyEvent,
    StoredMessage,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageRecord,
)

_log = logging.getLogger(__name__)


class Replier:
    """Starts reply runs and keeps track of the ones in progress (one per conversation).

    Args:
        backend: the LLM backend.
        store: where replies are recorded.
        prompts: builds each run's prompt within its budget.
        history: the in-memory history the recorded reply is added to.
        llm: the temperature and ``LLM_MAX_CONCURRENCY`` (the global cap).
        budgets: a model's budget from its current window (``Sessions.budget``).
        bot_name: the bot usage is counted for.
        clock: the engine's clock (current UTC time).
        telemetry: counts replies, their timings, tokens and errors (nothing if omitted).
    """

    def __init__(
        self,
        *,
        backend: LLMBackend,
        store: MemoryStore,
        prompts: PromptBuilder,
        history: HistoryCache,
        llm: LLMSettings,
        budgets: Callable[[str], Budget],
        bot_name: str,
        clock: Callable[[], datetime],
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.telemetry = telemetry
        self.backend = backend
        self.budgets = budgets
        self.store = store
        self.prompts = prompts
        self.history = history
        self.llm = llm
        self.bot_name = bot_name
        self.clock = clock
        self.slots = asyncio.Semaphore(llm.max_concurrency)
        self.active: dict[ConversationKey, ReplyRun] = {}
        self.clock_time = time.monotonic

    def start(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        out: ReplyChannel,
        placeholder: StoredMessage,
        model: str,
        system_prompt: str,
        budget: Budget,
        shown: Sequence[str] = (),
        tools: Sequence[ToolSpec] = (),
        grounding: Grounding | None = None,
    ) -> ReplyRun:
        """A run answering ``msg`` from the history before ``placeholder``, offering ``tools``.

        ``shown`` are the platform ids already recorded for ``placeholder`` (a reply taken
        over after a crash, whose messages ``out`` edits). The run counts as in progress
        (``/stop`` reaches it) from this call on. ``await run.run()`` returns once the reply
        was shown, recorded and any notice about it sent; backend and delivery failures are
        recorded and told, not raised; ``CancelledError`` is raised after the reply was
        recorded as interrupted. Then read the run.

        A run whose model ended with tool calls (:attr:`ReplyRun.tool_round`) is not
        recorded: its row stays in progress for the tool loop (:mod:`core.turns`) to store
        the calls, their results and its final status.

        With ``grounding``, the prompt carries its chunks (as many as fit) and the reply is
        stored with its retrieval and sources; the sources are sent after the answer.
        """
        run = ReplyRun(self, key, msg, out, placeholder, model, system_prompt, budget, tools)
        run.grounding = grounding
        run.saved_ids.update(shown)
        self.active[key] = run
        return run

    def stop(self, key: ConversationKey) -> bool:
        """Stop ``key``'s reply in progress; ``False`` if there is none (or it was stopped)."""
        run = self.active.get(key)
        if run is None or run.stopped:
            return False
        run.stop()
        return True

    def stop_all(self) -> None:
        """Stop every reply in progress (at shutdown, once the grace period ran out)."""
        for run in list(self.active.values()):
            run.stop()

    def abandon_all(self) -> None:
        """Stop every reply in progress and leave it to crash recovery (at shutdown).

        Each is stored with what it wrote and its messages, still in progress: the next
        start (or a live peer instance) produces it again and edits those messages.
        """
        for run in list(self.active.values()):
            run.abandoned = True
            run.stop()


class ReplyRun:
    """One reply, from the prompt to the record; created and run by :class:`Replier`."""

    __slots__ = (
        "abandoned",
        "began",
        "budget",
        "delivery_failed",
        "documents",
        "error",
        "finish",
        "first_seen",
        "grounding",
        "images_refused",
        "key",
        "model",
        "msg",
        "next_save",
        "out",
        "parts",
        "placeholder",
        "platform_ids",
        "prefix",
        "producer",
        "prompt_tokens",
        "queue",
        "replier",
        "resuming",
        "saved_ids",
        "saved_len",
        "saver",
        "shown_ids",
        "sources",
        "spent",
        "stopped",
        "system_prompt",
        "text",
        "tool_calls",
        "tools",
        "usage",
    )

    def __init__(
        self,
        replier: Replier,
        key: ConversationKey,
        msg: IncomingMessage,
        out: ReplyChannel,
        placeholder: StoredMessage,
        model: str,
        system_prompt: str,
        budget: Budget,
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        self.replier = replier
        self.key = key
        self.msg = msg
        self.out = out
        self.placeholder = placeholder
        self.model = model
        self.system_prompt = system_prompt
        self.budget = budget
        self.prompt_tokens = 0
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, str]] = {}
        self.tools = tools
        self.text = ""  # the reply's text, once recorded
        self.spent: UsageRecord | None = None  # a tool round's usage, for the loop to record
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self.resuming: str | None = None  # a cut reply this one continues, until shown
        self.prefix = ""  # shown before the reply's text, never stored
        self.error: BaseException | None = None
        self.stopped = False
        self.delivery_failed = False
        self.platform_ids: Sequence[str] = ()
        self.producer: asyncio.Task[None] | None = None
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.abandoned = False  # left in progress at shutdown, for recovery
        self.images_refused = False  # the server refused this turn's images: text alone
        self.grounding: Grounding | None = None  # the knowledge base's chunks for this turn
        self.documents = 0  # how many of them the prompt holds
        self.sources: list[Source] = []  # what the answer cited, sent after it
        # Progress saved while the reply streams, so a restart knows what is on screen:
        # message ids as soon as posted, the text at most every PROGRESS_INTERVAL seconds
        # (a short reply saves nothing before its final record).
        self.shown_ids: Sequence[str] = ()
        self.saved_ids: set[str] = set()
        self.saved_len = len(placeholder.content)
        self.saver: asyncio.Task[None] | None = None
        self.next_save = replier.clock_time() + PROGRESS_INTERVAL
        self.began = replier.clock_time()
        self.first_seen = False  # the first text was timed (chinwag_first_token_seconds)

    def stop(self) -> None:
        """End the generation now (``/stop``, shutdown); what was written is kept."""
        self.stopped = True
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()

    async def run(self) -> None:
        """Stream, record, then tell the user about an error or an empty answer."""
        telemetry = self.replier.telemetry
        self.began = self.replier.clock_time()
        telemetry.reply_started()
        try:
            self.producer = asyncio.create_task(
                produce(self), name=f"chinwag-llm-{self.key.platform}"
            )
            try:
                await self._deliver()
            finally:
                text = await self._finish()
        finally:
            telemetry.reply_ended()
        await self._report(text)
        if self.sources:
            await notify(self.out, sources_text(self.sources))

    async def _events(self) -> AsyncGenerator[ReplyEvent, None]:
        """What the adapter shows: text deltas, and where the reply waits in line."""
        queue = self.queue
        parts = self.parts
        while True:
            saver = self.saver
            if saver is not None and any(i not in self.saved_ids for i in self.shown_ids):
                # What is on screen is recorded before more is shown: a process dying now
                # leaves at most a reply's first words unrecorded, never a whole reply that
                # recovery could not find to edit.
                await asyncio.wait([saver])
            event = await queue.get()
            if isinstance(event, TextDelta):
                parts.append(event.text)
                if not self.first_seen and event.text:
                    self.first_seen = True
                    self.replier.telemetry.first_token(self.replier.clock_time() - self.began)
                if self.saver is None and self.replier.clock_time() >= self.next_save:
                    save_progress(self)
                if self.resuming is None:
                    yield event.text
                elif len(held := "".join(parts).lstrip()) >= 3:
                    # Enough to see whether the model reopened the cut reply's code block.
                    self.prefix = reopening(self.resuming, self.msg.text, held)
                    self.resuming = None
                    yield self.prefix + "".join(parts)
            elif isinstance(event, End):
                self.error = event.error
                if self.resuming is not None and parts:
                    yield "".join(parts)  # too short to be code: shown as it is
                if cut(self):
                    yield cut_ending(self.prefix + "".join(parts))  # shown, never stored
                return
            elif isinstance(event, Finish):
                self.finish = event
            elif isinstance(event, Usage):
                self.usage = event
            elif isinstance(event, QueuePosition):
                yield event  # shown by the adapter, never part of the reply's text
            elif isinstance(event, ToolCallDelta):
                call = self.tool_calls.setdefault(
                    event.index, {"id": "", "name": "", "arguments": ""}
                )
                call["id"] = event.id or call["id"]
                call["name"] = event.name or call["name"]
                call["arguments"] += event.arguments

    async def _deliver(self) -> None:
        try:
            events = self._events()
            try:
                self.platform_ids = await self.out.stream_reply(events, partial(posted, self))
            finally:
                await events.aclose()
        except asyncio.CancelledError:
            self.stop()
            raise
        except Exception:
            self.delivery_failed = True
            _log.exception("the %s adapter failed to deliver a reply", self.msg.platform)

    async def _finish(self) -> str:
        """End the producer, leave the runs in progress, record; return the reply's text."""
        producer = self.producer
        if producer is not None and not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        saver = self.saver
        if saver is not None:  # its ids must be recorded before the final record's
            await asyncio.wait([saver])
        active = self.replier.active
        if active.get(self.key) is self:
            del active[self.key]
        text = self.text = "".join(self.parts)
        await asyncio.shield(record(self, text, status_of(self, text)))
        return text

    @property
    def tool_round(self) -> bool:
        """Whether the model ended this round with tool calls (and nothing went wrong)."""
        return bool(self.tool_calls) and not (
            self.abandoned or self.delivery_failed or self.stopped or self.error is not None
        )

    async def _report(self, text: str) -> None:
        msg, error = self.msg, self.error
        if error is not None:
            self.replier.telemetry.error(error_kind(error))
        elif self.delivery_failed:
            self.replier.telemetry.error("delivery")
        if self.abandoned:
            _log.info("reply in %s chat %s left to recovery", msg.platform, msg.chat_id)
        elif error is not None:
            if isinstance(error, ChinwagError):
                _log.warning("backend error in %s chat %s: %s", msg.platform, msg.chat_id, error)
                await notify(self.out, error.user_message)
            else:
                _log.error("unexpected backend failure", exc_info=error)
                await notify(self.out, BackendError.user_message)
        elif self.stopped:
            _log.info("reply stopped by the user in %s chat %s", msg.platform, msg.chat_id)
        elif not self.delivery_failed and not text.strip() and not self.tool_calls:
            await notify(self.out, EMPTY_MODEL_REPLY)
        if self.images_refused and error is None and not self.abandoned:
            await notify(self.out, images_refused_notice(self.model))


__all__ = ["Replier", "ReplyRun"]
