"""Markdown, as language models write it, turned into Telegram's HTML.

The renderer never produces HTML that Telegram's parser rejects: everything that is not
recognised markup is escaped, unclosed markup stays literal text, and entities are nested
only the way the Bot API allows (``code``/``pre`` contain nothing else and sit inside
nothing but a block quote).

A rendered document is a list of :class:`Block` values, each a sequence of :class:`Run`
values: a piece of visible text with the stack of tags around it. Keeping the tags per
run lets the splitter (:mod:`adapters.telegram.split`) cut anywhere and close and reopen
the tags around the cut, so every part renders on its own.

What rendering removes from the model's text (the *markup*): emphasis delimiters
(``**``, ``__``, ``*``, ``_``, ``~~``, ``***``), the backticks of code spans, code fence
lines (with their language), the ``#`` marks of headings, the ``>`` marks of quotes,
backslashes of escapes, and the ``[``, ``](url)`` of links. List markers become ``•``
(numbered lists keep their numbers); a horizontal rule becomes ``———``. All other
characters are kept, in order.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Block", "Run", "Tag", "render_blocks", "runs_html", "runs_text", "utf16_len"]


@dataclass(frozen=True, slots=True)
class Tag:
    """One Telegram HTML tag: ``b``, ``i``, ``s``, ``code``, ``pre``, ``a`` or ``blockquote``.

    ``attr`` is the link target of ``a`` and the language of a ``code`` inside ``pre``.
    """

    name: str
    attr: str | None = None

    def open(self) -> str:
        """The opening tag, attribute escaped."""
        if self.name == "a":
            return f'<a href="{html.escape(self.attr or "", quote=True)}">'
        if self.name == "code" and self.attr:
            return f'<code class="language-{html.escape(self.attr, quote=True)}">'
        return f"<{self.name}>"

    def close(self) -> str:
        """The closing tag."""
        return f"</{self.name}>"


@dataclass(frozen=True, slots=True)
class Run:
    """Visible ``text`` with the tags around it, outermost first."""

    text: str
    tags: tuple[Tag, ...] = ()


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph, list, quote, heading or code block.

    Attributes:
        runs: the block's content.
        sep: the visible text between the previous block and this one (a blank line after a
            blank line in the source, a line break otherwise).
        code: whether the block is a code block (``pre``).
    """

    runs: tuple[Run, ...]
    sep: str = "\n\n"
    code: bool = False


BOLD = Tag("b")
ITALIC = Tag("i")
STRIKE = Tag("s")
QUOTE = Tag("blockquote")
PRE = Tag("pre")

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_HRULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}> ?(.*)$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(.*)$")
_ORDERED = re.compile(r"^([ \t]*)(\d{1,9})([.)])[ \t]+(.*)$")
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$")
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$")
_LANGUAGE = re.compile(r"^[A-Za-z0-9_+#.-]{1,32}$")
_URL = re.compile(r"^(?:https?://|tg://|mailto:)[^\s<>\"]+$", re.IGNORECASE)
_AUTOLINK = re.compile(r"<((?:https?://|tg://|mailto:)[^\s<>\"]+)>", re.IGNORECASE)
_ESCAPABLE = frozenset("\\`*_{}[]()#+-.!|~>")


