"""The store's operations for crash recovery: instances, replies in progress, leases.

Each is a function of one sync SQLAlchemy ``Connection``, like
:mod:`adapters.memory.operations`; :class:`adapters.memory.store.SqlMemoryStore` runs them.
None of them is on a reply's hot path: progress is saved at most once a second per long
reply, heartbeats every few seconds per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.engine import Connection

from adapters.memory.models import InstanceRow, LeaseRow
from adapters.memory.operations import insert_platform_ids
from adapters.memory.statements import (
    CONVERSATION_COLUMNS,
    CONVERSATIONS,
    MESSAGE_COLUMNS,
    MESSAGES,
    PLATFORM_MESSAGES,
    to_conversation,
    to_stored,
    upsert,
)
from core.types import InstanceInfo, MessageStatus, ReplyInProgress

INSTANCES: Final = cast(Table, InstanceRow.__table__)
LEASES: Final = cast(Table, LeaseRow.__table__)
_IN_PROGRESS: Final = MessageStatus.IN_PROGRESS.value


def save_progress(
    conn: Connection,
    message_id: int,
    content: str | None,
    platform_chat_id: str | None,
    pids: Sequence[str],
) -> None:
    """Save a reply in progress: text so far (unless ``None``), new platform ids in order."""
    if content is not None:
        conn.execute(
            update(MESSAGES)
            .where(MESSAGES.c.id == message_id, MESSAGES.c.status == _IN_PROGRESS)
            .values(content=content)
        )
    if not pids:
        return
    place = conn.execute(
        select(CONVERSATIONS.c.bot, CONVERSATIONS.c.platform, CONVERSATIONS.c.chat_id)
        .join(MESSAGES, MESSAGES.c.conversation_id == CONVERSATIONS.c.id)
        .where(MESSAGES.c.id == message_id, MESSAGES.c.status == _IN_PROGRESS)
    ).one_or_none()
    if place is None:
        return  # finished or deleted meanwhile: its final record holds the ids
    known = set(
        conn.execute(
            select(PLATFORM_MESSAGES.c.platform_message_id).where(
                PLATFORM_MESSAGES.c.message_id == message_id
            )
        ).scalars()
    )
    chat_id = platform_chat_id if platform_chat_id is not None else place.chat_id
    rows = [
        {
            "bot": place.bot,
            "platform": place.platform,
            "chat_id": chat_id,
            "platform_message_id": pid,
            "message_id": message_id,
        }
        for pid in dict.fromkeys(pids)
        if pid not in known
    ]
    if rows:
        insert_platform_ids(conn, rows)


# --- instances ------------------------------------------------------------------------------


def register_instance(conn: Connection, instance: InstanceInfo) -> None:
    """Insert or renew an instance row."""
    values = {
        "id": instance.id,
        "bot": instance.bot,
        "host": instance.host,
        "pid": instance.pid,
        "started_at": instance.started_at,
        "heartbeat_at": instance.heartbeat_at,
    }
    stmt = upsert(conn)(INSTANCES).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"], set_={"heartbeat_at": stmt.excluded.heartbeat_at}
        )
    )


def heartbeat(conn: Connection, instance_id: str, at: datetime) -> bool:
    """Move an instance's heartbeat to ``at``; ``False`` if its row is gone."""
    result = conn.execute(
        update(INSTANCES).where(INSTANCES.c.id == instance_id).values(heartbeat_at=at)
    )
    return bool(result.rowcount)


def retire_instance(conn: Connection, instance_id: str) -> None:
    """Delete an instance row and the leases it held."""
    conn.execute(delete(LEASES).where(LEASES.c.owner == instance_id))
    conn.execute(delete(INSTANCES).where(INSTANCES.c.id == instance_id))


def instances(conn: Connection, bot: str) -> list[InstanceInfo]:
    """Every instance row of ``bot``, oldest first."""
    rows = conn.execute(
        select(INSTANCES).where(INSTANCES.c.bot == bot).order_by(INSTANCES.c.started_at)
    )
    return [
        InstanceInfo(
            id=r.id,
            bot=r.bot,
            host=r.host,
            pid=r.pid,
            started_at=r.started_at,
            heartbeat_at=r.heartbeat_at,
        )
        for r in rows
    ]


# --- taking over replies ----------------------------------------------------------------------


