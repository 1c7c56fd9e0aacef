"""The tool operations of the SQL store: tool rounds, pending confirmations, the audit.

Like :mod:`adapters.memory.operations`, each is a function of one sync SQLAlchemy
``Connection`` that an executor runs in one thread hop (writes in a committed transaction;
on SQLite under the one writer thread, on PostgreSQL one transaction each).

* A tool round lives in ``messages.extra``: saving calls or one result is a
  read-modify-write of that JSON in one transaction, the row locked on PostgreSQL
  (``SELECT ... FOR UPDATE``; SQLite's single writer serialises it already).
* A claim is ONE conditional ``UPDATE ... WHERE id = ? AND state = 'pending'``: its row
  count decides the winner (a racing claimant on PostgreSQL waits for the row lock, then
  sees the state changed and updates nothing); the expiry is decided inside the same
  statement, and the row is read back in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table, case, insert, literal, select, update
from sqlalchemy.engine import Connection

from adapters.memory.models import PendingToolCallRow, ToolAuditRow
from adapters.memory.statements import CONVERSATIONS, MESSAGES, slot, sqlite_raw, sqlite_time
from core.types import (
    AuditEntry,
    ClaimOutcome,
    ConversationKey,
    MessageStatus,
    PendingClaim,
    PendingState,
    PendingToolCall,
    ToolDecision,
)

PENDING: Final = cast(Table, PendingToolCallRow.__table__)
AUDIT: Final = cast(Table, ToolAuditRow.__table__)

_WAITING: Final = PendingState.PENDING.value
_LIVE: Final = (PendingState.PENDING.value, PendingState.RUNNING.value)

# A pending call read back with its conversation's key (the conversation is authoritative).
_PENDING_READ: Final = select(
    PENDING,
    CONVERSATIONS.c.chat_id.label("slot_chat_id"),
).join(CONVERSATIONS, CONVERSATIONS.c.id == PENDING.c.conversation_id)


def _to_pending(row: Any) -> PendingToolCall:
    key = ConversationKey(
        bot=row.bot,
        platform=row.platform,
        chat_id=row.slot_chat_id,
        thread_id=row.thread_id or None,
        user_id=row.slot_user_id or None,
    )
    return PendingToolCall(
        id=row.id,
        key=key,
        chat_id=row.chat_id,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        call_id=row.call_id,
        tool=row.tool,
        arguments=row.arguments,
        risk=row.risk,
        state=PendingState(row.state),
        created_at=row.created_at,
        expires_at=row.expires_at,
        audit_id=row.audit_id,
        owner=row.owner,
    )


def _read_pending(conn: Connection, where: Any) -> list[PendingToolCall]:
    rows = conn.execute(
        _PENDING_READ.where(where).order_by(PENDING.c.created_at, PENDING.c.id)
    ).all()
    return [_to_pending(r) for r in rows]


# --- tool rounds ------------------------------------------------------------------------------


_RAW_READ_EXTRA: Final = "SELECT extra FROM messages WHERE id = ?"
_RAW_INSERT_AUDIT: Final = (
    "INSERT INTO tool_audit (at, bot, platform, chat_id, user_id, user_pseudonym, tool, "
    "source, arguments, risk, decision, result_status, duration_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
"""The hot tool writes on SQLite, run on the sqlite3 connection of the same transaction (as
``operations`` does for messages): SQLAlchemy's statement overhead is most of their cost."""


def merge_extra(
    conn: Connection, message_id: int, changes: Mapping[str, Any], **columns: Any
) -> None:
    """Read-modify-write the message's ``extra`` in the caller's transaction.

    ``changes`` maps a key to its new value; ``"tool_results"`` is merged into the stored
    results instead. The row is locked (PostgreSQL) so concurrent results never overwrite
    each other. A message that no longer exists is left alone.
    """
    raw = sqlite_raw(conn)
    if raw is not None:  # the single writer serialises this read-modify-write
        row = raw.execute(_RAW_READ_EXTRA, (message_id,)).fetchone()
        if row is None:
            return
        stored: dict[str, Any] = (json.loads(row[0]) if row[0] is not None else None) or {}
        merged = _merged(stored, changes)
        names = ["extra", *columns]
        values = [json.dumps(merged), *columns.values(), message_id]
        assignments = ", ".join(f"{name} = ?" for name in names)
        raw.execute(f"UPDATE messages SET {assignments} WHERE id = ?", values)
        return
    found = conn.execute(
        select(MESSAGES.c.extra).where(MESSAGES.c.id == message_id).with_for_update()
    ).one_or_none()
    if found is None:
        return
    conn.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == message_id)
        .values(extra=_merged(dict(found.extra or {}), changes), **columns)
    )


