"""The corpus and questions of ``bench.kb``: Python's own language reference topics.

``pydoc_data.topics`` (in the standard library: the text ``help()`` shows for keywords and
topics) is a real public text written by the Python documentation team, not for this test.
Each topic is one document: its blank-line separated paragraphs cut into chunks of at most
``KB_CHUNK_CHARS`` characters by :func:`core.chunking.chunk`, as ``chinwag kb add`` does.

Each question has a known answer: a distinctive phrase that the right chunk contains (every
phrase is checked to be in the corpus before the run). A question is answered at k when one
of the top k chunks contains its phrase (whitespace normalised).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.chunking import Block, chunk
from core.knowledge import ChunkDraft

QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What happens when an assert statement's expression is false?", "raise AssertionError"),
    (
        "Can break be used in a function defined inside a loop?",
        "not nested in a function or class definition within that loop",
    ),
    ("Which scope does the nonlocal statement refer to?", "nearest enclosing scope excluding"),
    ("What does the pass statement do?", "is a null operation"),
    ("What does a lambda expression yield?", "The unnamed object behaves like a function"),
    (
        "What does a bare raise with no expression do?",
        "re-raises the exception that is currently being handled",
    ),
    ("What does deleting a name do?", "Deletion of a name removes the binding of that name"),
    ("When does the else clause of a while loop run?", "which may be the first time it is tested"),
    ("What does a function return when return has no expression?", '"None" is substituted'),
    ("How many null objects exist in Python?", "There is exactly one null object"),
    ("How is the Ellipsis object written?", 'It is written as "Ellipsis" or "..."'),
    ("What does an imaginary literal evaluate to?", "yields a complex number with a real part"),
    ("Which values are false in Boolean operations?", "following values are interpreted as false"),
    ("When is an object considered true?", "an object is considered true unless its class"),
    ("What arguments do the shift operators accept?", "These operators accept integers"),
    (
        "In which order are power and unary operators evaluated?",
        "the operators are evaluated from right to left",
    ),
    ("Can comparisons be chained like a < b < c?", "conventional in mathematics"),
    ("What does a context manager handle?", "handles the entry into, and the exit from"),
    ("When are free variables resolved?", "Name resolution of free variables occurs at runtime"),
    ("What is a code block in a Python program?", "is a piece of Python program text"),
    ("What does an await expression do?", "Suspend the execution of *coroutine*"),
    ("How long does a global declaration hold?", "holds for the entire current code block"),
    ("Which operators test membership in a sequence?", 'The operators "in" and "not in" test'),
    ("What is the pdb module?", "defines an interactive source code debugger"),
    ("How do I remove a prefix from a string?", "starts with the *prefix* string"),
    (
        "What does dict.setdefault do when the key is missing?",
        "insert *key* with a value of *default*",
    ),
    (
        "Are leading zeros allowed in decimal integer literals?",
        "leading zeros in a non-zero decimal number are not allowed",
    ),
    ("When are default parameter values evaluated?", "Default parameter values are evaluated"),
    (
        "What happens to an exception if the finally clause executes return?",
        "the saved exception is discarded",
    ),
    ("How does a module define its public names for import *?", 'for a variable named "__all__"'),
)

_SPACE = re.compile(r"\s+")


def normal(text: str) -> str:
    """``text`` with every run of whitespace one space."""
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Document:
    """One topic: its title and chunks."""

    title: str
    chunks: list[ChunkDraft]


def blocks(text: str) -> list[Block]:
    """The paragraphs of a topic as the plain-text reader finds them (blank-line separated)."""
    return [Block(part.strip()) for part in re.split(r"\n\s*\n", text) if part.strip()]


def corpus(size: int = 800, overlap: int = 150) -> list[Document]:
    """Every language reference topic of this Python, chunked as ``chinwag kb add`` does."""
    from pydoc_data.topics import topics

    documents = []
    for key in sorted(topics):
        text = str(topics[key])
        title = text.strip().splitlines()[0].strip() if text.strip() else key
        drafts = chunk(blocks(text), chars=size, overlap=overlap)
        documents.append(Document(f"{title} ({key})", drafts))
    return documents


def answered(phrase: str, texts: list[str]) -> bool:
    """Whether one of ``texts`` contains ``phrase`` (whitespace normalised)."""
    wanted = normal(phrase)
    return any(wanted in normal(text) for text in texts)


def check_questions(documents: list[Document]) -> list[str]:
    """The phrases no chunk of ``documents`` contains (they would make a question unfair)."""
    texts = [c.text for d in documents for c in d.chunks]
    return [phrase for _, phrase in QUESTIONS if not answered(phrase, texts)]
