"""Settings of the Discord adapter (``DISCORD_*``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from core.settings import ChinwagSettings, CsvList


class DiscordSettings(ChinwagSettings):
    """How the bot connects to Discord and how it shows replies.

    Attributes:
        bot_token: the bot token from the Developer Portal (Bot > Token). The adapter runs
            only when it is set.
        api_base_url: the REST base with its version, for proxies and testing, e.g.
            ``http://127.0.0.1:8600/api/v10``; unset means Discord itself.
        gateway_url: the gateway WebSocket URL, for proxies and testing, e.g.
            ``ws://127.0.0.1:8600/gateway``; unset means Discord itself.
        answer_all_channels: channel ids where the bot answers every message, not only
            mentions and replies to it (threads under those channels included).
        edit_interval: seconds between two edits of a streaming reply, on top of the
            library's rate-limit handling (Discord allows about 5 edits per 5 seconds).
        typing_delay: seconds without a new token before the typing indicator is shown.
        request_timeout: seconds allowed for one REST call to Discord (retries included).
        ack_after: seconds after which a slash command that has not answered yet is
            deferred ("thinking..."); Discord drops interactions unanswered after 3 s.
        sync_commands: register slash commands at start when their set changed.
        guild_ready_timeout: seconds to wait for the servers' data after connecting before
            the bot counts as ready (discord.py's ``guild_ready_timeout``).
        shard_ids: the gateway shards this process holds, e.g. ``0,1`` (with
            ``shard_count``); unset: one connection for every server. Spread a big bot's
            shards over several ``chinwag ingress`` processes, each its own ids.
        shard_count: how many shards the bot has in all (every process the same number).
    """

    model_config = SettingsConfigDict(env_prefix="DISCORD_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "bot_token": "MTA4...your-bot-token",
        "api_base_url": "http://127.0.0.1:8600/api/v10",
        "gateway_url": "ws://127.0.0.1:8600/gateway",
        "answer_all_channels": "123456789012345678,234567890123456789",
        "edit_interval": "1.0",
        "typing_delay": "0.5",
        "request_timeout": "30",
        "ack_after": "2.0",
        "sync_commands": "true",
        "guild_ready_timeout": "2.0",
        "shard_ids": "0,1",
        "shard_count": "4",
    }

    bot_token: SecretStr | None = None
    api_base_url: str | None = Field(default=None, pattern=r"^https?://\S+/v\d+/?$")
    gateway_url: str | None = Field(default=None, pattern=r"^wss?://\S+$")
    answer_all_channels: CsvList = Field(default_factory=list)
    edit_interval: float = Field(default=1.0, ge=0.0, le=60.0)
    typing_delay: float = Field(default=0.5, ge=0.0, le=10.0)
    request_timeout: float = Field(default=30.0, gt=0.0, le=600.0)
    ack_after: float = Field(default=2.0, gt=0.0, le=2.9)
    sync_commands: bool = True
    guild_ready_timeout: float = Field(default=2.0, gt=0.0, le=60.0)
    shard_ids: CsvList = Field(default_factory=list)
    shard_count: int | None = Field(default=None, ge=1, le=100_000)

    @field_validator("answer_all_channels")
    @classmethod
    def _snowflakes(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.isdigit():
                raise ValueError(f"{item!r} is not a Discord channel id (digits only)")
        return value

    @field_validator("shard_ids")
    @classmethod
    def _shard_numbers(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.isdigit():
                raise ValueError(f"{item!r} is not a shard id (a number from 0)")
        if len(set(map(int, value))) != len(value):
            raise ValueError("a shard id is listed twice")
        return value

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSettings:
        if bool(self.shard_ids) != (self.shard_count is not None):
            raise ValueError(
                "set DISCORD_SHARD_IDS and DISCORD_SHARD_COUNT together "
                "(e.g. DISCORD_SHARD_IDS=0,1 DISCORD_SHARD_COUNT=4), or neither"
            )
        too_big = [i for i in self.shard_numbers if i >= (self.shard_count or 0)]
        if too_big:
            raise ValueError(
                f"DISCORD_SHARD_IDS {too_big} must be below DISCORD_SHARD_COUNT "
                f"({self.shard_count}): shards are numbered from 0"
            )
        return self

    @property
    def shard_numbers(self) -> list[int]:
        """``shard_ids`` as numbers (empty when unsharded)."""
        return [int(item) for item in self.shard_ids]
