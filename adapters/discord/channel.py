"""Answering one Discord message or interaction: notices, the live reply, confirmations, files.

:class:`DiscordReplyChannel` implements ``core.ports.ReplyChannel``. Where its messages go is
a sink: channel messages (the first replies to the asker in servers) or an interaction's
response and follow-ups. Its streamed reply is an :class:`~adapters.live.LiveMessage` on that
sink, split by :func:`~adapters.discord.split.split_message` (2000 characters, fences kept).
Model output never pings anyone: every send carries ``allowed_mentions`` with nothing
allowed but the reply to the asker. It is also a ``core.ports.FileSource``: the files users
attach are streamed from their attachment URL to disk, within ``MAX_FILE_MB`` (or the
caller's own limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import aiohttp
import discord

from adapters.discord.connection import NO_MENTIONS, REPLY_MENTION, Gone, reap
from adapters.discord.settings import DiscordSettings
from adapters.discord.split import DISCORD_LIMIT, escape_markdown, shows_nothing, split_message
from adapters.files import check_size, save_stream
from adapters.live import LiveMessage, LivePacing
from core.errors import AdapterError
from core.types import Attachment, IncomingAction, ReplyEvent

__all__ = [
    "BUTTON_PREFIX",
    "ChannelSink",
    "DiscordReplyChannel",
    "FollowupSink",
    "InteractionSink",
    "where",
]

_log = logging.getLogger(__name__)

BUTTON_PREFIX: Final = "chinwag"
_FILE_LIMIT: Final = 10 * 1024 * 1024  # Discord's upload limit for bots in unboosted servers
DEFAULT_DOWNLOAD_LIMIT: Final = 20 * 1024 * 1024  # MAX_FILE_MB's default
_CHUNK: Final = 64 * 1024
_TYPING_REFRESH: Final = 8.0  # Discord shows "typing..." for about 10 s per request

T = TypeVar("T")


PLATFORM: Final = "discord"


def where(channel: Any, fallback_id: int | None = None) -> tuple[str, str | None, bool]:
    """(chat id, thread id, private) of a channel; a thread belongs to its parent channel."""
    if channel is None:
        return str(fallback_id), None, False  # callers decide privacy from the guild id
    if isinstance(channel, discord.Thread):
        return str(channel.parent_id), str(channel.id), False
    private = isinstance(channel, discord.DMChannel | discord.GroupChannel) or (
        getattr(channel, "guild", None) is None
        and getattr(channel, "type", None) == discord.ChannelType.private
    )
    return str(channel.id), None, private


def press_of(
    interaction: discord.Interaction[Any],
    presser: str,
    action_id: str,
    accepted: bool,
    reply_via: str | None = None,
) -> IncomingAction:
    """The press of a confirmation button, where it was pressed."""
    chat_id, thread_id, private = where(interaction.channel, interaction.channel_id)
    return IncomingAction(
        platform=PLATFORM,
        chat_id=chat_id,
        user_id=presser,
        action_id=action_id,
        accepted=accepted,
        thread_id=thread_id,
        is_private=interaction.guild_id is None or private,
        reply_via=reply_via,
    )


class Caller(Protocol):
    """What the sinks need of the adapter: its settings and its bounded call."""

    settings: DiscordSettings

    async def call(self, awaitable: Awaitable[T], what: str, channel_id: str) -> T:
        """One Discord call with the timeout; a missing permission is logged once."""
        ...


class ChannelSink:
    """Messages in a channel; the first replies to the asker in servers."""

    def __init__(self, adapter: Caller, message: discord.Message) -> None:
        self._adapter = adapter
        self._message: discord.Message | None = message
        self._channel: Any = message.channel
        self.channel_id = str(message.channel.id)
        self._reply = message.guild is not None  # a DM needs no reply marker
        self.asker_in_guild = message.author if message.guild is not None else None

    @classmethod
    def resumed(cls, adapter: Caller, channel: Any) -> ChannelSink:
        """Messages in ``channel`` with no message to reply to (crash recovery)."""
        sink = cls.__new__(cls)
        sink._adapter = adapter
        sink._message = None
        sink._channel = channel
        sink.channel_id = str(channel.id)
        sink._reply = False
        sink.asker_in_guild = None
        return sink

    @classmethod
    def replying(
        cls, adapter: Caller, channel: Any, message_id: str | None, asker: Any | None
    ) -> ChannelSink:
        """Messages in ``channel`` (a partial one: REST only) replying to ``message_id``.

        ``asker`` is the author in a server (``None`` in a DM): an object whose ``send``
        delivers a direct message (history files go there).
        """
        sink = cls.resumed(adapter, channel)
        if message_id is not None:
            sink._message = channel.get_partial_message(int(message_id))
        sink._reply = asker is not None
        sink.asker_in_guild = asker
        return sink

    async def post(self, content: str, first: bool) -> Any:
        """Send ``content``; the ``first`` message of an answer replies to the asker."""
        message = self._message
        reference = message.to_reference(fail_if_not_exists=False) if first and message else None
        return await self._adapter.call(
            self._channel.send(
                content,
                reference=reference if self._reply else None,
                allowed_mentions=REPLY_MENTION if first and self._reply else NO_MENTIONS,
            ),
            "send a message",
            self.channel_id,
        )

    async def edit(self, handle: Any, content: str) -> None:
        """Edit a posted message to ``content``."""
        await self._adapter.call(
            handle.edit(content=content, allowed_mentions=NO_MENTIONS),
            "edit a message",
            self.channel_id,
        )

    async def remove(self, handle: Any) -> None:
        """Delete a posted message."""
        await self._adapter.call(handle.delete(), "delete a message", self.channel_id)

    async def typing(self) -> None:
        """Show the typing indicator (an interaction shows "thinking..." instead)."""
        await self._adapter.call(self._channel.typing(), "show typing", self.channel_id)

    def partial(self, message_id: str) -> Any:
        """A handle on a message of this channel already on screen (editable, deletable)."""
        get = getattr(self._channel, "get_partial_message", None)
        if get is None:
            raise AdapterError("messages of this channel cannot be taken over by id")
        return get(int(message_id))


class _InteractionAnswers:
    """What answering an interaction's messages shares, once they are posted."""

    _adapter: Caller
    channel_id: str

    async def edit(self, handle: Any, content: str) -> None:
        """Edit a posted message to ``content``."""
        await self._adapter.call(
            handle.edit(content=content, allowed_mentions=NO_MENTIONS),
            "edit an answer",
            self.channel_id,
        )

    async def remove(self, handle: Any) -> None:
        """Delete a posted message."""
        await self._adapter.call(handle.delete(), "delete an answer", self.channel_id)

    async def typing(self) -> None:
        """Show the typing indicator (an interaction shows "thinking..." instead)."""
        return None  # the deferred "thinking..." state shows activity

    def partial(self, message_id: str) -> Any:
        """Refused: an interaction's answers are reached through its token, not by id."""
        raise AdapterError("an interaction's messages cannot be taken over by id")


