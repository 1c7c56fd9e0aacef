"""The history read is an index range scan whose cost depends on the page size only."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.memory.models import MessageRow
from adapters.memory.store import SqlMemoryStore, recent_messages_query
from core.types import ConversationKey

BIG = 20_000


async def test_recent_messages_is_a_backward_index_scan(migrated_url: str) -> None:
    async with SqlMemoryStore(migrated_url) as store:
        big = await store.current_conversation(ConversationKey("b", "t", "big", None, "u"))
        small = await store.current_conversation(ConversationKey("b", "t", "small", None, "u"))
    now = datetime(2026, 3, 14, tzinfo=UTC)
    rows = [
        {
            "conversation_id": conv,
            "seq": seq,
            "role": "user",
            "content": f"m{seq}",
            "status": "complete",
            "created_at": now,
        }
        for conv, count in ((big.id, BIG), (small.id, 100))
        for seq in range(1, count + 1)
    ]
    engine = create_async_engine(migrated_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(MessageRow), rows)
            await conn.execute(text(f"UPDATE conversations SET last_seq = {BIG}"))
            await conn.execute(text("ANALYZE"))
        query = recent_messages_query(big.id, limit=40, before_seq=BIG - 500)
        sql = str(query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                plan = " | ".join(
                    str(r[-1]) for r in await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
                )
                # the unique key (conversation_id, seq), as a range: SQLite names it
                # sqlite_autoindex_messages_<n>
                assert "SEARCH messages USING INDEX" in plan, plan
                assert "(conversation_id=? AND seq<?)" in plan, plan
                assert "TEMP B-TREE" not in plan, plan  # no sort of the conversation
            else:
                plan = " | ".join(
                    str(r[0]) for r in await conn.execute(text(f"EXPLAIN (COSTS OFF) {sql}"))
                )
                assert plan.startswith("Limit"), plan
                assert "Index Scan Backward using uq_messages_conversation_id_seq" in plan, plan
                assert "Sort" not in plan, plan
    finally:
        await engine.dispose()

    async with SqlMemoryStore(migrated_url) as store:
        page = await store.recent_messages(big.id, limit=40, before_seq=BIG - 500)
    assert [m.seq for m in page] == list(range(BIG - 501, BIG - 541, -1))
