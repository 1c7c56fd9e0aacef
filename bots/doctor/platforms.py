"""Doctor's chat platform checks: Telegram and Discord.

Telegram: the token (``getMe``) and the webhook state. Discord: the bot user and the Message
Content intent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.discord.settings import DiscordSettings
from adapters.telegram.settings import TelegramSettings
from bots.doctor.check import Check
from core.errors import ChinwagError, ConfigError


async def check_telegram(telegram: TelegramSettings, limit: float) -> list[Check]:
    """Telegram's lines: the token, then the webhook state."""
    if telegram.bot_token is None:
        return [Check("skip", "Telegram", "not configured (TELEGRAM_BOT_TOKEN is unset)")]
    from adapters.telegram.probe import probe_telegram

    try:
        status = await probe_telegram(telegram, limit=limit)
    except ConfigError as exc:
        return [Check("FAIL", "Telegram", str(exc), "set TELEGRAM_BOT_TOKEN to the bot's token")]
    except ChinwagError as exc:
        return [
            Check(
                "FAIL",
                "Telegram",
                str(exc),
                "check the network (or TELEGRAM_API_BASE_URL) and try again",
            )
        ]
    checks = [Check("ok", "Telegram", f"token valid: @{status.username}")]
    if not telegram.webhook_mode:
        if status.webhook_url:
            checks.append(
                Check(
                    "warn",
                    "Telegram",
                    f"a webhook is set ({status.webhook_url}) while chinwag is configured for "
                    "polling: it blocks polling (getUpdates answers 409 Conflict)",
                    "`chinwag run` deletes it when it starts polling; if another deployment "
                    "uses it, stop that one first, or set TELEGRAM_WEBHOOK_URL to serve by "
                    "webhook",
                )
            )
        else:
            checks.append(Check("ok", "Telegram", "no webhook set; chinwag polls"))
        return checks
    recent = status.last_error_at is not None and status.last_error_at > datetime.now(
        UTC
    ) - timedelta(hours=1)
    if status.last_error and recent:
        assert status.last_error_at is not None
        checks.append(
            Check(
                "warn",
                "Telegram",
                f"the last webhook delivery failed at {status.last_error_at:%Y-%m-%d %H:%M} "
                f"UTC: {status.last_error} ({status.pending_updates} updates waiting)",
                "make TELEGRAM_WEBHOOK_URL reach TELEGRAM_WEBHOOK_LISTEN (proxy, TLS, "
                "firewall) and keep `chinwag run` running",
            )
        )
    elif status.webhook_url != telegram.webhook_url:
        shown = status.webhook_url or "none"
        checks.append(
            Check("ok", "Telegram", f"webhook now {shown}; `chinwag run` sets it at start")
        )
    else:
        checks.append(Check("ok", "Telegram", "webhook set to TELEGRAM_WEBHOOK_URL"))
    return checks


async def check_discord(discord: DiscordSettings, limit: float) -> list[Check]:
    """Discord's lines: the token, then the Message Content intent."""
    if discord.bot_token is None:
        return [Check("skip", "Discord", "not configured (DISCORD_BOT_TOKEN is unset)")]
    from adapters.discord.probe import probe_discord

    try:
        status = await probe_discord(discord, limit=limit)
    except ConfigError as exc:
        return [Check("FAIL", "Discord", str(exc), "set DISCORD_BOT_TOKEN to the bot's token")]
    except ChinwagError as exc:
        return [
            Check(
                "FAIL",
                "Discord",
                str(exc),
                "check the network (or DISCORD_API_BASE_URL) and try again",
            )
        ]
    checks = [Check("ok", "Discord", f"token valid: bot {status.user} ({status.application})")]
    if status.message_content:
        checks.append(Check("ok", "Discord", "the Message Content intent is enabled"))
    else:
        checks.append(
            Check(
                "FAIL",
                "Discord",
                "the Message Content intent is off: Discord would refuse the connection "
                "(close code 4014)",
                "Developer Portal > your application > Bot > Privileged Gateway Intents > "
                "MESSAGE CONTENT INTENT",
            )
        )
    return checks
