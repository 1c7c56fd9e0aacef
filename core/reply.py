"""Writing one reply: build the prompt, stream the model's answer to the user, record it.

A :class:`ReplyRun` owns everything about one reply: the producer task that reads the
backend, the stream of events the adapter shows (text deltas, and ``QueuePosition`` while a
busy model keeps the reply waiting), ``/stop``, the final status and the record in the store.

When the server says the prompt does not fit, the prompt is built again from the budget of
the model's window as the backend knows it now (it may just have learned the real one from
the refusal); only when the window did not change is the prompt budget halved. A reply the
token limit cut (the backend's ``Finish`` says ``length``) is stored as ``CUT`` and shown
with its open code block closed and a notice after it; the notice is the bot's, never part
of the stored text, so the user's "continue" resumes the reply from the model's own words.
A continuation that starts inside the cut reply's code block is shown with the block's
opening line before it (unless the model opened one itself), so its code renders as code.

:class:`Replier` holds what all runs share (the backend, the store, the global cap on
concurrent LLM calls) and the runs in progress, so ``/stop`` and shutdown can reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from core.errors import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChinwagError,
    ContextTooLong,
    ImagesRefused,
    StoreError,
)
from core.kb import (
    Grounding,
    fit_documents,
    retrieval_record,
    source_records,
    sources_for,
    sources_text,
)
from core.knowledge import Source
from core.notices import (
    EMPTY_MODEL_REPLY,
    asks_to_continue,
    cut_ending,
    images_refused_notice,
    notify,
    reopening,
)
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache, Prompt, PromptBuilder
from core.sessions import Budget
from core.settings import LLMSettings
from core.telemetry import NO_TELEMETRY, Telemetry, error_kind
from core.types import (
    CompletionRequest,
    ConversationKey,
    Finish,
    IncomingMessage,
    MessageStatus,
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

_ATTEMPTS = 3  # a prompt refused as too long is built again, smaller, up to twice


class _End:
    """The producer's last word on the queue: finished, or failed with ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


_DONE = _End()

