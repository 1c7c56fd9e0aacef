"""discord.py's clients as chinwag runs them: one gateway connection, or the shards it holds."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import discord

from adapters.discord.connection import NO_MENTIONS, intents, quiet_voice
from adapters.discord.settings import DiscordSettings

__all__ = ["ChinwagClient", "ShardedClient", "gateway_open"]

_log = logging.getLogger(__name__)


class Listener(Protocol):
    """What the clients forward events to (the adapter)."""

    settings: DiscordSettings

    def on_message(self, message: discord.Message) -> None: ...

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None: ...


def _options(settings: DiscordSettings) -> dict[str, Any]:
    """The discord.py client options chinwag uses (no member cache, no chunking)."""
    quiet_voice()
    return {
        "intents": intents(),
        "guild_ready_timeout": settings.guild_ready_timeout,
        "allowed_mentions": NO_MENTIONS,
        "chunk_guilds_at_startup": False,
        "member_cache_flags": discord.MemberCacheFlags.none(),
        "max_messages": 1000,
    }


class _Forwarding:
    """The event handlers of chinwag's clients: everything goes to the adapter."""

    _listener: Listener

    async def on_message(self, message: discord.Message) -> None:
        self._listener.on_message(message)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self._listener.on_interaction(interaction)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        _log.exception("error in the Discord %s handler", event_method)


class ChinwagClient(_Forwarding, discord.Client):
    """discord.py's client (one gateway connection), forwarding events to the adapter."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(**_options(listener.settings))
        self._listener = listener


class ShardedClient(_Forwarding, discord.AutoShardedClient):
    """discord.py's sharded client holding ``DISCORD_SHARD_IDS`` of ``DISCORD_SHARD_COUNT``.

    Discord sends a server's events only to the shard ``(guild_id >> 22) % shard_count``
    (direct messages to shard 0), so processes holding different shards never see the same
    message.
    """

    def __init__(self, listener: Listener) -> None:
        settings = listener.settings
        super().__init__(
            shard_ids=settings.shard_numbers,
            shard_count=settings.shard_count,
            **_options(settings),
        )
        self._listener = listener


def gateway_open(client: discord.Client) -> bool:
    """Whether every gateway connection of ``client`` (each shard's) is open."""
    if isinstance(client, discord.AutoShardedClient):
        shards = client.shards
        return bool(shards) and not any(shard.is_closed() for shard in shards.values())
    return client.ws is not None and client.ws.open
