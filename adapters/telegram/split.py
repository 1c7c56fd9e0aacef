"""Split a rendered reply into Telegram messages under the length limit.

Telegram counts a message's length after entity parsing, in UTF-16 code units, and refuses
more than 4096. The splitter cuts the visible text at the best place inside each window:
between blocks first (so a code block that fits whole in the next message starts it),
then at a line break, then at a space, and only as a last resort anywhere. The separator at
a cut (the blank line, line break or space) is dropped, and every part is stripped of
leading and trailing whitespace, as Telegram would. Tags open at a cut are closed at the end
of one part and reopened at the start of the next, so a long code block is split into
parts that each render as code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.telegram.render import Block, Run, render_blocks, runs_html, runs_text

__all__ = ["TELEGRAM_LIMIT", "Part", "plain_parts", "render_parts", "split_blocks"]

TELEGRAM_LIMIT = 4096
"""The most UTF-16 code units of visible text a Telegram message may hold."""

_BLOCK, _LINE, _SPACE, _ANY = 3, 2, 1, 0


@dataclass(frozen=True, slots=True)
class Part:
    """One message: its Telegram HTML and the plain text a user sees (the fallback)."""

    html: str
    text: str


def render_parts(markdown: str, limit: int = TELEGRAM_LIMIT) -> list[Part]:
    """Render the model's Markdown and split it into messages of at most ``limit`` units.

    Returns an empty list when the text has nothing visible.
    """
    return [
        Part(runs_html(runs), runs_text(runs))
        for runs in split_blocks(render_blocks(markdown), limit)
    ]


def plain_parts(text: str, limit: int = TELEGRAM_LIMIT) -> list[Part]:
    """``text`` as its literal characters, no markup, in messages of at most ``limit`` units.

    For notices, and for a reply whose Markdown renders to nothing (only ``"```"``,
    ``"# "``...): the user then sees the characters the model wrote.
    """
    return [
        Part(runs_html(runs), runs_text(runs))
        for runs in split_blocks([Block((Run(text),))], limit)
    ]


def split_blocks(blocks: Sequence[Block], limit: int = TELEGRAM_LIMIT) -> list[list[Run]]:
    """Pack ``blocks`` into parts whose visible text is at most ``limit`` UTF-16 units.

    Raises:
        ValueError: if ``limit`` is below 2 (a surrogate pair must fit).
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    runs: list[Run] = []
    # Cut candidates: (start, end, priority); the text between start and end is dropped.
    cuts: list[tuple[int, int, int]] = []
    pos = 0
    for index, block in enumerate(blocks):
        if index:
            runs.append(Run(block.sep))
            cuts.append((pos, pos + len(block.sep), _BLOCK))
            pos += len(block.sep)
        for run in block.runs:
            for offset, ch in enumerate(run.text):
                if ch == "\n":
                    cuts.append((pos + offset, pos + offset + 1, _LINE))
                elif ch == " ":
                    cuts.append((pos + offset, pos + offset + 1, _SPACE))
            runs.append(run)
            pos += len(run.text)
    text = runs_text(runs)
    # UTF-16 offset of every code point boundary.
    units = [0] * (len(text) + 1)
    for k, ch in enumerate(text):
        units[k + 1] = units[k] + (2 if ord(ch) > 0xFFFF else 1)

    parts: list[list[Run]] = []
    start = _skip_space(text, 0)
    cut_index = 0
    while start < len(text):
        end = _trim_end(text, start, len(text))
        if units[end] - units[start] <= limit:
            parts.append(_slice(runs, start, end))
            break
        # The furthest point the part may reach.
        reach = start
        lo, hi = start, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if units[mid] - units[start] <= limit:
                lo = mid
            else:
                hi = mid - 1
        reach = lo
        while cut_index < len(cuts) and cuts[cut_index][0] <= start:
            cut_index += 1
        best: tuple[int, int, int] | None = None
        k = cut_index
        while k < len(cuts) and cuts[k][0] <= reach:
            candidate = cuts[k]
            if _trim_end(text, start, candidate[0]) > start and (
                best is None or candidate[2] >= best[2]
            ):
                best = candidate
            k += 1
        if best is None:
            cut_start = cut_end = max(reach, start + 1)
        else:
            cut_start, cut_end = best[0], best[1]
        parts.append(_slice(runs, start, _trim_end(text, start, cut_start)))
        start = _skip_space(text, cut_end)
    return [part for part in parts if runs_text(part)]


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _slice(runs: Sequence[Run], start: int, end: int) -> list[Run]:
    """The runs covering visible positions ``start`` to ``end``."""
    out: list[Run] = []
    pos = 0
    for run in runs:
        run_end = pos + len(run.text)
        if run_end > start and pos < end:
            piece = run.text[max(start - pos, 0) : min(end, run_end) - pos]
            if piece:
                out.append(Run(piece, run.tags))
        pos = run_end
        if pos >= end:
            break
    return out
