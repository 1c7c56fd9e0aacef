"""Files only their owner may read: the data directory, the SQLite database, backups, exports.

Whatever the umask, what chinwag writes at rest is created ``0600`` in a ``0700`` directory,
and files an older version left readable by others are tightened when they are opened.
Every place that creates such a file calls these helpers, so there is one policy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["FILE_MODE", "private_dir", "private_file", "private_sqlite", "write_private"]

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
