"""The tool methods of :class:`adapters.memory.store.SqlMemoryStore` (a mixin).

Each checks its arguments and hands an operation of :mod:`adapters.memory.tooling` to the
store's one boundary, ``_call``, like the rest of the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.memory import tooling
from adapters.memory.executor import Op
from adapters.memory.tooling import AUDIT
from adapters.memory.validation import (
    audit_pseudonyms,
    check_audit,
    check_aware,
    check_pending,
    check_tool_calls,
    check_tool_result,
)
from core.text import safe_text
from core.types import (
    AuditEntry,
    PendingClaim,
    PendingState,
    PendingToolCall,
    ToolDecision,
)


class SqlToolMethods:
    """Tool rounds, pending confirmations and the audit of the ``MemoryStore`` port on SQL."""

    _usage_secret: bytes

    async def _call(self, op: Op, *, write: bool, until_closed: bool = False) -> Any:
        raise NotImplementedError  # provided by SqlMemoryStore

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
        stored = check_tool_calls(calls)
        found = {str(k): check_tool_result(v) for k, v in (results or {}).items()}
        text = safe_text(content) if content is not None else None
        await self._call(
            lambda c: tooling.save_tool_calls(c, message_id, stored, text, found), write=True
        )

    async def save_tool_result(
        self, message_id: int, call_id: str, result: Mapping[str, Any]
    ) -> None:
        """Record one call's result in ``extra["tool_results"][call_id]``; others are kept.

        One transaction reads, merges and writes the JSON (the row locked on PostgreSQL; the
        single writer serialises it on SQLite), so concurrent results are all kept.

        Raises:
            ValueError: ``result`` is not JSON-serialisable.
        """
        stored = check_tool_result(result)
        await self._call(
            lambda c: tooling.save_tool_result(c, message_id, call_id, stored), write=True
        )

    # --- pending confirmations ---------------------------------------------------------------

    async def add_pending_calls(self, calls: Sequence[PendingToolCall]) -> None:
        """Store calls waiting for a confirmation, in one transaction.

        Raises:
            StoreError: an id is already stored, or a conversation does not exist.
            ValueError: a timestamp is naive.
        """
        batch = tuple(calls)
        for call in batch:
            check_pending(call)
        if batch:
            await self._call(lambda c: tooling.add_pending(c, batch), write=True)

    async def claim_pending_call(
        self, pending_id: str, *, owner: str, accept: bool, now: datetime
    ) -> PendingClaim:
        """Decide a pending call atomically: exactly one of racing claimants wins.

        One conditional ``UPDATE`` (``state = 'pending'``) decides, the expiry included: a
        call at or past ``expires_at`` becomes ``expired`` whatever the answer. An unknown
        or already decided call is ``GONE`` (with the call, if it exists).

        Raises:
            ValueError: ``now`` is naive.
        """
        check_aware(now, "now")
        claim: PendingClaim = await self._call(
            lambda c: tooling.claim(c, pending_id, owner, accept, now), write=True
        )
        return claim

    async def finish_pending_call(self, pending_id: str, state: PendingState) -> None:
        """Set a claimed call's final state (``done`` once its result is stored)."""
        value = PendingState(state).value
        await self._call(lambda c: tooling.finish_pending(c, pending_id, value), write=True)

    async def pending_calls(
        self, conversation_id: int, *, message_id: int | None = None
    ) -> list[PendingToolCall]:
        """The conversation's calls still ``pending`` or ``running`` (of one message).

        Oldest first (``created_at``, then id).
        """
        found: list[PendingToolCall] = await self._call(
            lambda c: tooling.live_pending(c, conversation_id, message_id), write=False
        )
        return found

    async def claim_round(self, message_id: int) -> bool:
        """Move a round from ``awaiting`` to ``tool_calls``; whether this call did it."""
        claimed: bool = await self._call(lambda c: tooling.claim_round(c, message_id), write=True)
        return claimed

    async def pending_call(self, pending_id: str) -> PendingToolCall | None:
        """The pending call ``pending_id``, in whatever state, if it is stored."""
        found: list[PendingToolCall] = await self._call(
            lambda c: tooling.read_pending(c, pending_id), write=False
        )
        return found[0] if found else None

    async def cancel_pending_calls(self, conversation_id: int) -> list[PendingToolCall]:
        """Cancel the conversation's ``pending`` calls; return them (now ``cancelled``)."""
        moved: list[PendingToolCall] = await self._call(
            lambda c: tooling.cancel_pending(c, conversation_id), write=True
        )
        return moved

    async def expire_pending_calls(self, bot: str, now: datetime) -> list[PendingToolCall]:
        """Mark ``bot``'s pending calls at or past their expiry ``expired``; return them.

        Raises:
            ValueError: ``now`` is naive.
        """
        check_aware(now, "now")
        moved: list[PendingToolCall] = await self._call(
            lambda c: tooling.expire_pending(c, bot, now), write=True
        )
        return moved

    # --- the audit ---------------------------------------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> int:
        """Record a proposed tool call with the user's pseudonym; return its id.

        The pseudonym is the usage counters' HMAC of (bot, platform, user id); it stays
        when ``forget_user`` clears ``user_id``.

        Raises:
            ValueError: ``at`` is naive.
        """
        check_audit(entry)
        pseudonym = entry.user_pseudonym
        if entry.user_id:
            (pseudonym,) = audit_pseudonyms(
                self._usage_secret, [(entry.bot, entry.platform)], entry.user_id
            )
        audit_id: int = await self._call(
            lambda c: tooling.add_audit(c, entry, pseudonym), write=True
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
        changes: dict[str, Any] = {}
        if decision is not None:
            changes["decision"] = ToolDecision(decision).value
        if result_status is not None:
            changes["result_status"] = result_status
        if duration_ms is not None:
            changes["duration_ms"] = duration_ms
        if changes:
            await self._call(lambda c: tooling.finish_audit(c, audit_id, changes), write=True)

    async def audit_entries(
        self,
        *,
        bot: str | None = None,
        platform: str | None = None,
        user_id: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """The newest audit rows first (``at``, then id); ``user_id`` matches by pseudonym.

        Raises:
            ValueError: ``since`` is naive.
        """
        if limit <= 0:
            return []
        filters: list[Any] = []
        if bot is not None:
            filters.append(AUDIT.c.bot == bot)
        if platform is not None:
            filters.append(AUDIT.c.platform == platform)
        if since is not None:
            check_aware(since, "since")
            filters.append(AUDIT.c.at >= since)
        pseudonyms_of = None
        if user_id is not None:
            secret, user = self._usage_secret, user_id

            def pseudonyms_of(places: list[tuple[str, str]]) -> list[str]:
                return audit_pseudonyms(secret, places, user)

        found: list[AuditEntry] = await self._call(
            lambda c: tooling.audit_entries(c, filters, pseudonyms_of, limit), write=False
        )
        return found


__all__ = ["SqlToolMethods"]
