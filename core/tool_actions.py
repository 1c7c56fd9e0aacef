"""Confirmations of tool calls: asking, the button press, cancelling and expiring.

An ``act`` or ``dangerous`` call waits for a person. It is stored as a pending call (in the
store, so it survives a restart) with the action id ``t:<token>`` and an expiry
(``TOOL_CONFIRM_SECONDS``), and the user is asked through ``ReplyChannel.ask_confirmation``.

A press (``Engine.handle_action``) is answered here: only the person who asked, or an admin,
may answer (anyone else gets a short refusal and nothing runs). The store decides the call
atomically (``claim_pending_call``): a double press, a redelivered button or two replicas
racing run it exactly once. A confirmed call is checked by the gate again and run with the
timeout; the bot then shows one factual line built from the result ("✅ light.kitchen → on",
"❌ ...: error"), never the model. Declined and expired calls are told to the model as
such. Once every call of the round is resolved, the model continues in the conversation's
lane (:class:`~core.turns.Continuation`).

A new message in the conversation cancels its pending calls (``/reset`` too; ``/forget``
deletes them); expired ones are swept at every heartbeat.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from core.access import AccessPolicy, format_wait
from core.gate import Call
from core.notices import notify
from core.ports import ReplyChannel
from core.rounds import CANCELLED, DECLINED, EXPIRED, result, results_of
from core.tools import Risk, plain_call
from core.turns import Continuation, Executed, ToolLoop, TurnContext, arguments_json
from core.types import (
    ClaimOutcome,
    ConversationKey,
    IncomingAction,
    IncomingMessage,
    MessageStatus,
    PendingState,
    PendingToolCall,
    StoredMessage,
    ToolDecision,
)

_log = logging.getLogger(__name__)

NOT_YOURS: Final = "Only the person who asked (or an admin) can answer this. Nothing was done."
UNKNOWN: Final = (
    "That request is no longer open (already answered, or not yours to answer). Nothing was done."
)
ALREADY: Final = "That request was already answered."
DECLINED_NOTICE: Final = "Declined: nothing was done."
EXPIRED_NOTICE: Final = "That request expired: nothing was done."
CANCELLED_NOTICE: Final = (
    "I cancelled {count} action(s) that were waiting for your confirmation: nothing was done."
)

Submit = Callable[[ConversationKey, IncomingMessage, ReplyChannel, Continuation], None]
"""Queues a continuation in the conversation's lane."""


@dataclass(frozen=True, slots=True)
class _Asked:
    """A question this process asked, answered or not (the store decides the call)."""

    call: PendingToolCall
    msg: IncomingMessage
    out: ReplyChannel | None


def question(msg: IncomingMessage, call: Call, seconds: float) -> str:
    """The confirmation's words: the action, the tool and arguments, who may answer, expiry."""
    dangerous = call.risk is Risk.DANGEROUS
    head = "⚠️ Dangerous action" if dangerous else "Action"
    shown = call.tool.redact(call.args) if call.tool and call.args is not None else {}
    who = msg.user_name or ("you" if msg.is_private else f"user {msg.user_id}")
    risk = "⚠️ dangerous" if dangerous else "act"
    return (
        f"{head}: {call.describe()}\n"
        f"Tool: {plain_call(call.name, shown)} (risk: {risk})\n"
        f"Run it? Only {who} (who asked) or an admin can answer; "
        f"this expires in {format_wait(seconds)}."
    )


def factual_line(call: Call, executed: Executed) -> str:
    """The bot's own line after an action ran, from its result (never the model's words)."""
    described = call.describe()
    if executed.status == "ok":
        return f"✅ {executed.result.summary or described}"
    error = executed.result.content.removeprefix("Error: ").strip() or executed.status
    if len(error) > 200:
        error = error[:197] + "..."
    return f"❌ {described}: {error}"


