"""The connection to Discord: endpoints, intents, logging in, and one bounded REST call.

Every Discord call goes through :func:`bounded`: a timeout, and discord.py's and aiohttp's
exceptions translated into :class:`~core.errors.AdapterError` at this one boundary
(:class:`Forbidden` for a missing permission, :class:`Gone` for a deleted message).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import discord
import yarl

from adapters.discord.settings import DiscordSettings
from adapters.live import ChatRefused, MessageGone
from core.errors import AdapterError, ConfigError

__all__ = [
    "NO_MENTIONS",
    "REPLY_MENTION",
    "Forbidden",
    "Gone",
    "bounded",
    "configure_endpoints",
    "intents",
    "login",
    "quiet_voice",
    "reap",
]

_log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
REPLY_MENTION = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)

T = TypeVar("T")


class Forbidden(ChatRefused):
    """The bot lacks a permission in the channel."""


class Gone(MessageGone):
    """The message or interaction no longer exists."""


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


def quiet_voice() -> None:
    """Silence discord.py's voice warnings (chinwag never joins voice)."""
    # chinwag never joins voice: skip discord.py's "PyNaCl / davey is not installed" warnings.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


def intents() -> discord.Intents:
    """The gateway intents chinwag needs (Message Content is privileged)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True  # privileged: see INTENT_HELP
    return intents


async def bounded(awaitable: Awaitable[T], limit: float, what: str) -> T:
    """Await one Discord call; translate its failures into :class:`AdapterError`."""
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except discord.Forbidden as exc:
        raise Forbidden(f"Discord refused to {what}: missing permissions ({exc.code})") from exc
    except discord.NotFound as exc:
        raise Gone(f"Discord could not {what}: not found ({exc.code})") from exc
    except discord.HTTPException as exc:
        raise AdapterError(f"Discord refused to {what}: HTTP {exc.status} code {exc.code}") from exc
    except TimeoutError as exc:
        raise AdapterError(f"Discord did not answer within {limit:g}s to {what}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise AdapterError(f"could not reach Discord to {what}: {type(exc).__name__}") from exc


async def reap(*tasks: asyncio.Task[Any], log_errors: bool = True) -> None:
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


def _token(settings: DiscordSettings) -> str:
    if settings.bot_token is None or not settings.bot_token.get_secret_value().strip():
        raise ConfigError("DISCORD_BOT_TOKEN", "is not set", DiscordSettings.EXAMPLES["bot_token"])
    return settings.bot_token.get_secret_value().strip()


async def login(client: discord.Client, settings: DiscordSettings) -> None:
    """Log ``client`` in over REST; a missing or refused token is a :class:`ConfigError`."""
    try:
        await bounded(client.login(_token(settings)), settings.request_timeout, "log in")
    except discord.LoginFailure as exc:
        raise ConfigError(
            "DISCORD_BOT_TOKEN",
            "Discord rejected the token (401); copy it again from Developer Portal > Bot",
            DiscordSettings.EXAMPLES["bot_token"],
        ) from exc
