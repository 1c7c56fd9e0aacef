"""Render a user's stored history for ``/export`` and ``chinwag export``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.ports import MemoryStore
from core.types import ExportedConversation, Role

FORMATS = ("md", "json")


def _speaker(role: Role, author: str | None, bot: str) -> str:
    if role is Role.ASSISTANT:
        return bot
    if role is Role.USER:
        return f"user {author}" if author else "user"
    return role.value


def render_markdown(
    conversations: Sequence[ExportedConversation],
    *,
    bot: str,
    platform: str,
    user_id: str,
    now: datetime,
) -> str:
    """A readable Markdown document of the conversations, oldest first."""
    lines = [
        f"# Conversations with {bot}",
        "",
        f"Exported {now.strftime('%Y-%m-%d %H:%M UTC')} for {platform} user {user_id}.",
        "",
    ]
    if not conversations:
        lines.append("Nothing is stored about you.")
    for number, item in enumerate(conversations, start=1):
        conv = item.conversation
        where = f"{conv.key.platform} chat {conv.key.chat_id}"
        if conv.key.thread_id:
            where += f", thread {conv.key.thread_id}"
        if conv.key.user_id is None:
            where += " (shared memory: your messages only)"
        lines += [
            f"## Conversation {number}",
            "",
            f"Started {conv.created_at.strftime('%Y-%m-%d %H:%M UTC')} in {where}.",
            "",
        ]
        for message in item.messages:
            stamp = message.created_at.strftime("%Y-%m-%d %H:%M")
            status = "" if message.status.value == "complete" else f" ({message.status.value})"
            lines += [
                f"**{_speaker(message.role, message.author_id, bot)}** · {stamp}{status}",
                "",
                message.content,
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def render_json(
    conversations: Sequence[ExportedConversation],
    *,
    bot: str,
    platform: str,
    user_id: str,
    now: datetime,
) -> str:
    """The same content as a JSON document (stable keys, ISO 8601 UTC times)."""
    doc: dict[str, Any] = {
        "bot": bot,
        "platform": platform,
        "user_id": user_id,
        "exported_at": now.isoformat(),
        "conversations": [
            {
                "chat_id": item.conversation.key.chat_id,
                "thread_id": item.conversation.key.thread_id,
                "shared": item.conversation.key.user_id is None,
                "started_at": item.conversation.created_at.isoformat(),
                "messages": [
                    {
                        "seq": m.seq,
                        "role": m.role.value,
                        "author_id": m.author_id,
                        "content": m.content,
                        "status": m.status.value,
                        "created_at": m.created_at.isoformat(),
                    }
                    for m in item.messages
                ],
            }
            for item in conversations
        ],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def render(
    fmt: str,
    conversations: Sequence[ExportedConversation],
    *,
    bot: str,
    platform: str,
    user_id: str,
    now: datetime,
) -> str:
    """Render in ``fmt`` (``"md"`` or ``"json"``); raises ``ValueError`` for others."""
    if fmt == "md":
        return render_markdown(conversations, bot=bot, platform=platform, user_id=user_id, now=now)
    if fmt == "json":
        return render_json(conversations, bot=bot, platform=platform, user_id=user_id, now=now)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


async def export_document(
    store: MemoryStore, *, bot: str, platform: str, user_id: str, fmt: str, now: datetime
) -> str:
    """Read everything ``store`` keeps for the user and render it in ``fmt``."""
    conversations = await store.export_user(bot, platform, user_id)
    return render(fmt, conversations, bot=bot, platform=platform, user_id=user_id, now=now)
