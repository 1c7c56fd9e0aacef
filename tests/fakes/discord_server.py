"""A loopback fake of Discord: REST API v10 and the WebSocket gateway, on one aiohttp server.

The real discord.py client talks to it once ``discord.http.Route.BASE`` points at
:attr:`FakeDiscord.api_base_url` and ``DiscordWebSocket.DEFAULT_GATEWAY`` at
:attr:`FakeDiscord.gateway_url` (what ``DISCORD_API_BASE_URL`` / ``DISCORD_GATEWAY_URL`` do).

It enforces the rules a bot meets on the real service: message content of at most 2000
characters (400, code 50035), no empty messages (400, code 50006), the 3-second window to
acknowledge an interaction (404, code 10062) and acknowledging it once (400, code 40060),
per-route rate limits with 429 bodies and the ``X-RateLimit-*`` headers (limits are set by the
test), the bot token on every REST call (401) and the privileged message-content intent
(close code 4014 when the application is not allowed it). Gateway: HELLO, IDENTIFY, READY,
GUILD_CREATE, heartbeats and their ACKs, RESUME (replaying missed events), MESSAGE_CREATE and
INTERACTION_CREATE; outbound frames are ``zlib-stream`` compressed when the client asks.
Sharding as Discord does it: ``shard_count`` is what ``GET /gateway/bot`` recommends, an
IDENTIFY's ``shard`` [id, count] is honoured (4010 when the id is not below the count), and
a server's events go only to sessions of the shard ``(guild_id >> 22) % count``, direct
messages to shard 0; :meth:`FakeDiscord.add_guild` takes the shard a new server lands on.

Users' files (:class:`FakeFile`: images with their width and height, audio, voice messages
with the ``IS_VOICE_MESSAGE`` flag, ``duration_secs`` and a waveform) are served from a
signed-looking CDN path (``/attachments/<channel>/<id>/<name>?ex=..&is=..&hm=..``, 404 once
expired); :attr:`FakeDiscord.downloads` lists the paths fetched.

Everything is recorded: :attr:`FakeDiscord.calls` (every REST call), :attr:`FakeDiscord.sends`
(every message create or edit with its ``allowed_mentions``), :meth:`FakeDiscord.visible`
(what a user sees in a channel now).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
MESSAGE_CONTENT_INTENT = 1 << 15
MESSAGE_CONTENT_LIMITED_FLAG = 1 << 19  # application flag GATEWAY_MESSAGE_CONTENT_LIMITED
MAX_CONTENT = 2000
IS_VOICE_MESSAGE = 1 << 13  # message flag of a voice message


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class _Snowflakes:
    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> str:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._counter) & 0x3FFFFF))


@dataclass
class FakeUser:
    """A Discord user the test plays (or the bot itself)."""

    id: str
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class FakeChannel:
    id: str
    type: int  # 0 guild text, 1 DM, 11 public thread
    name: str
    guild_id: str | None = None
    parent_id: str | None = None
    recipient: FakeUser | None = None
    deny_bot: int = 0  # permission bits denied to the bot (overwrite)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type, "name": self.name}
        if self.type == 1:
            assert self.recipient is not None
            data["recipients"] = [self.recipient.payload()]
            data["last_message_id"] = None
            return data
        data.update(guild_id=self.guild_id, position=0, nsfw=False, rate_limit_per_user=0)
        if self.type == 11:
            data.update(
                parent_id=self.parent_id,
                owner_id=self.parent_id,  # any snowflake; discord.py requires one
                member_count=1,
                message_count=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": _now_iso(),
                    "locked": False,
                },
            )
        else:
            data["permission_overwrites"] = []
            data["topic"] = None
            data["last_message_id"] = None
        return data


@dataclass(frozen=True, slots=True)
class FakeFile:
    """A file a user attaches (``user_message(files=[...])`` also takes plain tuples).

    Attributes:
        name: the file name.
        data: its bytes, served from the CDN.
        content_type: its MIME type (Discord leaves it out when it cannot tell).
        width: an image's width in pixels (Discord says it for images and videos).
        height: an image's height in pixels.
        duration_secs: a voice message's (or audio file's) length in seconds.
        waveform: a voice message's waveform (Discord's base64 of up to 256 bytes).
    """

    name: str
    data: bytes
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    duration_secs: float | None = None
    waveform: bytes | None = None

    @classmethod
    def voice(cls, data: bytes, duration_secs: float) -> FakeFile:
        """What a Discord client uploads for a voice message (OGG/Opus, with a waveform)."""
        return cls(
            "voice-message.ogg",
            data,
            "audio/ogg",
            duration_secs=duration_secs,
            waveform=bytes(range(0, 256, 4)),
        )


@dataclass
class FakeMessage:
    """A message as Discord holds it."""

    id: str
    channel_id: str
    author: FakeUser
    content: str
    payload: dict[str, Any]
    deleted: bool = False
    edits: int = 0
    components: list[Any] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    interaction_token: str | None = None
    ephemeral: bool = False  # only the user who ran the command sees it


@dataclass
class Call:
    """One REST call the client made."""

    method: str
    path: str
    route: str
    status: int
    body: Any
    at: float


@dataclass
class Send:
    """A message create or edit the bot made, as Discord accepted it."""

    kind: str  # "create" or "edit"
    channel_id: str
    message_id: str
    content: str
    allowed_mentions: dict[str, Any] | None
    reply_to: str | None = None  # the message a create replies to
    at: float = 0.0


@dataclass
class FakeInteraction:
    """An interaction the fake delivered, and what the bot answered."""

    id: str
    token: str
    channel_id: str
    user: FakeUser
    created: float
    kind: int
    name: str = ""
    custom_id: str = ""
    responses: list[dict[str, Any]] = field(default_factory=list)
    original_message_id: str | None = None
    followup_ids: list[str] = field(default_factory=list)
    acked_at: float | None = None
    deferred: bool = False


@dataclass
class RateLimit:
    """A fixed-window limit on a bucket of routes, per major parameter (channel).

    ``headers=False`` models Discord's undocumented limits: the bot only learns from 429s.
    """

    name: str
    routes: frozenset[str]
    limit: int
    per: float
    headers: bool = True
    windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def hit(self, major: str) -> tuple[bool, int, float]:
        """Count one request; return (allowed, remaining, reset_after)."""
        now = time.monotonic()
        start, used = self.windows.get(major, (now, 0))
        if now - start >= self.per:
            start, used = now, 0
        reset_after = max(0.0, self.per - (now - start))
        if used >= self.limit:
            return False, 0, reset_after
        used += 1
        self.windows[major] = (start, used)
        return True, self.limit - used, reset_after


class _Session:
    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.seq = 0
        self.events: list[tuple[int, str, Any]] = []
        self.ws: web.WebSocketResponse | None = None
        self.compressor: Any = None
        self.shard: tuple[int, int] = (0, 1)  # (id, count) from IDENTIFY

    def receives(self, guild_id: str | None) -> bool:
        """Whether this session's shard gets events of ``guild_id`` (``None``: a DM)."""
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (int(guild_id) >> 22) % count == shard_id


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json", as Discord sends it: discord.py compares the header verbatim.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        # "Via" is how discord.py tells Discord's own 429s from a Cloudflare ban.
        headers={**(headers or {}), "Content-Type": "application/json", "Via": "1.1 google"},
    )


