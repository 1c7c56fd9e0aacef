"""The short notices the engine sends users, and the one way it sends them.

A notice that cannot be delivered is logged and dropped: the platform refusing one message
must not end the handling of the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from core.ports import ReplyChannel

_log = logging.getLogger(__name__)

UNSUPPORTED_REPLY = (
    "I can only read text messages for now, so I can't use that {kind}. "
    "Please send your question as text."
)
EMPTY_REPLY = "Your message is empty. Send me some text and I'll answer."
EMPTY_MODEL_REPLY = "The model returned an empty answer. Please try rephrasing your message."
GENERIC_ERROR = "Something went wrong on my side. Please try again."
REFUSAL = "Sorry, this bot is private and you're not on its list of allowed users."


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
    "EMPTY_MODEL_REPLY",
    "EMPTY_REPLY",
    "GENERIC_ERROR",
    "REFUSAL",
    "UNSUPPORTED_REPLY",
    "notify",
]
