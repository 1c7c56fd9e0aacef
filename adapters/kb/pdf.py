"""Reading a PDF's text page by page (pypdf), with page numbers.

The file stays open while its pages are read, so pypdf parses objects from the disk as it
needs them rather than holding a copy of the whole file. An encrypted PDF that does not open
with an empty password, and a damaged one, raise ``KbError``; a PDF whose pages have no text
(a scan) raises :class:`~adapters.kb.text.NoTextError` once every page has been tried, so the
caller stores nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, PyPdfError

from adapters.kb.text import NoTextError
from core.chunking import Block
from core.errors import KbError

__all__ = ["NO_TEXT", "PdfBlocks", "page_count"]

NO_TEXT = "no extractable text (a scanned PDF?)"
_BLANK_LINES = re.compile(r"\n\s*\n")


@contextmanager
def _opened(path: Path) -> Iterator[PdfReader]:
    """A reader on the open file, decrypted if an empty password opens it.

    Raises:
        KbError: the PDF is encrypted with a password, or damaged.
    """
    with path.open("rb") as file:
        try:
            reader = PdfReader(file)
            if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
                raise KbError(
                    f"{path.name} is an encrypted PDF: save it without a password and add it again"
                )
            yield reader
        except DependencyError as exc:
            raise KbError(f"{path.name} is an encrypted PDF this installation cannot open") from exc
        except (PyPdfError, ValueError, KeyError, TypeError) as exc:
            # pypdf raises its own errors for damaged files, and plain ones on some garbage.
            raise KbError(f"{path.name} is not a readable PDF ({exc})") from exc


def page_count(path: Path) -> int:
    """How many pages the PDF has.

    Raises:
        KbError: encrypted or damaged (see :func:`_opened`).
        OSError: the file cannot be opened.
    """
    with _opened(path) as reader:
        try:
            return len(reader.pages)
        except (PyPdfError, ValueError, KeyError, TypeError) as exc:
            raise KbError(f"{path.name} is not a readable PDF ({exc})") from exc


class PdfBlocks:
    """A PDF's paragraphs, page by page, each with its page number (from 1)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Iterator[Block]:
        found = False
        with _opened(self._path) as reader:
            for number, page in enumerate(reader.pages, start=1):
                text = page.extract_text() or ""
                for paragraph in _BLANK_LINES.split(text):
                    lines = [line.strip() for line in paragraph.splitlines()]
                    cleaned = "\n".join(line for line in lines if line)
                    if cleaned:
                        found = True
                        yield Block(cleaned, page=number)
        if not found:
            raise NoTextError(NO_TEXT)
