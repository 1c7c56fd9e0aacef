"""What a Telegram message carries: its files as Attachments, or an unsupported kind.

The adapter calls :func:`attachments` for every message (and for the user's own message it
replies to) and :func:`unsupported_kind` for a message with neither text nor files. Nothing
is downloaded here: an :class:`~core.types.Attachment` holds the ``file_id`` that the reply
channel fetches when the engine asks (``FileSource.download``).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from telegram import Message, PhotoSize

from core.types import Attachment, AttachmentKind

__all__ = ["UNSUPPORTED_KINDS", "attachments", "largest_photo", "unsupported_kind"]

# What users send that the bot cannot read, as python-telegram-bot names the fields; the
# engine answers these with one sentence naming the kind.
UNSUPPORTED_KINDS: Final = (
    "sticker",
    "video",
    "video_note",
    "animation",
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
    "game",
    "story",
)


def attachments(message: Message, photo_limit: int) -> tuple[Attachment, ...]:
    """The files of a message the engine can fetch; nothing is downloaded here.

    Photos (the largest size within ``photo_limit`` bytes) and image documents are photos;
    voice notes and audio files are voice, with their duration; other documents are
    documents. Stickers, videos, video notes and animations carry none (GIFs come with a
    ``document`` too: they stay unsupported).
    """
    if message.photo:
        size = largest_photo(message.photo, photo_limit)
        return (
            Attachment(
                AttachmentKind.PHOTO.value,
                f"photo_{size.file_unique_id}.jpg",
                size.file_size,
                "image/jpeg",  # Telegram re-encodes every photo as JPEG
                size.file_id,
            ),
        )
    if message.voice:
        voice = message.voice
        return (
            Attachment(
                AttachmentKind.VOICE.value,
                f"voice_{voice.file_unique_id}.ogg",
                voice.file_size,
                voice.mime_type or "audio/ogg",  # OGG/Opus, as Telegram records them
                voice.file_id,
                duration=_seconds(voice.duration),
            ),
        )
    if message.audio:
        audio = message.audio
        mime = audio.mime_type or "audio/mpeg"
        return (
            Attachment(
                AttachmentKind.VOICE.value,
                audio.file_name or f"audio_{audio.file_unique_id}{_extension(mime)}",
                audio.file_size,
                mime,
                audio.file_id,
                duration=_seconds(audio.duration),
            ),
        )
    document = message.document
    if document is None or message.animation is not None:
        return ()
    image = (document.mime_type or "").lower().startswith("image/")
    return (
        Attachment(
            (AttachmentKind.PHOTO if image else AttachmentKind.DOCUMENT).value,
            document.file_name or "",
            document.file_size,
            document.mime_type,
            document.file_id,
        ),
    )


def unsupported_kind(message: Message) -> str | None:
    """The first of :data:`UNSUPPORTED_KINDS` the message carries (``"sticker"``...).

    ``None`` for a message with none of them: a service message (joins, pins, topic
    changes), which the adapter ignores.
    """
    return next((kind for kind in UNSUPPORTED_KINDS if getattr(message, kind, None)), None)


def largest_photo(sizes: Sequence[PhotoSize], limit: int) -> PhotoSize:
    """The largest of a photo's sizes within ``limit`` bytes.

    A size whose byte count Telegram does not say counts as fitting. When none fits, the
    smallest: its download is then refused by name and size.
    """
    by_area = sorted(sizes, key=lambda size: size.width * size.height)
    fitting = [size for size in by_area if size.file_size is None or size.file_size <= limit]
    return fitting[-1] if fitting else by_area[0]


def _seconds(duration: int | timedelta) -> float:
    """A Bot API duration in seconds (python-telegram-bot 22 gives int or timedelta)."""
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


def _extension(mime: str) -> str:
    return mimetypes.guess_extension(mime) or ""