def _orphaned(live: Sequence[str]) -> Any:
    """Rows in progress whose owner is none of ``live`` (or unknown)."""
    owner = MESSAGES.c.owner
    if not live:
        return MESSAGES.c.status == _IN_PROGRESS
    return (MESSAGES.c.status == _IN_PROGRESS) & or_(owner.is_(None), owner.not_in(list(live)))


def claim_replies(
    conn: Connection, bot: str, owner: str, live: Sequence[str], message_id: int | None
) -> list[ReplyInProgress]:
    """Set ``owner`` on ``bot``'s orphaned replies in progress; return them, oldest first."""
    ours = select(CONVERSATIONS.c.id).where(CONVERSATIONS.c.bot == bot)
    claim = (
        update(MESSAGES)
        .where(_orphaned(live), MESSAGES.c.conversation_id.in_(ours))
        .values(owner=owner)
        .returning(MESSAGES.c.id)
    )
    if message_id is not None:
        claim = claim.where(MESSAGES.c.id == message_id)
    claimed = sorted(conn.execute(claim).scalars())
    if not claimed:
        return []
    found = conn.execute(
        select(*MESSAGE_COLUMNS, *(c.label(f"c_{c.name}") for c in CONVERSATION_COLUMNS))
        .join(CONVERSATIONS, CONVERSATIONS.c.id == MESSAGES.c.conversation_id)
        .where(MESSAGES.c.id.in_(claimed))
        .order_by(MESSAGES.c.id)
    ).all()
    pids: dict[int, list[tuple[str, str]]] = {}
    for p in conn.execute(
        select(
            PLATFORM_MESSAGES.c.message_id,
            PLATFORM_MESSAGES.c.chat_id,
            PLATFORM_MESSAGES.c.platform_message_id,
        )
        .where(PLATFORM_MESSAGES.c.message_id.in_(claimed))
        .order_by(PLATFORM_MESSAGES.c.id)
    ):
        pids.setdefault(p.message_id, []).append((p.chat_id, p.platform_message_id))
    replies = []
    for r in found:
        conversation = to_conversation(
            _Row(
                id=r.c_id,
                bot=r.c_bot,
                platform=r.c_platform,
                chat_id=r.c_chat_id,
                thread_id=r.c_thread_id,
                user_id=r.c_user_id,
                created_at=r.c_created_at,
            )
        )
        shown = pids.get(r.id, [])
        replies.append(
            ReplyInProgress(
                message=to_stored(r),
                key=conversation.key,
                chat_id=shown[0][0] if shown else conversation.key.chat_id,
                platform_message_ids=tuple(pid for _, pid in shown),
            )
        )
    return replies


class _Row:
    """Attribute access over keyword arguments (a conversation row under other labels)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


# --- leases -------------------------------------------------------------------------------


def acquire_lease(
    conn: Connection, bot: str, platform: str, owner: str, live: Sequence[str], now: datetime
) -> str:
    """Take the (bot, platform) lease unless a live holder has it; return the holder."""
    holder = conn.execute(
        select(LEASES.c.owner).where(LEASES.c.bot == bot, LEASES.c.platform == platform)
    ).scalar_one_or_none()
    if holder is None:
        stmt = upsert(conn)(LEASES).values(bot=bot, platform=platform, owner=owner, acquired_at=now)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["bot", "platform"]))
    elif holder != owner and holder not in live:
        conn.execute(
            update(LEASES)
            .where(LEASES.c.bot == bot, LEASES.c.platform == platform, LEASES.c.owner == holder)
            .values(owner=owner, acquired_at=now)
        )
    result: str = conn.execute(
        select(LEASES.c.owner).where(LEASES.c.bot == bot, LEASES.c.platform == platform)
    ).scalar_one()
    return result


def release_lease(conn: Connection, bot: str, platform: str, owner: str) -> None:
    """Delete the (bot, platform) lease if ``owner`` holds it."""
    conn.execute(
        delete(LEASES).where(
            LEASES.c.bot == bot, LEASES.c.platform == platform, LEASES.c.owner == owner
        )
    )


__all__ = [
    "INSTANCES",
    "LEASES",
    "acquire_lease",
    "claim_replies",
    "heartbeat",
    "instances",
    "register_instance",
    "release_lease",
    "retire_instance",
    "save_progress",
]
