"""The Discord chat adapter (discord.py 2.x)."""

from adapters.discord.settings import DiscordSettings

__all__ = ["DiscordSettings"]
