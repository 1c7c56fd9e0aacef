"""Real processes: ``chinwag ingress`` and two ``chinwag worker`` on PostgreSQL; one worker
is SIGKILLed mid-reply, and every message still gets exactly one complete reply, in order."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAIServer, default_reply
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser
from tests.scale_harness import cluster, free_port, scale_env, start

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(240)]

CONVERSATIONS = 4
MESSAGES = 3
TAIL = " ".join(["la"] * 12) + " END"


def _reply(body: Mapping[str, Any]) -> str:
    """The default reply, made long enough to stream for a few seconds, marked complete."""
    return f"{default_reply(body)} {TAIL}"


async def test_a_killed_workers_turns_are_answered_once_in_order(
    tmp_path: Path, direct_url: str, redis_url: str
) -> None:
    async with FakeTelegram() as telegram, FakeOpenAIServer(reply=_reply, chunk_delay=0.2) as llm:
        env = scale_env(
            telegram_token=telegram.token,
            telegram_url=telegram.base_url,
            llm_url=llm.base_url,
            database_url=direct_url,
            redis_url=redis_url,
            BOT_NAME=f"scaled-{secrets.token_hex(4)}",  # its own keys in the shared Redis
            data_dir=tmp_path / "data",
        )
        async with cluster(env, tmp_path, ingress=1, workers=1) as bot:
            users = [FakeUser(8100 + n, f"User {n}", f"user{n}") for n in range(CONVERSATIONS)]
            chats = [FakeChat(user.id, "private") for user in users]
            for n in range(MESSAGES):
                for user, chat in zip(users, chats, strict=True):
                    telegram.send_text(chat, user, f"c{user.id}-m{n}")
            # The only worker starts writing replies; it dies with them on screen.
            await telegram.wait_for(
                lambda: any(telegram.bot_messages(chat.id) for chat in chats), timeout=60
            )
            listen = f"127.0.0.1:{free_port()}"
            second = asyncio.create_task(
                start("worker", "worker-2", bot.env, tmp_path, CHINWAG_HTTP_LISTEN=listen)
            )
            await asyncio.sleep(0.5)
            doomed = bot.workers[0]
            doomed.kill()
            await doomed.process.wait()
            bot.workers.append(await second)

            def answered() -> bool:
                return all(
                    len(telegram.bot_messages(chat.id)) == MESSAGES
                    and all(m.text.endswith("END") for m in telegram.bot_messages(chat.id))
                    for chat in chats
                )

            try:
                await telegram.wait_for(answered, timeout=120)
                await telegram.wait_idle(quiet=2.0, timeout=30)
            except TimeoutError:
                shown = {c.id: [m.text for m in telegram.bot_messages(c.id)] for c in chats}
                raise AssertionError(f"{shown}\n{bot.logs()}") from None
            for user, chat in zip(users, chats, strict=True):
                texts = [m.text for m in telegram.bot_messages(chat.id)]
                assert len(texts) == MESSAGES, (texts, bot.logs())
                for n, text in enumerate(texts):
                    assert text.startswith(f"You said: c{user.id}-m{n}."), (texts, bot.logs())
                    assert text.endswith(TAIL), f"cut off: {text!r}"
            assert "Traceback" not in bot.logs(), bot.logs()
            assert "queued again" in bot.workers[1].log, "the dead worker's turns were retried"
            # The surviving worker is ready and shows the queue drained.
            async with httpx.AsyncClient(base_url=f"http://{listen}") as http:
                ready = await http.get("/readyz")
                assert (ready.status_code, ready.text.strip()) == (200, "ready")
                drained = ("chinwag_queue_depth 0.0", "chinwag_queue_doing 0.0")
                async with asyncio.timeout(15):  # the gauges are read every 5 s
                    metrics = (await http.get("/metrics")).text
                    while not all(line in metrics for line in drained):
                        await asyncio.sleep(0.5)
                        metrics = (await http.get("/metrics")).text
            assert "chinwag_queue_stalled 0.0" in metrics
            retried = re.search(r"^chinwag_queue_retries_total (\S+)$", metrics, re.MULTILINE)
            assert retried is not None
            assert float(retried.group(1)) >= 1, "it put the dead worker's turns back"
