"""Split a long reply into Discord messages of at most 2000 characters, keeping its Markdown.

Cuts fall at paragraph boundaries first, then at line boundaries, then at spaces; a code
block that fits whole in a message starts the next message instead of being cut, and only a
block longer than one message is cut, closed with a fence and reopened (with its language)
in the next part, so every part renders on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DISCORD_LIMIT = 2000
_CLOSE = "```"
_MARKUP = re.compile(r"[\\`*_~|>#-]")
_MARKUP_ONLY = re.compile(r"[\s\\`*_~|>#-]*")


def shows_nothing(text: str) -> bool:
    """Whether ``text`` is only Markdown markup (``"```"``, ``"# "``, ``"** **"``...) and space.

    Discord shows such a message blank or mangled, or refuses it as empty.
    """
    return _MARKUP_ONLY.fullmatch(text) is not None


def escape_markdown(text: str) -> str:
    """``text`` with every Markdown character escaped, so Discord shows it literally."""
    return _MARKUP.sub(lambda match: "\\" + match.group(0), text)


@dataclass(frozen=True, slots=True)
class _Line:
    start: int
    end: int
    fence: str | None  # the opening fence line in force at the start of this line
    opens: bool  # this line opens a code block (its own ``fence`` is ``None``)


def _fence_of(line: str) -> str | None:
    stripped = line.strip()
    indent = len(line) - len(line.lstrip(" "))
    if indent > 3 or not stripped.startswith(_CLOSE):
        return None
    return stripped


def _scan(text: str) -> tuple[list[_Line], list[tuple[int, int]]]:
    """Lines with the fence state at their start, and each block's (start, end) offsets."""
    lines: list[_Line] = []
    blocks: list[tuple[int, int]] = []
    fence: str | None = None
    block_start = 0
    offset = 0
    for raw in text.splitlines(keepends=True):
        start, offset = offset, offset + len(raw)
        marker = _fence_of(raw)
        opens = False
        if fence is None:
            # A line like ```code``` opens and closes at once; it changes nothing.
            if marker is not None and marker.count(_CLOSE) == 1:
                opens = True
                lines.append(_Line(start, offset, None, True))
                fence, block_start = marker, start
                continue
        elif marker is not None and marker.strip("`") == "":
            lines.append(_Line(start, offset, fence, False))
            fence = None
            blocks.append((block_start, offset))
            continue
        lines.append(_Line(start, offset, fence, opens))
    if fence is not None:
        blocks.append((block_start, len(text)))
    return lines, blocks


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters with balanced code fences.

    Returns no part for blank text. Whitespace at the cuts may be dropped; nothing else is.
    """
    if limit < 40:
        raise ValueError("limit must leave room for code fences")
    text = text.rstrip()
    if not text.strip():
        return []
    if len(text) <= limit:
        return [text]
    lines, blocks = _scan(text)
    parts: list[str] = []
    pos = 0
    reopen: str | None = None
    while pos < len(text):
        prefix = reopen + "\n" if reopen else ""
        rest = text[pos:]
        if len(prefix) + len(rest) <= limit:
            parts.append(prefix + rest)
            break
        budget = limit - len(prefix)
        cut, inside = _choose_cut(text, pos, budget, limit, lines, blocks)
        piece = text[pos:cut]
        if inside is not None:
            piece = piece.rstrip("\n") + "\n" + _CLOSE
        part = (prefix + piece).rstrip()
        if part.strip() and part.strip() != (reopen or "") + "\n" + _CLOSE:
            parts.append(part)
        reopen = inside
        pos = cut
        if reopen is None:
            mid_line = pos > 0 and text[pos - 1] != "\n"
            while pos < len(text) and text[pos] == "\n":
                pos += 1
            if mid_line and text[pos : pos + 1] == " ":
                pos += 1
    return [p for p in parts if p.strip()]


def _choose_cut(
    text: str,
    pos: int,
    budget: int,
    limit: int,
    lines: list[_Line],
    blocks: list[tuple[int, int]],
) -> tuple[int, str | None]:
    """Where to end the part that starts at ``pos``; and the fence open at that cut."""
    window_end = pos + budget
    # 1. A code block that does not fit here but fits whole in a message starts the next one.
    for start, end in blocks:
        if start <= pos or start > window_end:
            continue
        if end - pos <= budget:
            continue  # it fits in this part
        if end - start <= limit and text[pos:start].strip():
            return start, None
        break
    # Candidate cuts at line starts inside the window; a cut inside a block costs a fence.
    candidates: list[tuple[int, str | None, bool]] = []
    previous_blank = False
    for line in lines:
        if line.start <= pos:
            previous_blank = not text[line.start : line.end].strip()
            continue
        fence = line.fence
        cost = len(_CLOSE) if fence is not None else 0
        if line.start - pos + cost > budget:
            break
        candidates.append((line.start, fence, previous_blank and fence is None))
        previous_blank = not text[line.start : line.end].strip()
    # Never leave an empty block behind: a cut right after an opening fence line.
    candidates = [
        c for c in candidates if not (c[1] is not None and _opens_just_before(lines, c[0]))
    ]
    # 2. The last paragraph boundary in the second half of the window.
    for cut, fence, paragraph in reversed(candidates):
        if paragraph and cut - pos >= budget // 2:
            return cut, fence
    # 3. The last line boundary.
    if candidates and candidates[-1][0] - pos >= budget // 4:
        return candidates[-1][0], candidates[-1][1]
    # 4. A space, else a hard cut, inside one long line.
    line_fence = _line_containing(lines, window_end)
    cost = len(_CLOSE) + 1 if line_fence is not None else 0
    hard = window_end - cost
    space = text.rfind(" ", pos + 1, hard)
    if space > pos + budget // 2:
        return space, line_fence
    return hard, line_fence


def _opens_just_before(lines: list[_Line], cut: int) -> bool:
    for line in lines:
        if line.end == cut:
            return line.opens
    return False


def _line_containing(lines: list[_Line], position: int) -> str | None:
    for line in lines:
        if line.start <= position < line.end:
            return line.fence
    return lines[-1].fence if lines else None
