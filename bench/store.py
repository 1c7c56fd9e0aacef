"""What the SQL memory store sustains: ``python -m bench.store [--smoke]``.

* appends/s: 100 conversations appending one message at a time, all at once (what the
  engine does when 100 users talk at the same time);
* exchanges/s: per exchange the engine's three writes (user message + in-progress reply,
  then the reply's final text and platform id), 100 conversations at once;
* the history read (``recent_messages``, 50 messages) in a conversation holding 100 and
  100,000 messages: its cost must not grow with the conversation.

On SQLite (a file in a temporary directory) and, when ``CHINWAG_TEST_POSTGRES_URL`` is set,
on PostgreSQL (a database created for the run and dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.memory import migrate
from adapters.memory.models import MessageRow
from adapters.memory.store import SqlMemoryStore
from core.types import ConversationKey, MessageStatus, NewMessage, Role

CONVERSATIONS = 100


def key(i: int) -> ConversationKey:
    return ConversationKey("bench", "console", f"c{i}", None, f"u{i}")


async def appends_per_second(store: SqlMemoryStore, per_conversation: int) -> float:
    convs = [await store.current_conversation(key(i)) for i in range(CONVERSATIONS)]

    async def talk(conversation_id: int) -> None:
        for n in range(per_conversation):
            await store.append_messages(
                conversation_id, [NewMessage(Role.USER, f"message {n}", author_id="u")]
            )

    started = time.perf_counter()
    await asyncio.gather(*(talk(c.id) for c in convs))
    return CONVERSATIONS * per_conversation / (time.perf_counter() - started)


async def exchanges_per_second(store: SqlMemoryStore, per_conversation: int) -> float:
    convs = [await store.new_conversation(key(i)) for i in range(CONVERSATIONS)]

    async def talk(conversation_id: int, chat: str) -> None:
        for n in range(per_conversation):
            _, reply = await store.append_messages(
                conversation_id,
                [
                    NewMessage(
                        Role.USER, f"question {n}", author_id="u", platform_message_ids=[f"q{n}"]
                    ),
                    NewMessage(Role.ASSISTANT, "", status=MessageStatus.IN_PROGRESS),
                ],
            )
            await store.finish_message(
                reply.id,
                content=f"answer {n}",
                status=MessageStatus.COMPLETE,
                token_count=3,
                platform_chat_id=chat,
                platform_message_ids=[f"a{n}"],
            )

    started = time.perf_counter()
    await asyncio.gather(*(talk(c.id, c.key.chat_id) for c in convs))
    return CONVERSATIONS * per_conversation / (time.perf_counter() - started)


async def history_read_ms(store: SqlMemoryStore, url: str, size: int, reads: int) -> float:
    conv = await store.new_conversation(
        ConversationKey("bench", "console", f"big{size}", None, "u")
    )
    now = datetime.now(UTC)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for start in range(1, size + 1, 20_000):
                await connection.execute(
                    insert(MessageRow),
                    [
                        {
                            "conversation_id": conv.id,
                            "seq": seq,
                            "role": "user" if seq % 2 else "assistant",
                            "content": f"stored message {seq}",
                            "status": "complete",
                            "created_at": now,
                        }
                        for seq in range(start, min(start + 20_000, size + 1))
                    ],
                )
            await connection.execute(
                text("UPDATE conversations SET last_seq = :n WHERE id = :id"),
                {"n": size, "id": conv.id},
            )
            await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    timings = []
    for _ in range(reads):
        started = time.perf_counter()
        page = await store.recent_messages(conv.id, limit=50)
        timings.append(time.perf_counter() - started)
        assert len(page) == 50
    return statistics.median(timings) * 1000


async def run(url: str, label: str, smoke: bool) -> None:
    await migrate.upgrade(url)
    async with SqlMemoryStore(url) as store:
        per = 3 if smoke else 40
        appends = await appends_per_second(store, per)
        exchanges = await exchanges_per_second(store, per)
        small = await history_read_ms(store, url, 100, 20 if smoke else 300)
        big = await history_read_ms(store, url, 2_000 if smoke else 100_000, 20 if smoke else 300)
    print(f"{label}: {appends:,.0f} appends/s ({CONVERSATIONS} conversations at once)")
    print(
        f"{label}: {exchanges:,.0f} exchanges/s = {2 * exchanges:,.0f} messages/s "
        "(user message + reply: 2 appends and a finish each)"
    )
    print(
        f"{label}: history read of 50 messages: {small:.3f} ms at 100 stored, "
        f"{big:.3f} ms at {'2,000' if smoke else '100,000'} stored (x{big / small:.2f})"
    )


async def main(smoke: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        await run(f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}", "sqlite", smoke)
    admin = os.environ.get("CHINWAG_TEST_POSTGRES_URL", "").strip()
    if not admin:
        print("postgresql skipped: set CHINWAG_TEST_POSTGRES_URL=postgresql://user@host/db")
        return
    admin = admin.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"chinwag_bench_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(admin, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        url = make_url(admin).set(drivername="postgresql+asyncpg", database=name)
        await run(url.render_as_string(hide_password=False), "postgresql", smoke)
    finally:
        connection = await asyncpg.connect(admin, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny size, for a quick check")
    asyncio.run(main(parser.parse_args().smoke))
