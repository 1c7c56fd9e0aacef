"""Ask Telegram who the bot is and where its updates go, without serving (``chinwag doctor``).

Uses python-telegram-bot's ``Bot`` on ``TELEGRAM_API_BASE_URL`` (when set): ``getMe`` proves
the token, ``getWebhookInfo`` tells whether a webhook is set and its last delivery error.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import datetime

from telegram import Bot
from telegram.error import InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from adapters.telegram.settings import TelegramSettings
from core.errors import AdapterError, ConfigError

__all__ = ["TelegramStatus", "probe_telegram"]


@dataclass(frozen=True, slots=True)
class TelegramStatus:
    """What Telegram said about the bot.

    Attributes:
        username: the bot's username, without ``@``.
        webhook_url: the webhook Telegram delivers to; empty when none is set.
        pending_updates: updates waiting for the bot.
        last_error: Telegram's most recent webhook delivery error, if any.
        last_error_at: when that error happened.
    """

    username: str
    webhook_url: str
    pending_updates: int
    last_error: str | None
    last_error_at: datetime | None


async def probe_telegram(settings: TelegramSettings, *, limit: float) -> TelegramStatus:
    """``getMe`` and ``getWebhookInfo`` with the configured token, within ``limit`` seconds.

    Raises:
        ConfigError: ``TELEGRAM_BOT_TOKEN`` is unset, or Telegram refused it.
        AdapterError: Telegram cannot be reached, or answered with another error.
    """
    if settings.bot_token is None:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN", "is not set", TelegramSettings.EXAMPLES["bot_token"]
        )
    os.environ.setdefault("PTB_TIMEDELTA", "true")  # PTB 22's future default; avoids a warning
    request = HTTPXRequest(connect_timeout=limit, read_timeout=limit, write_timeout=limit)
    root = settings.api_base_url or "https://api.telegram.org"
    bot = Bot(
        settings.bot_token.get_secret_value(),
        base_url=f"{root}/bot",
        base_file_url=f"{root}/file/bot",
        request=request,
    )
    where = settings.api_base_url or "api.telegram.org"
    try:
        async with asyncio.timeout(limit * 2):
            async with bot:  # initialize() is getMe
                info = await bot.get_webhook_info()
                username = bot.username
    except InvalidToken as exc:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN",
            "was refused by Telegram (401 Unauthorized): copy it again from @BotFather",
            TelegramSettings.EXAMPLES["bot_token"],
        ) from exc
    except (TimedOut, TimeoutError) as exc:
        raise AdapterError(f"Telegram at {where} did not answer within {limit:g}s") from exc
    except NetworkError as exc:
        raise AdapterError(f"cannot reach Telegram at {where} ({exc.message})") from exc
    except TelegramError as exc:
        raise AdapterError(f"Telegram at {where} refused: {exc.message}") from exc
    finally:
        await request.shutdown()
    return TelegramStatus(
        username=username,
        webhook_url=info.url or "",
        pending_updates=info.pending_update_count,
        last_error=info.last_error_message,
        last_error_at=info.last_error_date,
    )
