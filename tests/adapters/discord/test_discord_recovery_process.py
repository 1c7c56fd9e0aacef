"""A real ``chinwag run`` killed mid-reply on the fake Discord, then started again.

The restarted process finds the reply in the store and edits the message the user already
has into the complete answer; the gateway's replay of the question edits too, never answers
twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.discord.test_discord_process import CHINWAG, running_chinwag
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow

ANSWER = " ".join(f"word{i}" for i in range(80))


def _long_answer(body: Mapping[str, Any]) -> str:
    return ANSWER


@pytest.mark.parametrize("replayed", [False, True], ids=["restart", "replayed"])
async def test_a_reply_killed_mid_stream_ends_as_one_answer_in_its_message(
    tmp_path: Path, replayed: bool
) -> None:
    assert CHINWAG.exists(), "install the project (pip install -e .) for the chinwag script"
    log = tmp_path / "chinwag.log"
    async with (
        FakeDiscord() as fake,
        FakeOpenAIServer(reply=_long_answer, chunk_delay=0.03) as openai,
    ):
        alice = fake.add_user("alice")
        dm = fake.dm_channel(alice)

        async with running_chinwag(fake, openai, tmp_path, log) as process:
            question = await fake.user_message(dm, alice, "tell me a long story")
            await fake.wait_for(
                lambda: any(m.edits >= 2 for m in fake.bot_messages(dm)), timeout=30, what="edits"
            )
            await asyncio.sleep(0.3)
            process.kill()
            await process.wait()
        (shown,) = fake.bot_messages(dm)
        assert shown.content != ANSWER and ANSWER.startswith(shown.content)

        async with running_chinwag(fake, openai, tmp_path, log):
            if replayed:
                await fake.redeliver(question.id)
            await fake.wait_for(
                lambda: fake.bot_texts(dm) == [ANSWER], timeout=30, what="the complete answer"
            )
            await asyncio.sleep(1.0)  # room for a wrong second answer

        assert [(m.id, m.content) for m in fake.bot_messages(dm)] == [(shown.id, ANSWER)], (
            log.read_text()
        )
        assert len(openai.chat_requests) == 2