class InteractionSink(_InteractionAnswers):
    """Answers to an interaction: its response first, then follow-ups (15 minutes).

    In a server the answers are ephemeral (only the user who ran the command sees them):
    usage, history, exports and confirmations are personal.
    """

    def __init__(self, adapter: Caller, interaction: discord.Interaction[Any]) -> None:
        self._adapter = adapter
        self._interaction = interaction
        self.channel_id = str(interaction.channel_id)
        self._ephemeral = interaction.guild_id is not None
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    def start_timer(self, after: float) -> None:
        """Defer ("thinking...") unless an answer was sent within ``after`` seconds."""
        self._timer = asyncio.create_task(
            self._defer_later(after), name="chinwag-discord-interaction-ack"
        )

    async def _defer_later(self, after: float) -> None:
        await asyncio.sleep(after)
        async with self._lock:
            if not self._interaction.response.is_done():
                try:
                    await self._adapter.call(
                        self._interaction.response.defer(thinking=True, ephemeral=self._ephemeral),
                        "acknowledge a command",
                        self.channel_id,
                    )
                except AdapterError:
                    _log.warning("could not defer a Discord interaction", exc_info=True)

    async def defer_now(self, *, update: bool = False) -> None:
        """Acknowledge now; a failure is logged.

        "thinking..." (private in servers), or no visible change for a button press whose
        message is edited later (``update``).
        """
        async with self._lock:
            response = self._interaction.response
            if response.is_done():
                return
            acknowledged = (
                response.defer()
                if update
                else response.defer(thinking=True, ephemeral=self._ephemeral)
            )
            try:
                await self._adapter.call(
                    acknowledged, "acknowledge an interaction", self.channel_id
                )
            except AdapterError:
                _log.warning("could not acknowledge a Discord interaction", exc_info=True)

    async def finish(self) -> None:
        """Stop the timer; make sure Discord saw an answer (else it shows an error)."""
        if self._timer is not None:
            await reap(self._timer)
        async with self._lock:
            if not self._interaction.response.is_done():
                await self._adapter.call(
                    self._interaction.response.send_message("Done.", ephemeral=True),
                    "answer a command",
                    self.channel_id,
                )

    async def post(self, content: str, first: bool, **extra: Any) -> Any:
        """Answer the interaction, or send a follow-up once it was answered."""
        async with self._lock:
            response = self._interaction.response
            if not response.is_done():
                callback = await self._adapter.call(
                    response.send_message(
                        content,
                        allowed_mentions=NO_MENTIONS,
                        ephemeral=self._ephemeral,
                        **extra,
                    ),
                    "answer a command",
                    self.channel_id,
                )
                if isinstance(callback.resource, discord.InteractionMessage):
                    return callback.resource
                return await self._adapter.call(
                    self._interaction.original_response(), "read an answer", self.channel_id
                )
            return await self._adapter.call(
                self._interaction.followup.send(
                    content,
                    wait=True,
                    allowed_mentions=NO_MENTIONS,
                    ephemeral=self._ephemeral,
                    **extra,
                ),
                "send a follow-up",
                self.channel_id,
            )


