"""The Discord adapter: discord.py 2.x in front of the conversation engine.

Who is answered: direct messages always; in server channels and threads, messages that
mention the bot or reply to one of its messages, and every message in the channels listed in
``DISCORD_ANSWER_ALL_CHANNELS``. Messages from bots (itself included) are never answered, so
two bots cannot loop. A thread is its own conversation (``thread_id``) and replies stay in it.

Replies stream into one message edited at most every ``DISCORD_EDIT_INTERVAL`` seconds (on top
of discord.py's own rate-limit handling), and overflow into further messages of at most 2000
characters (:func:`adapters.discord.split.split_message`). Model output never pings anyone:
every send carries ``allowed_mentions`` with nothing allowed but the reply to the asker.

The engine's commands become slash commands, registered only when their set changed since
the last registration (a hash per application id in ``<data dir>/discord-commands.json``), as
Discord rate-limits command creation; :func:`sync_commands` forces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import discord
import yarl
from discord import app_commands

from adapters.discord.settings import DiscordSettings
from adapters.discord.split import DISCORD_LIMIT, split_message
from core.errors import AdapterError, ConfigError
from core.ports import ReplyChannel
from core.types import (
    CommandInfo,
    IncomingAction,
    IncomingMessage,
    ReplyEvent,
    text_deltas,
)

_log = logging.getLogger(__name__)

PLATFORM = "discord"
COMMANDS_FILE = "discord-commands.json"
INTENT_HELP = (
    "Discord refused the Message Content intent (gateway close code 4014). Enable it in the "
    "Developer Portal: your application > Bot > Privileged Gateway Intents > "
    "MESSAGE CONTENT INTENT, then restart."
)
_BUTTON_PREFIX = "chinwag"
_FILE_LIMIT = 10 * 1024 * 1024  # Discord's upload limit for bots in unboosted servers
_TYPING_REFRESH = 8.0  # Discord shows "typing..." for about 10 s per request
_NO_MENTIONS = discord.AllowedMentions.none()
_REPLY_MENTION = discord.AllowedMentions(
    everyone=False, users=False, roles=False, replied_user=True
)

T = TypeVar("T")


class ConversationEngine(Protocol):
    """What the adapter needs of :class:`core.engine.Engine`."""

    @property
    def bot_name(self) -> str:
        """The bot's name."""
        ...

    def commands(self) -> Sequence[CommandInfo]:
        """The commands to register."""
        ...

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        """Queue a message in arrival order."""
        ...

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        """Answer a message."""
        ...

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        """Answer a button press."""
        ...


