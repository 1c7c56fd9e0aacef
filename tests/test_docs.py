"""The README's table and .env.example name every setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adapters.discord.settings import DiscordSettings
from adapters.homeassistant.settings import HomeAssistantSettings
from adapters.llm.local import LocalSettings
from adapters.llm.openai import OpenAISettings
from adapters.llm.stt import STTSettings
from adapters.memory.settings import MemorySettings
from adapters.telegram.settings import TelegramSettings
from bots.config import BotSettings
from core.settings import (
    AccessSettings,
    ChinwagSettings,
    CoreSettings,
    KbSettings,
    LLMSettings,
    MediaSettings,
    ScaleSettings,
    ToolSettings,
)

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS: list[type[ChinwagSettings]] = [
    CoreSettings,
    LLMSettings,
    AccessSettings,
    ToolSettings,
    BotSettings,
    MemorySettings,
    OpenAISettings,
    LocalSettings,
    TelegramSettings,
    DiscordSettings,
    HomeAssistantSettings,
    KbSettings,
    STTSettings,
    MediaSettings,
    ScaleSettings,
]
VARIABLES = sorted(
    f"{cls.model_config.get('env_prefix') or ''}{name}".upper()
    for cls in COMPONENTS
    for name in cls.model_fields
)


@pytest.mark.parametrize("variable", VARIABLES)
def test_every_setting_is_documented(variable: str) -> None:
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"^{variable}=", example, re.MULTILINE), f"{variable} not in .env.example"
    assert f"| `{variable}` |" in readme, f"{variable} not in the README's table"


def test_env_example_names_only_real_settings() -> None:
    example = (ROOT / ".env.example").read_text()
    named = re.findall(r"^([A-Z_]+)=", example, re.MULTILINE)
    assert sorted(set(named)) == VARIABLES
