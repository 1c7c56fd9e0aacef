"""Cutting a document's paragraphs into chunks for the knowledge base.

Readers (``adapters/kb/readers.py``) turn a file into :class:`Block` paragraphs, each with the
page it is on and the heading path it sits under; :func:`chunk` packs them into
:class:`~core.knowledge.ChunkDraft` pieces of at most ``chars`` characters:

* paragraphs are kept whole and together while they fit;
* a paragraph longer than a chunk is split at sentence ends (or line breaks), a sentence
  longer than that at spaces, and only a single word longer than that inside the word;
* a new section (another heading path) starts a new chunk;
* within a section each chunk begins with about ``overlap`` characters carried from the end
  of the previous one (cut at a word boundary), so a sentence across the cut is found from
  either side; the overlap is dropped where a whole paragraph would not fit with it;
* a chunk's ``page`` is the page its new text starts on, its ``position`` counts from 0.

Every word of the input is in some chunk, in order, and no chunk is longer than ``chars``.
:func:`iter_chunks` does the same lazily, so a long document never has to be held twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from core.knowledge import ChunkDraft

__all__ = ["Block", "chunk", "iter_chunks"]

_PARAGRAPH_SEPARATOR = "\n\n"
# A cut after a sentence's end (followed by white space) or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?…。])\s+|\s*\n\s*")
_MIN_CHARS = 20


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph of a document, as a reader found it.

    Attributes:
        text: the paragraph's text (line breaks inside it are kept).
        page: the page it is on (PDF), from 1.
        heading: the heading path it sits under (``"Setup > Network"``).
    """

    text: str
    page: int | None = None
    heading: str | None = None


def chunk(blocks: Iterable[Block], *, chars: int = 800, overlap: int = 150) -> list[ChunkDraft]:
    """The chunks of a document's paragraphs, in order (see the module's docstring).

    Args:
        blocks: the document's paragraphs, in reading order.
        chars: the most characters a chunk holds (``KB_CHUNK_CHARS``).
        overlap: about how many characters of a chunk's end begin the next one in the same
            section (``KB_CHUNK_OVERLAP``); 0 for none.

    Raises:
        ValueError: ``chars`` is under 20, or ``overlap`` is negative or not under half of
            ``chars``.
    """
    return list(iter_chunks(blocks, chars=chars, overlap=overlap))


def iter_chunks(
    blocks: Iterable[Block], *, chars: int = 800, overlap: int = 150
) -> Iterator[ChunkDraft]:
    """:func:`chunk`, lazily: each chunk as soon as it is complete.

    Raises:
        ValueError: as :func:`chunk`.
    """
    if chars < _MIN_CHARS:
        raise ValueError(f"chunks of {chars} characters are too small (at least {_MIN_CHARS})")
    if overlap < 0 or overlap * 2 > chars:
        raise ValueError(f"an overlap of {overlap} characters must be 0 to {chars // 2}")
    return _Packer(chars, overlap).run(blocks)


class _Packer:
    """One chunking run: the chunk being filled, and where it starts."""

    def __init__(self, chars: int, overlap: int) -> None:
        self.chars = chars
        self.overlap = overlap
        # Pieces of a split paragraph leave room for the overlap in front of them.
        self.piece_chars = chars - overlap - len(_PARAGRAPH_SEPARATOR) if overlap else chars
        self.parts: list[str] = []
        self.size = 0
        self.fresh = False  # whether the chunk holds text of its own (not only the overlap)
        self.page: int | None = None
        self.heading: str | None = None
        self.position = 0

    def run(self, blocks: Iterable[Block]) -> Iterator[ChunkDraft]:
        """Pack ``blocks`` and yield the chunks."""
        for block in blocks:
            text = block.text.strip()
            if not text:
                continue
            if self.fresh and block.heading != self.heading:
                yield self._emit()
                self._reset(carry=False)
            if not self.fresh:
                if block.heading != self.heading:
                    self.parts.clear()  # no overlap from another section
                    self.size = 0
                self.heading = block.heading
            units = [text] if len(text) <= self.chars else _split(text, self.piece_chars)
            for unit in units:
                if self.fresh and self.size + len(_PARAGRAPH_SEPARATOR) + len(unit) > self.chars:
                    yield self._emit()
                    self._reset(carry=True)
                self._add(unit, block.page)
        if self.fresh:
            yield self._emit()

    def _add(self, unit: str, page: int | None) -> None:
        if self.parts and self.size + len(_PARAGRAPH_SEPARATOR) + len(unit) > self.chars:
            # A whole paragraph that does not fit behind the overlap goes without it.
            self.parts.clear()
            self.size = 0
        if not self.fresh:
            self.page = page
            self.fresh = True
        self.size += (len(_PARAGRAPH_SEPARATOR) if self.parts else 0) + len(unit)
        self.parts.append(unit)

    def _emit(self) -> ChunkDraft:
        draft = ChunkDraft(
            text=_PARAGRAPH_SEPARATOR.join(self.parts),
            position=self.position,
            page=self.page,
            heading=self.heading,
        )
        self.position += 1
        return draft

    def _reset(self, *, carry: bool) -> None:
        tail = _tail(_PARAGRAPH_SEPARATOR.join(self.parts), self.overlap) if carry else ""
        self.parts = [tail] if tail else []
        self.size = len(tail)
        self.fresh = False
        self.page = None


def _tail(text: str, size: int) -> str:
    """About the last ``size`` characters of ``text``, starting at a word."""
    if size <= 0 or not text:
        return ""
    if len(text) <= size:
        return text
    start = len(text) - size
    if not text[start - 1].isspace():
        # Cut inside a word: start at the next one.
        space = re.search(r"\s", text[start:])
        if space is None:
            return ""
        start += space.end()
    return text[start:].strip()


def _split(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters: at sentence ends, then words."""
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text):
        for part in [sentence] if len(sentence) <= limit else _split_words(sentence, limit):
            if not part:
                continue
            if current and len(current) + 1 + len(part) <= limit:
                current = f"{current} {part}"
                continue
            if current:
                pieces.append(current)
            current = part
    if current:
        pieces.append(current)
    return pieces


def _split_words(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at spaces.

    A single word longer than ``limit`` is cut inside it.
    """
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:limit])
            word = word[limit:]
        if current and len(current) + 1 + len(word) <= limit:
            current = f"{current} {word}"
        else:
            if current:
                pieces.append(current)
            current = word
    if current:
        pieces.append(current)
    return pieces