def configure_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at ``DISCORD_API_BASE_URL`` / ``DISCORD_GATEWAY_URL`` when set.

    discord.py keeps both process-wide (``discord.http.Route.BASE``, which interaction
    webhooks use too, and ``DiscordWebSocket.DEFAULT_GATEWAY``; a plain ``Client`` never asks
    ``GET /gateway``), so this must run before the client logs in.
    """
    if settings.api_base_url:
        discord.http.Route.BASE = settings.api_base_url.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def _quiet_voice() -> None:
    # chinwag never joins voice: skip discord.py's "PyNaCl / davey is not installed" warnings.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


def _intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True  # privileged: see INTENT_HELP
    return intents


def _where(channel: Any, fallback_id: int | None = None) -> tuple[str, str | None, bool]:
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


def _unsupported(message: discord.Message) -> str | None:
    if message.attachments:
        kinds = {(a.content_type or "").split("/")[0] for a in message.attachments}
        if kinds == {"image"}:
            return "image"
        if kinds <= {"audio"}:
            return "voice message" if message.flags.voice else "audio file"
        if kinds == {"video"}:
            return "video"
        return "file"
    if message.stickers:
        return "sticker"
    if message.embeds:
        return "embed"
    if message.poll is not None:
        return "poll"
    return None


async def _bounded(awaitable: Awaitable[T], limit: float, what: str) -> T:
    """Await one Discord call; translate its failures into :class:`AdapterError`."""
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except discord.Forbidden as exc:
        raise _Forbidden(f"Discord refused to {what}: missing permissions ({exc.code})") from exc
    except discord.NotFound as exc:
        raise _Gone(f"Discord could not {what}: not found ({exc.code})") from exc
    except discord.HTTPException as exc:
        raise AdapterError(f"Discord refused to {what}: HTTP {exc.status} code {exc.code}") from exc
    except TimeoutError as exc:
        raise AdapterError(f"Discord did not answer within {limit:g}s to {what}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise AdapterError(f"could not reach Discord to {what}: {type(exc).__name__}") from exc


async def _reap(*tasks: asyncio.Task[Any], log_errors: bool = True) -> None:
    """Cancel ``tasks`` if still running and wait for them to end.

    A cancellation of the caller still propagates; the tasks' own errors are retrieved and
    logged at DEBUG (when ``log_errors``), never raised.
    """
    for task in tasks:
        if not task.done():
            task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None and log_errors:
            _log.debug("a helper task failed", exc_info=error)


class _Forbidden(AdapterError):
    """The bot lacks a permission in the channel."""


class _Gone(AdapterError):
    """The message or interaction no longer exists."""


# --- where replies go ------------------------------------------------------------------------


class _Sink(Protocol):
    """Posting and editing the messages of one reply."""

    channel_id: str

    async def post(self, content: str, first: bool) -> Any: ...

    async def edit(self, handle: Any, content: str) -> None: ...

    async def remove(self, handle: Any) -> None: ...

    async def typing(self) -> None: ...


class _ChannelSink:
    """Messages in a channel; the first replies to the asker in servers."""

    def __init__(self, adapter: DiscordAdapter, message: discord.Message) -> None:
        self._adapter = adapter
        self._message = message
        self._channel = message.channel
        self.channel_id = str(message.channel.id)
        self._reply = message.guild is not None  # a DM needs no reply marker
        self.asker_in_guild = message.author if message.guild is not None else None

    async def post(self, content: str, first: bool) -> Any:
        reference = self._message.to_reference(fail_if_not_exists=False) if first else None
        return await self._adapter.call(
            self._channel.send(
                content,
                reference=reference if self._reply else None,  # type: ignore[arg-type]
                allowed_mentions=_REPLY_MENTION if first and self._reply else _NO_MENTIONS,
            ),
            "send a message",
            self.channel_id,
        )

    async def edit(self, handle: Any, content: str) -> None:
        await self._adapter.call(
            handle.edit(content=content, allowed_mentions=_NO_MENTIONS),
            "edit a message",
            self.channel_id,
        )

    async def remove(self, handle: Any) -> None:
        await self._adapter.call(handle.delete(), "delete a message", self.channel_id)

    async def typing(self) -> None:
        await self._adapter.call(self._channel.typing(), "show typing", self.channel_id)


class _InteractionSink:
    """Answers to an interaction: its response first, then follow-ups (15 minutes).

    In a server the answers are ephemeral (only the user who ran the command sees them):
    usage, history, exports and confirmations are personal.
    """

    def __init__(self, adapter: DiscordAdapter, interaction: discord.Interaction[Any]) -> None:
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

    async def finish(self) -> None:
        """Stop the timer; make sure Discord saw an answer (else it shows an error)."""
        if self._timer is not None:
            await _reap(self._timer)
        async with self._lock:
            if not self._interaction.response.is_done():
                await self._adapter.call(
                    self._interaction.response.send_message("Done.", ephemeral=True),
                    "answer a command",
                    self.channel_id,
                )

    async def post(self, content: str, first: bool, **extra: Any) -> Any:
        async with self._lock:
            response = self._interaction.response
            if not response.is_done():
                callback = await self._adapter.call(
                    response.send_message(
                        content,
                        allowed_mentions=_NO_MENTIONS,
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
                    allowed_mentions=_NO_MENTIONS,
                    ephemeral=self._ephemeral,
                    **extra,
                ),
                "send a follow-up",
                self.channel_id,
            )

    async def edit(self, handle: Any, content: str) -> None:
        await self._adapter.call(
            handle.edit(content=content, allowed_mentions=_NO_MENTIONS),
            "edit an answer",
            self.channel_id,
        )

    async def remove(self, handle: Any) -> None:
        await self._adapter.call(handle.delete(), "delete an answer", self.channel_id)

    async def typing(self) -> None:
        return None  # the deferred "thinking..." state shows activity


async def _stream(sink: _Sink, deltas: AsyncIterator[str], settings: DiscordSettings) -> list[str]:
    """Show ``deltas`` as they arrive through ``sink``; return the ids of the messages.

    The text is re-split on every flush, so the messages always hold exactly
    ``split_message(text so far)``: nothing is lost at a boundary, and the final flush makes
    every message match the complete text.
    """
    loop = asyncio.get_running_loop()
    chunks: list[str] = []
    changed = asyncio.Event()
    last_token = loop.time()
    handles: list[Any] = []
    shown: list[str] = []
    typing_reset = asyncio.Event()

    async def read() -> None:
        nonlocal last_token
        async for delta in deltas:
            if delta:
                chunks.append(delta)
                last_token = loop.time()
                changed.set()

    async def render() -> None:
        parts = split_message("".join(chunks))
        for index, part in enumerate(parts):
            if index < len(handles):
                if shown[index] == part:
                    continue
                try:
                    await sink.edit(handles[index], part)
                except _Gone:
                    # Someone deleted the message: post the text again rather than lose it.
                    handles[index] = await sink.post(part, first=index == 0)
            else:
                handles.append(await sink.post(part, first=index == 0))
                shown.append("")
                typing_reset.set()
            shown[index] = part
        for extra in handles[len(parts) :]:
            # A re-split needs fewer messages than before (rare): drop the spare one.
            with contextlib.suppress(_Gone):
                await sink.remove(extra)
        del handles[len(parts) :], shown[len(parts) :]

    async def show_typing() -> None:
        last_typing: float | None = None
        while True:
            idle = loop.time() - last_token
            if typing_reset.is_set():
                typing_reset.clear()
                last_typing = None  # a new message clears the indicator on Discord
            wait = settings.typing_delay - idle
            if wait <= 0 and (last_typing is None or loop.time() - last_typing >= _TYPING_REFRESH):
                try:
                    await sink.typing()
                except AdapterError:
                    _log.debug("typing indicator refused", exc_info=True)
                last_typing = loop.time()
                wait = settings.typing_delay
            await asyncio.sleep(max(wait, 0.05))

    reader = asyncio.create_task(read(), name="chinwag-discord-read-reply")
    typer = asyncio.create_task(show_typing(), name="chinwag-discord-typing")
    try:
        first_token: float | None = None
        last_flush: float | None = None
        while True:
            waiter = asyncio.create_task(changed.wait(), name="chinwag-discord-wait-text")
            try:
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if reader.done():
                break
            if first_token is None:
                first_token = loop.time()
            due = (last_flush if last_flush is not None else first_token) + settings.edit_interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.wait({reader}, timeout=delay)
                if reader.done():
                    break
            changed.clear()
            try:
                await render()
            except AdapterError as exc:
                if isinstance(exc, _Forbidden):
                    raise
                _log.warning("a streaming update failed; the final one will retry: %s", exc)
            last_flush = loop.time()
        typer.cancel()
        try:
            await render()
        except AdapterError as exc:
            if isinstance(exc, _Forbidden):
                raise
            _log.warning("the final update failed, retrying once: %s", exc)
            await render()
        await reader  # surfaces an exception raised by the iterator itself
        return [str(h.id) for h in handles]
    finally:
        await _reap(reader, typer)


class _Reply:
    """The :class:`core.ports.ReplyChannel` for one incoming message or command."""

    def __init__(
        self,
        adapter: DiscordAdapter,
        sink: _ChannelSink | _InteractionSink,
        channel: Any,
        user_id: str,
    ) -> None:
        self._adapter = adapter
        self._sink = sink
        self._channel = channel
        self._user_id = user_id

    async def send_text(self, text: str) -> Sequence[str]:
        """Send a notice (split when long); return the message ids."""
        ids: list[str] = []
        for index, part in enumerate(split_message(text)):
            message = await self._sink.post(part, first=index == 0)
            ids.append(str(message.id))
        return ids

    async def stream_reply(self, events: AsyncIterator[ReplyEvent]) -> Sequence[str]:
        """Stream the reply into edited messages; return their ids."""
        return await _stream(self._sink, text_deltas(events), self._adapter.settings)

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        """Show ``prompt`` with Yes / No buttons; a press comes back as an action."""
        view = discord.ui.View(timeout=None)
        for accepted, label, style in (
            (True, "Yes", discord.ButtonStyle.danger),
            (False, "No", discord.ButtonStyle.secondary),
        ):
            custom_id = _button_id(self._user_id, accepted, action_id)
            view.add_item(discord.ui.Button(label=label, style=style, custom_id=custom_id))
        # Presses are handled statelessly in on_interaction (they work after a restart), so
        # the view must not sit in discord.py's view store.
        view.stop()
        if isinstance(self._sink, _InteractionSink):
            await self._sink.post(prompt, first=True, view=view)
            return
        await self._adapter.call(
            self._channel.send(prompt, view=view, allowed_mentions=_NO_MENTIONS),
            "ask for confirmation",
            self._sink.channel_id,
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
        if isinstance(self._sink, _InteractionSink):
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
                caption[:DISCORD_LIMIT] or None, file=file, allowed_mentions=_NO_MENTIONS
            ),
            "send a file",
            self._sink.channel_id,
        )


def _button_id(user_id: str, accepted: bool, action_id: str) -> str:
    custom_id = f"{_BUTTON_PREFIX}|{user_id}|{'y' if accepted else 'n'}|{action_id}"
    if len(custom_id) > 100:
        raise AdapterError("confirmation id too long for a Discord button")
    return custom_id


# --- slash commands ------------------------------------------------------------------------

SlashHandler = Callable[[discord.Interaction[Any], str, str], Awaitable[None]]


def _command(info: CommandInfo, handler: SlashHandler) -> app_commands.Command[Any, Any, None]:
    """A slash command for one engine command; its argument is one optional string."""
    name = info.name
    description = info.description[:100] or name
    if info.argument is None:

        async def plain(interaction: discord.Interaction[Any]) -> None:
            await handler(interaction, name, "")

        return app_commands.Command(name=name, description=description, callback=plain)

    async def with_argument(
        interaction: discord.Interaction[Any], argument: str | None = None
    ) -> None:
        await handler(interaction, name, argument or "")

    callback: Any = with_argument
    argument = re.sub(r"[^a-z0-9_-]", "_", info.argument.lower())[:32] or "argument"
    if info.choices and len(info.choices) <= 25:
        callback = app_commands.choices(
            argument=[app_commands.Choice(name=c[:100], value=c) for c in info.choices]
        )(callback)
    callback = app_commands.describe(argument=f"{info.argument} (optional)")(callback)
    callback = app_commands.rename(argument=argument)(callback)
    return app_commands.Command(name=name, description=description, callback=callback)


def build_tree(
    client: discord.Client, commands: Sequence[CommandInfo], handler: SlashHandler
) -> app_commands.CommandTree[Any]:
    """A command tree holding one slash command per engine command."""
    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)
    for info in commands:
        tree.add_command(_command(info, handler))
    return tree


def commands_hash(tree: app_commands.CommandTree[Any]) -> str:
    """A stable hash of the command payload Discord would receive."""
    payload = sorted(
        (command.to_dict(tree) for command in tree.get_commands()), key=lambda c: str(c["name"])
    )
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_hashes(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        _log.warning("ignoring unreadable %s; slash commands will be registered again", path)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_hash(path: Path, application_id: str, digest: str) -> None:
    hashes = _read_hashes(path)
    hashes[application_id] = digest
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(hashes, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


async def _sync(
    tree: app_commands.CommandTree[Any],
    application_id: str,
    data_dir: Path,
    *,
    force: bool,
    limit: float,
) -> bool:
    """Register the commands if forced or changed; return whether Discord was called."""
    path = data_dir / COMMANDS_FILE
    digest = commands_hash(tree)
    if not force and _read_hashes(path).get(application_id) == digest:
        _log.info("Discord slash commands unchanged; not registering them again")
        return False
    synced = await _bounded(tree.sync(), limit, "register slash commands")
    _write_hash(path, application_id, digest)
    _log.info("registered %d Discord slash commands", len(synced))
    return True


def _token(settings: DiscordSettings) -> str:
    if settings.bot_token is None or not settings.bot_token.get_secret_value().strip():
        raise ConfigError("DISCORD_BOT_TOKEN", "is not set", DiscordSettings.EXAMPLES["bot_token"])
    return settings.bot_token.get_secret_value().strip()


async def _login(client: discord.Client, settings: DiscordSettings) -> None:
    try:
        await _bounded(client.login(_token(settings)), settings.request_timeout, "log in")
    except discord.LoginFailure as exc:
        raise ConfigError(
            "DISCORD_BOT_TOKEN",
            "Discord rejected the token (401); copy it again from Developer Portal > Bot",
            DiscordSettings.EXAMPLES["bot_token"],
        ) from exc


async def sync_commands(
    settings: DiscordSettings,
    commands: ConversationEngine | Sequence[CommandInfo],
    data_dir: Path,
) -> int:
    """Register the slash commands now, whatever the stored hash says (``chinwag discord sync``).

    ``commands`` is the engine (its ``commands()`` are used) or the command list. Logs in
    over REST only (no gateway), stores the new hash under ``data_dir`` and returns how many
    commands were registered. Raises :class:`ConfigError` for a missing or rejected token and
    :class:`AdapterError` when Discord refuses.
    """
    infos = commands.commands() if hasattr(commands, "commands") else commands
    configure_endpoints(settings)
    _quiet_voice()
    client = discord.Client(intents=_intents())

    async def unused(interaction: discord.Interaction[Any], name: str, argument: str) -> None:
        return None

    try:
        await _login(client, settings)
        tree = build_tree(client, infos, unused)
        await _sync(
            tree,
            str(client.application_id),
            data_dir,
            force=True,
            limit=settings.request_timeout,
        )
        return len(tree.get_commands())
    finally:
        await client.close()


# --- the adapter -----------------------------------------------------------------------------


class _Client(discord.Client):
    """discord.py's client, forwarding events to the adapter."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        _quiet_voice()
        super().__init__(
            intents=_intents(),
            guild_ready_timeout=adapter.settings.guild_ready_timeout,
            allowed_mentions=_NO_MENTIONS,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=1000,
        )
        self._adapter = adapter

    async def on_message(self, message: discord.Message) -> None:
        self._adapter.on_message(message)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self._adapter.on_interaction(interaction)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        _log.exception("error in the Discord %s handler", event_method)


