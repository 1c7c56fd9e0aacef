"""The console's ``/attach PATH [caption]``: a local file sent like a platform attachment.

The file's kind follows its extension (MIME type): an image is a photo, audio a voice note,
anything else a document. ``PATH`` may be quoted when it holds spaces (``"/tmp/my cat.jpg"``)
and starts with ``~`` for the home folder. The console's reply channel then "downloads" it
by copying it (:func:`copy_local`).
"""

from __future__ import annotations

import asyncio
import mimetypes
import shutil
from pathlib import Path

from core.errors import AdapterError
from core.types import Attachment, AttachmentKind

USAGE = "Usage: /attach PATH [caption], e.g. /attach ~/photos/plant.jpg what is this plant?"

_AUDIO_TYPES = frozenset({"application/ogg"})


def kind_of(mime_type: str | None) -> AttachmentKind:
    """Photo for images, voice for audio, document for anything else."""
    major = (mime_type or "").split("/", 1)[0]
    if major == "image":
        return AttachmentKind.PHOTO
    if major == "audio" or mime_type in _AUDIO_TYPES:
        return AttachmentKind.VOICE
    return AttachmentKind.DOCUMENT


def parse_attach(arg: str) -> tuple[Attachment, str] | str:
    """``/attach``'s argument as (the attachment, its caption), or a message saying why not."""
    arg = arg.strip()
    if not arg:
        return USAGE
    if arg[0] in "\"'":
        end = arg.find(arg[0], 1)
        if end < 0:
            return f"The path's closing quote is missing. {USAGE}"
        raw, caption = arg[1:end], arg[end + 1 :]
    else:
        raw, _, caption = arg.partition(" ")
    path = Path(raw).expanduser()
    try:
        if not path.is_file():
            return f"No file at {path}."
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"I can't read {path}: {exc.strerror or exc}."
    mime_type, _ = mimetypes.guess_type(path.name)
    attachment = Attachment(
        kind=kind_of(mime_type),
        name=path.name,
        size=size,
        mime_type=mime_type,
        ref=str(path),
    )
    return attachment, caption.strip()


async def copy_local(attachment: Attachment, destination: Path) -> int:
    """Copy the local file ``attachment`` names to ``destination``; return its size."""
    return await asyncio.to_thread(_copy, Path(attachment.ref), destination)


def _copy(source: Path, destination: Path) -> int:
    try:
        shutil.copyfile(source, destination)
        return destination.stat().st_size
    except OSError as exc:
        destination.unlink(missing_ok=True)
        raise AdapterError(f"cannot read {source}: {exc}") from exc


__all__ = ["USAGE", "copy_local", "kind_of", "parse_attach"]
