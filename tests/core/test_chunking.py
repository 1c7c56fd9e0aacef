"""Chunking: paragraphs kept together, long ones split, overlap, pages and heading paths."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.chunking import Block, chunk


def _words(text: str) -> list[str]:
    return text.split()


def test_short_paragraphs_stay_together_in_one_chunk():
    blocks = [Block("First paragraph."), Block("Second paragraph."), Block("Third.")]

    chunks = chunk(blocks, chars=800, overlap=150)

    assert len(chunks) == 1
    assert chunks[0].text == "First paragraph.\n\nSecond paragraph.\n\nThird."
    assert chunks[0].position == 0


def test_paragraphs_are_not_cut_when_they_fit_and_positions_count_from_zero():
    paragraphs = [f"Paragraph {i} " + "word " * 30 for i in range(10)]  # ~165 chars each

    chunks = chunk([Block(p) for p in paragraphs], chars=400, overlap=0)

    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == 5
    for c in chunks:
        # Each chunk is whole paragraphs: every paragraph appears intact in exactly one.
        for part in c.text.split("\n\n"):
            assert part in [p.strip() for p in paragraphs]


def test_a_long_paragraph_is_split_at_sentence_ends():
    sentences = [f"Sentence number {i} says something useful." for i in range(40)]
    paragraph = " ".join(sentences)

    chunks = chunk([Block(paragraph)], chars=300, overlap=0)

    assert len(chunks) > 1
    assert all(len(c.text) <= 300 for c in chunks)
    for c in chunks:
        assert c.text.endswith("useful.")  # cut at a sentence end, never mid-sentence
    assert " ".join(c.text for c in chunks) == paragraph


def test_a_sentence_longer_than_a_chunk_is_split_at_words():
    paragraph = " ".join(f"w{i}" for i in range(400))  # no sentence end at all

    chunks = chunk([Block(paragraph)], chars=100, overlap=0)

    assert all(len(c.text) <= 100 for c in chunks)
    assert _words(" ".join(c.text for c in chunks)) == _words(paragraph)


def test_overlap_carries_the_previous_chunks_end_at_a_word_boundary():
    paragraph = " ".join(f"word{i}." for i in range(300))

    chunks = chunk([Block(paragraph)], chars=200, overlap=50)

    assert len(chunks) > 2
    for before, after in itertools.pairwise(chunks):
        first_word = after.text.split()[0]
        # The next chunk starts with whole words from the end of the previous one.
        assert before.text.split()[-1] in after.text
        assert first_word in before.text.split()
        shared = after.text[: after.text.index(before.text.split()[-1]) + 1]
        assert 20 <= len(shared) <= 60
    assert all(len(c.text) <= 200 for c in chunks)


def test_a_new_heading_starts_a_new_chunk_without_overlap():
    blocks = [
        Block("Install it with pip.", heading="Guide > Install"),
        Block("Open port 8080.", heading="Guide > Network"),
        Block("Allow the firewall.", heading="Guide > Network"),
    ]

    chunks = chunk(blocks, chars=800, overlap=150)

    assert [(c.heading, c.text) for c in chunks] == [
        ("Guide > Install", "Install it with pip."),
        ("Guide > Network", "Open port 8080.\n\nAllow the firewall."),
    ]


def test_a_chunks_page_is_the_page_its_text_starts_on():
    blocks = [
        Block("a " * 150, page=1),
        Block("b " * 150, page=2),
        Block("c " * 150, page=3),
    ]

    chunks = chunk(blocks, chars=400, overlap=0)

    assert [c.page for c in chunks] == [1, 2, 3]
    assert chunks[1].text.startswith("b")


def test_empty_input_gives_no_chunks():
    assert chunk([Block(""), Block("  \n ")]) == []


@pytest.mark.parametrize(("chars", "overlap"), [(10, 0), (100, -1), (100, 60)])
def test_nonsense_sizes_are_refused(chars, overlap):
    with pytest.raises(ValueError, match="characters"):
        chunk([Block("text")], chars=chars, overlap=overlap)


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.!?", min_size=1, max_size=15)
_paragraph = st.lists(_word, min_size=1, max_size=120).map(
    lambda words: "".join(w + (" " if i % 7 else "\n") for i, w in enumerate(words))
)
_blocks = st.lists(
    st.tuples(_paragraph, st.sampled_from([None, "A", "A > B"]), st.integers(1, 5)),
    min_size=0,
    max_size=12,
).map(lambda items: [Block(text, page=page, heading=head) for text, head, page in items])


@settings(max_examples=150, deadline=None)
@given(blocks=_blocks, chars=st.integers(40, 600), overlap_share=st.floats(0, 0.5))
def test_no_text_is_lost_and_no_chunk_is_too_long(blocks, chars, overlap_share):
    overlap = int(chars * overlap_share)

    chunks = chunk(blocks, chars=chars, overlap=overlap)

    assert all(0 < len(c.text) <= chars for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    all_words = [w for b in blocks for w in _words(b.text)]
    chunk_words = " ".join(c.text for c in chunks).split()
    # Every paragraph's words appear in some chunk of its own section.
    for block in blocks:
        section = " ".join(c.text for c in chunks if c.heading == block.heading).split()
        assert set(_words(block.text)) <= set(section)
    if overlap == 0:
        assert chunk_words == all_words  # in order, nothing added, nothing lost
    # Each chunk is a run of the document's words (the overlap is real text, not invented).
    joined = " " + " ".join(all_words) + " "
    for c in chunks:
        assert " " + " ".join(c.text.split()) + " " in joined


def test_line_breaks_inside_a_long_paragraph_are_cut_points():
    lines = [f"- item {i} of the list" for i in range(60)]

    chunks = chunk([Block("\n".join(lines))], chars=120, overlap=0)

    for c in chunks:
        assert re.fullmatch(r"(- item \d+ of the list ?)+", c.text)
