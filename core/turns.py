"""The tool loop: model rounds, tool calls through the gate, results back to the model.

A user message starts round 1 (a :class:`~core.reply.ReplyRun`, streamed as any reply). When
the model ends a round with tool calls, the round's row is stored with its calls
(``MemoryStore.save_tool_calls``) and every call goes through the gate (:mod:`core.gate`),
with one audit row each. Then:

* denied and invalid calls are answered at once (the model reads why);
* allowed (``read``) calls run concurrently, each within ``TOOL_TIMEOUT_SECONDS``, and each
  result is stored before the model continues: a crash after that replays the stored
  results instead of running the call again;
* ``act``/``dangerous`` calls become pending confirmations (:mod:`core.tool_actions`); the
  round is stored ``awaiting`` and the conversation's lane is free. A press resolves them;
  once every call of the round is resolved, the model continues in the lane
  (:meth:`ToolLoop.resume_round`).

Once every call is resolved the round is stored ``tool_calls`` and the next round is a new
reply row. At most ``TOOL_MAX_ROUNDS`` rounds with tool calls per user message: the calls of
the round past the limit are answered "not run" and the bot says it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Protocol

from core.gate import Call, ToolGate, proposed
from core.kb import Grounding
from core.notices import notify
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache
from core.reply import Replier
from core.rounds import (
    ROUND_LIMIT,
    ROUND_STATUSES,
    TOOL_FAILED,
    calls_of,
    result,
    results_of,
    round_text,
)
from core.sessions import Budget
from core.settings import ToolSettings
from core.tools import Tool, ToolError, ToolResult, spec
from core.types import (
    AuditEntry,
    ConversationKey,
    IncomingMessage,
    MessageStatus,
    NewMessage,
    PendingToolCall,
    Role,
    StoredMessage,
    ToolDecision,
    UsageRecord,
)

_log = logging.getLogger(__name__)

TOOLS_GUIDANCE: Final = (
    "You can call tools. To do something or to look something up, call the right tool "
    "instead of saying you did it. Never say an action happened unless a tool result says "
    "so; if a tool fails or is declined, say that plainly."
)
"""Added to the system prompt of a bot whose model is offered tools."""

NO_TOOLS_NOTICE: Final = (
    "Note: the model in use ({model}) can't use tools, so I can't act or look things up "
    "for you with it; I can only chat."
)
"""Told once per conversation when the bot has tools but the model can't use them."""

ROUND_LIMIT_NOTICE: Final = (
    "I stopped after {rounds} tool rounds for this message without a final answer. "
    "Ask again (more precisely, perhaps) if you want me to go on."
)


@dataclass(frozen=True, slots=True)
class Continuation:
    """A round whose confirmations were all answered: continue the model in the lane."""

    conversation_id: int
    message_id: int


@dataclass(slots=True)
class TurnContext:
    """What every round of one user message's turn shares."""

    key: ConversationKey
    msg: IncomingMessage
    out: ReplyChannel
    model: str
    system_prompt: str
    budget: Budget
    rounds: int = 0  # rounds with tool calls so far for this user message
    grounding: Grounding | None = None  # the knowledge base's chunks, retrieved once


@dataclass(slots=True)
class Executed:
    """One call's execution: the result, its status and how long it took."""

    result: ToolResult
    status: str  # ok, error, timeout
    duration_ms: float = field(default=0.0)


class Confirming(Protocol):
    """Asks a person to confirm ``act``/``dangerous`` calls (``core.tool_actions``)."""

    async def pend(
        self, turn: TurnContext, row: StoredMessage, calls: Sequence[Call]
    ) -> Sequence[PendingToolCall]:
        """Store the calls as pending confirmations (before the round is ``awaiting``)."""
        ...

    async def ask(
        self, turn: TurnContext, calls: Sequence[Call], pending: Sequence[PendingToolCall]
    ) -> None:
        """Ask the user about each (after the round is stored ``awaiting``)."""
        ...


