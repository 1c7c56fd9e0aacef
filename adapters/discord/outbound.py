"""The Discord side of a queue worker: answering over REST, never opening the gateway.

:class:`DiscordOutbound` implements ``core.chat_ports.OutboundAdapter``. It logs in over
HTTP (discord.py's ``Client.login``: the bot user and the application, no gateway
``connect``, no slash commands registered: ingress alone syncs them) and answers each queued
turn through a partial channel, which needs no cache: messages reply to the asker's message
by id, a history file reaches a server member through a DM channel opened over REST, the
user's files are fetched from their attachment URL (``Attachment.ref``), and a slash command
or a private button answer goes through the interaction's webhook with the token ingress
carried (``IncomingMessage.reply_via``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Final, TypeVar

import discord

from adapters.discord.channel import PLATFORM, ChannelSink, DiscordReplyChannel, FollowupSink
from adapters.discord.connection import (
    NO_MENTIONS,
    Forbidden,
    bounded,
    configure_endpoints,
    intents,
    login,
    quiet_voice,
)
from adapters.discord.settings import DiscordSettings
from core.lifecycle import Lifecycle
from core.types import IncomingAction, IncomingMessage

__all__ = ["DiscordOutbound"]

_log = logging.getLogger(__name__)

_APPLICATION_WEBHOOK: Final = 3  # the webhook type of an interaction's follow-ups

T = TypeVar("T")


class _DirectMessages:
    """A server member reached by direct message, over REST (no member cache)."""

    def __init__(self, client: discord.Client, user_id: str) -> None:
        self._client = client
        self._user_id = int(user_id)

    async def send(self, content: str | None = None, **extra: Any) -> discord.Message:
        channel = await self._client.create_dm(discord.Object(id=self._user_id))
        return await channel.send(content, **extra)


class DiscordOutbound:
    """Answers queued Discord turns through the REST API.

    Args:
        settings: the ``DISCORD_*`` settings (``bot_token`` must be set; shards and
            ``sync_commands`` do not apply to workers).
        max_file_mb: the largest attachment downloaded for a chat turn (``MAX_FILE_MB``).

    ``start_outbound()`` raises :class:`ConfigError` for a missing or rejected token and
    :class:`AdapterError` when Discord cannot be reached. Both it and ``aclose()`` are
    idempotent.
    """

    name = PLATFORM

    def __init__(self, settings: DiscordSettings, *, max_file_mb: float | None = None) -> None:
        self.settings = settings
        self._max_file_bytes = int(max_file_mb * 1024 * 1024) if max_file_mb else None
        self._client: discord.Client | None = None
        self._state = Lifecycle.NEW
        self._warned: set[str] = set()

    @property
    def client(self) -> discord.Client:
        """The logged-in discord.py client (after ``start_outbound()``)."""
        if self._client is None or self._state is not Lifecycle.RUNNING:
            raise RuntimeError("DiscordOutbound used before start_outbound()")
        return self._client

    async def start_outbound(self) -> None:
        """Log in over HTTP: no gateway, no commands registered."""
        if self._state is Lifecycle.RUNNING:
            return
        if self._state.closed:
            raise RuntimeError("DiscordOutbound.start_outbound() after aclose()")
        configure_endpoints(self.settings)
        quiet_voice()
        client = self._client = discord.Client(intents=intents(), allowed_mentions=NO_MENTIONS)
        try:
            await login(client, self.settings)
        except BaseException:
            await client.close()
            self._client = None
            raise
        self._state = Lifecycle.RUNNING
        _log.info("answering on Discord as %s over REST (no gateway)", client.user)

    async def aclose(self) -> None:
        """Log out. Idempotent."""
        if self._state.closed:
            return
        self._state = Lifecycle.CLOSED
        if self._client is not None:
            await self._client.close()

    # --- channels --------------------------------------------------------------------------

    def _channel(self, chat_id: str, thread_id: str | None) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(thread_id or chat_id))

    def _followups(self, token: str, channel_id: str, *, private: bool) -> FollowupSink:
        client = self.client
        webhook = discord.Webhook.from_state(
            {"id": client.application_id, "type": _APPLICATION_WEBHOOK, "token": token},  # type: ignore[typeddict-item]
            # discord.py builds an interaction's follow-up webhook the same way.
            state=client._connection,
        )
        return FollowupSink(self, webhook, channel_id, ephemeral=not private)

    def channel_for(self, msg: IncomingMessage) -> DiscordReplyChannel:
        """The channel answering ``msg``.

        In its channel or thread; through its slash command's interaction when ingress
        carried the token.
        """
        channel = self._channel(msg.chat_id, msg.thread_id)
        if msg.reply_via:
            sink = self._followups(msg.reply_via, str(channel.id), private=msg.is_private)
            return DiscordReplyChannel(self, sink, channel, msg.user_id)
        asker = None if msg.is_private else _DirectMessages(self.client, msg.user_id)
        public = ChannelSink.replying(self, channel, msg.message_id, asker)
        return DiscordReplyChannel(
            self, public, channel, msg.user_id, max_file_bytes=self._max_file_bytes
        )

    def channel_for_action(self, action: IncomingAction) -> DiscordReplyChannel:
        """The channel answering a button press.

        What follows it goes to the channel, for everyone who saw the question; a refusal of
        someone else's press reaches only them, through the press's interaction when ingress
        carried its token.
        """
        channel = self._channel(action.chat_id, action.thread_id)
        public = ChannelSink.resumed(self, channel)
        if action.reply_via:
            private = self._followups(action.reply_via, str(channel.id), private=action.is_private)
            return DiscordReplyChannel(self, private, channel, action.user_id, replies=public)
        return DiscordReplyChannel(self, public, channel, action.user_id)

    def resume(
        self, chat_id: str, thread_id: str | None, message_ids: Sequence[str]
    ) -> DiscordReplyChannel:
        """A channel whose reply edits ``message_ids`` (a retried turn completes its reply)."""
        channel = self._channel(chat_id, thread_id)
        sink = ChannelSink.resumed(self, channel)
        return DiscordReplyChannel(self, sink, channel, "", adopt=message_ids)

    # --- the Caller the sinks use ----------------------------------------------------------

    async def call(self, awaitable: Awaitable[T], what: str, channel_id: str) -> T:
        """One Discord call with the timeout; a missing permission is logged once."""
        try:
            return await bounded(awaitable, self.settings.request_timeout, what)
        except Forbidden as exc:
            if channel_id not in self._warned:
                self._warned.add(channel_id)
                _log.warning("missing Discord permissions in channel %s (%s)", channel_id, exc)
            raise