def utf16_len(text: str) -> int:
    """Length of ``text`` as Telegram counts it: UTF-16 code units."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def runs_text(runs: Iterable[Run]) -> str:
    """The visible text of ``runs``: what a user reads."""
    return "".join(run.text for run in runs)


def runs_html(runs: Iterable[Run]) -> str:
    """Telegram HTML for ``runs``: tags opened and closed minimally around each run."""
    out: list[str] = []
    stack: tuple[Tag, ...] = ()
    for run in runs:
        if not run.text:
            continue
        common = 0
        while common < len(stack) and common < len(run.tags) and stack[common] == run.tags[common]:
            common += 1
        out.extend(tag.close() for tag in reversed(stack[common:]))
        out.extend(tag.open() for tag in run.tags[common:])
        stack = run.tags
        out.append(html.escape(run.text, quote=False))
    out.extend(tag.close() for tag in reversed(stack))
    return "".join(out)


def render_blocks(markdown: str) -> list[Block]:
    """Parse the model's Markdown into blocks of tagged runs.

    Never raises; any text is accepted. Unclosed emphasis or code spans stay literal; an
    unclosed code fence runs to the end (so a reply streamed halfway shows its code block).
    """
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[Block] = []
    blank = False
    i = 0
    n = len(lines)

    def add(runs: Sequence[Run], *, code: bool = False) -> None:
        nonlocal blank
        if not runs_text(runs):
            return
        sep = "\n\n" if blank else "\n"
        blocks.append(Block(tuple(runs), sep=sep, code=code))
        blank = False

    while i < n:
        line = lines[i]
        if not line.strip():
            blank = True
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, marker, info = len(fence.group(1)), fence.group(2), fence.group(3)
            close = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$")
            body: list[str] = []
            i += 1
            while i < n and not close.match(lines[i]):
                body.append(_dedent(lines[i], indent))
                i += 1
            i += 1  # the closing fence (or the end)
            language = info if _LANGUAGE.match(info) else None
            tags = (PRE, Tag("code", language)) if language else (PRE,)
            add([Run("\n".join(body), tags)], code=True)
            continue
        if _TABLE_ROW.match(line) and i + 1 < n and _TABLE_RULE.match(lines[i + 1]):
            rows = [line.strip()]
            i += 1
            while i < n and _TABLE_ROW.match(lines[i]):
                if not _TABLE_RULE.match(lines[i]):
                    rows.append(lines[i].strip())
                i += 1
            add([Run("\n".join(rows), (PRE,))], code=True)
            continue
        if _QUOTE.match(line):
            runs: list[Run] = []
            first = True
            while i < n:
                quoted = _QUOTE.match(lines[i])
                if not quoted:
                    break
                if not first:
                    runs.append(Run("\n", (QUOTE,)))
                runs.extend(_line_runs(quoted.group(1), (QUOTE,)))
                first = False
                i += 1
            _trim_edges(runs)
            add(runs)
            continue
        # A paragraph, list or heading: consecutive lines up to a blank line or other block.
        runs = []
        first = True
        while i < n:
            current = lines[i]
            if not current.strip() or _FENCE.match(current) or _QUOTE.match(current):
                break
            if _TABLE_ROW.match(current) and i + 1 < n and _TABLE_RULE.match(lines[i + 1]):
                break
            if not first:
                runs.append(Run("\n"))
            runs.extend(_line_runs(current, ()))
            first = False
            i += 1
        add(runs)
    return blocks


def _dedent(line: str, indent: int) -> str:
    stripped = 0
    while stripped < indent and stripped < len(line) and line[stripped] == " ":
        stripped += 1
    return line[stripped:]


def _trim_edges(runs: list[Run]) -> None:
    """Drop empty runs so a quote whose lines are all empty adds nothing."""
    runs[:] = [run for run in runs if run.text]


def _line_runs(line: str, base: tuple[Tag, ...]) -> list[Run]:
    """One source line: a heading, rule, list item or plain line, with inline markup."""
    heading = _HEADING.match(line)
    if heading:
        return _inline(heading.group(2), (*base, BOLD))
    if _HRULE.match(line):
        return [Run("———", base)]
    bullet = _BULLET.match(line)
    if bullet:
        indent = bullet.group(1).replace("\t", "    ")
        return [Run(f"{indent}• ", base), *_inline(bullet.group(2), base)]
    ordered = _ORDERED.match(line)
    if ordered:
        indent = ordered.group(1).replace("\t", "    ")
        number = f"{indent}{ordered.group(2)}{ordered.group(3)} "
        return [Run(number, base), *_inline(ordered.group(4), base)]
    return _inline(line, base)


def _code_tags(base: tuple[Tag, ...]) -> tuple[Tag, ...]:
    # Telegram lets code sit inside nothing but a quote.
    return (*(tag for tag in base if tag.name == "blockquote"), Tag("code"))


def _run_length(text: str, start: int, char: str) -> int:
    end = start
    while end < len(text) and text[end] == char:
        end += 1
    return end - start


def _find_code_close(text: str, start: int, ticks: int) -> int:
    """Index of a backtick run of exactly ``ticks`` at or after ``start``, or -1."""
    j = start
    while j < len(text):
        if text[j] == "`":
            length = _run_length(text, j, "`")
            if length == ticks:
                return j
            j += length
        else:
            j += 1
    return -1


def _find_link(text: str, start: int) -> tuple[str, str, int] | None:
    """Match ``[label](url)`` at ``start``: (label, url, end index) or ``None``."""
    depth = 0
    j = start
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                break
        j += 1
    else:
        return None
    label = text[start + 1 : j]
    if not label.strip() or j + 1 >= len(text) or text[j + 1] != "(":
        return None
    close = text.find(")", j + 2)
    if close < 0:
        return None
    target = text[j + 2 : close].strip()
    # An optional title: [label](url "title")
    url = target.split(maxsplit=1)[0] if target else ""
    if not _URL.match(url):
        return None
    return label, url, close + 1


def _find_emphasis_close(text: str, start: int, delim: str) -> int:
    """Index of the closing ``delim`` for an opening ending at ``start``, or -1.

    A run of exactly ``delim``'s length is preferred; failing that, the end of a longer run
    closes it (``**a *b***``: the last two stars close the bold).
    """
    exact = _scan_close(text, start, delim, exact=True)
    return exact if exact >= 0 else _scan_close(text, start, delim, exact=False)


def _scan_close(text: str, start: int, delim: str, *, exact: bool) -> int:
    char = delim[0]
    j = start
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "`":
            ticks = _run_length(text, j, "`")
            close = _find_code_close(text, j + ticks, ticks)
            j = close + ticks if close >= 0 else j + ticks
            continue
        if ch == char:
            length = _run_length(text, j, char)
            fits = length == len(delim) if exact else length > len(delim)
            at = j + length - len(delim)
            if (
                fits
                and at > start
                and not text[at - 1].isspace()
                and not (char == "_" and j + length < len(text) and text[j + length].isalnum())
            ):
                return at
            j += length
            continue
        j += 1
    return -1


_EMPHASIS: dict[str, tuple[Tag, ...]] = {
    "***": (BOLD, ITALIC),
    "___": (BOLD, ITALIC),
    "**": (BOLD,),
    "__": (BOLD,),
    "*": (ITALIC,),
    "_": (ITALIC,),
    "~~": (STRIKE,),
}


def _inline(text: str, base: tuple[Tag, ...]) -> list[Run]:
    """Inline markup of one line: code spans, links, emphasis, escapes."""
    out: list[Run] = []
    buf: list[str] = []
    in_link = any(tag.name == "a" for tag in base)

    def flush() -> None:
        if buf:
            out.append(Run("".join(buf), base))
            buf.clear()

    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in _ESCAPABLE:
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == "`":
            ticks = _run_length(text, i, "`")
            close = _find_code_close(text, i + ticks, ticks)
            content = text[i + ticks : close] if close >= 0 else ""
            if len(content) >= 2 and content[0] == " " and content[-1] == " " and content.strip():
                content = content[1:-1]
            if close >= 0 and content:
                flush()
                out.append(Run(content, _code_tags(base)))
                i = close + ticks
            else:
                buf.append(text[i : i + ticks])
                i += ticks
            continue
        if ch == "[" and not in_link:
            link = _find_link(text, i)
            if link:
                label, url, end = link
                flush()
                out.extend(_inline(label, (*base, Tag("a", url))))
                i = end
                continue
        if ch == "<" and not in_link:
            auto = _AUTOLINK.match(text, i)
            if auto:
                flush()
                out.append(Run(auto.group(1), (*base, Tag("a", auto.group(1)))))
                i = auto.end()
                continue
        if ch in "*_~":
            length = _run_length(text, i, ch)
            matched = False
            for size in (3, 2, 1):
                delim = ch * size
                if size > length or delim not in _EMPHASIS:
                    continue
                after = i + size
                if after >= n or text[after].isspace():
                    continue
                if ch == "_" and i > 0 and text[i - 1].isalnum():
                    continue
                tags = _EMPHASIS[delim]
                if any(tag in base for tag in tags):
                    continue
                close = _find_emphasis_close(text, after, delim)
                if close < 0:
                    continue
                flush()
                out.extend(_inline(text[after:close], (*base, *tags)))
                i = close + size
                matched = True
                break
            if not matched:
                buf.append(text[i : i + length])
                i += length
            continue
        buf.append(ch)
        i += 1
    flush()
    return out
