"""Reading documents: text, Markdown heading paths, HTML without furniture, PDF pages."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest

from adapters.kb.readers import NoTextError, content_hash, read
from core.chunking import iter_chunks
from core.errors import KbError
from tests.adapters.kb.pdfs import empty_pdf, encrypted_pdf, scanned_pdf, text_pdf


def test_text_paragraphs_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("First line\nsame paragraph.\n\n\n  \nSecond paragraph.\n", encoding="utf-8")

    document = read(path)

    assert document.title == "notes.txt"
    assert document.pages is None
    assert [b.text for b in document.blocks] == ["First line\nsame paragraph.", "Second paragraph."]


def test_markdown_keeps_the_heading_path_and_takes_the_first_h1_as_title(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text(
        "Intro before any heading.\n\n"
        "# Router Guide\n\nWelcome.\n\n"
        "## Setup\n\n### Network\n\nOpen port 8080 on the [firewall](http://x/fw).\n\n"
        "```\n# not a heading\nexit 3\n```\n\n"
        "## Reset\n\nHold the button.\n\n"
        "Troubleshooting\n===============\n\nCall us.\n",
        encoding="utf-8",
    )

    document = read(path)
    blocks = [(b.heading, b.text) for b in document.blocks]

    assert document.title == "Router Guide"
    assert blocks == [
        (None, "Intro before any heading."),
        ("Router Guide", "Welcome."),
        ("Router Guide > Setup > Network", "Open port 8080 on the firewall."),
        ("Router Guide > Setup > Network", "# not a heading\nexit 3"),
        ("Router Guide > Reset", "Hold the button."),
        ("Troubleshooting", "Call us."),
    ]


def test_markdown_without_h1_is_titled_by_its_file_name(tmp_path):
    path = tmp_path / "faq.md"
    path.write_text("## Question\n\nAnswer.\n", encoding="utf-8")

    assert read(path).title == "faq.md"


def test_html_keeps_text_and_drops_scripts_styles_and_navigation(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        """<!doctype html><html><head><title>Product  Manual</title>
        <style>body { color: red }</style><script>var secret = "SCRIPTTEXT";</script></head>
        <body><header>HEADERTEXT</header><nav><a href="/">NAVTEXT</a></nav>
        <h1>Manual</h1><p>Plug it in &amp; switch it <b>on</b>.</p>
        <h2>Errors</h2><ul><li>E-4711: fan stuck</li><li>E-4712: too hot</li></ul>
        <aside>ASIDETEXT</aside><template>TEMPLATETEXT</template>
        <pre>line one
  line two</pre>
        <footer>FOOTERTEXT</footer><script>alert("MORESCRIPT")</script></body></html>""",
        encoding="utf-8",
    )

    document = read(path)
    blocks = [(b.heading, b.text) for b in document.blocks]
    everything = " ".join(text for _, text in blocks)

    assert document.title == "Product Manual"
    for hidden in ("SCRIPT", "secret", "color", "HEADER", "NAV", "ASIDE", "TEMPLATE", "FOOTER"):
        assert hidden not in everything
    assert blocks == [
        ("Manual", "Plug it in & switch it on."),
        ("Manual > Errors", "E-4711: fan stuck"),
        ("Manual > Errors", "E-4712: too hot"),
        ("Manual > Errors", "line one\n  line two"),
    ]


def test_html_without_title_takes_the_first_h1(tmp_path):
    path = tmp_path / "bare.htm"
    path.write_text("<p>Before.</p><h1>The Heading</h1><p>After.</p>", encoding="utf-8")

    assert read(path).title == "The Heading"


def test_pdf_text_comes_with_page_numbers(tmp_path):
    path = text_pdf(
        tmp_path / "manual.pdf",
        ["Page one talks about setup.", "Page two lists error E-200.", "Page three: reset."],
    )

    document = read(path)
    blocks = [(b.page, b.text) for b in document.blocks]

    assert document.pages == 3
    assert document.title == "manual.pdf"
    assert blocks == [
        (1, "Page one talks about setup."),
        (2, "Page two lists error E-200."),
        (3, "Page three: reset."),
    ]


@pytest.mark.parametrize("make", [empty_pdf, scanned_pdf], ids=["empty", "scanned"])
def test_a_pdf_without_text_says_no_extractable_text(tmp_path, make):
    document = read(make(tmp_path / "scan.pdf"))

    with pytest.raises(NoTextError, match=r"no extractable text \(a scanned PDF\?\)"):
        list(document.blocks)


def test_an_encrypted_pdf_is_refused_clearly(tmp_path):
    with pytest.raises(KbError, match="encrypted PDF"):
        list(read(encrypted_pdf(tmp_path / "locked.pdf")).blocks)


def test_a_damaged_pdf_is_refused_clearly(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")

    with pytest.raises(KbError, match="not a readable PDF"):
        list(read(path).blocks)


def test_an_unsupported_extension_names_the_supported_ones(tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(b"PK\x03\x04")

    with pytest.raises(KbError, match=r"unsupported file type \.docx.*\.txt.*\.md.*\.html.*\.pdf"):
        read(path)


def test_a_missing_file_is_a_kb_error(tmp_path):
    with pytest.raises(KbError, match="cannot read"):
        content_hash(tmp_path / "gone.txt")


def test_content_hash_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "a.txt"
    data = b"hello\n" * 500_000
    path.write_bytes(data)

    assert content_hash(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_a_large_text_file_is_read_with_bounded_memory(tmp_path):
    path = tmp_path / "big.txt"
    paragraph = ("The quick brown fox jumps over the lazy dog near error E-4711. " * 12 + "\n") * 3
    with path.open("w", encoding="utf-8") as file:
        written = 0
        while written < 30_000_000:
            written += file.write(paragraph + "\n")
    size = path.stat().st_size

    tracemalloc.start()
    try:
        count = 0
        words = 0
        for draft in iter_chunks(read(path).blocks, chars=800, overlap=150):
            count += 1
            words += draft.text.count("fox")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count > 30_000_000 // 800
    assert words >= written // len(paragraph) * 36  # every paragraph was read
    assert peak < size // 50  # well under the file's 30 MB (a few hundred KB in practice)
