"""A real ``chinwag run`` killed mid-reply on the fake Telegram, then started again.

Telegram never redelivers an update after a crash (python-telegram-bot confirmed its offset),
so the restarted process finds the reply in the store: the messages the user already has are
edited into the one complete answer, never a second copy.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.telegram.test_process import ROOT, _start, _stop
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

pytestmark = pytest.mark.slow

WORDS = 80
ANSWER = " ".join(f"word{i}" for i in range(WORDS))


def _long_answer(body: Mapping[str, Any]) -> str:
    return ANSWER  # the same prompt gives the same answer, as a model at temperature 0


def _env(fake: FakeTelegram, llm: FakeOpenAIServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "PTB_TIMEDELTA": "true",
        "LOG_LEVEL": "INFO",
        "BOT_NAME": "proc",
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "TELEGRAM_POLL_TIMEOUT": "1",
        "TELEGRAM_EDIT_INTERVAL": "0.1",
        "TELEGRAM_FIRST_FLUSH_DELAY": "0.1",
        "LLM_BACKEND": "openai",
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-test-key",
        "OPENAI_MODEL": "gpt-4o-mini",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        "CHINWAG_DATA_DIR": str(tmp_path / "data"),
    }
    env.update(extra)
    return env


async def _kill_mid_reply(
    fake: FakeTelegram, chat: FakeChat, user: FakeUser, env: dict[str, str]
) -> str:
    """Start chinwag, ask, SIGKILL it while the answer streams; return the partial text."""
    process = await _start(env, Path(env["HOME"]))
    try:
        await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")), timeout=60)
        fake.send_text(chat, user, "tell me a long story")
        await fake.wait_for(
            lambda: any(m.edits >= 2 for m in fake.bot_messages(chat.id)), timeout=30
        )
        await asyncio.sleep(0.3)  # the message's id reached the store long ago (ms)
    finally:
        process.kill()
        await process.wait()
    (partial,) = fake.bot_messages(chat.id)
    assert partial.text != ANSWER and ANSWER.startswith(partial.text)
    return partial.text


@pytest.mark.parametrize("redelivered", [False, True], ids=["restart", "redelivered"])
async def test_a_reply_killed_mid_stream_ends_as_one_answer_in_its_message(
    tmp_path: Path, redelivered: bool
) -> None:
    async with (
        FakeTelegram() as fake,
        FakeOpenAIServer(reply=_long_answer, chunk_delay=0.03) as llm,
    ):
        user = FakeUser(5551, "Ada", "ada_l")
        chat = FakeChat(user.id, "private")
        env = _env(fake, llm, tmp_path)
        await _kill_mid_reply(fake, chat, user, env)
        (shown,) = fake.bot_messages(chat.id)
        if redelivered:  # say the offset was lost: Telegram sends the update again
            fake.redeliver(fake.delivered_update_ids()[-1])

        second = await _start(env, tmp_path)
        try:
            await fake.wait_for(
                lambda: [m.text for m in fake.bot_messages(chat.id)] == [ANSWER], timeout=60
            )
            await fake.wait_idle(quiet=1.0)
        finally:
            log = await _stop(second)
        assert second.returncode == 0, log
        # One answer, complete, in the message the user already had: no second copy.
        assert [(m.message_id, m.text) for m in fake.bot_messages(chat.id)] == [
            (shown.message_id, ANSWER)
        ]
        assert not [m for m in fake.messages(chat.id) if m.deleted]
        assert len(llm.chat_requests) == 2  # produced again from the same prompt
        assert llm.chat_requests[1].body["messages"] == llm.chat_requests[0].body["messages"]
        assert fake.pending_updates == 0
        assert "took over 1 reply" in log or redelivered, log


async def test_a_reply_killed_too_long_ago_is_marked_interrupted(tmp_path: Path) -> None:
    async with (
        FakeTelegram() as fake,
        FakeOpenAIServer(reply=_long_answer, chunk_delay=0.03) as llm,
    ):
        user = FakeUser(5552, "Bo", "bo")
        chat = FakeChat(user.id, "private")
        partial = await _kill_mid_reply(fake, chat, user, _env(fake, llm, tmp_path))
        # Started again after the window: the reply is not produced again but marked.
        env = _env(fake, llm, tmp_path, RECOVER_WITHIN_SECONDS="0")
        second = await _start(env, tmp_path)
        try:
            await fake.wait_for(
                lambda: any("interrupted" in m.text for m in fake.bot_messages(chat.id)),
                timeout=60,
            )
            await fake.wait_idle(quiet=0.5)
        finally:
            log = await _stop(second)
        (marked,) = fake.bot_messages(chat.id)
        body, _, mark = marked.text.rpartition("\n\n")
        assert mark == "…reply interrupted, send it again", marked.text
        # The text saved as it streamed (at most a second behind the screen), then the mark.
        assert body and partial.startswith(body), (body, partial)
        assert len(llm.chat_requests) == 1, log


async def test_a_stop_waits_only_the_grace_period_and_the_next_start_finishes_the_reply(
    tmp_path: Path,
) -> None:
    async with (
        FakeTelegram() as fake,
        FakeOpenAIServer(reply=_long_answer, chunk_delay=0.05) as llm,
    ):
        user = FakeUser(5555, "Ed", "ed")
        chat = FakeChat(user.id, "private")
        env = _env(fake, llm, tmp_path, SHUTDOWN_GRACE_SECONDS="0.5")
        first = await _start(env, tmp_path)
        try:
            await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")), timeout=60)
            fake.send_text(chat, user, "tell me a long story")
            await fake.wait_for(
                lambda: any(m.edits >= 1 for m in fake.bot_messages(chat.id)), timeout=30
            )
        finally:
            log = await _stop(first)  # SIGTERM: 4 s of answer left, 0.5 s of grace
        assert first.returncode == 0, log
        (shown,) = fake.bot_messages(chat.id)
        assert shown.text != ANSWER, "the grace period should have cut the reply"
        assert "left to recovery" in log

        second = await _start(env, tmp_path)
        try:
            await fake.wait_for(
                lambda: [m.text for m in fake.bot_messages(chat.id)] == [ANSWER], timeout=60
            )
            await fake.wait_idle(quiet=1.0)
        finally:
            log = await _stop(second)
        assert [(m.message_id, m.text) for m in fake.bot_messages(chat.id)] == [
            (shown.message_id, ANSWER)
        ]


async def test_a_message_sent_while_down_is_answered_after_the_recovered_reply(
    tmp_path: Path,
) -> None:
    async with (
        FakeTelegram() as fake,
        FakeOpenAIServer(reply=_long_answer, chunk_delay=0.03) as llm,
    ):
        user = FakeUser(5556, "Flo", "flo")
        chat = FakeChat(user.id, "private")
        env = _env(fake, llm, tmp_path)
        await _kill_mid_reply(fake, chat, user, env)
        (shown,) = fake.bot_messages(chat.id)
        fake.send_text(chat, user, "and then?")  # waits at Telegram while chinwag is down

        second = await _start(env, tmp_path)
        try:
            await fake.wait_for(
                lambda: [m.text for m in fake.bot_messages(chat.id)] == [ANSWER, ANSWER],
                timeout=60,
            )
            await fake.wait_idle(quiet=1.0)
        finally:
            log = await _stop(second)
        first, _answer = fake.bot_messages(chat.id)
        assert first.message_id == shown.message_id, log  # edited in place
        # The new message was answered after the recovered reply, with it in its prompt.
        prompt = llm.chat_requests[-1].body["messages"]
        assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
        assert prompt[2]["content"] == ANSWER and prompt[3]["content"] == "and then?"
