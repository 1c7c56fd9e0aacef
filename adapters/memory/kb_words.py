"""The words of a question that keyword search looks for (shared by every knowledge store).

Vendor-free. A question's common words ("what", "the", "does") match nearly every chunk:
searched for, they make a keyword query score the whole scope (hundreds of milliseconds at
100k chunks) and add nothing to the ranking. So keyword search drops them, drops one-letter
words (but keeps numbers: ``"E-4711"`` is searched as ``4711``, which is how FTS5's
``unicode61`` tokenizer and PostgreSQL's ``simple`` configuration index it as well), and
keeps at most :data:`MAX_QUERY_WORDS` words. A question of stop words only has no keyword
search: the vector ranking answers it alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

MAX_QUERY_WORDS: Final = 12
"""At most this many words of a question are searched for (the first ones)."""

MATCH_BUDGET: Final = 10_000
"""The most chunk matches a keyword query should rank, summed over its words (see
:func:`affordable`): ranking costs a few microseconds a match."""

_WORD: Final = re.compile(r"[^\W_]+")

STOP_WORDS: Final[frozenset[str]] = frozenset(
    # One string, split: a list literal would take a line per word.
    """
    a about above after again against all also am an and any are aren as at be because
    been before being below between both but by can cannot could couldn did didn do does
    doesn doing don down during each either else ever every few for from further get gets
    got had hadn has hasn have haven having he her here hers herself him himself his how
    however i if in into is isn it its itself just let ll me might more most much must
    mustn my myself no nor not now of off on once only or other ought our ours ourselves
    out over own please same shall shan she should shouldn so some such than that the
    their theirs them themselves then there these they this those through to too under
    until up upon us very was wasn we were weren what when where whether which while who
    whom whose why will with within without won would wouldn ve yet you your yours
    yourself yourselves
    """.split()  # noqa: SIM905
)
"""Common English words that keyword search ignores (function words of questions)."""


def all_words(text: str) -> list[str]:
    """Every lower-cased word of ``text`` (letter and digit runs), in order, repeats kept."""
    return _WORD.findall(text.lower())


def searchable(word: str) -> bool:
    """Whether keyword search looks for ``word`` (lower-cased): no stop word, no single letter."""
    return word not in STOP_WORDS and (len(word) > 1 or word.isdigit())


def query_words(text: str) -> list[str]:
    """The distinct searchable words of a question, in order (at most ``MAX_QUERY_WORDS``).

    Only letter and digit runs survive, so the words are safe to quote into an FTS5 or
    ``tsquery`` expression whatever the user typed. Empty when the question has only stop
    words: then there is no keyword search.
    """
    seen: dict[str, None] = {}
    for word in all_words(text):
        if searchable(word):
            seen.setdefault(word, None)
            if len(seen) == MAX_QUERY_WORDS:
                break
    return list(seen)


def affordable(
    words: Sequence[str], matches: Mapping[str, int], budget: int = MATCH_BUDGET
) -> list[str]:
    """The rarest of ``words`` whose match counts sum to at most ``budget``, in their order.

    ``matches`` holds how many chunks contain each word (a word it lacks counts 0). A word
    in many chunks tells a ranking little and costs it much: at 100k chunks of one manual,
    "object" or "function" is in tens of thousands. Such words are left to the vector
    ranking; with fewer than ``budget`` chunks in all, the rarest word is always kept.
    """
    kept: set[str] = set()
    spent = 0
    for word in sorted(words, key=lambda w: matches.get(w, 0)):
        spent += matches.get(word, 0)
        if spent > budget:
            break
        kept.add(word)
    return [word for word in words if word in kept]


__all__ = [
    "MATCH_BUDGET",
    "MAX_QUERY_WORDS",
    "STOP_WORDS",
    "affordable",
    "all_words",
    "query_words",
    "searchable",
]
