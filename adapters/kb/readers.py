"""Reading documents into paragraphs: ``.txt``, ``.md``, ``.html`` / ``.htm`` and ``.pdf``.

:func:`read` gives a :class:`DocumentText`: the document's title, its page count (PDF) and
its paragraphs as :class:`~core.chunking.Block` items, produced lazily while the caller
iterates, so a long text file is never held in memory whole (text, Markdown and HTML are read
in bounded pieces; a PDF is parsed from the open file, page by page). Iterate ``blocks`` off
the event loop: it reads the disk and, for a PDF, parses it.

* ``.txt``: paragraphs are separated by blank lines; the title is the file name.
* ``.md``: each paragraph keeps the heading path it sits under (``"Setup > Network"``);
  the title is the first level-1 heading, else the file name. Fenced code is kept as text.
* ``.html`` / ``.htm``: text only (see :mod:`adapters.kb.html`); the title comes from
  ``<title>``, else the first ``<h1>``, else the file name.
* ``.pdf``: the text of each page, with its page number; a document with no text at all
  raises :class:`NoTextError` while it is read, an encrypted one :class:`~core.errors.KbError`.

:func:`content_hash` is the SHA-256 of a file's bytes, read in pieces.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters.kb import html as html_reader
from adapters.kb import pdf as pdf_reader
from adapters.kb.text import NoTextError, text_lines
from core.chunking import Block
from core.errors import KbError

__all__ = ["SUPPORTED", "DocumentText", "NoTextError", "content_hash", "read"]

_log = logging.getLogger(__name__)

SUPPORTED: Final = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
_READ_SIZE: Final = 1 << 16
# A paragraph with no blank line in it for this long is handed on in pieces (the chunker
# splits it anyway), so one huge paragraph does not have to be held whole.
_MAX_PARAGRAPH: Final = 1 << 16


@dataclass(frozen=True, slots=True)
class DocumentText:
    """A document as read: title, pages and paragraphs.

    Attributes:
        title: the document's own title (Markdown H1, HTML ``<title>``), else its file name.
        pages: the page count (PDF), else ``None``.
        blocks: the paragraphs, read lazily while iterated (once). Iterating raises
            ``KbError`` when the file cannot be read, :class:`NoTextError` for a PDF with no
            text.
    """

    title: str
    pages: int | None
    blocks: Iterable[Block]


def read(path: Path) -> DocumentText:
    """Open the document at ``path``, by its extension.

    Raises:
        KbError: an unsupported extension (the message names the supported ones), a file
            that cannot be opened, an encrypted or damaged PDF.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        shown = suffix or "(no extension)"
        raise KbError(f"unsupported file type {shown}: supported are {', '.join(SUPPORTED)}")
    try:
        if suffix == ".txt":
            return DocumentText(path.name, None, _TextBlocks(path))
        if suffix in (".md", ".markdown"):
            return DocumentText(_markdown_title(path) or path.name, None, _MarkdownBlocks(path))
        if suffix in (".html", ".htm"):
            title = html_reader.title(path) or path.name
            return DocumentText(title, None, html_reader.HtmlBlocks(path))
        pages = pdf_reader.page_count(path)
        return DocumentText(path.name, pages, pdf_reader.PdfBlocks(path))
    except OSError as exc:
        raise KbError(f"cannot read {path.name}: {exc.strerror or exc}") from exc


def content_hash(path: Path) -> str:
    """The SHA-256 (hex) of the file's bytes, read in pieces.

    Raises:
        KbError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while piece := file.read(1 << 20):
                digest.update(piece)
    except OSError as exc:
        raise KbError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


class _TextBlocks:
    """A text file's paragraphs (separated by blank lines), read line by line."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Iterator[Block]:
        lines: list[str] = []
        size = 0
        for line in text_lines(self._path):
            if not line.strip():
                if lines:
                    yield Block("".join(lines).strip())
                lines, size = [], 0
                continue
            lines.append(line)  # with its line break (none where a long line was cut)
            size += len(line)
            if size >= _MAX_PARAGRAPH:
                yield Block("".join(lines).strip())
                lines, size = [], 0
        if lines:
            yield Block("".join(lines).strip())


# --- Markdown ----------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


@dataclass(frozen=True, slots=True)
class _Heading:
    level: int
    text: str


def _markdown_events(path: Path) -> Iterator[_Heading | str]:
    """A Markdown file's headings and paragraphs (text), in order, read line by line."""
    lines: list[str] = []
    size = 0
    fence: str | None = None
    for raw in text_lines(path):
        line = raw.rstrip()
        if fence is not None:
            if line.lstrip().startswith(fence):
                fence = None
                yield "\n".join(lines)
                lines, size = [], 0
            else:
                lines.append(line)
                size += len(line)
            continue
        opening = _FENCE.match(line)
        if opening:
            if lines:
                yield "\n".join(lines)
            lines, size = [], 0
            fence = opening.group(1)
            continue
        setext = _SETEXT.match(line)
        if setext and len(lines) == 1 and (line.strip()[0] == "=" or lines[0].strip()):
            yield _Heading(1 if line.strip()[0] == "=" else 2, _inline(lines[0].strip()))
            lines, size = [], 0
            continue
        atx = _ATX.match(line)
        if atx:
            if lines:
                yield "\n".join(lines)
            lines, size = [], 0
            yield _Heading(len(atx.group(1)), _inline(atx.group(2) or ""))
            continue
        if not line.strip():
            if lines:
                yield "\n".join(lines)
            lines, size = [], 0
            continue
        lines.append(_inline(line))
        size += len(line)
        if size >= _MAX_PARAGRAPH:
            yield "\n".join(lines)
            lines, size = [], 0
    if lines:
        yield "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown links and images as their text."""
    return _LINK.sub(r"\1", text)


def _markdown_title(path: Path) -> str | None:
    """The first level-1 heading's text (reading no further than it)."""
    for event in _markdown_events(path):
        if isinstance(event, _Heading) and event.level == 1 and event.text:
            return event.text
    return None


class _MarkdownBlocks:
    """A Markdown file's paragraphs, each with its heading path."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Iterator[Block]:
        stack: list[_Heading] = []
        for event in _markdown_events(self._path):
            if isinstance(event, _Heading):
                while stack and stack[-1].level >= event.level:
                    stack.pop()
                if event.text:
                    stack.append(event)
                continue
            if event.strip():
                yield Block(event, heading=" > ".join(h.text for h in stack) or None)