PROGRESS_INTERVAL: Final = 1.0
"""Seconds between two saves of a streaming reply's text."""


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
        "_next_save",
        "_r",
        "_saver",
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
        "out",
        "parts",
        "placeholder",
        "platform_ids",
        "prefix",
        "producer",
        "prompt_tokens",
        "queue",
        "resuming",
        "saved_ids",
        "saved_len",
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
        self._r = replier
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
        self._saver: asyncio.Task[None] | None = None
        self._next_save = replier.clock_time() + PROGRESS_INTERVAL
        self.began = replier.clock_time()
        self.first_seen = False  # the first text was timed (chinwag_first_token_seconds)

    def stop(self) -> None:
        """End the generation now (``/stop``, shutdown); what was written is kept."""
        self.stopped = True
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()

    async def run(self) -> None:
        """Stream, record, then tell the user about an error or an empty answer."""
        telemetry = self._r.telemetry
        self.began = self._r.clock_time()
        telemetry.reply_started()
        try:
            self.producer = asyncio.create_task(
                self._produce(), name=f"chinwag-llm-{self.key.platform}"
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

    async def _request(self) -> CompletionRequest:
        budget = self.budget

        def build(system_prompt: str) -> Awaitable[Prompt]:
            return self._r.prompts.build(
                conversation_id=self.placeholder.conversation_id,
                before_seq=self.placeholder.seq,
                system_prompt=system_prompt,
                model=self.model,
                budget=budget.prompt,
                shared=self.key.user_id is None,
            )

        hits = self.grounding.hits if self.grounding is not None else ()
        prompt, self.documents = await fit_documents(build, self.system_prompt, hits)
        self.prompt_tokens = prompt.tokens
        previous = prompt.previous
        self.resuming = None
        if previous is not None and previous.status is MessageStatus.CUT:
            self.resuming = previous.content if asks_to_continue(self.msg.text) else None
        return CompletionRequest(
            messages=prompt.messages,
            model=self.model,
            temperature=self._r.llm.temperature,
            max_tokens=budget.max_tokens,
            tools=self.tools,
        )

    def _shrink(self) -> None:
        """A smaller budget after the prompt was refused as too long (see the module doc)."""
        old = self.budget
        fresh = self._r.budgets(self.model)
        self.budget = fresh if fresh.window != old.window else old.halved()
        _log.info(
            "context too long for %s; prompt budget %d -> %d tokens (window %d)",
            self.model,
            old.prompt,
            self.budget.prompt,
            self.budget.window,
        )

    async def _produce(self) -> None:
        """Read the backend into the queue; always end with an ``_End``."""
        queue = self.queue
        sent_any = False
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                request = await self._request()
                async with self._r.slots:
                    stream = self._r.backend.stream(request)
                    try:
                        async for event in stream:
                            if isinstance(event, TextDelta) and event.text:
                                sent_any = True
                            queue.put_nowait(event)
                    finally:
                        closer = getattr(stream, "aclose", None)
                        if closer is not None:
                            await closer()
                self._r.telemetry.llm_result(True)
                queue.put_nowait(_DONE)
                return
            except (BackendUnavailable, BackendTimeout) as exc:
                # A busy local model is there, just full: reachable.
                self._r.telemetry.llm_result(isinstance(exc, BackendBusy))
                queue.put_nowait(_End(exc))
                return
            except ContextTooLong as exc:
                if attempt < _ATTEMPTS and not sent_any:
                    self._shrink()
                    continue
                queue.put_nowait(_End(exc))
                return
            except ImagesRefused as exc:
                # The server is text-only for this model after all: the backend now says
                # so (supports_images), the next prompt leaves the images out, and the
                # user is told once the text is answered.
                _log.info("%s refused images; answering the text alone", exc.model)
                if attempt < _ATTEMPTS and not sent_any:
                    self.images_refused = True
                    continue
                queue.put_nowait(_End(exc))
                return
            except asyncio.CancelledError:
                queue.put_nowait(_DONE)
                raise
            except Exception as exc:
                queue.put_nowait(_End(exc))
                return

    async def _events(self) -> AsyncGenerator[ReplyEvent, None]:
        """What the adapter shows: text deltas, and where the reply waits in line."""
        queue = self.queue
        parts = self.parts
        while True:
            event = await queue.get()
            if isinstance(event, TextDelta):
                parts.append(event.text)
                if not self.first_seen and event.text:
                    self.first_seen = True
                    self._r.telemetry.first_token(self._r.clock_time() - self.began)
                if self._saver is None and self._r.clock_time() >= self._next_save:
                    self._save_progress()
                if self.resuming is None:
                    yield event.text
                elif len(held := "".join(parts).lstrip()) >= 3:
                    # Enough to see whether the model reopened the cut reply's code block.
                    self.prefix = reopening(self.resuming, self.msg.text, held)
                    self.resuming = None
                    yield self.prefix + "".join(parts)
            elif isinstance(event, _End):
                self.error = event.error
                if self.resuming is not None and parts:
                    yield "".join(parts)  # too short to be code: shown as it is
                if self._cut():
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
                self.platform_ids = await self.out.stream_reply(events, self._posted)
            finally:
                await events.aclose()
        except asyncio.CancelledError:
            self.stop()
            raise
        except Exception:
            self.delivery_failed = True
            _log.exception("the %s adapter failed to deliver a reply", self.msg.platform)

    # --- progress --------------------------------------------------------------------

    def _posted(self, platform_ids: Sequence[str]) -> None:
        """The adapter posted a message of this reply: store the ids soon."""
        self.shown_ids = tuple(platform_ids)
        if self._saver is None:
            self._save_progress()

    def _save_progress(self) -> None:
        self._saver = asyncio.create_task(self._save(), name="chinwag-reply-progress")

    async def _save(self) -> None:
        """Save what changed (new ids, the text) until nothing is left to save."""
        r = self._r
        try:
            while True:
                ids = [i for i in self.shown_ids if i not in self.saved_ids]
                text = "".join(self.parts)
                content = text if len(text) != self.saved_len else None
                if not ids and content is None:
                    return
                await r.store.save_progress(
                    self.placeholder.id,
                    content=content,
                    platform_chat_id=self.msg.chat_id,
                    platform_message_ids=ids,
                )
                self.saved_ids.update(ids)
                self.saved_len = len(text)
                self._next_save = r.clock_time() + PROGRESS_INTERVAL
                if not [i for i in self.shown_ids if i not in self.saved_ids]:
                    return
        except StoreError as exc:
            _log.warning("could not save a reply's progress: %s", exc)
        finally:
            self._saver = None

    async def _finish(self) -> str:
        """End the producer, leave the runs in progress, record; return the reply's text."""
        producer = self.producer
        if producer is not None and not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        saver = self._saver
        if saver is not None:  # its ids must be recorded before the final record's
            await asyncio.wait([saver])
        active = self._r.active
        if active.get(self.key) is self:
            del active[self.key]
        text = self.text = "".join(self.parts)
        await asyncio.shield(self._record(text, self._status(text)))
        return text

    @property
    def tool_round(self) -> bool:
        """Whether the model ended this round with tool calls (and nothing went wrong)."""
        return bool(self.tool_calls) and not (
            self.abandoned or self.delivery_failed or self.stopped or self.error is not None
        )

    def _cut(self) -> bool:
        """Whether the token limit cut the reply (and there is text to continue from)."""
        finish = self.finish
        return (
            finish is not None
            and finish.cut
            and self.error is None
            and not self.stopped
            and any(part.strip() for part in self.parts)
        )

    def _status(self, text: str) -> MessageStatus:
        if self.abandoned:
            return MessageStatus.IN_PROGRESS
        if self.delivery_failed:
            return MessageStatus.FAILED
        if self.stopped:
            return MessageStatus.INTERRUPTED
        if self.error is not None:
            return MessageStatus.INTERRUPTED if text else MessageStatus.FAILED
        return MessageStatus.CUT if self._cut() else MessageStatus.COMPLETE

    async def _record(self, text: str, status: MessageStatus) -> None:
        r, msg, usage = self._r, self.msg, self.usage
        if usage is not None:
            reply_tokens = usage.completion_tokens
        else:
            reply_tokens = await r.backend.count_tokens(text, self.model) if text else 0
        spent = status is not MessageStatus.FAILED or bool(text)
        tokenizer = r.backend.tokenizer_name(self.model)
        record = (
            UsageRecord(
                r.bot_name,
                msg.platform,
                msg.user_id,
                r.clock().date(),
                prompt_tokens=usage.prompt_tokens if usage else self.prompt_tokens,
                completion_tokens=reply_tokens,
            )
            if spent
            else None
        )
        if record is not None:
            r.telemetry.llm_tokens(record.prompt_tokens, record.completion_tokens)
        ids = tuple(i for i in self.platform_ids if i not in self.saved_ids)
        if self.tool_round:
            # The tool loop stores the round (calls, results, status) and its usage.
            self.spent = record
            if ids:
                await r.store.save_progress(
                    self.placeholder.id,
                    content=None,
                    platform_chat_id=msg.chat_id,
                    platform_message_ids=ids,
                )
            return
        extra = self._knowledge(text, status)
        await r.store.finish_message(
            self.placeholder.id,
            content=text,
            status=status,
            token_count=reply_tokens,
            tokenizer=tokenizer,
            platform_chat_id=msg.chat_id,
            platform_message_ids=ids,
            usage=record,
            extra=extra,
        )
        if status is not MessageStatus.IN_PROGRESS:
            r.telemetry.reply_finished(msg.platform, status.value, r.clock_time() - self.began)
        r.history.add(
            replace(
                self.placeholder,
                content=text,
                status=status,
                token_count=reply_tokens,
                tokenizer=tokenizer,
                extra={**(self.placeholder.extra or {}), **extra}
                if extra
                else self.placeholder.extra,
            )
        )

    def _knowledge(self, text: str, status: MessageStatus) -> dict[str, Any] | None:
        """What the reply stores of the knowledge base: the retrieval, and its sources.

        The sources (the chunks the answer cited, else every chunk of the prompt) are kept
        for :meth:`run` to send after the answer; never in the reply's text.
        """
        grounding = self.grounding
        if grounding is None or not grounding.searched:
            return None
        extra: dict[str, Any] = {"retrieval": retrieval_record(grounding, self.documents)}
        shown = status in (MessageStatus.COMPLETE, MessageStatus.CUT, MessageStatus.INTERRUPTED)
        if self.documents and shown and text.strip():
            self.sources = sources_for(text, grounding.hits[: self.documents])
            extra["sources"] = source_records(self.sources)
        return extra

    async def _report(self, text: str) -> None:
        msg, error = self.msg, self.error
        if error is not None:
            self._r.telemetry.error(error_kind(error))
        elif self.delivery_failed:
            self._r.telemetry.error("delivery")
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
