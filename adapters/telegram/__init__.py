"""Telegram chat adapter on python-telegram-bot 22.x."""

from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.channel import TelegramReplyChannel
from adapters.telegram.settings import TelegramSettings

__all__ = ["TelegramAdapter", "TelegramReplyChannel", "TelegramSettings"]
