"""Contract tests of the tool side of the ``MemoryStore`` port, over every implementation.

Tool rounds in a message's ``extra``, calls waiting for a confirmation (claimed exactly
once, refused, expired, cancelled) and the audit. Each test runs on SQLite, PostgreSQL and
``InMemoryStore``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from core.errors import StoreError
from core.ports import MemoryStore
from core.types import (
    AuditEntry,
    ClaimOutcome,
    ConversationKey,
    MessageStatus,
    NewMessage,
    PendingState,
    PendingToolCall,
    Role,
    ToolDecision,
)
from tests.adapters.memory.conftest import Clock
from tests.adapters.memory.store_helpers import BOT, bot_msg, private, shared, user_msg

CALLS: list[dict[str, Any]] = [
    {
        "id": "call_1",
        "name": "ha_call_service",
        "arguments": '{"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}',
        "risk": "act",
        "source": "homeassistant",
    },
    {"id": "call_2", "name": "ha_get_state", "arguments": "{}", "risk": "read", "source": "ha"},
]


async def _round(store: MemoryStore, key: ConversationKey | None = None) -> tuple[int, int]:
    """A conversation with a question and an assistant round placeholder: (conv id, msg id)."""
    conv = await store.current_conversation(key or private())
    author = (key or private()).user_id or "u1"
    _, placeholder = await store.append_messages(
        conv.id,
        [user_msg("turn on the kitchen light", author), bot_msg("", MessageStatus.IN_PROGRESS)],
    )
    return conv.id, placeholder.id


def _pending(
    conversation_id: int,
    message_id: int,
    now: datetime,
    *,
    pending_id: str = "t:abc",
    call_id: str = "call_1",
    key: ConversationKey | None = None,
    user_id: str = "u1",
    seconds: int = 120,
) -> PendingToolCall:
    return PendingToolCall(
        id=pending_id,
        key=key or private(),
        chat_id=(key or private()).chat_id,
        user_id=user_id,
        conversation_id=conversation_id,
        message_id=message_id,
        call_id=call_id,
        tool="ha_call_service",
        arguments='{"entity_id": "light.kitchen"}',
        risk="act",
        state=PendingState.PENDING,
        created_at=now,
        expires_at=now + timedelta(seconds=seconds),
        audit_id=7,
    )


def _audit(at: datetime, **changes: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "at": at,
        "bot": BOT,
        "platform": "telegram",
        "chat_id": "u1",
        "user_id": "u1",
        "tool": "ha_call_service",
        "source": "homeassistant",
        "arguments": '{"entity_id": "light.kitchen"}',
        "risk": "act",
        "decision": ToolDecision.PENDING,
    }
    fields.update(changes)
    return AuditEntry(**fields)


async def _message(store: MemoryStore, conversation_id: int, message_id: int) -> Any:
    (found,) = [
        m for m in await store.recent_messages(conversation_id, limit=50) if m.id == message_id
    ]
    return found


# --- tool rounds --------------------------------------------------------------------------


async def test_a_tool_round_round_trips_with_its_calls_and_results(store: MemoryStore) -> None:
    conv_id, msg_id = await _round(store)
    await store.save_tool_calls(msg_id, CALLS, content="Let me switch it on.")
    await store.save_tool_result(msg_id, "call_2", {"content": "off", "ok": True, "status": "ok"})
    await store.save_tool_result(
        msg_id, "call_1", {"content": "light.kitchen → on", "ok": True, "status": "ok"}
    )
    await store.finish_message(
        msg_id, content="Let me switch it on.", status=MessageStatus.TOOL_CALLS
    )

    stored = await _message(store, conv_id, msg_id)
    assert stored.content == "Let me switch it on."
    assert stored.status is MessageStatus.TOOL_CALLS
    assert stored.extra["tool_calls"] == CALLS
    assert stored.extra["tool_results"] == {
        "call_1": {"content": "light.kitchen → on", "ok": True, "status": "ok"},
        "call_2": {"content": "off", "ok": True, "status": "ok"},
    }


async def test_saving_one_result_keeps_the_others_and_other_extra(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    (msg,) = await store.append_messages(
        conv.id,
        [
            NewMessage(
                role=Role.ASSISTANT,
                content="",
                status=MessageStatus.IN_PROGRESS,
                extra={"model": "gpt-4o"},
            )
        ],
    )
    await store.save_tool_calls(msg.id, CALLS)
    await asyncio.gather(
        *(
            store.save_tool_result(
                msg.id, f"call_{i}", {"content": str(i), "ok": True, "status": "ok"}
            )
            for i in range(10)
        )
    )
    await store.save_tool_result(
        msg.id, "call_3", {"content": "again", "ok": False, "status": "error"}
    )
    await store.finish_message(msg.id, content="", status=MessageStatus.AWAITING)
    stored = await _message(store, conv.id, msg.id)
    assert stored.extra["model"] == "gpt-4o"
    assert stored.extra["tool_calls"] == CALLS
    results = stored.extra["tool_results"]
    assert sorted(results) == sorted(f"call_{i}" for i in range(10))
    assert results["call_3"] == {"content": "again", "ok": False, "status": "error"}
    assert results["call_4"]["content"] == "4"


async def test_the_prompt_sees_tool_rounds_even_without_text(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    q, r1, r2, answer, failed = await store.append_messages(
        conv.id,
        [
            user_msg("lights?"),
            bot_msg("", MessageStatus.IN_PROGRESS),
            bot_msg("", MessageStatus.IN_PROGRESS),
            bot_msg("", MessageStatus.IN_PROGRESS),
            bot_msg("", MessageStatus.IN_PROGRESS),
        ],
    )
    await store.save_tool_calls(r1.id, CALLS[1:])
    await store.finish_message(r1.id, content="", status=MessageStatus.TOOL_CALLS)
    await store.save_tool_calls(r2.id, CALLS[:1])
    await store.finish_message(r2.id, content="", status=MessageStatus.AWAITING)
    await store.finish_message(answer.id, content="", status=MessageStatus.COMPLETE)
    await store.finish_message(failed.id, content="", status=MessageStatus.FAILED)

    seen = await store.recent_messages(conv.id, limit=10)
    assert [m.id for m in seen] == [r2.id, r1.id, q.id]
    assert [m.status for m in seen[:2]] == [MessageStatus.AWAITING, MessageStatus.TOOL_CALLS]
    assert seen[1].extra is not None and seen[1].extra["tool_calls"] == CALLS[1:]


async def test_tool_calls_that_are_not_json_are_refused(store: MemoryStore) -> None:
    _, msg_id = await _round(store)
    with pytest.raises(ValueError, match="JSON"):
        await store.save_tool_calls(msg_id, [{"id": "c", "name": "t", "arguments": object()}])
    with pytest.raises(ValueError, match="lacks"):
        await store.save_tool_calls(msg_id, [{"id": "c"}])


# --- pending confirmations ----------------------------------------------------------------


async def test_a_pending_call_round_trips_and_is_listed(store: MemoryStore, clock: Clock) -> None:
    conv_id, msg_id = await _round(store)
    call = _pending(conv_id, msg_id, clock.now)
    other = _pending(conv_id, msg_id + 1000, clock.now, pending_id="t:def", call_id="call_9")
    await store.add_pending_calls([call, other])
    assert await store.pending_calls(conv_id) == [call, other]
    assert await store.pending_calls(conv_id, message_id=msg_id) == [call]
    assert await store.pending_calls(conv_id + 1000) == []
    with pytest.raises(StoreError):
        await store.add_pending_calls([_pending(conv_id, msg_id, clock.now)])


async def test_a_shared_chat_pending_call_keeps_its_key(store: MemoryStore, clock: Clock) -> None:
    key = shared("g1")
    conv_id, msg_id = await _round(store, key)
    call = _pending(conv_id, msg_id, clock.now, key=key, user_id="u5")
    await store.add_pending_calls([call])
    (found,) = await store.pending_calls(conv_id)
    assert found.key == key and found.user_id == "u5" and found.chat_id == "g1"


async def test_exactly_one_of_20_concurrent_claimants_wins(
    store: MemoryStore, clock: Clock
) -> None:
    conv_id, msg_id = await _round(store)
    await store.add_pending_calls([_pending(conv_id, msg_id, clock.now)])
    claims = await asyncio.gather(
        *(
            store.claim_pending_call("t:abc", owner=f"i{n}", accept=True, now=clock.now)
            for n in range(20)
        )
    )
    winners = [c for c in claims if c.outcome is ClaimOutcome.CLAIMED]
    assert len(winners) == 1
    assert all(c.outcome is ClaimOutcome.GONE for c in claims if c not in winners)
    (winner,) = winners
    assert winner.call is not None and winner.call.state is PendingState.RUNNING
    assert winner.call.owner is not None and winner.call.call_id == "call_1"
    (running,) = await store.pending_calls(conv_id)
    assert running.state is PendingState.RUNNING and running.owner == winner.call.owner

    await store.finish_pending_call("t:abc", PendingState.DONE)
    assert await store.pending_calls(conv_id) == []
    again = await store.claim_pending_call("t:abc", owner="late", accept=True, now=clock.now)
    assert again.outcome is ClaimOutcome.GONE
    assert again.call is not None and again.call.state is PendingState.DONE


async def test_a_round_is_continued_by_one_of_many_claimants(store: MemoryStore) -> None:
    conv_id, msg_id = await _round(store)
    assert not await store.claim_round(msg_id)  # in progress, not awaiting
    await store.finish_message(msg_id, content="", status=MessageStatus.AWAITING)
    claims = await asyncio.gather(*(store.claim_round(msg_id) for _ in range(10)))
    assert claims.count(True) == 1
    (row,) = [m for m in await store.recent_messages(conv_id, limit=5) if m.id == msg_id]
    assert row.status is MessageStatus.TOOL_CALLS
    assert not await store.claim_round(msg_id + 1000)


async def test_a_refusal_decides_the_call_and_runs_nothing(
    store: MemoryStore, clock: Clock
) -> None:
    conv_id, msg_id = await _round(store)
    await store.add_pending_calls([_pending(conv_id, msg_id, clock.now)])
    refused = await store.claim_pending_call("t:abc", owner="i1", accept=False, now=clock.now)
    assert refused.outcome is ClaimOutcome.REFUSED
    assert refused.call is not None and refused.call.state is PendingState.REFUSED
    late = await store.claim_pending_call("t:abc", owner="i1", accept=True, now=clock.now)
    assert late.outcome is ClaimOutcome.GONE
    assert await store.pending_calls(conv_id) == []
    unknown = await store.claim_pending_call("t:nope", owner="i1", accept=True, now=clock.now)
    assert unknown.outcome is ClaimOutcome.GONE and unknown.call is None
    # Found by its id in any state (a press in another chat, after a restart).
    decided = await store.pending_call("t:abc")
    assert decided is not None and decided.state is PendingState.REFUSED
    assert decided.conversation_id == conv_id
    assert await store.pending_call("t:nope") is None


async def test_an_expired_call_is_not_claimed(store: MemoryStore, clock: Clock) -> None:
    conv_id, msg_id = await _round(store)
    await store.add_pending_calls([_pending(conv_id, msg_id, clock.now, seconds=120)])
    later = clock.now + timedelta(seconds=121)
    expired = await store.claim_pending_call("t:abc", owner="i1", accept=True, now=later)
    assert expired.outcome is ClaimOutcome.EXPIRED
    assert expired.call is not None and expired.call.state is PendingState.EXPIRED
    assert expired.call.owner is None
    assert await store.pending_calls(conv_id) == []
    again = await store.claim_pending_call("t:abc", owner="i1", accept=True, now=clock.now)
    assert again.outcome is ClaimOutcome.GONE


async def test_cancel_takes_only_the_conversations_pending_calls(
    store: MemoryStore, clock: Clock
) -> None:
    conv_id, msg_id = await _round(store)
    other_conv, other_msg = await _round(store, private("u2"))
    await store.add_pending_calls(
        [
            _pending(conv_id, msg_id, clock.now, pending_id="t:1", call_id="c1"),
            _pending(conv_id, msg_id, clock.now, pending_id="t:2", call_id="c2"),
            _pending(other_conv, other_msg, clock.now, pending_id="t:3", key=private("u2")),
        ]
    )
    await store.claim_pending_call("t:2", owner="i1", accept=True, now=clock.now)
    cancelled = await store.cancel_pending_calls(conv_id)
    assert [(c.id, c.state) for c in cancelled] == [("t:1", PendingState.CANCELLED)]
    assert [c.id for c in await store.pending_calls(conv_id)] == ["t:2"]  # running: kept
    assert [c.id for c in await store.pending_calls(other_conv)] == ["t:3"]
    gone = await store.claim_pending_call("t:1", owner="i1", accept=True, now=clock.now)
    assert gone.outcome is ClaimOutcome.GONE


async def test_the_expiry_sweep_takes_only_the_bots_overdue_calls(
    store: MemoryStore, clock: Clock
) -> None:
    conv_id, msg_id = await _round(store)
    other_key = private("u1", bot="otherbot")
    other_conv, other_msg = await _round(store, other_key)
    await store.add_pending_calls(
        [
            _pending(conv_id, msg_id, clock.now, pending_id="t:old", call_id="c1", seconds=60),
            _pending(conv_id, msg_id, clock.now, pending_id="t:new", call_id="c2", seconds=600),
            _pending(other_conv, other_msg, clock.now, pending_id="t:x", key=other_key, seconds=60),
        ]
    )
    later = clock.now + timedelta(seconds=61)
    swept = await store.expire_pending_calls(BOT, later)
    assert [(c.id, c.state) for c in swept] == [("t:old", PendingState.EXPIRED)]
    assert await store.expire_pending_calls(BOT, later) == []
    assert [c.id for c in await store.pending_calls(conv_id)] == ["t:new"]
    assert [c.id for c in await store.pending_calls(other_conv)] == ["t:x"]


# --- the audit ------------------------------------------------------------------------------


async def test_audit_rows_are_newest_first_and_filtered(store: MemoryStore, clock: Clock) -> None:
    t0 = clock.now
    first = await store.add_audit(_audit(t0))
    second = await store.add_audit(_audit(t0 + timedelta(minutes=1), user_id="u2", chat_id="u2"))
    third = await store.add_audit(_audit(t0 + timedelta(minutes=2), bot="otherbot"))
    fourth = await store.add_audit(_audit(t0 + timedelta(minutes=3), platform="discord"))
    assert len({first, second, third, fourth}) == 4

    everything = await store.audit_entries()
    assert [e.id for e in everything] == [fourth, third, second, first]
    assert [e.id for e in await store.audit_entries(bot=BOT)] == [fourth, second, first]
    assert [e.id for e in await store.audit_entries(user_id="u1")] == [fourth, third, first]
    assert [e.id for e in await store.audit_entries(user_id="u1", platform="telegram")] == [
        third,
        first,
    ]
    assert [e.id for e in await store.audit_entries(bot=BOT, user_id="u1")] == [fourth, first]
    since = t0 + timedelta(minutes=1)
    assert [e.id for e in await store.audit_entries(since=since)] == [fourth, third, second]
    assert [e.id for e in await store.audit_entries(limit=2)] == [fourth, third]
    assert await store.audit_entries(limit=0) == []
    assert await store.audit_entries(user_id="nobody") == []

    oldest = everything[-1]
    assert oldest == _audit(t0, id=first, user_pseudonym=oldest.user_pseudonym)
    assert oldest.user_pseudonym and "u1" not in oldest.user_pseudonym


async def test_finish_audit_updates_only_given_fields(store: MemoryStore, clock: Clock) -> None:
    audit_id = await store.add_audit(_audit(clock.now))
    await store.finish_audit(audit_id, decision=ToolDecision.CONFIRMED)
    await store.finish_audit(audit_id, result_status="ok", duration_ms=12.5)
    (entry,) = await store.audit_entries()
    assert (entry.decision, entry.result_status, entry.duration_ms) == (
        ToolDecision.CONFIRMED,
        "ok",
        12.5,
    )
    await store.finish_audit(audit_id + 100, decision=ToolDecision.REFUSED)  # unknown: no-op
    assert (await store.audit_entries())[0].decision is ToolDecision.CONFIRMED


# --- privacy ----------------------------------------------------------------------------------


async def test_forget_removes_pending_calls_and_keeps_only_the_audit_pseudonym(
    store: MemoryStore, clock: Clock
) -> None:
    conv_id, msg_id = await _round(store)
    group = shared("g1")
    group_conv, group_msg = await _round(store, group)
    u2_conv, u2_msg = await _round(store, private("u2"))
    await store.add_pending_calls(
        [
            _pending(conv_id, msg_id, clock.now, pending_id="t:mine"),
            _pending(group_conv, group_msg, clock.now, pending_id="t:group", key=group),
            _pending(
                group_conv,
                group_msg,
                clock.now,
                pending_id="t:g2",
                key=group,
                user_id="u2",
                call_id="c2",
            ),
            _pending(
                u2_conv, u2_msg, clock.now, pending_id="t:u2", key=private("u2"), user_id="u2"
            ),
        ]
    )
    mine = await store.add_audit(_audit(clock.now))
    theirs = await store.add_audit(_audit(clock.now, user_id="u2", chat_id="u2"))
    before = {e.id: e for e in await store.audit_entries()}

    await store.forget_user(BOT, "telegram", "u1")

    assert await store.pending_calls(conv_id) == []
    assert [c.id for c in await store.pending_calls(group_conv)] == ["t:g2"]
    assert [c.id for c in await store.pending_calls(u2_conv)] == ["t:u2"]
    for pending_id in ("t:mine", "t:group"):
        gone = await store.claim_pending_call(pending_id, owner="i", accept=True, now=clock.now)
        assert gone.outcome is ClaimOutcome.GONE and gone.call is None
    after = {e.id: e for e in await store.audit_entries()}
    assert after[mine].user_id is None
    assert after[mine].user_pseudonym == before[mine].user_pseudonym
    assert after[theirs] == before[theirs]
    # the pseudonym still finds the row: "what did this user's calls do" stays answerable
    assert [e.id for e in await store.audit_entries(user_id="u1")] == [mine]


async def test_export_includes_tool_rounds(store: MemoryStore) -> None:
    conv_id, msg_id = await _round(store)
    await store.save_tool_calls(msg_id, CALLS[:1])
    await store.save_tool_result(msg_id, "call_1", {"content": "on", "ok": True, "status": "ok"})
    await store.finish_message(msg_id, content="", status=MessageStatus.TOOL_CALLS)
    (exported,) = await store.export_user(BOT, "telegram", "u1")
    assert exported.conversation.id == conv_id
    round_row = exported.messages[-1]
    assert round_row.status is MessageStatus.TOOL_CALLS
    assert round_row.extra is not None
    assert round_row.extra["tool_calls"] == CALLS[:1]
    assert round_row.extra["tool_results"]["call_1"]["content"] == "on"