class ToolLoop:
    """Runs the rounds of a turn; built by the engine.

    Args:
        store: the memory store.
        backend: the LLM backend (``supports_tools``, token counts).
        replier: starts each round's reply run.
        gate: the tool policy.
        settings: the loop's limits.
        history: the engine's history cache (dropped for a conversation whose rounds change).
        clock: the current UTC time.
        bot_name: ``BOT_NAME``, for the audit.
        owner: this process's instance id (the owner of reply rows it creates).
    """

    def __init__(
        self,
        *,
        store: MemoryStore,
        backend: LLMBackend,
        replier: Replier,
        gate: ToolGate,
        settings: ToolSettings,
        history: HistoryCache,
        clock: Callable[[], datetime],
        bot_name: str,
        owner: Callable[[], str],
    ) -> None:
        self.store = store
        self.backend = backend
        self.replier = replier
        self.gate = gate
        self.settings = settings
        self.history = history
        self.clock = clock
        self.bot_name = bot_name
        self._owner = owner
        self.confirming: Confirming | None = None
        self._told_no_tools: OrderedDict[int, None] = OrderedDict()

    # --- the rounds ----------------------------------------------------------------------

    async def answer(
        self, turn: TurnContext, placeholder: StoredMessage, shown: Sequence[str] = ()
    ) -> None:
        """Answer into ``placeholder``, round after round.

        Ends with a reply without tool calls, a confirmation to wait for, or the round limit.
        """
        can_use = self.backend.supports_tools(turn.model)
        while True:
            offered = self.gate.offered(turn.msg) if can_use else {}
            specs = [spec(t) for t in offered.values()]
            system = f"{turn.system_prompt}\n\n{TOOLS_GUIDANCE}" if specs else turn.system_prompt
            run = self.replier.start(
                turn.key,
                turn.msg,
                turn.out,
                placeholder,
                turn.model,
                system,
                turn.budget,
                shown,
                specs,
                turn.grounding,
            )
            await run.run()
            if not can_use and self.gate.enabled:
                await self._tell_no_tools(turn, placeholder.conversation_id)
            if not run.tool_round:
                return
            turn.rounds += 1
            calls = proposed(run.tool_calls)
            following = await self.settle(turn, placeholder, run.text, calls, run.spent, offered)
            if following is None:
                return
            placeholder, shown = following, ()

    async def settle(
        self,
        turn: TurnContext,
        row: StoredMessage,
        text: str,
        calls: list[Call],
        usage: UsageRecord | None,
        offered: dict[str, Tool],
    ) -> StoredMessage | None:
        """Store a round's calls, gate and audit them, run or ask.

        Returns the next round's reply row when the model goes on now, else ``None`` (the
        round limit, or calls waiting for a person).
        """
        over = turn.rounds > self.settings.tool_max_rounds
        if not over:
            for call in calls:
                self.gate.check(turn.msg, call, offered)
        records = [c.record() for c in calls]
        if not over and not any(c.decision is ToolDecision.PENDING for c in calls):
            return await self._run_round(turn, row, text, calls, records, usage)
        saved = self.store.save_tool_calls(row.id, records, content=text)
        if over:
            await saved
            row = replace(row, content=text, extra={"tool_calls": records})
            results = await self._refuse_all(turn, row, calls)
            await self.finish_round(turn.model, row, MessageStatus.TOOL_CALLS, results, usage)
            await notify(turn.out, ROUND_LIMIT_NOTICE.format(rounds=self.settings.tool_max_rounds))
            return None
        # Calls that wait for a person: the calls and their audit rows are stored before
        # anything runs; written at once, they share one commit where the store groups
        # writes (SQLite).
        await asyncio.gather(saved, self.audit_all(turn.msg, calls))
        row = replace(row, content=text, extra={"tool_calls": records})
        results = await self.resolve(turn, row, calls, audited=True)
        if await self._wait_for_people(turn, row, calls, results, usage):
            return None
        await self.finish_round(
            turn.model, row, MessageStatus.TOOL_CALLS, results, usage, in_lane=True
        )
        return await self.next_placeholder(row.conversation_id)

    async def _run_round(
        self,
        turn: TurnContext,
        row: StoredMessage,
        text: str,
        calls: Sequence[Call],
        records: list[dict[str, Any]],
        usage: UsageRecord | None,
    ) -> StoredMessage:
        """A round with nothing to confirm: run its reads, then one write; the next row.

        The read calls start at once, while their audit rows are written (a read has no side
        effect: a crash before the round's write only makes the model ask again, and the
        audit shows the call). Then the round's calls and results, the audit rows' results
        and durations, the round's status and the next round's row are written together,
        one commit where the store groups writes: the results are stored before the model
        continues.
        """
        allowed = [c for c in calls if c.decision is ToolDecision.ALLOWED]
        audited = asyncio.ensure_future(self.audit_all(turn.msg, calls))
        try:
            ran = await asyncio.gather(*(self._execute(c) for c in allowed))
        finally:
            await audited
        executed = dict(zip((c.id for c in allowed), ran, strict=True))
        results: dict[str, dict[str, Any]] = {}
        writes: list[Awaitable[Any]] = []
        for call in calls:
            done = executed.get(call.id)
            if done is None:
                results[call.id] = result(call.error or "Error.", call.decision.value)
                continue
            results[call.id] = result(done.result.content, done.status)
            if call.audit_id is not None:
                writes.append(
                    self.store.finish_audit(
                        call.audit_id, result_status=done.status, duration_ms=done.duration_ms
                    )
                )
        writes.append(self.store.save_tool_calls(row.id, records, content=text, results=results))
        row = replace(row, content=text, extra={"tool_calls": records})
        following = asyncio.ensure_future(self.next_placeholder(row.conversation_id))
        await asyncio.gather(
            *writes,
            self.finish_round(
                turn.model, row, MessageStatus.TOOL_CALLS, results, usage, in_lane=True
            ),
            following,
        )
        return following.result()

    async def _wait_for_people(
        self,
        turn: TurnContext,
        row: StoredMessage,
        calls: Sequence[Call],
        results: Mapping[str, Any],
        usage: UsageRecord | None,
    ) -> bool:
        """Pend the round's ``act``/``dangerous`` calls and ask; whether there were any."""
        waiting = [c for c in calls if c.decision is ToolDecision.PENDING]
        if not waiting:
            return False
        confirming = self.confirming
        if confirming is None:  # nobody to ask: such calls can never run
            for call in waiting:
                await self.store.save_tool_result(
                    row.id, call.id, result("Denied: no way to confirm it here.", "denied")
                )
            return False
        pending = await confirming.pend(turn, row, waiting)
        await self.finish_round(turn.model, row, MessageStatus.AWAITING, results, usage)
        await confirming.ask(turn, waiting, pending)
        return True

    async def audit_all(self, msg: IncomingMessage, calls: Sequence[Call]) -> None:
        """Write every call's audit row at once, in order (``Call.audit_id`` set)."""
        ids = await asyncio.gather(*(self.audit(msg, c, c.decision) for c in calls))
        for call, audit_id in zip(calls, ids, strict=True):
            call.audit_id = audit_id

    async def resolve(
        self,
        turn: TurnContext,
        row: StoredMessage,
        calls: Sequence[Call],
        *,
        audited: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """Audit the calls (unless ``audited``); answer denied/invalid ones; run the rest.

        The allowed calls run concurrently. Returns the results stored now, by call id
        (pending calls have none yet).
        """
        if not audited:
            await self.audit_all(turn.msg, calls)
        results: dict[str, dict[str, Any]] = {}
        for call in calls:
            if call.decision in (ToolDecision.DENIED, ToolDecision.INVALID):
                found = result(call.error or "Error.", call.decision.value)
                await self.store.save_tool_result(row.id, call.id, found)
                results[call.id] = found
        allowed = [c for c in calls if c.decision is ToolDecision.ALLOWED]
        ran = await asyncio.gather(*(self.run_call(row.id, c) for c in allowed))
        results.update((c.id, found) for c, (found, _) in zip(allowed, ran, strict=True))
        return results

    async def run_call(self, message_id: int, call: Call) -> tuple[dict[str, Any], Executed]:
        """Execute an allowed or confirmed call; store its result and finish its audit."""
        assert call.tool is not None and call.args is not None
        executed = await self.execute(call.tool, call.args)
        found = result(executed.result.content, executed.status)
        saved = self.store.save_tool_result(message_id, call.id, found)
        if call.audit_id is None:
            await saved
            return found, executed
        # Independent rows: written at once, they share one commit where the store groups
        # writes (SQLite); both are stored before the model continues.
        await asyncio.gather(
            saved,
            self.store.finish_audit(
                call.audit_id, result_status=executed.status, duration_ms=executed.duration_ms
            ),
        )
        return found, executed

    def _execute(self, call: Call) -> Awaitable[Executed]:
        assert call.tool is not None and call.args is not None  # an allowed call
        return self.execute(call.tool, call.args)

    async def execute(self, tool: Tool, args: dict[str, Any]) -> Executed:
        """Run one call within ``TOOL_TIMEOUT_SECONDS``; failures become error results."""
        limit = self.settings.tool_timeout_seconds
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):  # no extra task, unlike wait_for
                found = await tool.invoke(args)
            status = "ok" if found.ok else "error"
        except ToolError as exc:
            found, status = ToolResult(f"Error: {exc}", ok=False), "error"
        except TimeoutError:
            found = ToolResult(f"Error: the tool did not answer within {limit:g} s.", ok=False)
            status = "timeout"
        except Exception:
            _log.exception("the tool %s failed", tool.name)
            found, status = ToolResult(TOOL_FAILED, ok=False), "error"
        return Executed(found, status, (time.perf_counter() - started) * 1000)

    async def audit(self, msg: IncomingMessage, call: Call, decision: ToolDecision) -> int:
        """Write a proposed call's audit row (arguments redacted); return its id."""
        self.replier.telemetry.tool_call(call.name, decision.value)
        return await self.store.add_audit(self.audit_entry(msg, call, decision))

    def audit_entry(
        self,
        msg: IncomingMessage,
        call: Call,
        decision: ToolDecision,
        executed: Executed | None = None,
    ) -> AuditEntry:
        """A call's audit row; with ``executed``, complete with its result and duration."""
        record = call.record()
        return AuditEntry(
            at=self.clock(),
            bot=self.bot_name,
            platform=msg.platform,
            chat_id=msg.chat_id,
            user_id=msg.user_id,
            tool=call.name,
            source=str(record["source"]),
            arguments=call.audited_arguments(),
            risk=str(record["risk"]),
            decision=decision,
            result_status=executed.status if executed else None,
            duration_ms=executed.duration_ms if executed else None,
        )

    async def _refuse_all(
        self, turn: TurnContext, row: StoredMessage, calls: Sequence[Call]
    ) -> dict[str, dict[str, Any]]:
        """The round past the limit: every call answered "not run" (and audited so)."""
        results: dict[str, dict[str, Any]] = {}
        for call in calls:
            await self.audit(turn.msg, call, ToolDecision.CANCELLED)
            found = result(ROUND_LIMIT, "cancelled")
            await self.store.save_tool_result(row.id, call.id, found)
            results[call.id] = found
        return results

    async def finish_round(
        self,
        model: str,
        row: StoredMessage,
        status: MessageStatus,
        results: Mapping[str, Any],
        usage: UsageRecord | None,
        *,
        in_lane: bool = False,
    ) -> None:
        """Store a round's status (``row`` holds its text and calls), tokens counting all.

        ``in_lane``: the turn's own round, finished in its lane with ``results`` complete; the
        history cache then takes the round as stored instead of being dropped, so the next
        round's prompt needs no store read.
        """
        text = row.content
        calls = calls_of(row)
        tokens = await self.backend.count_tokens(round_text(text, calls, results), model)
        tokenizer = self.backend.tokenizer_name(model)
        await self.store.finish_message(
            row.id,
            content=text,
            status=status,
            token_count=tokens,
            tokenizer=tokenizer,
            usage=usage,
        )
        newest = self.history.newest_seq(row.conversation_id)
        complete = all(str(c["id"]) in results for c in calls)
        if in_lane and complete and newest is not None and newest < row.seq:
            extra = {**(row.extra or {}), "tool_results": dict(results)}
            stored = replace(
                row, status=status, token_count=tokens, tokenizer=tokenizer, extra=extra
            )
            self.history.add(stored)
        else:
            self.history.drop(row.conversation_id)

    async def next_placeholder(self, conversation_id: int) -> StoredMessage:
        """A new reply row, in progress, for the next round."""
        (placeholder,) = await self.store.append_messages(
            conversation_id,
            [
                NewMessage(
                    role=Role.ASSISTANT,
                    content="",
                    status=MessageStatus.IN_PROGRESS,
                    owner=self._owner(),
                )
            ],
        )
        return placeholder

    async def find_row(self, conversation_id: int, message_id: int) -> StoredMessage | None:
        """A stored round row by id (they are among the newest rows of a conversation)."""
        before: int | None = None
        for _ in range(16):
            rows = await self.store.recent_messages(conversation_id, limit=32, before_seq=before)
            for row in rows:
                if row.id == message_id:
                    return row
            if len(rows) < 32 or rows[-1].id < message_id:
                return None
            before = rows[-1].seq
        return None

    async def rounds_before(self, conversation_id: int, before_seq: int) -> int:
        """How many rounds with tool calls answer the newest user message before a row."""
        limit = self.settings.tool_max_rounds * 2 + 4
        rows = await self.store.recent_messages(conversation_id, limit=limit, before_seq=before_seq)
        count = 0
        for row in rows:
            if row.role is Role.USER:
                break
            if row.status in ROUND_STATUSES:
                count += 1
        return count

    # --- after confirmations, and after a crash --------------------------------------------

    async def resume_round(self, turn: TurnContext, continuation: Continuation) -> None:
        """In the lane: a round whose confirmations were all answered goes on (once)."""
        conversation_id, message_id = continuation.conversation_id, continuation.message_id
        row = await self.find_row(conversation_id, message_id)
        if row is None or row.status is not MessageStatus.AWAITING:
            return  # already continued, or gone (/reset, /forget)
        if await self.store.pending_calls(conversation_id, message_id=message_id):
            return  # another call of the round still waits
        if not await self.store.claim_round(row.id):
            return  # another process continued it
        results = results_of(row)
        await self.finish_round(turn.model, row, MessageStatus.TOOL_CALLS, results, None)
        newest = await self.store.recent_messages(conversation_id, limit=1)
        if any(r.get("status") == "cancelled" for r in results.values()) or (
            newest and newest[0].seq > row.seq
        ):
            return  # the conversation moved on: no answer to a stale question
        turn.rounds = await self.rounds_before(conversation_id, row.seq + 1)
        placeholder = await self.next_placeholder(conversation_id)
        await self.answer(turn, placeholder)

    async def replay(self, turn: TurnContext, row: StoredMessage) -> None:
        """A round a crash left in progress: continue from its stored results.

        Calls with a stored result are neither asked for again nor executed again; the
        missing ones go through the gate again (``read`` calls run, ``act`` calls ask).
        """
        conversation_id = row.conversation_id
        if await self.store.pending_calls(conversation_id, message_id=row.id):
            await self.finish_round(turn.model, row, MessageStatus.AWAITING, results_of(row), None)
            return
        done = results_of(row)
        calls = [
            Call(str(c["id"]), str(c.get("name", "")), str(c.get("arguments") or ""))
            for c in calls_of(row)
            if str(c["id"]) not in done
        ]
        turn.rounds = await self.rounds_before(conversation_id, row.seq)
        offered = self.gate.offered(turn.msg) if self.backend.supports_tools(turn.model) else {}
        for call in calls:
            self.gate.check(turn.msg, call, offered)
        _log.info("replaying a tool round: %d call(s) without a result", len(calls))
        results = {**done, **await self.resolve(turn, row, calls)}
        if await self._wait_for_people(turn, row, calls, results, None):
            return
        await self.finish_round(turn.model, row, MessageStatus.TOOL_CALLS, results, None)
        placeholder = await self.next_placeholder(conversation_id)
        await self.answer(turn, placeholder)

    async def _tell_no_tools(self, turn: TurnContext, conversation_id: int) -> None:
        told = self._told_no_tools
        if conversation_id in told or not self.gate.offered(turn.msg):
            return
        told[conversation_id] = None
        if len(told) > 10_000:
            told.popitem(last=False)
        await notify(turn.out, NO_TOOLS_NOTICE.format(model=turn.model))


def arguments_json(args: dict[str, Any]) -> str:
    """Validated arguments as stored JSON."""
    return json.dumps(args, ensure_ascii=False, default=str)


__all__ = [
    "NO_TOOLS_NOTICE",
    "ROUND_LIMIT_NOTICE",
    "TOOLS_GUIDANCE",
    "Continuation",
    "Executed",
    "ToolLoop",
    "TurnContext",
    "arguments_json",
]