def _merged(extra: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with ``changes`` applied (``"tool_results"`` merged, other keys replaced)."""
    extra = dict(extra)
    for key, value in changes.items():
        if key == "tool_results":
            extra[key] = {**(extra.get(key) or {}), **value}
        else:
            extra[key] = value
    return extra


def save_tool_calls(
    conn: Connection,
    message_id: int,
    calls: list[dict[str, Any]],
    content: str | None,
    results: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Set the message's ``extra["tool_calls"]`` (and its content, unless ``None``).

    With ``results``, they are merged into ``extra["tool_results"]`` in the same update.
    """
    changes: dict[str, Any] = {"tool_calls": calls}
    if results:
        changes["tool_results"] = results
    columns = {"content": content} if content is not None else {}
    merge_extra(conn, message_id, changes, **columns)


def save_tool_result(
    conn: Connection, message_id: int, call_id: str, result: dict[str, Any]
) -> None:
    """Set ``extra["tool_results"][call_id]``, keeping the other results."""
    merge_extra(conn, message_id, {"tool_results": {call_id: result}})


# --- pending confirmations ----------------------------------------------------------------------


def add_pending(conn: Connection, calls: Sequence[PendingToolCall]) -> None:
    """Insert the calls (a duplicate id or unknown conversation fails the whole call)."""
    rows = []
    for call in calls:
        bot, platform, _chat, thread_id, slot_user = slot(call.key)
        rows.append(
            {
                "id": call.id,
                "bot": bot,
                "platform": platform,
                "chat_id": call.chat_id,
                "thread_id": thread_id,
                "slot_user_id": slot_user,
                "user_id": call.user_id,
                "conversation_id": call.conversation_id,
                "message_id": call.message_id,
                "call_id": call.call_id,
                "tool": call.tool,
                "arguments": call.arguments,
                "risk": call.risk,
                "state": PendingState(call.state).value,
                "created_at": call.created_at,
                "expires_at": call.expires_at,
                "owner": call.owner,
                "audit_id": call.audit_id,
            }
        )
    conn.execute(insert(PENDING), rows)


def claim(
    conn: Connection, pending_id: str, owner: str, accept: bool, now: datetime
) -> PendingClaim:
    """Decide a pending call with one conditional ``UPDATE``; read it back."""
    decided = PendingState.RUNNING.value if accept else PendingState.REFUSED.value
    expired = PENDING.c.expires_at <= now
    won = conn.execute(
        update(PENDING)
        .where(PENDING.c.id == pending_id, PENDING.c.state == _WAITING)
        .values(
            state=case((expired, PendingState.EXPIRED.value), else_=decided),
            owner=case((expired, literal(None)), else_=owner if accept else None),
        )
    ).rowcount
    found = _read_pending(conn, PENDING.c.id == pending_id)
    call = found[0] if found else None
    if won != 1 or call is None:
        return PendingClaim(ClaimOutcome.GONE, call)
    outcome = {
        PendingState.RUNNING: ClaimOutcome.CLAIMED,
        PendingState.REFUSED: ClaimOutcome.REFUSED,
        PendingState.EXPIRED: ClaimOutcome.EXPIRED,
    }[call.state]
    return PendingClaim(outcome, call)


def claim_round(conn: Connection, message_id: int) -> bool:
    """``awaiting`` -> ``tool_calls`` in one conditional update; whether it changed."""
    changed = conn.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == message_id, MESSAGES.c.status == MessageStatus.AWAITING.value)
        .values(status=MessageStatus.TOOL_CALLS.value)
    ).rowcount
    return bool(changed == 1)


def read_pending(conn: Connection, pending_id: str) -> list[PendingToolCall]:
    """The call ``pending_id`` (none or one)."""
    return _read_pending(conn, PENDING.c.id == pending_id)


def finish_pending(conn: Connection, pending_id: str, state: str) -> None:
    """Set a call's final state."""
    conn.execute(update(PENDING).where(PENDING.c.id == pending_id).values(state=state))


def live_pending(
    conn: Connection, conversation_id: int, message_id: int | None
) -> list[PendingToolCall]:
    """The conversation's ``pending`` or ``running`` calls (of one message), oldest first."""
    where = (PENDING.c.conversation_id == conversation_id) & PENDING.c.state.in_(_LIVE)
    if message_id is not None:
        where = where & (PENDING.c.message_id == message_id)
    return _read_pending(conn, where)


def move_pending(conn: Connection, where: Any, state: str) -> list[PendingToolCall]:
    """Move the ``pending`` calls matching ``where`` to ``state``; return them, oldest first."""
    ids = list(
        conn.execute(
            update(PENDING)
            .where(where, PENDING.c.state == _WAITING)
            .values(state=state)
            .returning(PENDING.c.id)
        ).scalars()
    )
    if not ids:
        return []
    return _read_pending(conn, PENDING.c.id.in_(ids))


