"""The Discord adapter: discord.py 2.x in front of the conversation engine.

Who is answered: direct messages always; in server channels and threads, messages that
mention the bot or reply to one of its messages, and every message in the channels listed in
``DISCORD_ANSWER_ALL_CHANNELS``. Messages from bots (itself included) are never answered, so
two bots cannot loop. A thread is its own conversation (``thread_id``) and replies stay in it.

Replies are answered through :class:`~adapters.discord.channel.DiscordReplyChannel` (the live
reply, at most one edit every ``DISCORD_EDIT_INTERVAL`` seconds, messages of at most 2000
characters); the engine's commands become slash commands
(:mod:`adapters.discord.commands`), registered only when their set changed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import discord
from discord import app_commands

from adapters.discord.channel import (
    BUTTON_PREFIX,
    PLATFORM,
    ChannelSink,
    DiscordReplyChannel,
    InteractionSink,
    press_of,
    where,
)
from adapters.discord.clients import ChinwagClient, ShardedClient, gateway_open
from adapters.discord.commands import build_tree, sync_commands, sync_tree
from adapters.discord.connection import (
    Forbidden,
    bounded,
    configure_endpoints,
    login,
    reap,
)
from adapters.discord.ingress import queue_message, queue_press, queue_slash
from adapters.discord.settings import DiscordSettings
from adapters.discord.split import DISCORD_LIMIT
from core.errors import AdapterError
from core.lifecycle import Lifecycle
from core.ports import ConversationEngine
from core.telemetry import NO_TELEMETRY, Telemetry
from core.types import Attachment, AttachmentKind, IncomingMessage

__all__ = ["INTENT_HELP", "DiscordAdapter", "configure_endpoints", "sync_commands"]

_log = logging.getLogger(__name__)

INTENT_HELP: Final = (
    "Discord refused the Message Content intent (gateway close code 4014). Enable it in the "
    "Developer Portal: your application > Bot > Privileged Gateway Intents > "
    "MESSAGE CONTENT INTENT, then restart."
)

T = TypeVar("T")


def _unsupported(message: discord.Message) -> str | None:
    """What a message without text carries that the bot cannot use, if anything.

    Attachments of every kind go to the engine (``_attachments``); what is left is
    stickers, embeds and polls.
    """
    if message.attachments:
        return None
    if message.stickers:
        return "sticker"
    if message.embeds:
        return "embed"
    if message.poll is not None:
        return "poll"
    return None


def _attachments(message: discord.Message) -> tuple[Attachment, ...]:
    """The message's attachments as the engine sees them (nothing is downloaded here).

    ``image/*`` is a photo; ``audio/*`` and voice messages (the ``IS_VOICE_MESSAGE`` flag,
    or an attachment with a waveform) are voice, with their ``duration_secs``; anything
    else is a document.
    """
    return tuple(_attachment(item, voice=message.flags.voice) for item in message.attachments)


def _attachment(item: discord.Attachment, *, voice: bool) -> Attachment:
    mime = item.content_type
    major = (mime or "").split("/")[0].lower()
    if major == "image":
        kind = AttachmentKind.PHOTO
    elif major == "audio" or item.is_voice_message() or (voice and item.duration is not None):
        kind = AttachmentKind.VOICE
    else:
        kind = AttachmentKind.DOCUMENT
    duration = item.duration if kind is AttachmentKind.VOICE else None
    return Attachment(kind.value, item.filename, item.size, mime, item.url, duration=duration)


def _own_replied_files(message: discord.Message) -> tuple[Attachment, ...]:
    """The files of the message this one replies to, when the same user sent it.

    Discord delivers the replied-to message with the reply (``resolved``); the client's cache
    is the fallback. Nothing is fetched here: messages reach the engine in gateway order.
    """
    reference = message.reference
    if reference is None:
        return ()
    replied = reference.resolved or reference.cached_message
    if not isinstance(replied, discord.Message) or replied.author.id != message.author.id:
        return ()
    return _attachments(replied)


class _RateLimitCounter(logging.Filter):
    """Counts the 429s discord.py waits out, from its own log line (it offers no hook).

    Attached to the ``discord.http`` logger while the adapter runs; never drops a record.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        super().__init__()
        self._telemetry = telemetry

    def filter(self, record: logging.LogRecord) -> bool:
        """Count a "being rate limited ... Retrying" warning; keep every record."""
        message = str(record.msg)
        if message.startswith("We are being rate limited") and "Retrying" in message:
            self._telemetry.flood_wait(PLATFORM)
        return True


class DiscordAdapter:
    """Serves the engine on Discord.

    Args:
        settings: the ``DISCORD_*`` settings (``bot_token`` must be set).
        engine: the conversation engine (started and closed by the caller).
        data_dir: where the slash-command hash file lives (``CHINWAG_DATA_DIR``).
        max_file_mb: the largest attachment downloaded for a chat turn (``MAX_FILE_MB``);
            ``/kb add`` passes its own ``KB_MAX_FILE_MB``.
        telemetry: counts the rate limits discord.py waits out.
        ingress: ``chinwag ingress`` (the engine queues turns for workers): slash commands
            and button presses are acknowledged at once and answered by a worker through
            the interaction's token (``IncomingMessage.reply_via``).

    ``start()`` logs in, registers slash commands if their set changed, connects the gateway
    and returns once the bot is ready; it raises :class:`ConfigError` for a missing or
    rejected token and :class:`AdapterError` when Discord refuses (close code 4014: the
    Message Content intent is off). ``aclose()`` stops taking messages, lets replies in
    flight finish and disconnects. Both are idempotent.
    """

    name = PLATFORM

    def __init__(
        self,
        settings: DiscordSettings,
        engine: ConversationEngine,
        *,
        data_dir: Path,
        max_file_mb: float | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
        ingress: bool = False,
    ) -> None:
        self.ingress = ingress
        self._rate_limits = _RateLimitCounter(telemetry)
        self.settings = settings
        self._max_file_bytes = int(max_file_mb * 1024 * 1024) if max_file_mb else None
        self._engine = engine
        self._data_dir = data_dir
        self._state = Lifecycle.NEW
        self._intake_open = True
        self._client: ChinwagClient | ShardedClient | None = None
        self._tree: app_commands.CommandTree[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Future[None]] = set()
        self._answer_all = frozenset(settings.answer_all_channels)
        self._warned: set[str] = set()
        self.commands_synced = False

    @property
    def connected(self) -> bool:
        """Whether the gateway is up and messages are taken (``False`` while reconnecting)."""
        client = self._client
        return (
            self._accepting()
            and client is not None
            and client.is_ready()
            and not client.is_closed()
            and gateway_open(client)
        )

    @property
    def leases(self) -> tuple[str, ...]:
        """What this process must hold alone before connecting (``Engine.wait_to_serve``).

        Unsharded, the bot (two gateway connections would both get every event); sharded,
        each shard it holds, so processes with different ``DISCORD_SHARD_IDS`` run side by
        side while a second process on the same shard waits.
        """
        if not self.settings.shard_ids:
            return (PLATFORM,)
        return tuple(f"{PLATFORM}:shard:{i}" for i in self.settings.shard_ids)

    @property
    def pending(self) -> int:
        """Messages and commands taken but not answered yet."""
        return len(self._in_flight)

    @property
    def engine(self) -> ConversationEngine:
        """The engine messages go to."""
        return self._engine

    def track(self, awaitable: Awaitable[None]) -> asyncio.Future[None]:
        """Count ``awaitable`` as in flight (``aclose`` lets it finish) until it ends."""
        future = asyncio.ensure_future(awaitable)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return future

    @property
    def client(self) -> discord.Client:
        """The discord.py client (after ``start()``)."""
        if self._client is None:
            raise RuntimeError("DiscordAdapter.client before start()")
        return self._client

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Log in, sync commands when changed, connect, return once ready."""
        if not self._state.require_startable("DiscordAdapter"):
            return
        self._state = Lifecycle.STARTING
        configure_endpoints(self.settings)
        logging.getLogger("discord.http").addFilter(self._rate_limits)
        client = self._client = (
            ShardedClient(self) if self.settings.shard_ids else ChinwagClient(self)
        )
        try:
            await login(client, self.settings)
            self._tree = build_tree(client, self._engine.commands(), self._on_slash)
            if self.settings.sync_commands:
                try:
                    self.commands_synced = await sync_tree(
                        self._tree,
                        str(client.application_id),
                        self._data_dir,
                        force=False,
                        limit=self.settings.request_timeout,
                    )
                except AdapterError:
                    _log.exception("could not register Discord slash commands; serving anyway")
            self._task = asyncio.create_task(self._run(client), name="chinwag-discord-gateway")
            ready = asyncio.create_task(client.wait_until_ready(), name="chinwag-discord-ready")
            try:
                await asyncio.wait(
                    {ready, self._task},
                    timeout=max(60.0, self.settings.request_timeout),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                ready.cancel()
            if self._task.done():
                await self._task  # raises the translated error
                raise AdapterError("the Discord gateway closed before the bot was ready")
            if not client.is_ready():
                raise AdapterError("the Discord gateway did not become ready within 60 s")
        except BaseException:
            self._state = Lifecycle.CLOSED
            await self._shutdown()
            raise
        self._state = Lifecycle.RUNNING
        user = client.user
        _log.info("connected to Discord as %s (id %s)", user, user.id if user else "?")
        if self.settings.shard_ids:
            _log.info(
                "holding Discord shards %s of %d",
                ",".join(self.settings.shard_ids),
                self.settings.shard_count,
            )

    async def _run(self, client: discord.Client) -> None:
        try:
            await client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired as exc:
            raise AdapterError(INTENT_HELP) from exc
        except discord.ConnectionClosed as exc:
            raise AdapterError(
                f"the Discord gateway closed the connection (code {exc.code})"
            ) from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            raise AdapterError(f"lost the Discord connection: {type(exc).__name__}") from exc

    async def wait_closed(self) -> None:
        """Return when the connection ended by itself; raise :class:`AdapterError` if it failed."""
        if self._task is None:
            raise RuntimeError("DiscordAdapter.wait_closed() before start()")
        await asyncio.shield(self._task)

    async def stop_intake(self) -> None:
        """Stop handing messages, slash commands and button presses to the engine.

        The gateway stays connected, so replies in flight are still delivered until
        ``aclose()``. Idempotent.
        """
        if self._intake_open:
            self._intake_open = False
            _log.info("Discord: stopped taking messages")

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Stop taking messages, let replies in flight finish (``grace`` s), disconnect."""
        if self._state.closed:
            return
        self._intake_open = False
        self._state = Lifecycle.CLOSING
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        await self._shutdown()
        self._state = Lifecycle.CLOSED

    async def _shutdown(self) -> None:
        logging.getLogger("discord.http").removeFilter(self._rate_limits)
        if self._client is not None:
            try:
                async with asyncio.timeout(10):
                    await self._client.close()
            except (TimeoutError, discord.DiscordException, aiohttp.ClientError, OSError):
                _log.warning("closing the Discord connection failed", exc_info=True)
        if self._task is not None:
            await reap(self._task, log_errors=False)

    # --- incoming ------------------------------------------------------------------------

    def _settled(self, future: asyncio.Future[None]) -> None:
        self._in_flight.discard(future)
        if not future.cancelled() and future.exception() is not None:
            _log.error("the engine refused a Discord message", exc_info=future.exception())

    def _accepting(self) -> bool:
        return self._intake_open and self._state is Lifecycle.RUNNING

    def _addressed(self, message: discord.Message, me: discord.ClientUser) -> bool:
        if message.guild is None:
            return True
        channel = message.channel
        if str(channel.id) in self._answer_all:
            return True
        if isinstance(channel, discord.Thread) and str(channel.parent_id) in self._answer_all:
            return True
        if any(user.id == me.id for user in message.mentions):
            return True
        reference = message.reference
        if reference is not None:
            resolved = reference.resolved or reference.cached_message
            if isinstance(resolved, discord.Message) and resolved.author.id == me.id:
                return True
        return False

    def missing_permission(self, channel_id: str, detail: str) -> None:
        """Log a missing permission once per channel."""
        if channel_id in self._warned:
            return
        self._warned.add(channel_id)
        _log.warning(
            "missing Discord permissions in channel %s (%s); the bot cannot answer there until "
            "it may view the channel, send messages (in threads), read message history and "
            "attach files",
            channel_id,
            detail,
        )

    def _can_answer(self, message: discord.Message) -> bool:
        guild = message.guild
        if guild is None or guild.me is None:
            return True
        channel = message.channel
        try:
            permissions = channel.permissions_for(guild.me)
        except discord.ClientException:
            return True  # a thread whose parent is not cached: let Discord decide
        send = (
            permissions.send_messages_in_threads
            if isinstance(channel, discord.Thread)
            else permissions.send_messages
        )
        if send and permissions.read_message_history:
            return True
        self.missing_permission(str(channel.id), "send messages / read message history")
        return False

    def on_message(self, message: discord.Message) -> None:
        """Turn an addressed message into an ``IncomingMessage`` and queue it, in order.

        Runs without awaiting, so messages reach the engine in gateway order.
        """
        client = self._client
        if not self._accepting() or client is None or client.user is None:
            return
        if message.author.bot or message.webhook_id is not None:
            return  # never answer bots, itself included: two bots cannot loop
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        me = client.user
        if not self._addressed(message, me):
            return
        if not self._can_answer(message):
            return
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        chat_id, thread_id, private = where(message.channel)
        unsupported = None if text else _unsupported(message)
        incoming = IncomingMessage(
            platform=PLATFORM,
            chat_id=chat_id,
            user_id=str(message.author.id),
            text=text,
            message_id=str(message.id),
            thread_id=thread_id,
            is_private=message.guild is None or private,
            user_name=message.author.display_name,
            # Files, photos and voice messages without text go to the engine as they are.
            unsupported=unsupported,
            reply_to_message_id=(
                str(message.reference.message_id)
                if message.reference is not None and message.reference.message_id
                else None
            ),
            attachments=_attachments(message),
            reply_attachments=_own_replied_files(message),
        )
        _log.debug("discord message %s in %s: %r", message.id, chat_id, text)
        reply = DiscordReplyChannel(
            self,
            ChannelSink(self, message),
            message.channel,
            incoming.user_id,
            max_file_bytes=self._max_file_bytes,
        )
        future = self._engine.submit(incoming, reply)  # now: gateway order is kept
        if self.ingress:
            self.track(queue_message(future, reply))
            return
        self._in_flight.add(future)
        future.add_done_callback(self._settled)

    async def _on_slash(
        self, interaction: discord.Interaction[Any], name: str, argument: str
    ) -> None:
        if not self._accepting():
            return
        if self.ingress:
            await queue_slash(self, interaction, name, argument)
            return
        sink = InteractionSink(self, interaction)
        sink.start_timer(self.settings.ack_after)
        chat_id, thread_id, private = where(interaction.channel, interaction.channel_id)
        text = f"/{name} {argument}".strip()
        incoming = IncomingMessage(
            platform=PLATFORM,
            chat_id=chat_id,
            user_id=str(interaction.user.id),
            text=text,
            thread_id=thread_id,
            is_private=interaction.guild_id is None or private,
            user_name=interaction.user.display_name,
        )
        reply = DiscordReplyChannel(self, sink, interaction.channel, incoming.user_id)
        future = self._engine.submit(incoming, reply)
        self._in_flight.add(future)
        future.add_done_callback(self._settled)
        try:
            await future
        finally:
            try:
                await sink.finish()
            except AdapterError:
                _log.warning("could not close a Discord interaction", exc_info=True)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Handle Yes/No presses on confirmation buttons, read from the button's custom id.

        The custom id carries the asker and the action id, so a press after a restart is
        understood (tool confirmations are stored by the engine and survive it; ``/forget``'s
        are answered "expired"). The asker's press replaces the buttons by the answer at
        once. Anyone else's press goes to the engine as theirs, which refuses it (or lets an
        admin confirm), with the buttons left for the asker: that answer is ephemeral.

        What follows a confirmation (the bot's factual line, the model's continuation, a
        further question) is posted in the channel like any reply, for everyone who saw the
        question, not as the presser's ephemeral follow-ups.
        """
        if interaction.type is not discord.InteractionType.component or not self._accepting():
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        parts = custom_id.split("|", 3)
        if len(parts) != 4 or parts[0] != BUTTON_PREFIX:
            return
        _, owner, answer, action_id = parts
        presser = str(interaction.user.id)
        accepted = answer == "y"
        if self.ingress:
            await queue_press(self, interaction, owner, presser, accepted, action_id)
            return
        sink = InteractionSink(self, interaction)
        channel = interaction.channel or self.client.get_partial_messageable(
            int(interaction.channel_id or 0)
        )
        public = ChannelSink.resumed(self, channel)
        if owner in ("", presser):  # "": asked where the asker was not known (recovery)
            prompt = interaction.message.content if interaction.message else ""
            await self.call(
                interaction.response.edit_message(
                    content=f"{prompt}\n\n{'Yes' if accepted else 'No'}."[:DISCORD_LIMIT],
                    view=None,
                ),
                "answer a button",
                sink.channel_id,
            )
            out = DiscordReplyChannel(self, public, channel, presser)
        else:
            sink.start_timer(self.settings.ack_after)
            out = DiscordReplyChannel(self, sink, channel, presser, replies=public)
        action = press_of(interaction, presser, action_id, accepted)
        try:
            await self._engine.handle_action(action, out)
        finally:
            try:
                await sink.finish()
            except AdapterError:
                _log.warning("could not answer a Discord button press", exc_info=True)

    # --- outgoing ------------------------------------------------------------------------

    def resume(
        self, chat_id: str, thread_id: str | None, message_ids: Sequence[str]
    ) -> DiscordReplyChannel:
        """A channel into a stored channel (or thread) whose reply edits ``message_ids``.

        Used by crash recovery (``core.chat_ports.ResumableAdapter``); works for DMs and threads
        not in discord.py's cache (a partial messageable needs no fetch).

        Raises:
            RuntimeError: before ``start()``.
        """
        client = self.client
        channel = client.get_partial_messageable(int(thread_id or chat_id))
        sink = ChannelSink.resumed(self, channel)
        return DiscordReplyChannel(self, sink, channel, "", adopt=message_ids)

    async def call(self, awaitable: Awaitable[T], what: str, channel_id: str) -> T:
        """One Discord call with the timeout; a missing permission is logged once."""
        try:
            return await bounded(awaitable, self.settings.request_timeout, what)
        except Forbidden as exc:
            self.missing_permission(channel_id, str(exc))
            raise
