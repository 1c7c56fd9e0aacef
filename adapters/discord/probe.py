"""Ask Discord who the bot is and what its application may do, over REST only (``chinwag doctor``).

discord.py's ``Client.login`` (``GET /users/@me``) proves the token without opening the
gateway; ``Client.application_info`` (``GET /oauth2/applications/@me``) gives the
application's flags, which say whether the privileged Message Content intent is switched on
in the Developer Portal (``GATEWAY_MESSAGE_CONTENT``, or ``..._LIMITED`` for a bot in fewer
than 100 servers).
"""

from __future__ import annotations

from dataclasses import dataclass

import discord

from adapters.discord.connection import (
    bounded,
    configure_endpoints,
    intents,
    login,
    quiet_voice,
)
from adapters.discord.settings import DiscordSettings

__all__ = ["DiscordStatus", "probe_discord"]


@dataclass(frozen=True, slots=True)
class DiscordStatus:
    """What Discord said about the bot.

    Attributes:
        user: the bot user's name.
        application: the application's name.
        message_content: whether the Message Content intent is enabled for it.
    """

    user: str
    application: str
    message_content: bool


async def probe_discord(settings: DiscordSettings, *, limit: float) -> DiscordStatus:
    """Log in over REST and read the application's flags, each call within ``limit`` seconds.

    Raises:
        ConfigError: ``DISCORD_BOT_TOKEN`` is unset, or Discord refused it.
        AdapterError: Discord cannot be reached, or answered with another error.
    """
    configure_endpoints(settings)
    quiet_voice()
    client = discord.Client(intents=intents())
    try:
        await login(client, settings.model_copy(update={"request_timeout": limit}))
        info = await bounded(client.application_info(), limit, "read the application")
        user = client.user
        flags = info.flags
        return DiscordStatus(
            user=user.name if user is not None else "?",
            application=info.name,
            message_content=flags.gateway_message_content or flags.gateway_message_content_limited,
        )
    finally:
        await client.close()