class ToolActions:
    """Pending tool calls and the answers to them; built by the engine.

    Args:
        loop: the tool loop (store, gate, execution, audit).
        access: who the admins are.
        submit: queues a continuation in a conversation's lane.
        channel_for: a channel into a stored chat (for expiry notices after a restart).
        owner: this process's instance id.
    """

    def __init__(
        self,
        *,
        loop: ToolLoop,
        access: AccessPolicy,
        submit: Submit,
        channel_for: Callable[[PendingToolCall], ReplyChannel | None],
        owner: Callable[[], str],
    ) -> None:
        self._loop = loop
        self._store = loop.store
        self._access = access
        self._submit = submit
        self._channel_for = channel_for
        self._owner = owner
        self._asked: OrderedDict[str, _Asked] = OrderedDict()

    # --- asking ------------------------------------------------------------------------

    async def pend(
        self, turn: TurnContext, row: StoredMessage, calls: Sequence[Call]
    ) -> Sequence[PendingToolCall]:
        """Store ``calls`` as pending confirmations, in one transaction."""
        loop = self._loop
        now = loop.clock()
        expires = now + timedelta(seconds=loop.settings.tool_confirm_seconds)
        pending = [
            PendingToolCall(
                id=f"t:{secrets.token_urlsafe(9)}",
                key=turn.key,
                chat_id=turn.msg.chat_id,
                user_id=turn.msg.user_id,
                conversation_id=row.conversation_id,
                message_id=row.id,
                call_id=call.id,
                tool=call.name,
                arguments=arguments_json(call.args or {}),
                risk=(call.risk or Risk.ACT).value,
                state=PendingState.PENDING,
                created_at=now,
                expires_at=expires,
                audit_id=call.audit_id,
            )
            for call in calls
        ]
        await self._store.add_pending_calls(pending)
        return pending

    async def ask(
        self, turn: TurnContext, calls: Sequence[Call], pending: Sequence[PendingToolCall]
    ) -> None:
        """Ask about each pending call (a platform refusing one is logged; it expires)."""
        seconds = self._loop.settings.tool_confirm_seconds
        for call, waiting in zip(calls, pending, strict=True):
            self._remember(_Asked(waiting, turn.msg, turn.out))
            try:
                await turn.out.ask_confirmation(question(turn.msg, call, seconds), waiting.id)
            except Exception:
                _log.exception("could not ask to confirm a %s call", call.name)

    def _remember(self, asked: _Asked) -> None:
        self._asked[asked.call.id] = asked
        while len(self._asked) > 10_000:
            self._asked.popitem(last=False)

    # --- the press ---------------------------------------------------------------------

    async def on_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        """Answer a press on a ``t:`` confirmation."""
        found = await self._find(action)
        if found is None:
            await notify(out, UNKNOWN)
            return
        call = found.call
        admin = self._access.is_admin(action.platform, action.user_id)
        if (call.key.platform, call.user_id) != (action.platform, action.user_id) and not admin:
            _log.info("refused a press on someone else's confirmation in %s", action.platform)
            await notify(out, NOT_YOURS)
            return
        claim = await self._store.claim_pending_call(
            call.id, owner=self._owner(), accept=action.accepted, now=self._loop.clock()
        )
        msg = found.msg
        if claim.outcome is ClaimOutcome.GONE:
            await notify(out, ALREADY)
            return
        decided = claim.call or call
        if claim.outcome is ClaimOutcome.CLAIMED:
            await self._run(decided, msg, out)
        elif claim.outcome is ClaimOutcome.REFUSED:
            await self._answer(decided, DECLINED, "declined", ToolDecision.REFUSED)
            await notify(out, DECLINED_NOTICE)
        else:
            await self._answer(decided, EXPIRED, "expired", ToolDecision.EXPIRED)
            await notify(out, EXPIRED_NOTICE)
        self._continue(decided, msg, out)

    async def _find(self, action: IncomingAction) -> _Asked | None:
        """The pending call pressed, and the message that led to it."""
        asked = self._asked.get(action.action_id)
        if asked is not None:
            return asked
        # Asked before a restart, or by another replica: the store has it.
        call = await self._store.pending_call(action.action_id)
        if call is None:
            return None
        found = _Asked(call, message_of(call, action.is_private), None)
        self._remember(found)  # a second press is "already answered"
        return found

    async def _run(self, call: PendingToolCall, msg: IncomingMessage, out: ReplyChannel) -> None:
        """A confirmed call: check it again, run it, store it, tell the factual line."""
        loop = self._loop
        checked = loop.gate.check(
            msg, Call(call.call_id, call.tool, call.arguments), loop.gate.offered(msg)
        )
        checked.audit_id = call.audit_id
        if checked.decision not in (ToolDecision.PENDING, ToolDecision.ALLOWED):
            await self._store.save_tool_result(
                call.message_id, call.call_id, result(checked.error or "Denied.", "denied")
            )
            await self._store.finish_pending_call(call.id, PendingState.DONE)
            if call.audit_id is not None:
                await self._store.finish_audit(call.audit_id, decision=ToolDecision.DENIED)
            await notify(out, f"❌ {checked.describe()}: no longer allowed; nothing was done.")
            return
        if call.audit_id is not None:
            await self._store.finish_audit(call.audit_id, decision=ToolDecision.CONFIRMED)
        _, executed = await loop.run_call(call.message_id, checked)
        await self._store.finish_pending_call(call.id, PendingState.DONE)
        await notify(out, factual_line(checked, executed))

    async def _answer(
        self, call: PendingToolCall, content: str, status: str, decision: ToolDecision
    ) -> None:
        """A call that will not run: its result for the model, its audit decision."""
        await self._store.save_tool_result(call.message_id, call.call_id, result(content, status))
        if call.audit_id is not None:
            await self._store.finish_audit(call.audit_id, decision=decision)

    def _continue(self, call: PendingToolCall, msg: IncomingMessage, out: ReplyChannel) -> None:
        self._submit(call.key, msg, out, Continuation(call.conversation_id, call.message_id))

    # --- cancelling and expiring ----------------------------------------------------------

    async def cancel(self, conversation_id: int, out: ReplyChannel, model: str) -> int:
        """The conversation moved on: cancel its pending calls, tell the user once."""
        cancelled = await self._store.cancel_pending_calls(conversation_id)
        if not cancelled:
            return 0
        for call in cancelled:
            await self._answer(call, CANCELLED, "cancelled", ToolDecision.CANCELLED)
        await self._close_rounds(cancelled, model)
        await notify(out, CANCELLED_NOTICE.format(count=len(cancelled)))
        return len(cancelled)

    async def expire(self, model: str) -> int:
        """Sweep calls past their expiry: the model is told, the user too when reachable."""
        loop = self._loop
        expired = await self._store.expire_pending_calls(loop.bot_name, loop.clock())
        continued: set[int] = set()
        for call in expired:
            await self._answer(call, EXPIRED, "expired", ToolDecision.EXPIRED)
            asked = self._asked.get(call.id)
            out = asked.out if asked is not None else self._channel_for(call)
            if out is None:
                continue
            await notify(out, f"The request to run {call.tool} expired: nothing was done.")
            if call.message_id not in continued:
                continued.add(call.message_id)
                msg = asked.msg if asked is not None else message_of(call, None)
                self._continue(call, msg, out)
        await self._close_rounds([c for c in expired if c.message_id not in continued], model)
        return len(expired)

    async def _close_rounds(self, calls: Iterable[PendingToolCall], model: str) -> None:
        """Store rounds whose every call is now resolved as ``tool_calls`` (no new round)."""
        loop = self._loop
        for conversation_id, message_id in {(c.conversation_id, c.message_id) for c in calls}:
            row = await loop.find_row(conversation_id, message_id)
            if row is None or row.status is not MessageStatus.AWAITING:
                continue
            if await self._store.pending_calls(conversation_id, message_id=message_id):
                continue
            await loop.finish_round(model, row, MessageStatus.TOOL_CALLS, results_of(row), None)


def message_of(call: PendingToolCall, is_private: bool | None) -> IncomingMessage:
    """The message that led to ``call``, as far as the gate and a reply run need it.

    ``is_private`` unknown (after a restart, no press): a slot of one user whose chat id is
    the user's id counts as private (true on Telegram).
    """
    key = call.key
    if is_private is None:
        is_private = key.user_id is not None and key.chat_id == key.user_id
    return IncomingMessage(
        platform=key.platform,
        chat_id=call.chat_id,
        user_id=call.user_id,
        text="",
        thread_id=key.thread_id,
        is_private=is_private,
    )


__all__ = ["ToolActions", "factual_line", "message_of", "question"]
