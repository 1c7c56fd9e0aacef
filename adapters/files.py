"""Files only their owner may read: the data directory, the SQLite database, backups, exports.

Whatever the umask, what chinwag writes at rest is created ``0600`` in a ``0700`` directory,
and files an older version left readable by others are tightened when they are opened.
Every place that creates such a file calls these helpers, so there is one policy.

Files users send (``/kb add``) are downloaded by each chat adapter through
:func:`save_stream`: in pieces, within a size limit, with nothing left behind on failure.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Final

from core.errors import AdapterError

__all__ = [
    "FILE_MODE",
    "DownloadRefused",
    "check_size",
    "private_dir",
    "private_file",
    "private_sqlite",
    "save_stream",
    "write_private",
]

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
_SQLITE_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed and make it ``0700``; return it.

    Raises:
        OSError: the directory cannot be created or is not the caller's to change.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, make it ``0600``; return it.

    The file is created with mode ``0600`` from the start (``O_CREAT`` with that mode, then
    ``fchmod`` because the umask can only remove bits), so it is never readable by others.

    Raises:
        OSError: the file cannot be created or changed.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def private_sqlite(path: Path) -> Path:
    """Make the SQLite file at ``path`` (created if missing) and its WAL/SHM files ``0600``.

    SQLite creates the WAL and shared-memory files with the database file's own mode, so a
    ``0600`` database keeps them private; those an older version left are tightened here.
    """
    private_file(path)
    for suffix in _SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.chmod(FILE_MODE)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` as a ``0600`` file (replacing its content); return it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb", closefd=False) as file:
            file.write(data)
    finally:
        os.close(fd)
    return path


class DownloadRefused(AdapterError):
    """A file a user sent cannot be fetched: too big, or the platform refused it.

    Attributes:
        user_message: one short sentence for the chat ("This file is 25 MB; the limit is
            20 MB.").
    """

    def __init__(self, message: str, user_message: str) -> None:
        super().__init__(message)
        self.user_message = user_message


def _mb(size: int, *, up: bool = False) -> str:
    """``20 MB``, ``0.5 MB``; ``up`` rounds up, so a file just over a limit shows over it."""
    tenths = size * 10 / (1024 * 1024)
    tenths = math.ceil(tenths) if up else math.floor(tenths)
    return f"{tenths / 10:.1f}".removesuffix(".0") + " MB"


def check_size(size: int | None, limit: int, name: str) -> None:
    """Refuse a file of ``size`` bytes over ``limit`` before anything is downloaded.

    Raises:
        DownloadRefused: ``size`` is known and over ``limit``.
    """
    if size is not None and size > limit:
        raise DownloadRefused(
            f"{name or 'the file'} is {size} bytes, over the {limit}-byte limit",
            f"This file is {_mb(size, up=True)}; the limit is {_mb(limit)}.",
        )


async def save_stream(
    chunks: AsyncIterable[bytes], destination: Path, *, limit: int, name: str = ""
) -> int:
    """Write ``chunks`` to ``destination`` (a new ``0600`` file); return the bytes written.

    Memory holds one chunk at a time. Called by the chat adapters' ``download``.

    Raises:
        DownloadRefused: more than ``limit`` bytes arrived (a size the platform did not say
            or understated).
        Exception: whatever ``chunks`` raises. In every failure (cancellation included)
            the partial file is removed.
    """
    written = 0
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            async for chunk in chunks:
                written += len(chunk)
                if written > limit:
                    raise DownloadRefused(
                        f"{name or 'the file'} is over the {limit}-byte limit",
                        f"This file is over the {_mb(limit)} limit.",
                    )
                file.write(chunk)
    except BaseException:
        _remove(destination)
        raise
    return written


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
