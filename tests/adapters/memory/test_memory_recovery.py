"""Contract tests of the recovery part of the ``MemoryStore`` port, over every implementation.

Instances and their heartbeats, the owner of each reply in progress, progress saved as a
reply streams, claiming the replies of dead owners (never a live one's), and the
(bot, platform) leases of a second instance.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from core.ports import MemoryStore
from core.types import InstanceInfo, MessageStatus, NewMessage, Role
from tests.adapters.memory.conftest import Clock
from tests.adapters.memory.store_helpers import BOT, private, user_msg


def _reply(owner: str | None) -> NewMessage:
    return NewMessage(
        role=Role.ASSISTANT, content="", status=MessageStatus.IN_PROGRESS, owner=owner
    )


def _instance(clock: Clock, ident: str, bot: str = BOT) -> InstanceInfo:
    return InstanceInfo(ident, bot, "host-a", 4242, clock.now, clock.now)


async def test_instances_register_beat_and_retire(store: MemoryStore, clock: Clock) -> None:
    await store.register_instance(_instance(clock, "i1"))
    await store.register_instance(_instance(clock, "other", bot="otherbot"))
    clock.advance(seconds=5)
    assert await store.heartbeat("i1", clock.now)
    (found,) = await store.instances(BOT)
    assert (found.id, found.host, found.pid) == ("i1", "host-a", 4242)
    assert found.heartbeat_at == clock.now and found.started_at == clock.now - timedelta(seconds=5)
    await store.retire_instance("i1")
    assert await store.instances(BOT) == []
    assert not await store.heartbeat("i1", clock.now)  # gone: the caller registers again
    assert [i.id for i in await store.instances("otherbot")] == ["other"]


async def test_progress_is_saved_in_order_and_only_while_in_progress(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    _, reply = await store.append_messages(conv.id, [user_msg("q", "u1", "1"), _reply("i1")])
    await store.save_progress(reply.id, content="Hello", platform_message_ids=["2"])
    await store.save_progress(reply.id, content="Hello wor", platform_message_ids=["2", "3"])
    await store.save_progress(reply.id, content=None, platform_message_ids=["3", "4"])
    (claimed,) = await store.claim_replies(BOT, "i2", live=["i2"])
    assert claimed.message.id == reply.id and claimed.message.content == "Hello wor"
    assert claimed.platform_message_ids == ("2", "3", "4")
    assert (claimed.key, claimed.chat_id) == (private(), "u1")
    found = await store.find_by_platform_message(BOT, "telegram", "u1", "3")
    assert found is not None and found.id == reply.id

    # the final record adds the ids not saved yet; later progress changes nothing
    await store.finish_message(
        reply.id, content="Hello world", status=MessageStatus.COMPLETE, platform_message_ids=["5"]
    )
    await store.save_progress(reply.id, content="stale", platform_message_ids=["6"])
    (latest,) = await store.recent_messages(conv.id, limit=1)
    assert (latest.content, latest.status) == ("Hello world", MessageStatus.COMPLETE)
    assert await store.find_by_platform_message(BOT, "telegram", "u1", "6") is None
    assert await store.find_by_platform_message(BOT, "telegram", "u1", "5") is not None


async def test_only_replies_of_dead_owners_are_claimed_once(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    other = await store.current_conversation(private(bot="otherbot"))
    _, dead = await store.append_messages(conv.id, [user_msg("a"), _reply("dead")])
    _, live = await store.append_messages(conv.id, [user_msg("b"), _reply("alive")])
    _, legacy = await store.append_messages(conv.id, [user_msg("c"), _reply(None)])
    await store.append_messages(other.id, [user_msg("d"), _reply("dead")])
    await store.append_messages(conv.id, [user_msg("e"), NewMessage(Role.ASSISTANT, "done")])

    claimed = await store.claim_replies(BOT, "me", live=["alive", "me"])
    assert [c.message.id for c in claimed] == [dead.id, legacy.id]
    # owned by "me" now, a live owner: nobody claims them again, nor the live one's reply
    assert await store.claim_replies(BOT, "third", live=["alive", "me"]) == []
    # once "me" is dead too, one reply can be claimed on its own
    (only,) = await store.claim_replies(BOT, "third", live=["third"], message_id=live.id)
    assert only.message.id == live.id
    assert await store.claim_replies(BOT, "x", live=["third"], message_id=live.id) == []


async def test_two_claimants_at_once_never_share_a_reply(store: MemoryStore) -> None:
    conv = await store.current_conversation(private())
    for n in range(5):
        await store.append_messages(conv.id, [user_msg(f"q{n}"), _reply("dead")])
    first, second = await asyncio.gather(
        store.claim_replies(BOT, "a", live=["a", "b"]),
        store.claim_replies(BOT, "b", live=["a", "b"]),
    )
    ids = [c.message.id for c in first] + [c.message.id for c in second]
    assert len(ids) == 5 and len(set(ids)) == 5


async def test_a_lease_is_held_until_its_holder_dies_or_releases_it(store: MemoryStore) -> None:
    assert await store.acquire_lease(BOT, "telegram", "a", live=["a"]) == "a"
    assert await store.acquire_lease(BOT, "telegram", "b", live=["a", "b"]) == "a"
    assert await store.acquire_lease(BOT, "discord", "b", live=["a", "b"]) == "b"
    assert await store.acquire_lease("otherbot", "telegram", "b", live=["a", "b"]) == "b"
    assert await store.acquire_lease(BOT, "telegram", "a", live=["a", "b"]) == "a"  # renewal
    # "a" died: "b" takes over
    assert await store.acquire_lease(BOT, "telegram", "b", live=["b"]) == "b"
    await store.release_lease(BOT, "telegram", "a")  # not the holder: nothing happens
    assert await store.acquire_lease(BOT, "telegram", "a", live=["a", "b"]) == "b"
    await store.release_lease(BOT, "telegram", "b")
    assert await store.acquire_lease(BOT, "telegram", "a", live=["a", "b"]) == "a"


async def test_retiring_an_instance_releases_its_leases(store: MemoryStore, clock: Clock) -> None:
    await store.register_instance(_instance(clock, "a"))
    assert await store.acquire_lease(BOT, "telegram", "a", live=["a"]) == "a"
    await store.retire_instance("a")
    assert await store.acquire_lease(BOT, "telegram", "b", live=["a", "b"]) == "b"
