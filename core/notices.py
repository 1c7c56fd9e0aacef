"""The short notices the engine sends users, and the one way it sends them.

A notice that cannot be delivered is logged and dropped: the platform refusing one message
must not end the handling of the next.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

from core.ports import ReplyChannel

_log = logging.getLogger(__name__)

UNSUPPORTED_REPLY = (
    "I can't use that {kind}. Send me text, a photo, a voice note or a text file instead."
)
EMPTY_REPLY = "Your message is empty. Send me some text and I'll answer."
EMPTY_MODEL_REPLY = "The model returned an empty answer. Please try rephrasing your message."
GENERIC_ERROR = "Something went wrong on my side. Please try again."
REFUSAL = "Sorry, this bot is private and you're not on its list of allowed users."
CUT_NOTICE = '… (cut: the reply reached its length limit — say "continue" for the rest)'

# A CommonMark code fence: up to three spaces, then three or more backticks or tildes.
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_CONTINUE = frozenset({"continue", "go on", "keep going", "more"})


def open_fence(markdown: str) -> str | None:
    """The opening line (``"```python"``) of the code block left open in ``markdown``."""
    opening: str | None = None
    marker = ""
    for line in markdown.splitlines():
        match = _FENCE.match(line)
        if match is None:
            continue
        fence, rest = match.group(1), match.group(2)
        if opening is None:
            if fence[0] == "`" and "`" in rest:
                continue  # ```inline``` on one line opens nothing
            opening, marker = line.strip(), fence
        elif fence[0] == marker[0] and len(fence) >= len(marker) and not rest.strip():
            opening = None
    return opening


def asks_to_continue(text: str) -> bool:
    """Whether a user's message only asks for the rest of a cut reply (what the notice says)."""
    return text.strip().strip(".!").strip().casefold() in _CONTINUE


def reopening(previous: str, request: str, continuation: str) -> str:
    """What to show before a continuation so its code renders as code; ``""`` for nothing.

    ``previous`` was cut inside a code block and ``request`` asks to continue: unless the
    model opened a block itself, the continuation starts inside the block, so its opening
    line is shown again (shown only, never stored).
    """
    opening = open_fence(previous)
    if opening is None or not asks_to_continue(request):
        return ""
    if continuation.lstrip().startswith(("```", "~~~")):
        return ""
    return opening + "\n"


def cut_ending(markdown: str) -> str:
    """What follows a reply the token limit cut: its open code block closed, and the notice.

    Shown after the model's text, never stored with it: the next prompt holds the reply as
    the model wrote it, so "continue" picks it up where it stopped.
    """
    opening = open_fence(markdown)
    if opening is None:
        return f"\n\n{CUT_NOTICE}"
    fence = _FENCE.match(opening)
    assert fence is not None
    close = ("" if markdown.endswith("\n") else "\n") + fence.group(1)
    return f"{close}\n\n{CUT_NOTICE}"


async def notify(out: ReplyChannel, text: str) -> Sequence[str]:
    """Send ``text`` through ``out``; return its platform ids, or ``()`` if it failed.

    Raises only ``CancelledError``; any other failure is logged.
    """
    try:
        return await out.send_text(text)
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("could not deliver a notice")
        return ()


__all__ = [
    "CUT_NOTICE",
    "EMPTY_MODEL_REPLY",
    "EMPTY_REPLY",
    "GENERIC_ERROR",
    "REFUSAL",
    "UNSUPPORTED_REPLY",
    "asks_to_continue",
    "cut_ending",
    "notify",
    "open_fence",
    "reopening",
]
