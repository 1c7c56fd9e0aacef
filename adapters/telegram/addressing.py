"""Reading a Telegram message for the bot: is a group message addressed to it, and its text.

The adapter calls :func:`addressed` for every group message (a command, an @mention, a reply
to the bot, or ``TELEGRAM_GROUP_MODE=all``) and :func:`strip_mention` for an album's caption;
:func:`command_description` fits a command's help into ``setMyCommands``.
"""

from __future__ import annotations

import re

from telegram import Message, MessageEntity

__all__ = ["addressed", "command_description", "strip_mention"]


def addressed(
    message: Message,
    text: str,
    *,
    username: str,
    bot_id: int,
    commands: frozenset[str],
    group_mode: str,
) -> tuple[bool, str]:
    """Whether a group message is for this bot, and its text without the bot's @mention."""
    entities = message.parse_entities() if message.text else message.parse_caption_entities()
    addressed = False
    for entity, value in entities.items():
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            name, _, target = value[1:].partition("@")
            if target:
                if target.lower() != username:
                    return False, text  # a command for another bot
                addressed = True
            elif name.lower() in commands:
                addressed = True
        elif (entity.type == MessageEntity.MENTION and value[1:].lower() == username) or (
            entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id
        ):
            addressed = True
    replied = message.reply_to_message
    if (
        replied is not None
        and replied.from_user is not None
        and replied.from_user.id == bot_id
        and not replied.forum_topic_created
    ):
        addressed = True
    if group_mode == "all":
        addressed = True
    return addressed, strip_mention(text, username)


def command_description(description: str, argument: str | None) -> str:
    """A command's ``setMyCommands`` description: its argument named, 256 characters at most."""
    text = f"{description} <{argument}>" if argument else description
    return text[:256] or "-"


def strip_mention(text: str, username: str) -> str:
    """Remove ``@username`` (any case) from ``text`` and tidy the spaces it leaves."""
    if not username:
        return text
    lowered = text.lower()
    needle = f"@{username}"
    out: list[str] = []
    i = 0
    while True:
        found = lowered.find(needle, i)
        end = found + len(needle)
        if found < 0:
            out.append(text[i:])
            break
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            out.append(text[i:end])
            i = end
            continue
        out.append(text[i:found])
        i = end
    cleaned = re.sub(r"[ \t]{2,}", " ", "".join(out))
    return cleaned.strip() if cleaned.strip() else text
