"""Start/close rules and configuration errors of the adapter."""

from __future__ import annotations

import pytest

from adapters.telegram import TelegramAdapter
from core.errors import ConfigError
from tests.adapters.telegram.conftest import Harness, fast_settings
from tests.fakes.telegram_server import FakeTelegram


async def test_refused_token_names_the_variable(bot: Harness) -> None:
    settings = fast_settings(bot.fake, bot_token="999:not-the-token")
    adapter = TelegramAdapter(settings, bot.engine)
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN") as caught:
        await adapter.start()
    assert "not-the-token" not in str(caught.value)
    await adapter.aclose()


async def test_missing_token_names_the_variable(bot: Harness) -> None:
    adapter = TelegramAdapter(fast_settings(bot.fake, bot_token=None), bot.engine)
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        await adapter.start()


async def test_lifecycle_is_idempotent_and_refuses_restart(bot: Harness) -> None:
    adapter = bot.adapter
    await adapter.start()  # already started: nothing happens
    assert len(bot.fake.calls_to("getMe")) == 1
    await adapter.aclose()
    await adapter.aclose()
    await adapter.wait_closed()
    with pytest.raises(RuntimeError, match="after aclose"):
        await adapter.start()


async def test_unreachable_api_is_an_adapter_error(bot: Harness) -> None:
    from core.errors import AdapterError

    async with FakeTelegram() as other:
        settings = fast_settings(other, request_timeout=2)
    adapter = TelegramAdapter(settings, bot.engine)  # the fake is gone: nothing listens
    with pytest.raises(AdapterError, match="cannot reach"):
        await adapter.start()
