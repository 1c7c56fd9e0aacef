"""The privacy operations of the SQL store: forget a user, export a user's data.

Like :mod:`adapters.memory.operations`, each is a function of one sync SQLAlchemy
``Connection`` that an executor runs in one thread hop.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from adapters.memory import media
from adapters.memory.statements import (
    CONVERSATION_COLUMNS,
    CONVERSATIONS,
    MESSAGE_COLUMNS,
    MESSAGES,
    PREFERENCES,
    to_conversation,
    to_stored,
)
from adapters.memory.tooling import forget_tool_data
from core.types import (
    Conversation,
    ConversationKey,
    ExportedConversation,
    Role,
    StoredMessage,
)


def forget_user(conn: Connection, bot: str, platform: str, user_id: str) -> int:
    """Delete the user's conversations, own shared messages, replies to them and preferences.

    Also the user's pending tool calls (those of the deleted conversations go by cascade)
    and the images the deleted messages showed that no remaining message links to; the
    user's audit rows keep only the pseudonym. Returns the number of messages deleted.
    """
    own = select(CONVERSATIONS.c.id).where(
        CONVERSATIONS.c.bot == bot,
        CONVERSATIONS.c.platform == platform,
        CONVERSATIONS.c.user_id == user_id,
    )
    shared = select(CONVERSATIONS.c.id).where(
        CONVERSATIONS.c.bot == bot,
        CONVERSATIONS.c.platform == platform,
        CONVERSATIONS.c.user_id == "",
    )
    mine = MESSAGES.alias("mine")
    with_user = select(mine.c.conversation_id).where(
        mine.c.author_id == user_id, mine.c.conversation_id.in_(shared)
    )
    # Images the doomed messages may show (more is harmless: only unlinked ones go).
    shown = media.linked_from(
        conn,
        select(MESSAGES.c.id).where(
            MESSAGES.c.conversation_id.in_(own) | MESSAGES.c.conversation_id.in_(with_user)
        ),
    )
    in_own = conn.execute(
        select(func.count()).select_from(MESSAGES).where(MESSAGES.c.conversation_id.in_(own))
    ).scalar_one()
    conn.execute(delete(CONVERSATIONS).where(CONVERSATIONS.c.id.in_(own)))
    # The bot's replies to the user's messages quote and answer them: they go too.
    # A reply belongs to the nearest user message before it.
    earlier = MESSAGES.alias("earlier")
    replied_to = (
        select(earlier.c.author_id)
        .where(
            earlier.c.conversation_id == MESSAGES.c.conversation_id,
            earlier.c.seq < MESSAGES.c.seq,
            earlier.c.role == Role.USER.value,
        )
        .order_by(earlier.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    replies = conn.execute(
        delete(MESSAGES).where(
            MESSAGES.c.role.in_((Role.ASSISTANT.value, Role.TOOL.value)),
            MESSAGES.c.conversation_id.in_(with_user),
            replied_to == user_id,
        )
    ).rowcount
    in_shared = conn.execute(
        delete(MESSAGES).where(
            MESSAGES.c.author_id == user_id,
            MESSAGES.c.conversation_id.in_(shared),
        )
    ).rowcount
    conn.execute(
        delete(PREFERENCES).where(
            PREFERENCES.c.bot == bot,
            PREFERENCES.c.platform == platform,
            PREFERENCES.c.user_id == user_id,
        )
    )
    forget_tool_data(conn, bot, platform, user_id)
    if shown:
        media.delete_unlinked(conn, shown)
    return int(in_own) + int(replies) + int(in_shared)


def export_user(
    conn: Connection, bot: str, platform: str, user_id: str
) -> list[ExportedConversation]:
    """The user's conversations, and own messages in shared ones; oldest first, one snapshot."""
    with conn.begin():
        own = [
            to_conversation(r)
            for r in conn.execute(
                select(*CONVERSATION_COLUMNS).where(
                    CONVERSATIONS.c.bot == bot,
                    CONVERSATIONS.c.platform == platform,
                    CONVERSATIONS.c.user_id == user_id,
                )
            )
        ]
        by_conversation: dict[int, list[StoredMessage]] = {c.id: [] for c in own}
        if own:
            for r in conn.execute(
                select(*MESSAGE_COLUMNS)
                .join(CONVERSATIONS, CONVERSATIONS.c.id == MESSAGES.c.conversation_id)
                .where(
                    CONVERSATIONS.c.bot == bot,
                    CONVERSATIONS.c.platform == platform,
                    CONVERSATIONS.c.user_id == user_id,
                )
                .order_by(MESSAGES.c.conversation_id, MESSAGES.c.seq)
            ):
                by_conversation[r.conversation_id].append(to_stored(r))
        shared = _own_shared_messages(conn, bot, platform, user_id, by_conversation)
    conversations = sorted([*own, *shared], key=lambda c: (c.created_at, c.id))
    return [
        ExportedConversation(conversation=c, messages=by_conversation[c.id]) for c in conversations
    ]


def _own_shared_messages(
    conn: Connection,
    bot: str,
    platform: str,
    user_id: str,
    by_conversation: dict[int, list[StoredMessage]],
) -> list[Conversation]:
    """Add the user's messages in shared conversations to ``by_conversation``.

    Returns those conversations (only the ones where the user wrote something).
    """
    shared: dict[int, Conversation] = {}
    for r in conn.execute(
        select(
            *MESSAGE_COLUMNS,
            CONVERSATIONS.c.bot,
            CONVERSATIONS.c.platform,
            CONVERSATIONS.c.chat_id,
            CONVERSATIONS.c.thread_id,
            CONVERSATIONS.c.user_id,
            CONVERSATIONS.c.created_at.label("conversation_created_at"),
        )
        .join(CONVERSATIONS, CONVERSATIONS.c.id == MESSAGES.c.conversation_id)
        .where(
            CONVERSATIONS.c.bot == bot,
            CONVERSATIONS.c.platform == platform,
            CONVERSATIONS.c.user_id == "",
            MESSAGES.c.author_id == user_id,
        )
        .order_by(MESSAGES.c.conversation_id, MESSAGES.c.seq)
    ):
        if r.conversation_id not in shared:
            shared[r.conversation_id] = Conversation(
                id=r.conversation_id,
                key=ConversationKey(
                    bot=r.bot,
                    platform=r.platform,
                    chat_id=r.chat_id,
                    thread_id=r.thread_id or None,
                    user_id=None,
                ),
                created_at=r.conversation_created_at,
            )
            by_conversation[r.conversation_id] = []
        by_conversation[r.conversation_id].append(to_stored(r))
    return list(shared.values())
