"""Slash commands and button presses in ``chinwag ingress``: acknowledged now, answered later.

Discord drops an interaction not acknowledged within 3 seconds, and in ingress the answer
comes from a queue worker, maybe seconds later. So ingress acknowledges first ("thinking...",
private in servers as in one process; a button press without a visible change), then queues
the turn through the engine (under the conversation's lock, like a message). The worker
answers through the interaction's webhook: its token travels with the turn
(``IncomingMessage.reply_via``, valid 15 minutes, never logged), so the answer replaces the
"thinking..." message exactly where one process would have put it. Posting it as a channel
message instead would show the usage, history and exports that are private to the user to
everyone in the channel.

A turn that could not be queued (the database is down) is answered "try again" at once:
nothing is silently dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import discord

from adapters.discord.channel import (
    PLATFORM,
    DiscordReplyChannel,
    InteractionSink,
    press_of,
    where,
)
from adapters.discord.split import DISCORD_LIMIT
from core.errors import AdapterError
from core.ports import ReplyChannel
from core.types import IncomingMessage

if TYPE_CHECKING:
    from adapters.discord.adapter import DiscordAdapter

__all__ = ["queue_message", "queue_press", "queue_slash", "slash_message"]

_log = logging.getLogger(__name__)


def slash_message(
    interaction: discord.Interaction[Any], name: str, argument: str, via: str | None = None
) -> IncomingMessage:
    """The message a slash command is, as the engine sees it (``via``: its token)."""
    chat_id, thread_id, private = where(interaction.channel, interaction.channel_id)
    return IncomingMessage(
        platform=PLATFORM,
        chat_id=chat_id,
        user_id=str(interaction.user.id),
        text=f"/{name} {argument}".strip(),
        thread_id=thread_id,
        is_private=interaction.guild_id is None or private,
        user_name=interaction.user.display_name,
        reply_via=via,
    )


async def queue_message(queued: Awaitable[None], out: ReplyChannel) -> None:
    """Await the engine queueing a message; when it could not, ask the user to send it again.

    The gateway delivers a message once and wants no acknowledgement, so a message that
    could not be queued (the database is down) would otherwise be lost without a word.
    """
    try:
        await queued
    except Exception:
        _log.exception("could not queue a Discord message")
        with contextlib.suppress(AdapterError):
            await out.send_text(
                "I couldn't take that message just now. Please send it again in a moment."
            )


async def queue_slash(
    adapter: DiscordAdapter, interaction: discord.Interaction[Any], name: str, argument: str
) -> None:
    """Acknowledge a slash command ("thinking...") at once, then queue it for a worker."""
    sink = InteractionSink(adapter, interaction)
    await sink.defer_now()
    incoming = slash_message(interaction, name, argument, interaction.token)
    reply = DiscordReplyChannel(adapter, sink, interaction.channel, incoming.user_id)
    try:
        await adapter.track(adapter.engine.submit(incoming, reply))
    except Exception:
        _log.exception("could not queue a Discord slash command")
        with contextlib.suppress(AdapterError):
            await sink.post(
                "I couldn't take that command just now. Please try again in a moment.",
                first=True,
            )


async def queue_press(
    adapter: DiscordAdapter,
    interaction: discord.Interaction[Any],
    owner: str,
    presser: str,
    accepted: bool,
    action_id: str,
) -> None:
    """Acknowledge a button press at once, queue it, then show the answer on the question.

    The asker's press is acknowledged without a change, queued, and only then are the
    buttons replaced by the answer: a press that could not be queued leaves them to press
    again. Anyone else's is deferred privately and carries its token, so the worker's refusal
    reaches only them.
    """
    sink = InteractionSink(adapter, interaction)
    mine = owner in ("", presser)
    await sink.defer_now(update=mine)
    action = press_of(
        interaction, presser, action_id, accepted, None if mine else interaction.token
    )
    channel = interaction.channel or adapter.client.get_partial_messageable(
        int(interaction.channel_id or 0)
    )
    out = DiscordReplyChannel(adapter, sink, channel, presser)
    try:
        await adapter.track(adapter.engine.handle_action(action, out))
    except Exception:
        _log.exception("could not queue a Discord button press")
        with contextlib.suppress(AdapterError):
            await sink.post(
                "I couldn't take that press just now. Please press again in a moment.",
                first=True,
            )
        return
    if mine:
        prompt = interaction.message.content if interaction.message else ""
        with contextlib.suppress(AdapterError):
            await adapter.call(
                interaction.edit_original_response(
                    content=f"{prompt}\n\n{'Yes' if accepted else 'No'}."[:DISCORD_LIMIT],
                    view=None,
                ),
                "answer a button",
                sink.channel_id,
            )
