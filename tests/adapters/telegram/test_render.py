"""Markdown -> Telegram HTML, the splitter, and the fake's HTML parser they are checked by."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.telegram.render import render_blocks, runs_html, runs_text, utf16_len
from adapters.telegram.split import render_parts, split_blocks
from tests.fakes.telegram_server import TelegramHTMLError, parse_html


def html_of(markdown: str) -> str:
    parts = render_parts(markdown)
    assert len(parts) == 1
    return parts[0].html


# --- the fake's parser: Telegram's accept/reject rules --------------------------------------

ACCEPTED = [
    ("plain text", "plain text", []),
    ("AT&T & co", "AT&T & co", []),  # a bare & is kept as text
    ("&lt;b&gt; &amp; &quot;", '<b> & "', []),
    ("&#128512; &#x41;", "\U0001f600 A", []),
    ("<b>bold</b>", "bold", ["bold"]),
    ("<B>bold</B>", "bold", ["bold"]),
    ("<b>bold <i>both</i></b>", "bold both", ["bold", "italic"]),  # nested tags
    ("<strong>s</strong><em>e</em><del>d</del><u>u</u>", "sedu", None),
    ('<pre><code class="language-python">x = 1</code></pre>', "x = 1", ["pre"]),
    ("<pre>raw</pre>", "raw", ["pre"]),
    ("<code>c</code>", "c", ["code"]),
    ('<a href="https://example.org/?a=1&amp;b=2">link</a>', "link", ["text_link"]),
    ("<blockquote>quoted</blockquote>", "quoted", ["blockquote"]),
    ('<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler>', "st", ["spoiler"]),
]

REJECTED = [
    ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
    ("line<br>break", 'Unsupported start tag "br"'),
    ("line<br/>break", 'Unsupported start tag "br/"'),
    ("a < b", 'Unsupported start tag ""'),
    ("<foo>x</foo>", 'Unsupported start tag "foo"'),
    ("<b>x</i>", "Unmatched end tag"),
    ("x</b>", "Unexpected end tag"),
    ("<b>x</b", "Unclosed end tag"),
    ('<a href="x>y</a>', "Unclosed end of an attribute value"),
    ("<span>x</span>", 'must have class "tg-spoiler"'),
    ("<b", "Unclosed start tag"),
]


@pytest.mark.parametrize(("source", "text", "types"), ACCEPTED)
def test_fake_parser_accepts(source: str, text: str, types: list[str] | None) -> None:
    visible, entities = parse_html(source)
    assert visible == text
    if types is not None:
        assert sorted({e.type for e in entities}) == sorted(set(types))


def test_fake_parser_keeps_pre_language_and_utf16_offsets() -> None:
    visible, entities = parse_html('\U0001f600 <pre><code class="language-go">x</code></pre>')
    assert visible == "\U0001f600 x"
    assert [(e.type, e.offset, e.length, e.language) for e in entities] == [("pre", 3, 1, "go")]


@pytest.mark.parametrize(("source", "error"), REJECTED)
def test_fake_parser_rejects(source: str, error: str) -> None:
    with pytest.raises(TelegramHTMLError, match=error.replace("(", r"\(")):
        parse_html(source)


# --- rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __also__", "<b>bold</b> and <b>also</b>"),
        ("*it* _it_ ***both***", "<i>it</i> <i>it</i> <b><i>both</i></b>"),
        ("~~gone~~", "<s>gone</s>"),
        ("use `a < b && c`", "use <code>a &lt; b &amp;&amp; c</code>"),
        ("``code with ` tick``", "<code>code with ` tick</code>"),
        (
            "[site](https://example.org/a?b=1&c=2)",
            '<a href="https://example.org/a?b=1&amp;c=2">site</a>',
        ),
        ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("2 * 3 * 4 = 24", "2 * 3 * 4 = 24"),
        ("\\*not italic\\*", "*not italic*"),
        ("**unclosed bold", "**unclosed bold"),
        ("# Title", "<b>Title</b>"),
        ("- one\n- **two**\n1. first", "• one\n• <b>two</b>\n1. first"),
        ("> quoted *words*\n> more", "<blockquote>quoted <i>words</i>\nmore</blockquote>"),
        ("**bold `code` bold**", "<b>bold </b><code>code</code><b> bold</b>"),
        (
            "```python\nif a < b:\n    pass\n```",
            '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>',
        ),
        ("```\nno language\n```", "<pre>no language</pre>"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "<pre>| a | b |\n| 1 | 2 |</pre>"),
        ("para one\n\npara two\nline", "para one\n\npara two\nline"),
    ],
)
def test_render(markdown: str, expected: str) -> None:
    assert html_of(markdown) == expected
    parse_html(expected)


def test_streaming_halfway_renders_valid_html() -> None:
    # A reply cut mid-code-block (as streaming shows it) still renders, as code.
    partial = "Here:\n\n```python\ndef f():\n    return 1 <"
    html = html_of(partial)
    assert html.endswith(
        '<pre><code class="language-python">def f():\n    return 1 &lt;</code></pre>'
    )
    parse_html(html)


# --- splitting ---------------------------------------------------------------------------


def test_short_reply_is_one_part() -> None:
    assert [p.text for p in render_parts("hello **there**")] == ["hello there"]


def test_empty_reply_has_no_parts() -> None:
    assert render_parts("   \n\n ") == []


def test_code_block_that_fits_starts_the_next_message() -> None:
    prose = "word " * 700  # 3500 characters
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(150)) + "\n```"
    parts = render_parts(prose + "\n\n" + code)
    assert len(parts) == 2
    assert "<pre>" not in parts[0].html
    assert parts[1].html.startswith('<pre><code class="language-python">x0 = 0')
    assert parts[1].html.endswith("x149 = 149</code></pre>")


def test_code_block_longer_than_a_message_is_closed_and_reopened() -> None:
    code = "```js\n" + "\n".join(f"let value_{i} = {i};" for i in range(600)) + "\n```"
    parts = render_parts(code)
    assert len(parts) >= 3
    for part in parts:
        assert part.html.startswith('<pre><code class="language-js">')
        assert part.html.endswith("</code></pre>")
        assert utf16_len(part.text) <= 4096
        visible, _ = parse_html(part.html)
        assert visible.strip() == part.text
    # Cut at line boundaries: no line is broken in two.
    lines = [line for part in parts for line in part.text.split("\n")]
    assert lines == [f"let value_{i} = {i};" for i in range(600)]


def test_limit_is_counted_in_utf16_units() -> None:
    emoji = "\U0001f600" * 3000  # 6000 UTF-16 units, 3000 code points
    parts = render_parts(emoji)
    assert len(parts) == 2
    assert all(utf16_len(p.text) <= 4096 for p in parts)
    assert "".join(p.text for p in parts) == emoji


def test_split_prefers_paragraphs_then_lines() -> None:
    text = "a" * 50 + "\n\n" + "b" * 30 + "\n" + "c" * 30
    parts = [p.text for p in render_parts(text, limit=70)]
    assert parts == ["a" * 50, "b" * 30 + "\n" + "c" * 30]


# --- properties --------------------------------------------------------------------------

_WORD = st.text(alphabet="abcxyzABC0189&<.,!?é\U0001f600", min_size=1, max_size=8)
_CODE_LINE = st.text(alphabet="abc xyz*_[]#<>&(){}=+-;:'\"\\é\U0001f600", max_size=30)


@st.composite
def _inline(draw: st.DrawFn) -> tuple[str, str]:
    """(markdown, visible text) of a line of words, some styled."""
    md: list[str] = []
    vis: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        words = draw(st.lists(_WORD, min_size=1, max_size=3))
        plain = " ".join(words)
        style = draw(st.sampled_from(["", "", "**", "*", "_", "~~", "`", "link", "nest"]))
        if style == "":
            md.append(plain)
        elif style == "link":
            md.append(f"[{plain}](https://example.org/p?q=1&r=2)")
        elif style == "nest":
            md.append(f"**{plain} *{words[0]}* {words[-1]}**")
            plain = f"{plain} {words[0]} {words[-1]}"
        else:
            md.append(f"{style}{plain}{style}")
        vis.append(plain)
    return " ".join(md), " ".join(vis)


@st.composite
def _document(draw: st.DrawFn) -> tuple[str, str]:
    """(markdown, visible text): paragraphs, lists, quotes, headings and code blocks."""
    md: list[str] = []
    vis: list[str] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["para", "para", "list", "quote", "heading", "code"]))
        if kind == "para":
            lines = draw(st.lists(_inline(), min_size=1, max_size=4))
            md.append("\n".join(m for m, _ in lines))
            vis.append("\n".join(v for _, v in lines))
        elif kind == "list":
            items = draw(st.lists(_inline(), min_size=1, max_size=4))
            md.append("\n".join(f"- {m}" for m, _ in items))
            vis.append("\n".join(f"• {v}" for _, v in items))
        elif kind == "quote":
            lines = draw(st.lists(_inline(), min_size=1, max_size=3))
            md.append("\n".join(f"> {m}" for m, _ in lines))
            vis.append("\n".join(v for _, v in lines))
        elif kind == "heading":
            words = " ".join(draw(st.lists(_WORD, min_size=1, max_size=4)))
            md.append(f"## {words}")
            vis.append(words)
        else:
            code = draw(st.lists(_CODE_LINE, min_size=1, max_size=12))
            language = draw(st.sampled_from(["", "python", "c++"]))
            md.append(f"```{language}\n" + "\n".join(code) + "\n```")
            vis.append("\n".join(code))
    return "\n\n".join(md), "\n\n".join(vis)


def _no_space(text: str) -> str:
    return "".join(text.split())


def _check_parts(markdown: str, limit: int) -> list[str]:
    texts = []
    for part in render_parts(markdown, limit=limit):
        visible, _ = parse_html(part.html)  # Telegram accepts every part
        assert visible.strip() == part.text  # the plain fallback shows the same text
        assert 0 < utf16_len(part.text) <= limit
        texts.append(part.text)
    return texts


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_document(), limit=st.integers(40, 600))
def test_property_markdown_survives_render_and_split(doc: tuple[str, str], limit: int) -> None:
    """Every part parses, fits, and the parts' visible text is the model's text without markup.

    "Without markup" is exact here because the generator knows which characters are markup;
    whitespace is excluded from the comparison because cuts drop the separator they cut at.
    """
    markdown, visible = doc
    texts = _check_parts(markdown, limit)
    assert _no_space("".join(texts)) == _no_space(visible)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400), limit=st.integers(8, 200))
def test_property_any_text_renders_to_accepted_parts(text: str, limit: int) -> None:
    """Whatever the model writes, Telegram accepts every part and no visible text is lost."""
    texts = _check_parts(text, limit)
    rendered = runs_text(run for block in render_blocks(text) for run in block.runs)
    assert _no_space("".join(texts)) == _no_space(rendered)


def test_split_blocks_rejects_tiny_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_blocks(render_blocks("x"), 1)


def test_runs_html_closes_everything() -> None:
    runs = [r for b in render_blocks("**a *b*** c") for r in b.runs]
    html = runs_html(runs)
    parse_html(html)
    assert runs_text(runs) == "a b c"
