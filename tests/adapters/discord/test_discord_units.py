"""The splitter, the settings and the start-up errors of the Discord adapter."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from adapters.discord.adapter import INTENT_HELP, DiscordAdapter
from adapters.discord.settings import DiscordSettings
from adapters.discord.split import split_message
from core.errors import AdapterError, ConfigError
from tests.adapters.discord.conftest import discord_settings
from tests.adapters.discord.helpers import fences_balanced, same_text
from tests.fakes.discord_server import FakeDiscord

# --- split ------------------------------------------------------------------------------------


def test_short_text_is_one_part_and_blank_is_none() -> None:
    assert split_message("hello") == ["hello"]
    assert split_message("  \n ") == []


def test_cuts_at_a_paragraph_boundary() -> None:
    first = "a" * 1500
    second = "b" * 1000
    assert split_message(f"{first}\n\n{second}") == [first, second]


def test_a_block_that_fits_starts_the_next_message() -> None:
    intro = "Here is the code:\n\n" + "x " * 700
    block = "```python\n" + "print('hi')\n" * 100 + "```"
    parts = split_message(f"{intro}\n{block}\nThat's it.")
    assert parts[1].startswith("```python\n")
    assert parts[1].count("```") == 2  # the whole block, uncut
    assert all(len(p) <= 2000 for p in parts)


def test_a_block_longer_than_a_message_is_closed_and_reopened() -> None:
    block = "```js\n" + "".join(f"console.log({i});\n" for i in range(400)) + "```"
    parts = split_message("Look:\n" + block)
    assert len(parts) >= 3
    assert all(len(p) <= 2000 and fences_balanced(p) for p in parts)
    assert all(p.startswith("```js\n") for p in parts[1:])  # reopened with its language
    assert same_text(parts, "Look:\n" + block)


def test_one_huge_word_is_hard_cut() -> None:
    parts = split_message("z" * 4500)
    assert [len(p) for p in parts] == [2000, 2000, 500]


_piece = st.one_of(
    st.text(alphabet="ab cd\n", min_size=1, max_size=300),
    st.builds(
        lambda lang, n, w: f"```{lang}\n" + "\n".join("y" * w for _ in range(n)) + "\n```",
        st.sampled_from(["", "py", "rust"]),
        st.integers(1, 120),
        st.integers(0, 60),
    ),
    st.builds(lambda n: "q" * n, st.integers(1, 2500)),
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.lists(_piece, min_size=1, max_size=25), st.sampled_from(["\n", "\n\n"]))
def test_split_keeps_everything_within_limits(pieces: list[str], sep: str) -> None:
    text = sep.join(pieces)
    parts = split_message(text)
    assert all(0 < len(p) <= 2000 for p in parts)
    assert all(fences_balanced(p) for p in parts)
    assert same_text(parts, text)


# --- settings ---------------------------------------------------------------------------------


def test_settings_read_flat_names_and_hide_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "very-secret-token")
    monkeypatch.setenv("DISCORD_ANSWER_ALL_CHANNELS", "123, 456,,")
    monkeypatch.setenv("DISCORD_EDIT_INTERVAL", "1.5")
    monkeypatch.setenv("DISCORD_API_BASE_URL", "")  # empty counts as unset
    loaded = DiscordSettings(_env_file=None)
    assert loaded.answer_all_channels == ["123", "456"]
    assert loaded.edit_interval == 1.5
    assert loaded.api_base_url is None
    assert "very-secret-token" not in repr(loaded)


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValidationError, match="not a Discord channel id"):
        DiscordSettings(_env_file=None, answer_all_channels="general")
    with pytest.raises(ValidationError):
        DiscordSettings(_env_file=None, api_base_url="http://127.0.0.1:8600/api")  # no version
    with pytest.raises(ValidationError):
        DiscordSettings(_env_file=None, ack_after=5)  # past Discord's 3-second window


# --- start-up ---------------------------------------------------------------------------------


class _NoEngine:
    bot_name = "chinwag"

    def commands(self):
        return ()


async def test_a_refused_intent_stops_start_with_a_clear_error(tmp_path: Path) -> None:
    async with FakeDiscord(allow_message_content=False) as fake:
        adapter = DiscordAdapter(discord_settings(fake), _NoEngine(), data_dir=tmp_path)  # type: ignore[arg-type]
        with pytest.raises(AdapterError) as caught:
            await adapter.start()
        assert str(caught.value) == INTENT_HELP
        assert "MESSAGE CONTENT INTENT" in INTENT_HELP
        await adapter.aclose()


async def test_a_wrong_token_names_the_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeDiscord() as fake:
        wrong = discord_settings(fake).model_copy(
            update={"bot_token": DiscordSettings(_env_file=None, bot_token="wrong").bot_token}
        )
        adapter = DiscordAdapter(wrong, _NoEngine(), data_dir=tmp_path)  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as caught:
            await adapter.start()
        assert caught.value.variable == "DISCORD_BOT_TOKEN"
        assert fake.calls[0].status == 401
    assert "wrong" not in caplog.text and fake.token not in caplog.text


async def test_lifecycle_misuse_is_a_runtime_error(tmp_path: Path) -> None:
    adapter = DiscordAdapter(
        DiscordSettings(_env_file=None, bot_token="x"),
        _NoEngine(),  # type: ignore[arg-type]
        data_dir=tmp_path,
    )
    with pytest.raises(RuntimeError):
        await adapter.wait_closed()
    await adapter.aclose()
    await adapter.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await adapter.start()
