"""A polling ``chinwag ingress`` SIGKILLed right after Telegram handed it a batch loses nothing.

``chinwag ingress`` (Telegram long polling) and two ``chinwag worker`` processes on
PostgreSQL and Redis. 100 messages wait at the fake; the ingress fetches them in one batch
and is killed (SIGKILL) while it is still queueing them; a new ingress starts. The
updates the dead one had not queued were not confirmed, so Telegram hands them out again;
the Telegram fake's records must show every message answered exactly once, in order.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser
from tests.scale_harness import cluster, scale_env, start, until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

CONVERSATIONS = 20
MESSAGES = 5  # per conversation: 100 updates, one getUpdates batch


async def test_a_killed_polling_ingress_loses_no_update(
    tmp_path: Path, direct_url: str, redis_url: str
) -> None:
    async with FakeTelegram() as telegram, FakeOpenAIServer() as llm:
        env = scale_env(
            telegram_token=telegram.token,
            telegram_url=telegram.base_url,
            llm_url=llm.base_url,
            database_url=direct_url,
            redis_url=redis_url,
            data_dir=tmp_path / "data",
            BOT_NAME=f"poll-{secrets.token_hex(4)}",  # its own keys in the shared Redis
            # No worker dies here: the default timeout, so that a worker slowed by the load
            # is not taken for dead (the harness's 3 s is for the worker-kill tests).
            WORKER_HEARTBEAT_TIMEOUT_SECONDS="10",
        )
        async with cluster(env, tmp_path, ingress=1, workers=2) as bot:
            users = [FakeUser(9300 + n, f"User {n}", f"user{n}") for n in range(CONVERSATIONS)]
            chats = [FakeChat(user.id, "private") for user in users]
            for n in range(MESSAGES):
                for user, chat in zip(users, chats, strict=True):
                    telegram.send_text(chat, user, f"c{user.id}-m{n}")
            total = CONVERSATIONS * MESSAGES
            await until(
                lambda: len(telegram.delivered_update_ids()) >= total, "the batch", bot, every=0.005
            )
            handed = time.monotonic()
            # Killed as soon as it asks for more (an ingress that confirms a batch before
            # queueing it would lose it here) or while it still queues the batch (about
            # half a second for 100 turns on PostgreSQL), whichever comes first.
            await until(
                lambda: (
                    time.monotonic() - handed > 0.15
                    or telegram.calls_to("getUpdates")[-1].at > handed
                ),
                "the next poll",
                bot,
                every=0.005,
            )
            bot.ingress[0].kill()
            killed_at = time.monotonic()
            await bot.ingress[0].process.wait()
            bot.ingress.append(await start("ingress", "ingress-2", bot.env, tmp_path))

            def answered() -> int:
                return sum(len(telegram.bot_messages(chat.id)) for chat in chats)

            await until(lambda: answered() >= total, "every reply", bot, 180, every=0.005)
            await telegram.wait_idle(quiet=2.0, timeout=60)

            problems = []
            for user, chat in zip(users, chats, strict=True):
                texts = [m.text for m in telegram.bot_messages(chat.id)]
                expected = [f"You said: c{user.id}-m{n}." for n in range(MESSAGES)]
                if len(texts) != MESSAGES or not all(
                    text.startswith(prefix) for text, prefix in zip(texts, expected, strict=True)
                ):
                    problems.append((chat.id, texts))
            assert not problems, (problems[:3], bot.logs()[-20000:])
            # The kill was real: the new ingress was handed again what the dead one fetched.
            after = [c for c in telegram.calls_to("getUpdates") if c.at > killed_at]
            first_offset = int(after[0].params.get("offset") or 0)
            assert first_offset <= max(telegram.delivered_update_ids()), bot.logs()[-5000:]
            assert telegram.pending_updates == 0
            assert "Traceback" not in bot.logs(), bot.logs()[-20000:]
