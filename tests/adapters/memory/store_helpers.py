"""Keys and messages the store tests build."""

from __future__ import annotations

from core.types import ConversationKey, MessageStatus, NewMessage, Role

BOT = "testbot"


def private(user: str = "u1", bot: str = BOT, platform: str = "telegram") -> ConversationKey:
    """The slot of a private chat with ``user``."""
    return ConversationKey(bot=bot, platform=platform, chat_id=user, thread_id=None, user_id=user)


def shared(chat: str = "g1", bot: str = BOT, platform: str = "telegram") -> ConversationKey:
    """The shared slot of group ``chat`` (memory scope "chat")."""
    return ConversationKey(bot=bot, platform=platform, chat_id=chat, thread_id=None, user_id=None)


def user_msg(content: str, author: str = "u1", *ids: str) -> NewMessage:
    """A user's message, carried by the platform messages ``ids``."""
    return NewMessage(role=Role.USER, content=content, author_id=author, platform_message_ids=ids)


def bot_msg(content: str, status: MessageStatus = MessageStatus.COMPLETE) -> NewMessage:
    """The bot's message."""
    return NewMessage(role=Role.ASSISTANT, content=content, status=status)
