"""The media operations of the SQL store: images by content hash, and the messages' links.

Like :mod:`adapters.memory.operations`, each is a function of one sync SQLAlchemy
``Connection`` that an executor runs in one thread hop (writes in a committed transaction;
on SQLite under the one writer thread, through sqlite3 directly for the writes).

* ``media`` holds each image once (its key is the SHA-256 of its bytes); saving it again
  inserts nothing. ``created_at`` is refreshed when it is older than :data:`REFRESH_AFTER`,
  so that the sweep (media no message links to, older than :data:`UNLINKED_FOR`) never takes
  an image that a message is about to link.
* ``message_media`` links a message to the images it shows, written in the transaction of
  ``append`` and deleted with the message (``ON DELETE CASCADE``); ``forget_user`` then
  deletes the images the deleted messages showed that no remaining message links to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import Table, delete, exists, insert, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.engine import Connection

from adapters.memory.models import MediaRow, MessageMediaRow
from adapters.memory.statements import sqlite_raw, sqlite_time
from core.media import MediaBlob

MEDIA: Final = cast(Table, MediaRow.__table__)
MESSAGE_MEDIA: Final = cast(Table, MessageMediaRow.__table__)

UNLINKED_FOR: Final = timedelta(days=1)
"""Media no message links to are deleted by the sweep once they are this old."""
REFRESH_AFTER: Final = timedelta(hours=1)
"""Saving an image stored longer ago than this refreshes its ``created_at``."""
SWEEP_EVERY: Final = timedelta(hours=1)
"""A store sweeps unlinked media at most this often (with the next ``save_media``)."""
_CHUNK: Final = 500  # hashes per IN list (SQLite's bound-parameter limit is far above)

_RAW_SAVE: Final = (
    "INSERT INTO media (sha256, mime_type, width, height, size, data, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (sha256) DO UPDATE SET created_at = excluded.created_at "
    "WHERE media.created_at < ?"
)
_RAW_LINK: Final = "INSERT INTO message_media (message_id, position, sha256) VALUES (?, ?, ?)"
"""The media writes on SQLite, sent to sqlite3 on the transaction's own connection (as
``operations`` does for messages): an image is large, SQLAlchemy's layer adds nothing."""

_UNLINKED: Final = ~exists().where(MESSAGE_MEDIA.c.sha256 == MEDIA.c.sha256)


def save(conn: Connection, blob: MediaBlob, now: datetime, sweep: bool) -> int:
    """Store ``blob`` unless its hash is stored (then maybe refresh ``created_at``).

    With ``sweep``, first delete the media no message links to that are older than
    :data:`UNLINKED_FOR`; returns how many went (0 without ``sweep``).
    """
    swept = 0
    if sweep:
        swept = int(
            conn.execute(
                delete(MEDIA).where(MEDIA.c.created_at < now - UNLINKED_FOR, _UNLINKED)
            ).rowcount
        )
    stale = now - REFRESH_AFTER
    raw = sqlite_raw(conn)
    if raw is not None:
        raw.execute(
            _RAW_SAVE,
            (
                blob.sha256,
                blob.mime_type,
                blob.width,
                blob.height,
                len(blob.data),
                blob.data,
                sqlite_time(now),
                sqlite_time(stale),
            ),
        )
        return swept
    stmt = pg_dialect.insert(MEDIA).values(
        sha256=blob.sha256,
        mime_type=blob.mime_type,
        width=blob.width,
        height=blob.height,
        size=len(blob.data),
        data=blob.data,
        created_at=now,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["sha256"],
            set_={"created_at": stmt.excluded.created_at},
            where=MEDIA.c.created_at < stale,
        )
    )
    return swept


def load(conn: Connection, hashes: Sequence[str]) -> dict[str, MediaBlob]:
    """The stored media of ``hashes`` (those that exist), by hash."""
    found: dict[str, MediaBlob] = {}
    for chunk in _chunks(hashes):
        for row in conn.execute(
            select(
                MEDIA.c.sha256, MEDIA.c.mime_type, MEDIA.c.data, MEDIA.c.width, MEDIA.c.height
            ).where(MEDIA.c.sha256.in_(chunk))
        ):
            found[row.sha256] = MediaBlob(
                sha256=row.sha256,
                mime_type=row.mime_type,
                data=bytes(row.data),
                width=row.width,
                height=row.height,
            )
    return found


def link(conn: Connection, rows: Sequence[tuple[int, int, str]]) -> None:
    """Insert ``message_media`` rows: (message id, position, hash)."""
    raw = sqlite_raw(conn)
    if raw is not None:
        raw.executemany(_RAW_LINK, rows)
        return
    conn.execute(
        insert(MESSAGE_MEDIA),
        [{"message_id": m, "position": p, "sha256": h} for m, p, h in rows],
    )


def linked_from(conn: Connection, messages: Any) -> list[str]:
    """The hashes linked from the messages whose ids ``messages`` (a subquery) selects."""
    return list(
        conn.execute(
            select(MESSAGE_MEDIA.c.sha256)
            .where(MESSAGE_MEDIA.c.message_id.in_(messages))
            .distinct()
        ).scalars()
    )


def delete_unlinked(conn: Connection, hashes: Iterable[str]) -> int:
    """Delete the media of ``hashes`` that no message links to; return how many went."""
    deleted = 0
    for chunk in _chunks(hashes):
        deleted += int(
            conn.execute(delete(MEDIA).where(MEDIA.c.sha256.in_(chunk), _UNLINKED)).rowcount
        )
    return deleted


def _chunks(hashes: Iterable[str]) -> list[list[str]]:
    unique = list(dict.fromkeys(hashes))
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]
