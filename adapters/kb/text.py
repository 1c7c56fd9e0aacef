"""Helpers the document readers share: reading text in bounded pieces, the no-text error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from core.errors import KbError

__all__ = ["NoTextError", "text_lines", "text_pieces"]

_LINE_LIMIT: Final = 1 << 16


class NoTextError(KbError):
    """The document has no text to store (a scanned PDF, an empty file)."""


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (a BOM dropped, bad bytes replaced), at most 64 KiB each.

    A longer line comes in several pieces, so memory stays bounded whatever the file holds.
    """
    with path.open(encoding="utf-8-sig", errors="replace", newline=None) as file:
        while line := file.readline(_LINE_LIMIT):
            yield line


def text_pieces(path: Path, size: int = _LINE_LIMIT) -> Iterator[str]:
    """A UTF-8 text file in pieces of ``size`` characters (for incremental parsers)."""
    with path.open(encoding="utf-8-sig", errors="replace") as file:
        while piece := file.read(size):
            yield piece
