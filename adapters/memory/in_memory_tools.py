"""The tool part of :class:`adapters.memory.in_memory.InMemoryStore`.

Tool rounds (``extra["tool_calls"]`` / ``extra["tool_results"]`` of an assistant message),
calls waiting for a confirmation and the audit, with the semantics of
:mod:`adapters.memory.tooling` on SQL (the contract tests run over both).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from adapters.memory.validation import (
    audit_pseudonyms,
    check_audit,
    check_aware,
    check_pending,
    check_tool_calls,
    check_tool_result,
    is_expired,
)
from core.errors import StoreError
from core.text import safe_text
from core.types import (
    AuditEntry,
    ClaimOutcome,
    ConversationKey,
    MessageStatus,
    PendingClaim,
    PendingState,
    PendingToolCall,
    StoredMessage,
    ToolDecision,
)

_LIVE = (PendingState.PENDING, PendingState.RUNNING)


@dataclass(slots=True)
class ToolState:
    """What the in-memory store keeps for tools."""

    pending: dict[str, PendingToolCall] = field(default_factory=dict)
    audit: dict[int, AuditEntry] = field(default_factory=dict)
    next_audit: int = 1


class InMemoryTools:
    """Tool methods of the ``MemoryStore`` port over the in-memory store's dicts."""

    _tools: ToolState
    _secret: bytes
    _messages: dict[int, StoredMessage]
    _enter: Callable[[], Awaitable[None]]

    def _conversation_exists(self, conversation_id: int) -> bool:
        raise NotImplementedError  # provided by InMemoryStore

    def _conversation_slot(self, conversation_id: int) -> ConversationKey:
        raise NotImplementedError  # provided by InMemoryStore

    # --- tool rounds -----------------------------------------------------------------------

    async def save_tool_calls(
        self,
        message_id: int,
        calls: Sequence[Mapping[str, Any]],
        *,
        content: str | None = None,
        results: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Record the tool calls an assistant message ended with (``extra["tool_calls"]``).

        Replaces earlier calls of the message; other ``extra`` keys are kept; ``results``
        (by call id) are merged into ``extra["tool_results"]``. A message deleted meanwhile
        (``forget_user``) is left alone.

        Raises:
            ValueError: a call is not JSON-serialisable or lacks ``id``/``name``/``arguments``.
        """
        stored_calls = check_tool_calls(calls)
        found = {str(k): check_tool_result(v) for k, v in (results or {}).items()}
        await self._enter()
        message = self._messages.get(message_id)
        if message is None:
            return
        extra = dict(message.extra or {})
        extra["tool_calls"] = stored_calls
        if found:
            extra["tool_results"] = {**(extra.get("tool_results") or {}), **found}
        changed = replace(message, extra=extra)
        if content is not None:
            changed = replace(changed, content=safe_text(content))
        self._messages[message_id] = changed

    async def save_tool_result(
        self, message_id: int, call_id: str, result: Mapping[str, Any]
    ) -> None:
        """Record one call's result in ``extra["tool_results"][call_id]``; others are kept.

        Raises:
            ValueError: ``result`` is not JSON-serialisable.
        """
        stored_result = check_tool_result(result)
        await self._enter()
        message = self._messages.get(message_id)
        if message is None:
            return
        extra = dict(message.extra or {})
        results = dict(extra.get("tool_results") or {})
        results[call_id] = stored_result
        extra["tool_results"] = results
        self._messages[message_id] = replace(message, extra=extra)

    # --- pending confirmations ---------------------------------------------------------------

    async def add_pending_calls(self, calls: Sequence[PendingToolCall]) -> None:
        """Store calls waiting for a confirmation, all or nothing.

        Raises:
            StoreError: an id is already stored, or a conversation does not exist.
            ValueError: a timestamp is naive.
        """
        for call in calls:
            check_pending(call)
        if not calls:
            return
        await self._enter()
        ids = [c.id for c in calls]
        if len(set(ids)) != len(ids) or any(i in self._tools.pending for i in ids):
            raise StoreError("a pending tool call with the same id is already stored")
        for call in calls:
            if not self._conversation_exists(call.conversation_id):
                raise StoreError(f"conversation {call.conversation_id} does not exist")
        for call in calls:
            # As on SQL, the conversation's key is the call's key.
            key = self._conversation_slot(call.conversation_id)
            self._tools.pending[call.id] = _normalised(replace(call, key=key))

    async def claim_pending_call(
        self, pending_id: str, *, owner: str, accept: bool, now: datetime
    ) -> PendingClaim:
        """Decide a pending call atomically: exactly one of racing claimants wins.

        A call at or past ``expires_at`` becomes ``expired`` (whatever the answer); an
        unknown or already decided call is ``GONE`` (with the call, if it exists).

        Raises:
            ValueError: ``now`` is naive.
        """
        check_aware(now, "now")
        await self._enter()
        call = self._tools.pending.get(pending_id)
        if call is None:
            return PendingClaim(ClaimOutcome.GONE, None)
        if call.state is not PendingState.PENDING:
            return PendingClaim(ClaimOutcome.GONE, call)
        if is_expired(call.expires_at, now):
            decided = replace(call, state=PendingState.EXPIRED)
            outcome = ClaimOutcome.EXPIRED
        elif accept:
            decided = replace(call, state=PendingState.RUNNING, owner=owner)
            outcome = ClaimOutcome.CLAIMED
        else:
            decided = replace(call, state=PendingState.REFUSED)
            outcome = ClaimOutcome.REFUSED
        self._tools.pending[pending_id] = decided
        return PendingClaim(outcome, decided)

    async def finish_pending_call(self, pending_id: str, state: PendingState) -> None:
        """Set a claimed call's final state (``done`` once its result is stored)."""
        final = PendingState(state)
        await self._enter()
        call = self._tools.pending.get(pending_id)
        if call is not None:
            self._tools.pending[pending_id] = replace(call, state=final)

    async def claim_round(self, message_id: int) -> bool:
        """Move a round from ``awaiting`` to ``tool_calls``; whether this call did it."""
        await self._enter()
        message = self._messages.get(message_id)
        if message is None or message.status is not MessageStatus.AWAITING:
            return False
        self._messages[message_id] = replace(message, status=MessageStatus.TOOL_CALLS)
        return True

    async def pending_call(self, pending_id: str) -> PendingToolCall | None:
        """The pending call ``pending_id``, in whatever state, if it is stored."""
        await self._enter()
        return self._tools.pending.get(pending_id)

    async def pending_calls(
        self, conversation_id: int, *, message_id: int | None = None
    ) -> list[PendingToolCall]:
        """The conversation's calls still ``pending`` or ``running`` (of one message).

        Oldest first (``created_at``, then id).
        """
        await self._enter()
        found = [
            c
            for c in self._tools.pending.values()
            if c.conversation_id == conversation_id
            and c.state in _LIVE
            and (message_id is None or c.message_id == message_id)
        ]
        return sorted(found, key=lambda c: (c.created_at, c.id))

    async def cancel_pending_calls(self, conversation_id: int) -> list[PendingToolCall]:
        """Cancel the conversation's ``pending`` calls; return them (now ``cancelled``)."""
        await self._enter()
        return self._move(lambda c: c.conversation_id == conversation_id, PendingState.CANCELLED)

    async def expire_pending_calls(self, bot: str, now: datetime) -> list[PendingToolCall]:
        """Mark ``bot``'s pending calls at or past their expiry ``expired``; return them.

        Raises:
            ValueError: ``now`` is naive.
        """
        check_aware(now, "now")
        await self._enter()
        return self._move(
            lambda c: c.key.bot == bot and is_expired(c.expires_at, now), PendingState.EXPIRED
        )

    def _move(
        self, chosen: Callable[[PendingToolCall], bool], state: PendingState
    ) -> list[PendingToolCall]:
        moved: list[PendingToolCall] = []
        for call in list(self._tools.pending.values()):
            if call.state is PendingState.PENDING and chosen(call):
                changed = replace(call, state=state)
                self._tools.pending[call.id] = changed
                moved.append(changed)
        return sorted(moved, key=lambda c: (c.created_at, c.id))

    def _forget_pending(self, bot: str, platform: str, user_id: str) -> None:
        """Drop the user's pending calls and those of conversations that are gone."""
        pending = self._tools.pending
        for call in list(pending.values()):
            mine = (call.key.bot, call.key.platform, call.user_id) == (bot, platform, user_id)
            if mine or not self._conversation_exists(call.conversation_id):
                del pending[call.id]

    # --- the audit ---------------------------------------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> int:
        """Record a proposed tool call with the user's pseudonym; return its id.

        Raises:
            ValueError: ``at`` is naive.
        """
        check_audit(entry)
        await self._enter()
        audit_id = self._tools.next_audit
        self._tools.next_audit += 1
        pseudonym = entry.user_pseudonym
        if entry.user_id:
            (pseudonym,) = audit_pseudonyms(
                self._secret, [(entry.bot, entry.platform)], entry.user_id
            )
        self._tools.audit[audit_id] = replace(
            entry,
            id=audit_id,
            at=entry.at.astimezone(UTC),
            user_pseudonym=pseudonym,
            decision=ToolDecision(entry.decision),
        )
        return audit_id

    async def finish_audit(
        self,
        audit_id: int,
        *,
        decision: ToolDecision | None = None,
        result_status: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        """Update an audit row once the call was decided or ran (``None`` keeps a field)."""
        await self._enter()
        entry = self._tools.audit.get(audit_id)
        if entry is None:
            return
        if decision is not None:
            entry = replace(entry, decision=ToolDecision(decision))
        if result_status is not None:
            entry = replace(entry, result_status=result_status)
        if duration_ms is not None:
            entry = replace(entry, duration_ms=duration_ms)
        self._tools.audit[audit_id] = entry

    async def audit_entries(
        self,
        *,
        bot: str | None = None,
        platform: str | None = None,
        user_id: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """The newest audit rows first (``at``, then id); ``user_id`` matches by pseudonym."""
        if since is not None:
            check_aware(since, "since")
        if limit <= 0:
            return []
        await self._enter()
        rows = [
            e
            for e in self._tools.audit.values()
            if (bot is None or e.bot == bot)
            and (platform is None or e.platform == platform)
            and (since is None or e.at >= since)
        ]
        if user_id is not None:
            places = sorted({(e.bot, e.platform) for e in rows})
            wanted = set(audit_pseudonyms(self._secret, places, user_id))
            rows = [e for e in rows if e.user_pseudonym in wanted]
        rows.sort(key=lambda e: (e.at, e.id or 0), reverse=True)
        return rows[:limit]

    def _forget_audit(self, bot: str, platform: str, user_id: str) -> None:
        """Clear ``user_id`` in the user's audit rows; the pseudonym stays."""
        audit = self._tools.audit
        for audit_id, entry in list(audit.items()):
            if (entry.bot, entry.platform, entry.user_id) == (bot, platform, user_id):
                audit[audit_id] = replace(entry, user_id=None)


def _normalised(call: PendingToolCall) -> PendingToolCall:
    """``call`` as a store reads it back: UTC timestamps, a plain state."""
    return replace(
        call,
        state=PendingState(call.state),
        created_at=call.created_at.astimezone(UTC),
        expires_at=call.expires_at.astimezone(UTC),
    )


__all__ = ["InMemoryTools", "ToolState"]