class DiscordAdapter:
    """Serves the engine on Discord.

    Args:
        settings: the ``DISCORD_*`` settings (``bot_token`` must be set).
        engine: the conversation engine (started and closed by the caller).
        data_dir: where the slash-command hash file lives (``CHINWAG_DATA_DIR``).

    ``start()`` logs in, registers slash commands if their set changed, connects the gateway
    and returns once the bot is ready; it raises :class:`ConfigError` for a missing or
    rejected token and :class:`AdapterError` when Discord refuses (close code 4014: the
    Message Content intent is off). ``aclose()`` stops taking messages, lets replies in
    flight finish and disconnects. Both are idempotent.
    """

    name = PLATFORM

    def __init__(
        self, settings: DiscordSettings, engine: ConversationEngine, *, data_dir: Path
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._data_dir = data_dir
        self._state = "new"
        self._client: _Client | None = None
        self._tree: app_commands.CommandTree[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Future[None]] = set()
        self._answer_all = frozenset(settings.answer_all_channels)
        self._warned: set[str] = set()
        self.commands_synced = False

    @property
    def pending(self) -> int:
        """Messages and commands taken but not answered yet."""
        return len(self._in_flight)

    @property
    def client(self) -> discord.Client:
        """The discord.py client (after ``start()``)."""
        if self._client is None:
            raise RuntimeError("DiscordAdapter.client before start()")
        return self._client

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Log in, sync commands when changed, connect, return once ready."""
        if self._state == "started":
            return
        if self._state != "new":
            raise RuntimeError(f"DiscordAdapter.start() after {self._state}")
        self._state = "starting"
        configure_endpoints(self.settings)
        client = self._client = _Client(self)
        try:
            await _login(client, self.settings)
            self._tree = build_tree(client, self._engine.commands(), self._on_slash)
            if self.settings.sync_commands:
                try:
                    self.commands_synced = await _sync(
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
            self._state = "closed"
            await self._shutdown()
            raise
        self._state = "started"
        user = client.user
        _log.info("connected to Discord as %s (id %s)", user, user.id if user else "?")

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
        """Stop taking new messages; replies in flight can still be delivered. Idempotent."""
        # Interim: the structure work replaces this with a real intake stop.

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Stop taking messages, let replies in flight finish (``grace`` s), disconnect."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._client is not None:
            try:
                async with asyncio.timeout(10):
                    await self._client.close()
            except (TimeoutError, discord.DiscordException, aiohttp.ClientError, OSError):
                _log.warning("closing the Discord connection failed", exc_info=True)
        if self._task is not None:
            await _reap(self._task, log_errors=False)

    # --- incoming ------------------------------------------------------------------------

    def _settled(self, future: asyncio.Future[None]) -> None:
        self._in_flight.discard(future)
        if not future.cancelled() and future.exception() is not None:
            _log.error("the engine refused a Discord message", exc_info=future.exception())

    def _accepting(self) -> bool:
        return self._state == "started"

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
        chat_id, thread_id, private = _where(message.channel)
        incoming = IncomingMessage(
            platform=PLATFORM,
            chat_id=chat_id,
            user_id=str(message.author.id),
            text=text,
            message_id=str(message.id),
            thread_id=thread_id,
            is_private=message.guild is None or private,
            user_name=message.author.display_name,
            unsupported=None if text else _unsupported(message),
            reply_to_message_id=(
                str(message.reference.message_id)
                if message.reference is not None and message.reference.message_id
                else None
            ),
        )
        _log.debug("discord message %s in %s: %r", message.id, chat_id, text)
        reply = _Reply(self, _ChannelSink(self, message), message.channel, incoming.user_id)
        future = self._engine.submit(incoming, reply)
        self._in_flight.add(future)
        future.add_done_callback(self._settled)

    async def _on_slash(
        self, interaction: discord.Interaction[Any], name: str, argument: str
    ) -> None:
        if not self._accepting():
            return
        sink = _InteractionSink(self, interaction)
        sink.start_timer(self.settings.ack_after)
        chat_id, thread_id, private = _where(interaction.channel, interaction.channel_id)
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
        reply = _Reply(self, sink, interaction.channel, incoming.user_id)
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
        """Handle Yes/No presses on confirmation buttons (stateless, so restarts keep them)."""
        if interaction.type is not discord.InteractionType.component or not self._accepting():
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        parts = custom_id.split("|", 3)
        if len(parts) != 4 or parts[0] != _BUTTON_PREFIX:
            return
        _, owner, answer, action_id = parts
        sink = _InteractionSink(self, interaction)
        if str(interaction.user.id) != owner:
            await self.call(
                interaction.response.send_message(
                    "Only the person who asked can answer this.", ephemeral=True
                ),
                "answer a button",
                sink.channel_id,
            )
            return
        accepted = answer == "y"
        prompt = interaction.message.content if interaction.message else ""
        await self.call(
            interaction.response.edit_message(
                content=f"{prompt}\n\n{'Yes' if accepted else 'No'}."[:DISCORD_LIMIT], view=None
            ),
            "answer a button",
            sink.channel_id,
        )
        chat_id, thread_id, private = _where(interaction.channel, interaction.channel_id)
        action = IncomingAction(
            platform=PLATFORM,
            chat_id=chat_id,
            user_id=owner,
            action_id=action_id,
            accepted=accepted,
            thread_id=thread_id,
            is_private=interaction.guild_id is None or private,
        )
        await self._engine.handle_action(action, _Reply(self, sink, interaction.channel, owner))

    # --- outgoing ------------------------------------------------------------------------

    async def call(self, awaitable: Awaitable[T], what: str, channel_id: str) -> T:
        """One Discord call with the timeout; a missing permission is logged once."""
        try:
            return await _bounded(awaitable, self.settings.request_timeout, what)
        except _Forbidden as exc:
            self.missing_permission(channel_id, str(exc))
            raise