def cancel_pending(conn: Connection, conversation_id: int) -> list[PendingToolCall]:
    """Cancel the conversation's ``pending`` calls."""
    return move_pending(
        conn, PENDING.c.conversation_id == conversation_id, PendingState.CANCELLED.value
    )


def expire_pending(conn: Connection, bot: str, now: datetime) -> list[PendingToolCall]:
    """Expire ``bot``'s ``pending`` calls at or past their expiry."""
    return move_pending(
        conn, (PENDING.c.bot == bot) & (PENDING.c.expires_at <= now), PendingState.EXPIRED.value
    )


# --- the audit ----------------------------------------------------------------------------------


def add_audit(conn: Connection, entry: AuditEntry, pseudonym: str) -> int:
    """Insert an audit row; return its id."""
    raw = sqlite_raw(conn)
    if raw is not None:
        row = raw.execute(
            _RAW_INSERT_AUDIT,
            (
                sqlite_time(entry.at),
                entry.bot,
                entry.platform,
                entry.chat_id,
                entry.user_id,
                pseudonym,
                entry.tool,
                entry.source,
                entry.arguments,
                entry.risk,
                ToolDecision(entry.decision).value,
                entry.result_status,
                entry.duration_ms,
            ),
        ).fetchone()
        return int(row[0])
    audit_id: int = conn.execute(
        insert(AUDIT)
        .values(
            at=entry.at,
            bot=entry.bot,
            platform=entry.platform,
            chat_id=entry.chat_id,
            user_id=entry.user_id,
            user_pseudonym=pseudonym,
            tool=entry.tool,
            source=entry.source,
            arguments=entry.arguments,
            risk=entry.risk,
            decision=ToolDecision(entry.decision).value,
            result_status=entry.result_status,
            duration_ms=entry.duration_ms,
        )
        .returning(AUDIT.c.id)
    ).scalar_one()
    return audit_id


def finish_audit(conn: Connection, audit_id: int, changes: dict[str, Any]) -> None:
    """Update the given fields of an audit row (``decision``, ``result_status``...)."""
    if not changes:
        return
    raw = sqlite_raw(conn)
    if raw is not None:  # the names are the store's own column names, never input
        assignments = ", ".join(f"{name} = ?" for name in changes)
        raw.execute(
            f"UPDATE tool_audit SET {assignments} WHERE id = ?", [*changes.values(), audit_id]
        )
        return
    conn.execute(update(AUDIT).where(AUDIT.c.id == audit_id).values(**changes))


def _to_audit(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        bot=row.bot,
        platform=row.platform,
        chat_id=row.chat_id,
        user_id=row.user_id,
        user_pseudonym=row.user_pseudonym,
        tool=row.tool,
        source=row.source,
        arguments=row.arguments,
        risk=row.risk,
        decision=ToolDecision(row.decision),
        result_status=row.result_status,
        duration_ms=row.duration_ms,
    )


def audit_entries(
    conn: Connection,
    filters: Sequence[Any],
    pseudonyms_of: Any,
    limit: int,
) -> list[AuditEntry]:
    """The newest audit rows matching ``filters`` first.

    ``pseudonyms_of`` (or ``None``) maps the (bot, platform) pairs present to the wanted
    user's pseudonyms there: the user filter is a pseudonym match, as ``user_id`` may have
    been cleared by ``/forget``.
    """
    where = list(filters)
    if pseudonyms_of is not None:
        places: Iterable[tuple[str, str]] = [
            (r.bot, r.platform)
            for r in conn.execute(select(AUDIT.c.bot, AUDIT.c.platform).where(*where).distinct())
        ]
        wanted = pseudonyms_of(sorted(places))
        if not wanted:
            return []
        where.append(AUDIT.c.user_pseudonym.in_(wanted))
    rows = conn.execute(
        select(AUDIT).where(*where).order_by(AUDIT.c.at.desc(), AUDIT.c.id.desc()).limit(limit)
    ).all()
    return [_to_audit(r) for r in rows]


def forget_tool_data(conn: Connection, bot: str, platform: str, user_id: str) -> None:
    """Delete the user's pending calls; clear ``user_id`` in their audit rows."""
    conn.execute(
        PENDING.delete().where(
            PENDING.c.bot == bot, PENDING.c.platform == platform, PENDING.c.user_id == user_id
        )
    )
    conn.execute(
        update(AUDIT)
        .where(AUDIT.c.bot == bot, AUDIT.c.platform == platform, AUDIT.c.user_id == user_id)
        .values(user_id=None)
    )
