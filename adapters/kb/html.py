"""Reading an HTML page's text: paragraphs under their heading path, no page furniture.

Built on the standard library's :class:`html.parser.HTMLParser`, fed in bounded pieces.
Nothing inside ``<script>``, ``<style>``, ``<nav>``, ``<header>``, ``<footer>``, ``<aside>``,
``<template>``, ``<noscript>``, ``<svg>``, ``<iframe>``, ``<form>`` or ``<head>`` is kept (the
``<title>`` is read separately); block elements (``<p>``, ``<li>``, ``<div>``, table cells...)
end a paragraph; ``<h1>``-``<h6>`` set the heading path instead of being text; white space is
collapsed except inside ``<pre>``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Final

from adapters.kb.text import text_pieces
from core.chunking import Block

__all__ = ["HtmlBlocks", "title"]

_SKIPPED: Final = frozenset(
    {"script", "style", "nav", "header", "footer", "aside", "template", "noscript", "svg"}
    | {"iframe", "form", "head", "button", "select", "object", "canvas"}
)
_HEADINGS: Final = {f"h{n}": n for n in range(1, 7)}
_BLOCK: Final = frozenset(
    {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "br", "hr", "tr", "td", "th", "table"}
    | {"section", "article", "main", "blockquote", "pre", "figure", "figcaption", "caption"}
    | {"body", "html", "address", "details", "summary", "thead", "tbody", "tfoot"}
)
_SPACES = re.compile(r"\s+")


class _Parser(HTMLParser):
    """Collects paragraphs (with heading paths) and the title as the page is fed in."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: deque[Block] = deque()
        self.title: str | None = None
        self.first_h1: str | None = None
        self._skip: list[str] = []  # the skipped elements we are inside
        self._in_title = False
        self._title_parts: list[str] = []
        self._pre = 0
        self._parts: list[str] = []
        self._heading: tuple[int, list[str]] | None = None
        self._path: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.title is None:
            self._in_title = True
            return
        if tag in _SKIPPED:
            self._skip.append(tag)
            return
        if self._skip:
            return
        if tag in _HEADINGS:
            self._flush()
            self._heading = (_HEADINGS[tag], [])
        elif tag in _BLOCK:
            self._flush()
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = _SPACES.sub(" ", "".join(self._title_parts)).strip() or None
            return
        if self._skip:
            if tag in self._skip:
                while self._skip and self._skip.pop() != tag:
                    pass
            return
        if tag in _HEADINGS and self._heading is not None:
            self._end_heading()
        elif tag in _BLOCK:
            self._flush()
            if tag == "pre" and self._pre:
                self._pre -= 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._skip and tag in _BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)
        elif self._skip:
            return
        elif self._heading is not None:
            self._heading[1].append(data)
        else:
            self._parts.append(data)

    def close(self) -> None:
        super().close()
        if self._heading is not None:
            self._end_heading()
        self._flush()

    def _end_heading(self) -> None:
        assert self._heading is not None
        level, parts = self._heading
        self._heading = None
        text = _SPACES.sub(" ", "".join(parts)).strip()
        if not text:
            return
        if level == 1 and self.first_h1 is None:
            self.first_h1 = text
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))

    def _flush(self) -> None:
        raw = "".join(self._parts)
        self._parts = []
        if self._pre:
            text = "\n".join(line.rstrip() for line in raw.strip("\n").splitlines()).strip()
        else:
            text = _SPACES.sub(" ", raw).strip()
        if text:
            heading = " > ".join(text for _, text in self._path) or None
            self.blocks.append(Block(text, heading=heading))


def title(path: Path) -> str | None:
    """The page's ``<title>``, else its first ``<h1>`` (reading no further than needed)."""
    parser = _Parser()
    for piece in text_pieces(path):
        parser.feed(piece)
        parser.blocks.clear()
        if parser.title:
            return parser.title
        if parser.first_h1:
            return parser.first_h1  # a <title> comes before the body, where the <h1> is
    parser.close()
    return parser.title or parser.first_h1


class HtmlBlocks:
    """An HTML file's text paragraphs, parsed piece by piece while iterated."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Iterator[Block]:
        parser = _Parser()
        for piece in text_pieces(self._path):
            parser.feed(piece)
            while parser.blocks:
                yield parser.blocks.popleft()
        parser.close()
        while parser.blocks:
            yield parser.blocks.popleft()