class FollowupSink(_InteractionAnswers):
    """Answers through an interaction's webhook, from a process that never saw it.

    Ingress acknowledged the interaction (deferred: "thinking...") and queued it with its
    token; the worker's first answer replaces the "thinking..." message, later ones are
    follow-ups, ephemeral in servers as :class:`InteractionSink`'s are. The token is valid
    15 minutes after the command.
    """

    def __init__(
        self, adapter: Caller, webhook: discord.Webhook, channel_id: str, *, ephemeral: bool
    ):
        self._adapter = adapter
        self._webhook = webhook
        self.channel_id = channel_id
        self._ephemeral = ephemeral

    async def post(self, content: str, first: bool, **extra: Any) -> Any:
        """Send a follow-up (the first replaces the deferred "thinking...")."""
        return await self._adapter.call(
            self._webhook.send(
                content,
                wait=True,
                allowed_mentions=NO_MENTIONS,
                ephemeral=self._ephemeral,
                **extra,
            ),
            "answer a command",
            self.channel_id,
        )


Sink = ChannelSink | InteractionSink | FollowupSink


class DiscordReplyChannel:
    """The :class:`core.ports.ReplyChannel` for one incoming message, command or press.

    Notices and files go to ``sink``; the model's replies and the questions it leads to go
    to ``replies`` (default: ``sink``). A button press by someone other than the asker
    answers them in private (an ephemeral interaction sink) while what the conversation
    says next still goes to the channel, for everyone who saw the question.
    """

    def __init__(
        self,
        adapter: Caller,
        sink: Sink,
        channel: Any,
        user_id: str,
        adopt: Sequence[str] = (),
        replies: Sink | None = None,
        max_file_bytes: int | None = None,
    ) -> None:
        self._adapter = adapter
        self._file_limit = max_file_bytes or DEFAULT_DOWNLOAD_LIMIT
        self._adopt = tuple(adopt)  # messages on screen the streamed reply takes over
        self._sink = sink
        self._replies = replies or sink
        self._channel = channel
        self._user_id = user_id
        self._settings = settings = adapter.settings
        self._pacing = LivePacing(
            first_flush_delay=settings.edit_interval,
            typing_delay=settings.typing_delay,
            typing_repeat=_TYPING_REFRESH,
        )

    async def download(
        self, attachment: Attachment, destination: Path, *, max_bytes: int | None = None
    ) -> int:
        """Fetch a file the user attached into ``destination``; return its size in bytes.

        Refused before anything is fetched when its size is over the limit (``max_bytes``,
        else ``MAX_FILE_MB``), and while streaming if more bytes arrive than that.

        Raises:
            DownloadRefused: the file is too big (``user_message`` says the limit).
            AdapterError: the attachment URL failed (expired, unreachable). Nothing is left
                at ``destination`` after a failure.
        """
        limit = max_bytes or self._file_limit
        check_size(attachment.size, limit, attachment.name)
        seconds = self._settings.request_timeout
        timeout = aiohttp.ClientTimeout(sock_connect=seconds, sock_read=seconds)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(attachment.ref) as response,
            ):
                if response.status != 200:
                    raise AdapterError(
                        f"Discord attachment download failed: HTTP {response.status}"
                    )
                check_size(response.content_length, limit, attachment.name)
                return await save_stream(
                    response.content.iter_chunked(_CHUNK),
                    destination,
                    limit=limit,
                    name=attachment.name,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:  # save_stream removed its file
            raise AdapterError(f"Discord attachment download failed: {exc!r}") from exc

    async def send_text(self, text: str) -> Sequence[str]:
        """Send a notice (split when long); return the message ids."""
        ids: list[str] = []
        for index, part in enumerate(split_message(text)):
            message = await self._sink.post(part, first=index == 0)
            ids.append(str(message.id))
        return ids

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        """Show the reply as ``events`` arrive, in messages edited live; return their ids.

        The policy is :class:`~adapters.live.LiveMessage`'s: the text is re-split on every
        flush, so the messages always hold exactly ``split_message(text so far)``; flushes
        (the first included) are ``DISCORD_EDIT_INTERVAL`` apart, on top of discord.py's own
        rate-limit handling; a queue notice shows until the answer replaces it; the final
        flush makes every message match the complete text. A channel built with ``adopt``
        ids (crash recovery) edits those messages into the reply.
        """
        surface = _Surface(self._replies, self._settings)
        if self._adopt:
            live = LiveMessage.adopt(surface, self._pacing, self._adopt, on_posted)
            return await live.run(events)
        return await LiveMessage(surface, self._pacing, on_posted).run(events)

    def adopt(self, platform_ids: Sequence[str]) -> LiveMessage[str, Any]:
        """A live message that takes over messages of this channel already on screen."""
        surface = _Surface(self._replies, self._settings)
        return LiveMessage.adopt(surface, self._pacing, platform_ids)

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        """Show ``prompt`` with Yes / No buttons; a press comes back as an action."""
        view = discord.ui.View(timeout=None)
        for accepted, label, style in (
            (True, "Yes", discord.ButtonStyle.danger),
            (False, "No", discord.ButtonStyle.secondary),
        ):
            custom_id = _button_id(self._user_id, accepted, action_id)
            view.add_item(discord.ui.Button(label=label, style=style, custom_id=custom_id))
        # Presses are read from the custom id (asker and action id, so a press after a
        # restart is understood) in on_interaction, not through discord.py's view store, so
        # the view is stopped.
        view.stop()
        if isinstance(self._replies, InteractionSink | FollowupSink):
            await self._replies.post(prompt, first=True, view=view)
            return
        await self._adapter.call(
            self._channel.send(prompt, view=view, allowed_mentions=NO_MENTIONS),
            "ask for confirmation",
            self._replies.channel_id,
        )

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        """Attach ``data`` as a file; an oversized file gets a notice instead."""
        if len(data) > _FILE_LIMIT:
            await self.send_text(
                f"The file is too large to attach here ({len(data) / 1e6:.1f} MB; the limit is "
                f"{_FILE_LIMIT / 1e6:.0f} MB). The operator can export it with `chinwag export`."
            )
            return
        file = discord.File(io.BytesIO(data), filename=filename)
        if isinstance(self._sink, InteractionSink | FollowupSink):
            await self._sink.post(caption[:DISCORD_LIMIT], first=True, file=file)
            return
        asker = self._sink.asker_in_guild
        if asker is not None:
            # A history file is personal: in a server it goes to the asker's DMs.
            try:
                await self._adapter.call(
                    asker.send(caption[:DISCORD_LIMIT] or None, file=file),
                    "send a file by direct message",
                    self._sink.channel_id,
                )
            except AdapterError:
                _log.info("could not DM a file to a Discord user (DMs closed?)", exc_info=True)
                await self.send_text(
                    "I couldn't send you a direct message. Use the /export slash command "
                    "instead: only you will see the file."
                )
                return
            await self.send_text("I sent it to you in a direct message.")
            return
        await self._adapter.call(
            self._channel.send(
                caption[:DISCORD_LIMIT] or None, file=file, allowed_mentions=NO_MENTIONS
            ),
            "send a file",
            self._sink.channel_id,
        )


def _button_id(user_id: str, accepted: bool, action_id: str) -> str:
    custom_id = f"{BUTTON_PREFIX}|{user_id}|{'y' if accepted else 'n'}|{action_id}"
    if len(custom_id) > 100:
        raise AdapterError("confirmation id too long for a Discord button")
    return custom_id


class _Surface:
    """The :class:`~adapters.live.LiveSurface` of one reply: discord.py messages as handles."""

    __slots__ = ("_interval", "_last_write", "_loop", "_sink")

    def __init__(self, sink: Sink, settings: DiscordSettings) -> None:
        self._sink = sink
        self._interval = settings.edit_interval
        self._loop = asyncio.get_running_loop()
        self._last_write = float("-inf")

    def render(self, text: str) -> list[str]:
        return [] if shows_nothing(text) else split_message(text)

    def plain(self, text: str) -> list[str]:
        return split_message(escape_markdown(text))

    async def post(self, part: str, index: int) -> Any:
        try:
            return await self._sink.post(part, first=index == 0)
        finally:
            self._last_write = self._loop.time()

    async def edit(self, handle: Any, part: str, *, final: bool) -> bool:
        try:
            await self._sink.edit(handle, part)
        finally:
            self._last_write = self._loop.time()
        return True

    async def delete(self, handle: Any) -> None:
        with contextlib.suppress(Gone):
            await self._sink.remove(handle)

    async def typing(self) -> None:
        """Show the typing indicator (an interaction shows "thinking..." instead)."""
        try:
            await self._sink.typing()
        except AdapterError:
            _log.debug("typing indicator refused", exc_info=True)

    def next_edit_at(self) -> float:
        return self._last_write + self._interval

    def platform_id(self, handle: Any) -> str:
        return str(handle.id)

    def handle_for(self, platform_id: str) -> Any:
        return self._sink.partial(platform_id)
