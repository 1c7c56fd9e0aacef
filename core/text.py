r"""Text every database and every wire can carry, whatever a user or a model typed.

A NUL byte is refused by PostgreSQL's text type; a lone UTF-16 surrogate (``"\ud800"``,
which JSON escapes and some platforms deliver) cannot be encoded as UTF-8 by any driver or
HTTP client. Both become U+FFFD, the replacement character, so a message is kept and
answered the same way on SQLite, PostgreSQL and in memory.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["REPLACEMENT", "safe_text"]

REPLACEMENT: Final = "\ufffd"
_UNSAFE: Final = re.compile("[\x00\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD; unchanged when clean.

    A high and a low surrogate in a row form one character (as UTF-16 would read them) and
    are joined into it rather than replaced.
    """
    if _UNSAFE.search(text) is None:
        return text
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return joined.replace("\x00", REPLACEMENT)
