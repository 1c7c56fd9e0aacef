"""One bot on four real processes through crashes and a deploy: nothing lost, nothing twice.

``chinwag ingress`` (Telegram webhook) and three ``chinwag worker`` processes on PostgreSQL
and Redis, 50 conversations x 10 messages sent in three waves. Along the way a worker is
SIGKILLed while it writes replies, the ingress is SIGKILLed while Telegram delivers and
started again, and another worker is restarted (SIGTERM, then a new one: a deploy). The
Telegram fake's records must show every message answered by exactly one complete reply, in
order within each conversation: no reply missing, doubled or left cut off.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, default_reply
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser
from tests.scale_harness import cluster, free_port, scale_env, start, until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(420)]

CONVERSATIONS = 50
WAVES = ((0, 4), (4, 7), (7, 10))  # message numbers sent in each wave
TAIL = " ".join(["la"] * 10) + " END"
SECRET = "scale-test-secret_1"


def _reply(body: Mapping[str, Any]) -> str:
    """The default reply ("You said: <text>. ..."), long enough to stream, marked complete."""
    return f"{default_reply(body)} {TAIL}"


def _complete(telegram: FakeTelegram, chats: list[FakeChat]) -> int:
    return sum(
        1 for chat in chats for m in telegram.bot_messages(chat.id) if m.text.endswith("END")
    )


def _partial(telegram: FakeTelegram, chats: list[FakeChat]) -> int:
    return sum(
        1 for chat in chats for m in telegram.bot_messages(chat.id) if not m.text.endswith("END")
    )


def _sends_quiet(telegram: FakeTelegram, seconds: float) -> bool:
    """Whether no reply began (``sendMessage``) in the last ``seconds``.

    The one window no store can close: Telegram accepted a reply's first message and the
    process dies before the database recorded its id (a few milliseconds). The kill below
    lands between such windows, as any kill mid-stream almost always does.
    """
    sends = telegram.calls_to("sendMessage")
    return not sends or time.monotonic() - sends[-1].at >= seconds


async def test_fifty_conversations_survive_a_killed_worker_a_killed_ingress_and_a_deploy(
    tmp_path: Path, direct_url: str, redis_url: str
) -> None:
    port = free_port()
    async with (
        FakeTelegram() as telegram,
        FakeOpenAIServer(reply=_reply, chunk_delay=0.05) as llm,
    ):
        env = scale_env(
            telegram_token=telegram.token,
            telegram_url=telegram.base_url,
            llm_url=llm.base_url,
            database_url=direct_url,
            redis_url=redis_url,
            data_dir=tmp_path / "data",
            BOT_NAME=f"scale-{secrets.token_hex(4)}",  # its own keys in the shared Redis
            TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram",
            TELEGRAM_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
            TELEGRAM_WEBHOOK_SECRET=SECRET,
        )
        async with cluster(env, tmp_path, ingress=1, workers=3) as bot:
            users = [FakeUser(9100 + n, f"User {n}", f"user{n}") for n in range(CONVERSATIONS)]
            chats = [FakeChat(user.id, "private") for user in users]

            def send(wave: tuple[int, int]) -> None:
                for n in range(*wave):
                    for user, chat in zip(users, chats, strict=True):
                        telegram.send_text(chat, user, f"c{user.id}-m{n}")

            # Wave 1; a worker dies (SIGKILL) while replies are being written.
            send(WAVES[0])
            await until(
                lambda: (
                    _complete(telegram, chats) >= 30
                    and _partial(telegram, chats) >= 3
                    and _sends_quiet(telegram, 0.2)
                ),
                "replies in progress",
                bot,
            )
            bot.workers[0].kill()

            # Wave 2; the ingress dies while Telegram delivers it, and comes back.
            delivered = len(telegram.delivered_update_ids())
            send(WAVES[1])
            await until(
                lambda: len(telegram.delivered_update_ids()) >= delivered + 40,
                "wave 2 being delivered",
                bot,
            )
            bot.ingress[0].kill()
            await bot.ingress[0].process.wait()
            bot.ingress.append(await start("ingress", "ingress-2", bot.env, tmp_path))

            # A deploy: a worker is stopped (SIGTERM) with replies in flight and replaced.
            await until(lambda: _partial(telegram, chats) >= 3, "replies in progress", bot)
            assert await bot.workers[1].stop() == 0, bot.workers[1].log
            await bot.add_worker()

            # Wave 3, then everything must be answered.
            send(WAVES[2])
            total = CONVERSATIONS * WAVES[-1][1]
            await until(lambda: _complete(telegram, chats) >= total, "every reply", bot, 300)
            await telegram.wait_idle(quiet=2.0, timeout=60)

            problems = []
            for user, chat in zip(users, chats, strict=True):
                texts = [m.text for m in telegram.bot_messages(chat.id)]
                expected = [f"You said: c{user.id}-m{n}." for n in range(WAVES[-1][1])]
                if len(texts) != len(expected) or not all(
                    text.startswith(start_) and text.endswith(TAIL)
                    for text, start_ in zip(texts, expected, strict=False)
                ):
                    problems.append((chat.id, texts))
            assert not problems, (problems[:3], bot.logs()[-20000:])
            assert telegram.pending_updates == 0
            # The crashes were real: turns went back to the queue, deliveries were refused.
            logs = bot.logs()
            assert "queued again" in logs
            assert telegram.webhook_refusals, "the killed ingress never missed a delivery"
            assert "Traceback" not in logs, logs[-20000:]