def _error(status: int, code: int, message: str, errors: Any = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if errors is not None:
        body["errors"] = errors
    return _json(body, status=status)


def _content_too_long() -> web.Response:
    return _error(
        400,
        50035,
        "Invalid Form Body",
        {
            "content": {
                "_errors": [
                    {
                        "code": "BASE_TYPE_MAX_LENGTH",
                        "message": "Must be 2000 or fewer in length.",
                    }
                ]
            }
        },
    )


class FakeDiscord:
    """The fake service. Use ``async with FakeDiscord() as discord:`` in a test.

    Args:
        token: the bot token REST calls must carry.
        interaction_window: seconds within which an interaction must be acknowledged.
        allow_message_content: ``False`` closes IDENTIFYs asking for the privileged intent
            with code 4014, as Discord does when the portal switch is off.
        shard_count: the shard count ``GET /gateway/bot`` recommends.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        bot_name: str = "chinwag",
        interaction_window: float = 3.0,
        allow_message_content: bool = True,
        heartbeat_interval_ms: int = 41250,
        shard_count: int = 1,
    ) -> None:
        self.shard_count = shard_count
        self.token = token
        self.interaction_window = interaction_window
        self.allow_message_content = allow_message_content
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._ids = _Snowflakes()
        self.bot = FakeUser(self._ids.next(), bot_name, bot=True)
        self.application_id = self._ids.next()
        self.owner = FakeUser(self._ids.next(), "owner")
        self.users: dict[str, FakeUser] = {}
        self.guilds: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, FakeChannel] = {}
        self.messages: dict[str, FakeMessage] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.commands: list[dict[str, Any]] = []
        self.command_syncs = 0
        self.calls: list[Call] = []
        self.sends: list[Send] = []
        self.typing: list[tuple[str, float]] = []
        self.rate_limited = 0
        self.limits: list[RateLimit] = []
        self.identifies = 0
        self.resumes = 0
        self.fail_next: dict[str, int] = {}
        self.on_send: list[Callable[[Send], None]] = []  # called for every create and edit
        self.record = True  # False keeps no call log (benchmarks)
        self._sessions: dict[str, _Session] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._files: dict[str, bytes] = {}  # attachment path -> bytes (the CDN)
        self.downloads: list[str] = []  # attachment paths fetched, in order
        self.cdn_expired = False  # True: every attachment URL answers 404, as expired ones do

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{channel}/{id}/{filename}", self._cdn)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def application_flags(self) -> int:
        """The application's flags, as the portal's Message Content switch sets them.

        ``GATEWAY_MESSAGE_CONTENT_LIMITED`` (an unverified bot in fewer than 100 servers) when
        the intent is allowed, else none.
        """
        return MESSAGE_CONTENT_LIMITED_FLAG if self.allow_message_content else 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/gateway"

    # --- the world -------------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(self._ids.next(), name, bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str = "guild", *, shard: int | None = None) -> str:
        """Add a server; ``shard`` picks an id that lands on that shard of ``shard_count``."""
        gid = self._ids.next()
        while shard is not None and (int(gid) >> 22) % self.shard_count != shard:
            gid = str(int(gid) + (1 << 22))  # one millisecond later
        self.guilds[gid] = {"id": gid, "name": name, "channels": [], "members": [self.bot]}
        return gid

    def add_channel(self, guild_id: str, name: str = "general", *, deny_bot: int = 0) -> str:
        channel = FakeChannel(self._ids.next(), 0, name, guild_id=guild_id, deny_bot=deny_bot)
        self.channels[channel.id] = channel
        self.guilds[guild_id]["channels"].append(channel.id)
        return channel.id

    async def add_thread(self, parent_id: str, name: str = "thread") -> str:
        parent = self.channels[parent_id]
        thread = FakeChannel(
            self._ids.next(), 11, name, guild_id=parent.guild_id, parent_id=parent_id
        )
        self.channels[thread.id] = thread
        assert parent.guild_id is not None
        self.guilds[parent.guild_id]["channels"].append(thread.id)
        await self.dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True})
        return thread.id

    def dm_channel(self, user: FakeUser) -> str:
        for channel in self.channels.values():
            if channel.type == 1 and channel.recipient is user:
                return channel.id
        channel = FakeChannel(self._ids.next(), 1, "", recipient=user)
        self.channels[channel.id] = channel
        return channel.id

    def _member(self, user: FakeUser, guild_id: str) -> dict[str, Any]:
        return {
            "user": user.payload(),
            "roles": [],
            "joined_at": _now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
        }

    def _guild_payload(self, gid: str) -> dict[str, Any]:
        guild = self.guilds[gid]
        channels = [self.channels[c] for c in guild["channels"]]
        text_channels = []
        for c in channels:
            if c.type != 0:
                continue
            data = c.payload()
            if c.deny_bot:
                data["permission_overwrites"] = [
                    {"id": self.bot.id, "type": 1, "allow": "0", "deny": str(c.deny_bot)}
                ]
            text_channels.append(data)
        everyone = {
            "id": gid,
            "name": "@everyone",
            "permissions": str((1 << 41) - 1 & ~(1 << 3)),  # all but administrator
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        return {
            "id": gid,
            "name": guild["name"],
            "icon": None,
            "owner_id": self.owner.id,
            "roles": [everyone],
            "channels": text_channels,
            "threads": [c.payload() for c in channels if c.type == 11],
            "members": [self._member(self.bot, gid)],
            "member_count": len(guild["members"]) + 1,
            "features": [],
            "emojis": [],
            "stickers": [],
            "large": False,
            "unavailable": False,
            "joined_at": _now_iso(),
            "verification_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "mfa_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "nsfw_level": 0,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # --- what a user does ------------------------------------------------------------------

    def _message_payload(
        self,
        msg_id: str,
        channel: FakeChannel,
        author: FakeUser,
        content: str,
        *,
        mentions: Iterable[FakeUser] = (),
        reference: FakeMessage | None = None,
        attachments: list[dict[str, Any]] | None = None,
        stickers: list[dict[str, Any]] | None = None,
        embeds: list[dict[str, Any]] | None = None,
        components: list[Any] | None = None,
        mention_everyone: bool = False,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": msg_id,
            "channel_id": channel.id,
            "author": author.payload(),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": mention_everyone,
            "mentions": [u.payload() for u in mentions],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "pinned": False,
            "type": 19 if reference is not None else 0,
            "flags": 0,
            "components": components or [],
        }
        if stickers:
            data["sticker_items"] = stickers
        if channel.guild_id is not None:
            data["guild_id"] = channel.guild_id
            data["member"] = {
                "roles": [],
                "joined_at": _now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        if reference is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": reference.id,
                "channel_id": reference.channel_id,
                "guild_id": channel.guild_id,
            }
            data["referenced_message"] = reference.payload
        return data

    async def user_message(
        self,
        channel_id: str,
        author: FakeUser,
        content: str,
        *,
        mention_bot: bool = False,
        reply_to: str | None = None,
        attachments: int = 0,
        files: Sequence[tuple[str, bytes, str | None] | FakeFile] = (),
        voice: bool = False,
        sticker: bool = False,
        embed: bool = False,
        ping: bool = False,
    ) -> FakeMessage:
        """Post a message as ``author`` and deliver MESSAGE_CREATE to the bot.

        ``mention_bot`` prefixes ``<@bot>`` (a real mention); ``reply_to`` is the id of the
        message it replies to (``ping`` keeps the client's "mention the author" switch on).
        ``attachments`` adds that many small PNG images; ``files`` attaches (name, bytes,
        content type) files or :class:`FakeFile` s, served from a signed-looking CDN URL on
        the fake. ``voice`` sets the ``IS_VOICE_MESSAGE`` flag (with ``FakeFile.voice``).
        """
        channel = self.channels[channel_id]
        mentions: list[FakeUser] = []
        if mention_bot:
            content = f"<@{self.bot.id}> {content}"
            mentions.append(self.bot)
        reference = self.messages[reply_to] if reply_to else None
        if ping and reference is not None and reference.author not in mentions:
            mentions.append(reference.author)
        msg_id = self._ids.next()
        atts = [
            {
                "id": self._ids.next(),
                "filename": f"photo{i}.png",
                "size": 1024,
                "url": f"http://127.0.0.1:{self._port}/attachments/{i}.png",
                "proxy_url": f"http://127.0.0.1:{self._port}/attachments/{i}.png",
                "content_type": "image/png",
            }
            for i in range(attachments)
        ]
        for given in files:
            file = given if isinstance(given, FakeFile) else FakeFile(*given)
            attachment_id = self._ids.next()
            path = f"/attachments/{channel_id}/{attachment_id}/{file.name}"
            self._files[path] = file.data
            url = f"http://127.0.0.1:{self._port}{path}?ex=67a0&is=679e&hm=f00d"
            item: dict[str, Any] = {
                "id": attachment_id,
                "filename": file.name,
                "size": len(file.data),
                "url": url,
                "proxy_url": url,
            }
            if file.content_type:
                item["content_type"] = file.content_type
            if file.width is not None and file.height is not None:
                item["width"], item["height"] = file.width, file.height
            if file.duration_secs is not None:
                item["duration_secs"] = file.duration_secs
            if file.waveform is not None:
                item["waveform"] = base64.b64encode(file.waveform).decode()
            atts.append(item)
        stickers = [{"id": self._ids.next(), "name": "wave", "format_type": 1}] if sticker else None
        embeds = [{"type": "rich", "title": "a link"}] if embed else None
        payload = self._message_payload(
            msg_id,
            channel,
            author,
            content,
            mentions=mentions,
            reference=reference,
            attachments=atts,
            stickers=stickers,
            embeds=embeds,
            mention_everyone="@everyone" in content,
        )
        if voice:
            payload["flags"] = IS_VOICE_MESSAGE
        message = FakeMessage(msg_id, channel_id, author, content, payload)
        self.messages[msg_id] = message
        await self.dispatch("MESSAGE_CREATE", payload)
        return message

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        """An attachment's bytes, in pieces (404 once expired, as Discord's signed URLs)."""
        data = self._files.get(request.path)
        if data is None or self.cdn_expired or "hm" not in request.query:
            return web.Response(status=404, text="This content is no longer available.")
        self.downloads.append(request.path)
        response = web.StreamResponse()
        response.content_length = len(data)
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        for start in range(0, len(data), 65536):
            await response.write(data[start : start + 65536])
        await response.write_eof()
        return response

    async def redeliver(self, message_id: str) -> None:
        """Deliver MESSAGE_CREATE for an existing message again (a replay)."""
        await self.dispatch("MESSAGE_CREATE", self.messages[message_id].payload)

    def _interaction_base(
        self, kind: int, channel_id: str, user: FakeUser, data: dict[str, Any]
    ) -> tuple[FakeInteraction, dict[str, Any]]:
        channel = self.channels[channel_id]
        iid = self._ids.next()
        token = f"itoken-{iid}"
        record = FakeInteraction(iid, token, channel_id, user, time.monotonic(), kind)
        self.interactions[token] = record
        payload: dict[str, Any] = {
            "id": iid,
            "application_id": self.application_id,
            "type": kind,
            "data": data,
            "channel": channel.payload(),
            "channel_id": channel_id,
            "token": token,
            "version": 1,
            "app_permissions": str((1 << 41) - 1),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": channel.guild_id or "0"},
            "context": 0 if channel.guild_id else 1,
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        if channel.guild_id is not None:
            payload["guild_id"] = channel.guild_id
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                **self._member(user, channel.guild_id),
                "permissions": str((1 << 41) - 1),
            }
        else:
            payload["user"] = user.payload()
        return record, payload

    async def slash(
        self, channel_id: str, user: FakeUser, name: str, options: dict[str, str] | None = None
    ) -> FakeInteraction:
        """Run the registered slash command ``/name`` as ``user``; returns its record."""
        command = next((c for c in self.commands if c["name"] == name), None)
        if command is None:
            raise AssertionError(f"/{name} is not registered (have {self.command_names()})")
        data = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": [
                {"name": key, "type": 3, "value": value} for key, value in (options or {}).items()
            ],
        }
        record, payload = self._interaction_base(2, channel_id, user, data)
        record.name = name
        await self.dispatch("INTERACTION_CREATE", payload)
        return record

    async def press(self, message_id: str, custom_id: str, user: FakeUser) -> FakeInteraction:
        """Press the button ``custom_id`` on ``message_id`` as ``user``."""
        message = self.messages[message_id]
        buttons = [c["custom_id"] for row in message.components for c in row.get("components", [])]
        if custom_id not in buttons:
            raise AssertionError(f"no button {custom_id!r} on that message (have {buttons})")
        data = {"custom_id": custom_id, "component_type": 2}
        record, payload = self._interaction_base(3, message.channel_id, user, data)
        record.custom_id = custom_id
        payload["message"] = message.payload
        await self.dispatch("INTERACTION_CREATE", payload)
        return record

    def command_names(self) -> list[str]:
        return sorted(c["name"] for c in self.commands)

    def _sent(self, send: Send) -> None:
        self.sends.append(send)
        for hook in self.on_send:
            hook(send)

    # --- what tests read -------------------------------------------------------------------

    def visible(self, channel_id: str) -> list[FakeMessage]:
        """The messages a user sees in the channel now, oldest first."""
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    def bot_messages(self, channel_id: str) -> list[FakeMessage]:
        return [m for m in self.visible(channel_id) if m.author is self.bot]

    def bot_texts(self, channel_id: str) -> list[str]:
        return [m.content for m in self.bot_messages(channel_id)]

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` holds after some change; fail after ``timeout``."""

        async def waiting() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(waiting(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until no REST call has arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.calls[-1].at if self.calls else 0.0
            if time.monotonic() - last >= quiet:
                return
            await asyncio.sleep(quiet / 3)
        raise AssertionError("the bot kept calling the API")

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- limits ----------------------------------------------------------------------------

    def set_rate_limit(
        self, name: str, routes: Iterable[str], limit: int, per: float, *, headers: bool = True
    ) -> None:
        """Limit the routes (``"PATCH /channels/{channel_id}/messages/{message_id}"``) to
        ``limit`` requests per ``per`` seconds per channel, in one shared bucket."""
        self.limits.append(RateLimit(name, frozenset(routes), limit, per, headers))

    def real_limits(self) -> None:
        """Discord's published per-channel limit: 5 message sends or edits per 5 seconds."""
        self.set_rate_limit(
            "messages",
            [
                "POST /channels/{channel_id}/messages",
                "PATCH /channels/{channel_id}/messages/{message_id}",
            ],
            5,
            5.0,
        )

    # --- gateway ---------------------------------------------------------------------------

    def _guild_of(self, data: Any) -> str | None:
        if not isinstance(data, dict):
            return None
        guild_id = data.get("guild_id")
        if guild_id is None and data.get("channel_id") in self.channels:
            guild_id = self.channels[data["channel_id"]].guild_id
        return str(guild_id) if guild_id is not None else None

    async def dispatch(self, event: str, data: Any) -> None:
        """Send a DISPATCH to every connected session of the event's shard (kept for RESUME)."""
        guild_id = self._guild_of(data)
        for session in list(self._sessions.values()):
            if not session.receives(guild_id):
                continue
            session.seq += 1
            session.events.append((session.seq, event, data))
            if session.ws is not None and not session.ws.closed:
                await self._send(session, {"op": 0, "t": event, "s": session.seq, "d": data})
        await self._notify()

    async def _send(
        self, session: _Session | None, payload: dict[str, Any], ws: Any = None
    ) -> None:
        target = ws if ws is not None else session.ws if session else None
        if target is None or target.closed:
            return
        raw = json.dumps(payload).encode()
        compressor = getattr(target, "_chinwag_compressor", None)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            if compressor is not None:
                await target.send_bytes(
                    compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
                )
            else:
                await target.send_str(raw.decode())

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway socket as a network failure would; the client RESUMEs."""
        for session in self._sessions.values():
            if session.ws is not None:
                with contextlib.suppress(Exception):
                    await session.ws.close(code=code)
                session.ws = None

    def connected(self) -> bool:
        return any(s.ws is not None and not s.ws.closed for s in self._sessions.values())

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        if request.query.get("compress") == "zlib-stream":
            ws._chinwag_compressor = zlib.compressobj()  # type: ignore[attr-defined]
        elif request.query.get("compress"):
            await ws.close(code=4000, message=b"unsupported compression")
            return ws
        self._sockets.add(ws)
        session: _Session | None = None
        try:
            await self._send(
                None, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}, ws
            )
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op = payload.get("op")
                data = payload.get("d")
                if op == 1:
                    await self._send(None, {"op": 11}, ws)
                elif op == 2:
                    session = await self._identify(ws, data)
                    if session is None:
                        break
                elif op == 6:
                    session = await self._resume(ws, data)
                    if session is None:
                        break
                elif op in (3, 4, 8):
                    continue
                else:
                    await ws.close(code=4001, message=b"unknown opcode")
        finally:
            self._sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
            await self._notify()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> _Session | None:
        self.identifies += 1
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(data.get("intents", 0))
        if intents & MESSAGE_CONTENT_INTENT and not self.allow_message_content:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard_id, count = data.get("shard") or (0, 1)
        if not 0 <= int(shard_id) < int(count):
            await ws.close(code=4010, message=b"Invalid shard.")
            return None
        session = _Session(self._ids.next())
        session.ws = ws
        session.shard = (int(shard_id), int(count))
        self._sessions[session.id] = session
        guilds = [gid for gid in self.guilds if session.receives(gid)]
        ready = {
            "v": 10,
            "user": self.bot.payload(),
            "guilds": [{"id": gid, "unavailable": True} for gid in guilds],
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url,
            "shard": [session.shard[0], session.shard[1]],
            "application": {"id": self.application_id, "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
        }
        session.seq += 1
        await self._send(session, {"op": 0, "t": "READY", "s": session.seq, "d": ready})
        for gid in guilds:
            session.seq += 1
            payload = self._guild_payload(gid)
            await self._send(
                session, {"op": 0, "t": "GUILD_CREATE", "s": session.seq, "d": payload}
            )
        await self._notify()
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> _Session | None:
        session = self._sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        if session is None:
            await self._send(None, {"op": 9, "d": False}, ws)
            return None
        self.resumes += 1
        session.ws = ws
        after = int(data.get("seq") or 0)
        for seq, event, payload in list(session.events):
            if seq > after:
                await self._send(session, {"op": 0, "t": event, "s": seq, "d": payload})
        session.seq += 1
        await self._send(session, {"op": 0, "t": "RESUMED", "s": session.seq, "d": {}})
        await self._notify()
        return session

    # --- REST ------------------------------------------------------------------------------

    _ROUTES: ClassVar[list[tuple[str, str]]] = [
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("GET", "/gateway"),
        ("GET", "/gateway/bot"),
        ("POST", "/users/@me/channels"),
        ("POST", "/channels/{channel_id}/messages"),
        ("GET", "/channels/{channel_id}/messages/{message_id}"),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
        ("DELETE", "/channels/{channel_id}/messages/{message_id}"),
        ("POST", "/channels/{channel_id}/typing"),
        ("GET", "/applications/{application_id}/commands"),
        ("PUT", "/applications/{application_id}/commands"),
        ("POST", "/interactions/{interaction_id}/{token}/callback"),
        ("POST", "/webhooks/{application_id}/{token}"),
        ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}"),
        ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}"),
        ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}"),
    ]

    def _match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        parts = path.strip("/").split("/")
        for m, template in self._ROUTES:
            if m != method:
                continue
            tparts = template.strip("/").split("/")
            if len(tparts) != len(parts):
                continue
            params: dict[str, str] = {}
            for t, p in zip(tparts, parts, strict=True):
                if t.startswith("{"):
                    params[t[1:-1]] = p
                elif t != p:
                    break
            else:
                return f"{m} {template}", params
        return None

    async def _read_body(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        files: list[tuple[str, bytes]] = []
        if request.content_type.startswith("multipart/"):
            body: Any = {}
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    data = await part.read(decode=False)  # type: ignore[union-attr]
                    files.append((part.filename or "file", bytes(data)))  # type: ignore[union-attr]
            return body, files
        if request.can_read_body:
            raw = await request.read()
            return (json.loads(raw) if raw else None), files
        return None, files

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        matched = self._match(request.method, path)
        body, files = await self._read_body(request)
        if matched is None:
            missing = _error(404, 0, "404: Not Found")
            self._record(request.method, path, "?", missing.status, body)
            return missing
        route, params = matched
        response = await self._limited(request, route, params, body, files)
        self._record(request.method, path, route, response.status, body)
        await self._notify()
        return response

    def _record(self, method: str, path: str, route: str, status: int, body: Any) -> None:
        if not self.record:
            return
        self.calls.append(Call(method, path, route, status, body, time.monotonic()))

    async def _limited(
        self, request: web.Request, route: str, params: dict[str, str], body: Any, files: Any
    ) -> web.StreamResponse:
        public = route.startswith(("POST /interactions", "POST /webhooks", "GET /webhooks")) or (
            route.startswith(("PATCH /webhooks", "DELETE /webhooks"))
        )
        if not public and request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, 0, "401: Unauthorized")
        if self.fail_next.get(route):
            self.fail_next[route] -= 1
            return _error(500, 0, "500: Internal Server Error")
        headers: dict[str, str] = {}
        major = params.get("channel_id") or params.get("token") or ""
        for limit in self.limits:
            if route not in limit.routes:
                continue
            allowed, remaining, reset_after = limit.hit(major)
            if limit.headers:
                headers = {
                    "X-RateLimit-Limit": str(limit.limit),
                    "X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                    "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                    "X-RateLimit-Bucket": f"fake-{limit.name}",
                }
            if not allowed:
                self.rate_limited += 1
                return _json(
                    {
                        "message": "You are being rate limited.",
                        "retry_after": round(max(reset_after, 0.001), 3),
                        "global": False,
                    },
                    status=429,
                    headers={
                        **headers,
                        "Retry-After": str(max(1, round(reset_after))),
                        "X-RateLimit-Scope": "user" if limit.headers else "shared",
                    },
                )
        handler: Callable[..., Awaitable[web.StreamResponse]] = getattr(
            self, "_h_" + route.split(" ")[0].lower() + "_" + self._slug(route)
        )
        response = await handler(request, params, body, files)
        response.headers.update(headers)
        return response

    @staticmethod
    def _slug(route: str) -> str:
        path = route.split(" ", 1)[1]
        words = [p.strip("{}").replace("@", "") for p in path.strip("/").split("/")]
        return "_".join(words)

    # handlers ---

    async def _h_get_users_me(self, request: web.Request, *_: Any) -> web.Response:
        return _json({**self.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _h_get_oauth2_applications_me(self, request: web.Request, *_: Any) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": self.bot.name,
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.owner.payload(),
                "verify_key": "0" * 64,
                "flags": self.application_flags,
                "team": None,
                "summary": "",
                "rpc_origins": [],
            }
        )

    async def _h_get_gateway(self, request: web.Request, *_: Any) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _h_get_gateway_bot(self, request: web.Request, *_: Any) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": self.shard_count,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _h_post_users_me_channels(
        self, request: web.Request, params: dict[str, str], body: Any, files: Any
    ) -> web.Response:
        user = self.users[str(body["recipient_id"])]
        return _json(self.channels[self.dm_channel(user)].payload())

    def _validate(
        self, body: dict[str, Any], files: list[Any], *, edit: bool = False
    ) -> web.Response | None:
        content = body.get("content")
        if content is not None and len(content) > MAX_CONTENT:
            return _content_too_long()
        if edit:
            return None
        has_content = bool(content and content.strip())
        if not (
            has_content
            or body.get("embeds")
            or files
            or body.get("sticker_ids")
            or body.get("attachments")
        ):
            return _error(400, 50006, "Cannot send an empty message")
        return None

    def _bot_message(
        self, channel_id: str, body: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> FakeMessage:
        channel = self.channels.get(channel_id) or FakeChannel(channel_id, 0, "webhook")
        reference = None
        ref = body.get("message_reference")
        if ref and ref.get("message_id"):
            reference = self.messages.get(str(ref["message_id"]))
        msg_id = self._ids.next()
        attachments = [
            {
                "id": self._ids.next(),
                "filename": name,
                "size": len(data),
                "url": "",
                "proxy_url": "",
            }
            for name, data in files
        ]
        payload = self._message_payload(
            msg_id,
            channel,
            self.bot,
            body.get("content") or "",
            reference=reference,
            attachments=attachments,
            components=body.get("components"),
        )
        message = FakeMessage(
            msg_id,
            channel.id,
            self.bot,
            body.get("content") or "",
            payload,
            components=body.get("components") or [],
            attachments=attachments,
            files=list(files),
            ephemeral=bool(int(body.get("flags") or 0) & 64),
        )
        self.messages[msg_id] = message
        self._sent(
            Send(
                "create",
                channel.id,
                msg_id,
                message.content,
                body.get("allowed_mentions"),
                reference.id if reference is not None else None,
                time.monotonic(),
            )
        )
        return message

    async def _h_post_channels_channel_id_messages(
        self, request: web.Request, params: dict[str, str], body: Any, files: Any
    ) -> web.Response:
        channel = self.channels.get(params["channel_id"])
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        if channel.deny_bot & (1 << 11):
            return _error(403, 50013, "Missing Permissions")
        body = body or {}
        if (bad := self._validate(body, files)) is not None:
            return bad
        message = self._bot_message(channel.id, body, files)
        await self.dispatch("MESSAGE_CREATE", message.payload)
        return _json(message.payload)

    async def _h_get_channels_channel_id_messages_message_id(
        self, request: web.Request, params: dict[str, str], *_: Any
    ) -> web.Response:
        message = self.messages.get(params["message_id"])
        if message is None or message.deleted:
            return _error(404, 10008, "Unknown Message")
        return _json(message.payload)

    def _edit(self, message: FakeMessage, body: dict[str, Any]) -> None:
        if "content" in body and body["content"] is not None:
            message.content = body["content"]
            message.payload = {
                **message.payload,
                "content": message.content,
                "edited_timestamp": _now_iso(),
            }
        if "components" in body:
            message.components = body["components"] or []
            message.payload = {**message.payload, "components": message.components}
        message.edits += 1
        self._sent(
            Send(
                "edit",
                message.channel_id,
                message.id,
                message.content,
                body.get("allowed_mentions"),
                at=time.monotonic(),
            )
        )

    async def _h_patch_channels_channel_id_messages_message_id(
        self, request: web.Request, params: dict[str, str], body: Any, files: Any
    ) -> web.Response:
        message = self.messages.get(params["message_id"])
        if message is None or message.deleted:
            return _error(404, 10008, "Unknown Message")
        if message.author is not self.bot:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        body = body or {}
        if (bad := self._validate(body, files, edit=True)) is not None:
            return bad
        if (
            body.get("content") is not None
            and not body["content"].strip()
            and not message.attachments
        ):
            return _error(400, 50006, "Cannot send an empty message")
        self._edit(message, body)
        await self.dispatch("MESSAGE_UPDATE", message.payload)
        return _json(message.payload)

    async def _h_delete_channels_channel_id_messages_message_id(
        self, request: web.Request, params: dict[str, str], *_: Any
    ) -> web.Response:
        message = self.messages.get(params["message_id"])
        if message is None or message.deleted:
            return _error(404, 10008, "Unknown Message")
        message.deleted = True
        return web.Response(status=204)

    async def _h_post_channels_channel_id_typing(
        self, request: web.Request, params: dict[str, str], *_: Any
    ) -> web.Response:
        self.typing.append((params["channel_id"], time.monotonic()))
        return web.Response(status=204)

    async def _h_get_applications_application_id_commands(self, *_: Any) -> web.Response:
        return _json(self.commands)

    async def _h_put_applications_application_id_commands(
        self, request: web.Request, params: dict[str, str], body: Any, files: Any
    ) -> web.Response:
        if params["application_id"] != self.application_id:
            return _error(403, 50001, "Missing Access")
        self.command_syncs += 1
        commands = []
        for command in body or []:
            name = command.get("name", "")
            if not (1 <= len(name) <= 32) or name != name.lower():
                return _error(400, 50035, "Invalid Form Body", {"name": "invalid"})
            if not (1 <= len(command.get("description", "")) <= 100):
                return _error(400, 50035, "Invalid Form Body", {"description": "invalid"})
            commands.append(
                {
                    "id": self._ids.next(),
                    "application_id": self.application_id,
                    "version": self._ids.next(),
                    "type": command.get("type", 1),
                    "name": name,
                    "description": command["description"],
                    "options": command.get("options", []),
                    "default_member_permissions": command.get("default_member_permissions"),
                    "dm_permission": command.get("dm_permission", True),
                    "nsfw": command.get("nsfw", False),
                    "contexts": command.get("contexts"),
                    "integration_types": command.get("integration_types", [0]),
                }
            )
        self.commands = commands
        return _json(commands)

    # interactions ---

    async def _h_post_interactions_interaction_id_token_callback(
        self, request: web.Request, params: dict[str, str], body: Any, files: Any
    ) -> web.Response:
        record = self.interactions.get(params["token"])
        if record is None or record.id != params["interaction_id"]:
            return _error(404, 10062, "Unknown interaction")
        if record.acked_at is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - record.created > self.interaction_window:
            return _error(404, 10062, "Unknown interaction")
        body = body or {}
        kind = body.get("type")
        data = body.get("data") or {}
        record.responses.append(body)
        resource: dict[str, Any] = {"type": kind}
        loading = False
        if kind == 4:
            if (bad := self._validate(data, files)) is not None:
                return bad
            message = self._bot_message(record.channel_id, data, files)
            message.interaction_token = record.token
            record.original_message_id = message.id
            resource["message"] = message.payload
        elif kind == 5:
            loading = True
            record.deferred = True
        elif kind in (6, 7):
            # A component's response edits the message the button is on, now (7) or later
            # through the webhook's "@original" (6, a deferred update).
            pressed = self._message_of_component(record)
            if pressed is not None:
                record.original_message_id = pressed.id
                if kind == 7:
                    self._edit(pressed, data)
                    resource["message"] = pressed.payload
        else:
            return _error(400, 50035, "Invalid Form Body", {"type": "unsupported"})
        record.acked_at = time.monotonic()
        reply = {
            "interaction": {
                "id": record.id,
                "type": record.kind,
                "response_message_id": record.original_message_id,
                "response_message_loading": loading,
                "response_message_ephemeral": bool(data.get("flags", 0) & 64),
            },
            "resource": resource,
        }
        return _json(reply)

    def _message_of_component(self, record: FakeInteraction) -> FakeMessage | None:
        for message in self.messages.values():
            for row in message.components:
                for component in row.get("components", []):
                    if component.get("custom_id") == record.custom_id:
                        return message
        return None

    def _interaction_for(self, params: dict[str, str]) -> FakeInteraction | None:
        record = self.interactions.get(params["token"])
        if record is None or params["application_id"] != self.application_id:
            return None
        if record.acked_at is None or time.monotonic() - record.created > 15 * 60:
            return None
        return record

    async def _h_post_webhooks_application_id_token(
        self, request: web.Request, params: dict[str, str], body: Any, files: Any
    ) -> web.Response:
        record = self._interaction_for(params)
        if record is None:
            return _error(404, 10015, "Unknown Webhook")
        body = body or {}
        if (bad := self._validate(body, files)) is not None:
            return bad
        if record.deferred and record.original_message_id is None:
            # The first follow-up of a deferred "thinking" response replaces it.
            message = self._bot_message(record.channel_id, body, files)
            record.original_message_id = message.id
        else:
            message = self._bot_message(record.channel_id, body, files)
            record.followup_ids.append(message.id)
        message.interaction_token = record.token
        return _json(message.payload)

    def _webhook_message(self, params: dict[str, str]) -> FakeMessage | None:
        record = self._interaction_for(params)
        if record is None:
            return None
        mid = params["message_id"]
        if mid == "@original":
            if record.original_message_id is None and record.deferred:
                # Editing the original of a deferred response creates it.
                created = self._bot_message(record.channel_id, {"content": ""}, [])
                self.sends.pop()
                created.interaction_token = record.token
                record.original_message_id = created.id
            mid = record.original_message_id or ""
        message = self.messages.get(mid)
        if message is None:
            return None
        if message.interaction_token != record.token and message.id != record.original_message_id:
            return None
        return message

    async def _h_get_webhooks_application_id_token_messages_message_id(
        self, request: web.Request, params: dict[str, str], *_: Any
    ) -> web.Response:
        message = self._webhook_message(params)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        return _json(message.payload)

    async def _h_patch_webhooks_application_id_token_messages_message_id(
        self, request: web.Request, params: dict[str, str], body: Any, files: Any
    ) -> web.Response:
        message = self._webhook_message(params)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        body = body or {}
        if (bad := self._validate(body, files, edit=True)) is not None:
            return bad
        if files:
            message.files.extend(files)
            message.attachments.extend({"filename": n, "size": len(d)} for n, d in files)
        self._edit(message, body)
        return _json(message.payload)

    async def _h_delete_webhooks_application_id_token_messages_message_id(
        self, request: web.Request, params: dict[str, str], *_: Any
    ) -> web.Response:
        message = self._webhook_message(params)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        message.deleted = True
        return web.Response(status=204)
