"""Images in the memory store: once per content hash, linked from messages, gone with /forget.

The contract tests run on SQLite, PostgreSQL and ``InMemoryStore``; the SQL-only ones
(rows, restarts, the sweep, backups) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from core.media import MediaBlob, content_hash
from core.ports import MemoryStore
from core.types import NewMessage, Role
from tests.adapters.memory.conftest import Clock, MakeSqlStore
from tests.adapters.memory.store_helpers import BOT, bot_msg, private, shared
from tests.adapters.memory.test_db_safety import sqlite_url_of
from tests.bots.test_cli import chinwag


def blob(seed: str, size: int = 4096) -> MediaBlob:
    """An "image" of ``size`` bytes (not all printable: the store keeps bytes, not text)."""
    data = (seed.encode() + bytes(range(256))) * (size // (len(seed) + 256) + 1)
    data = data[:size]
    return MediaBlob(
        sha256=content_hash(data), mime_type="image/jpeg", data=data, width=64, height=48
    )


def photo_msg(caption: str, author: str, *images: MediaBlob) -> NewMessage:
    """A user's photo message showing ``images``."""
    return NewMessage(
        role=Role.USER, content=caption, author_id=author, media=[i.sha256 for i in images]
    )


async def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` read straight from the database at ``url``."""
    engine = migrate.migration_engine(url)
    try:
        async with engine.connect() as connection:
            return [tuple(r) for r in (await connection.execute(text(sql), params)).all()]
    finally:
        await engine.dispose()


# --- every implementation ---------------------------------------------------------------------


async def test_an_image_saved_twice_is_kept_once_and_loads_byte_for_byte(
    store: MemoryStore,
) -> None:
    plant, cat = blob("plant", 300_000), blob("cat")
    await store.save_media(plant)
    await store.save_media(replace(plant, width=1, height=1))  # same hash: the first stays
    await store.save_media(cat)
    found = await store.load_media([plant.sha256, cat.sha256, "0" * 64])
    assert set(found) == {plant.sha256, cat.sha256}
    assert found[plant.sha256].data == plant.data
    assert (found[plant.sha256].width, found[plant.sha256].height) == (64, 48)
    assert found[cat.sha256] == cat
    assert await store.load_media([]) == {}


async def test_an_image_whose_hash_is_not_of_its_bytes_is_refused(store: MemoryStore) -> None:
    plant = blob("plant")
    with pytest.raises(ValueError, match="SHA-256"):
        await store.save_media(replace(plant, sha256=content_hash(b"something else")))
    assert await store.load_media([plant.sha256]) == {}


async def test_a_message_naming_something_else_than_a_hash_is_refused(
    store: MemoryStore,
) -> None:
    conversation = await store.current_conversation(private())
    bad = NewMessage(role=Role.USER, content="look", author_id="u1", media=["plant.jpg"])
    with pytest.raises(ValueError, match="SHA-256"):
        await store.append_messages(conversation.id, [bad])
    assert await store.recent_messages(conversation.id, limit=5) == []


async def test_forget_deletes_the_users_images_but_keeps_those_another_user_shows(
    store: MemoryStore,
) -> None:
    mine, ours, in_group, theirs = blob("mine"), blob("ours"), blob("group"), blob("theirs")
    for image in (mine, ours, in_group, theirs):
        await store.save_media(image)
    u1 = await store.current_conversation(private("u1"))
    u2 = await store.current_conversation(private("u2"))
    group = await store.current_conversation(shared("g1"))
    await store.append_messages(u1.id, [photo_msg("plant?", "u1", mine, ours), bot_msg("fern")])
    await store.append_messages(u2.id, [photo_msg("same one", "u2", ours)])
    await store.append_messages(group.id, [photo_msg("in the group", "u1", in_group)])
    await store.append_messages(group.id, [photo_msg("mine too", "u2", theirs)])

    assert await store.forget_user(BOT, "telegram", "u1") == 3
    everything = [mine.sha256, ours.sha256, in_group.sha256, theirs.sha256]
    assert set(await store.load_media(everything)) == {ours.sha256, theirs.sha256}
    assert [m.content for m in await store.recent_messages(group.id, limit=5)] == ["mine too"]

    assert await store.forget_user(BOT, "telegram", "u2") == 2
    assert await store.load_media(everything) == {}


# --- the SQL store ----------------------------------------------------------------------------


async def test_a_message_links_its_images_and_a_new_store_still_loads_them(
    make_sql_store: MakeSqlStore, migrated_url: str
) -> None:
    plant, leaf = blob("plant", 250_000), blob("leaf")
    first = await make_sql_store()
    await first.save_media(plant)
    await first.save_media(leaf)
    await first.save_media(plant)
    conversation = await first.current_conversation(private())
    [stored] = await first.append_messages(
        conversation.id, [photo_msg("what is it?", "u1", plant, leaf)]
    )
    await first.aclose()

    assert await rows(migrated_url, "SELECT count(*) FROM media") == [(2,)]
    assert await rows(
        migrated_url,
        "SELECT position, sha256 FROM message_media WHERE message_id = :m ORDER BY position",
        m=stored.id,
    ) == [(0, plant.sha256), (1, leaf.sha256)]
    restarted = await make_sql_store()
    [again] = await restarted.recent_messages(conversation.id, limit=5)
    assert again.content == "what is it?"
    found = await restarted.load_media([plant.sha256, leaf.sha256])
    assert found[plant.sha256].data == plant.data
    assert found[leaf.sha256] == leaf


async def test_images_no_message_shows_for_a_day_are_swept(
    make_sql_store: MakeSqlStore, migrated_url: str, clock: Clock
) -> None:
    store = await make_sql_store()
    shown, orphan = blob("shown"), blob("orphan")  # orphan: its turn was never stored
    await store.save_media(shown)
    await store.save_media(orphan)
    conversation = await store.current_conversation(private())
    await store.append_messages(conversation.id, [photo_msg("look", "u1", shown)])

    clock.advance(hours=23)
    await store.save_media(blob("later"))  # a sweep, too early for the orphan
    assert len(await store.load_media([shown.sha256, orphan.sha256])) == 2

    clock.advance(hours=2)
    await store.save_media(blob("next day"))
    assert set(await store.load_media([shown.sha256, orphan.sha256])) == {shown.sha256}
    assert await rows(migrated_url, "SELECT count(*) FROM media") == [(3,)]


async def test_saving_an_old_image_again_keeps_it_from_the_sweep(
    make_sql_store: MakeSqlStore, clock: Clock
) -> None:
    old = blob("sent again the next day")
    first = await make_sql_store()
    await first.save_media(old)
    clock.advance(hours=23, minutes=30)
    await first.save_media(blob("another photo"))  # this store's hourly sweep: too early
    clock.advance(minutes=40)
    await first.save_media(old)  # the same photo, about to be linked by a new message
    other = await make_sql_store()  # another process sweeps now
    await other.save_media(blob("someone else's"))
    assert set(await other.load_media([old.sha256])) == {old.sha256}


async def test_db_backup_keeps_the_images(tmp_path: Path) -> None:
    url = sqlite_url_of(tmp_path / "data" / "chinwag.db")
    await migrate.upgrade(url)
    plant = blob("plant", 200_000)
    async with SqlMemoryStore(url) as store:
        await store.save_media(plant)
        conversation = await store.current_conversation(private())
        await store.append_messages(conversation.id, [photo_msg("plant?", "u1", plant)])

    status, out, err = await chinwag(tmp_path, "db", "backup")
    assert (status, err) == (0, "")
    found = re.fullmatch(r"backed up the database to (\S+) \(.*\)\n", out)
    assert found, out
    copy = sqlite3.connect(found.group(1))
    try:
        assert copy.execute("SELECT sha256, data FROM media").fetchall() == [
            (plant.sha256, plant.data)
        ]
        assert copy.execute("SELECT sha256 FROM message_media").fetchall() == [(plant.sha256,)]
    finally:
        copy.close()
    assert os.path.getsize(found.group(1)) > len(plant.data)
