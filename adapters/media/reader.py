"""The files users send, made ready for a prompt: images (Pillow), text files, audio length.

:class:`LocalMediaReader` is the :class:`core.media.MediaReader` the engine uses. All the
work is blocking (decoding a 12 MP photo, sniffing an encoding, parsing an audio container),
so each call runs on a worker thread; what a user did wrong comes back as a
:class:`core.errors.MediaError` whose sentence names the file.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import logging
import math
from pathlib import Path
from typing import Final

import charset_normalizer
import mutagen
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import FileTooLong, MediaError
from core.media import MediaBlob, content_hash, fit_size

__all__ = ["DRAFT_SLACK", "IMAGE_FORMATS", "JPEG_QUALITY", "MAX_IMAGE_PIXELS", "LocalMediaReader"]

_log = logging.getLogger(__name__)

IMAGE_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
"""What ``prepare_image`` decodes (MPO, a phone camera's JPEG, opens as JPEG)."""
MAX_IMAGE_PIXELS: Final = 89_478_485
"""Larger images are refused before decoding (a decompression bomb, or a 200 MP photo).

Pillow's own warning threshold (``Image.MAX_IMAGE_PIXELS``'s default), so that every image
it would warn about is refused here, without touching that process-wide setting.
"""
DRAFT_SLACK: Final = 0.9
"""A JPEG may decode at a DCT scale this much under :func:`core.media.fit_size`, unresampled."""
JPEG_QUALITY: Final = 85
"""What a photo is re-encoded at: no visible loss at the size a vision model sees."""

_BOMB_MESSAGE = "{name} is too large an image ({pixels} megapixels; the most I take is {limit})."
# Control characters that text has (tab, newline, form feed, carriage return, escape for ANSI
# colours in logs); others in quantity mean a binary file that merely decoded.
_TEXT_CONTROLS = frozenset("\t\n\x0b\x0c\r\x1b")
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class LocalMediaReader:
    """Decodes images with Pillow, reads text files, measures audio with mutagen.

    Stateless and safe to share; nothing to start or close.
    """

    async def prepare_image(self, path: Path, name: str) -> MediaBlob:
        """The image at ``path`` upright, downscaled to :func:`core.media.fit_size`, re-encoded.

        JPEG at quality 85, or PNG when it really has transparency; no metadata survives
        (EXIF, GPS position, comments). Animated images give their first frame.

        Raises:
            MediaError: not an image, a format not taken, corrupt or truncated data, or
                more than :data:`MAX_IMAGE_PIXELS` pixels.
        """
        return await asyncio.to_thread(_prepare_image, path, name)

    async def read_text(self, path: Path, name: str, max_chars: int) -> str:
        """The text of the file at ``path``, with every newline as a line feed.

        UTF-8 (with or without a BOM) and UTF-16/32 with a BOM are read as such; other
        encodings (Latin-1, Windows-1252, Shift JIS...) are detected.

        Raises:
            FileTooLong: more than ``max_chars`` characters.
            MediaError: a binary file, or text in no encoding that could be recognised.
        """
        return await asyncio.to_thread(_read_text, path, name, max_chars)

    async def audio_seconds(self, path: Path, mime_type: str | None) -> float | None:
        """The length of an OGG/Opus, MP3, M4A, FLAC or WAV file; ``None`` when unknown.

        The container's header is read (no decoding); WebM and anything unrecognised or
        damaged is ``None``, and the speech-to-text server judges those itself.
        """
        return await asyncio.to_thread(_audio_seconds, path, mime_type)


def _prepare_image(path: Path, name: str) -> MediaBlob:
    shown = name or path.name
    try:
        image = Image.open(path, formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow raises over twice its limit; between, it warns (an exception where warnings
        # are errors, as in the tests), and the check below refuses.
        _log.info("refused %s: %s", shown, exc)
        raise MediaError(f"{shown} is too large an image to look at.") from exc
    except UnidentifiedImageError as exc:
        raise MediaError(
            f"{shown} isn't an image I can read (I take JPEG, PNG, GIF, WebP, BMP, TIFF and AVIF)."
        ) from exc
    except OSError as exc:
        raise MediaError(f"I couldn't read the image {shown}: the file is damaged.") from exc
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise MediaError(
                _BOMB_MESSAGE.format(
                    name=shown,
                    pixels=round(width * height / 1_000_000),
                    limit=round(MAX_IMAGE_PIXELS / 1_000_000),
                )
            )
        try:
            return _downscale(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # Pillow reports truncated or corrupt data as OSError, bad headers as
            # SyntaxError or ValueError.
            _log.info("could not decode %s: %s", shown, exc)
            raise MediaError(f"I couldn't read the image {shown}: the file is damaged.") from exc


def _downscale(image: Image.Image) -> MediaBlob:
    # fit_size is symmetric, so the target may be computed before the EXIF rotation, and
    # turning the small image upright is cheaper than turning the large one.
    target = fit_size(*image.size)
    if image.format == "JPEG":
        # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: a 12 MP photo decodes in a
        # fraction of the time and memory. A scale landing a little under the target
        # (4032x3024 at 1/4 is 1008x756 for 1024x768: same tiles, same tokens) is taken
        # as it is, which saves resampling, the costliest step left.
        image.draft("RGB", (math.ceil(target[0] * DRAFT_SLACK), math.ceil(target[1] * DRAFT_SLACK)))
        if image.width <= target[0] and image.height <= target[1]:
            target = image.size
    alpha = _has_alpha(image)
    small = image.convert("RGBA" if alpha else "RGB")
    if small.size != target:
        small = small.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    small.info["exif"] = image.info.get("exif", b"")  # for exif_transpose
    upright = ImageOps.exif_transpose(small)
    upright.info = {}  # no EXIF, GPS position, ICC profile, comments or text chunks go out
    out = io.BytesIO()
    if alpha:
        upright.save(out, format="PNG", compress_level=6)
        mime_type = "image/png"
    else:
        upright.save(out, format="JPEG", quality=JPEG_QUALITY)
        mime_type = "image/jpeg"
    data = out.getvalue()
    return MediaBlob(content_hash(data), mime_type, data, upright.width, upright.height)


def _has_alpha(image: Image.Image) -> bool:
    """Whether any pixel of ``image`` is less than opaque (an opaque alpha channel is none)."""
    if (image.mode == "P" and "transparency" in image.info) or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "RGBa", "La"):
        return False
    low, _high = image.getchannel("A").getextrema()
    return isinstance(low, int | float) and low < 255


def _read_text(path: Path, name: str, max_chars: int) -> str:
    shown = name or path.name
    # No encoding takes more than 4 bytes a character: a longer file is over the limit
    # without reading (or detecting) all of it.
    limit_bytes = 4 * max_chars + 4
    with path.open("rb") as file:
        data = file.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise FileTooLong(shown, max_chars)
    text = _decode(data, shown)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > max_chars:
        raise FileTooLong(shown, max_chars)
    return text


def _decode(data: bytes, shown: str) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _text_or_refuse(data.decode(encoding), shown)
            except UnicodeDecodeError as exc:
                raise MediaError(
                    f"{shown} isn't readable text: its {encoding} is damaged."
                ) from exc
    if b"\x00" in data:
        raise MediaError(f"{shown} isn't a text file (it holds binary data).")
    try:
        return _text_or_refuse(data.decode("utf-8"), shown)
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise MediaError(
            f"{shown} isn't UTF-8 text, and I couldn't tell its encoding; save it as UTF-8 "
            "and send it again."
        )
    _log.debug("%s: read as %s", shown, best.encoding)
    return _text_or_refuse(str(best), shown)


def _text_or_refuse(text: str, shown: str) -> str:
    controls = sum(1 for char in text if char < " " and char not in _TEXT_CONTROLS)
    if controls > max(2, len(text) // 100):
        raise MediaError(f"{shown} isn't a text file (it holds binary data).")
    return text.removeprefix("\ufeff")


def _audio_seconds(path: Path, mime_type: str | None) -> float | None:
    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError) as exc:
        _log.info("could not read the length of %s audio: %s", mime_type or "unknown", exc)
        return None
    info = getattr(audio, "info", None)
    length = getattr(info, "length", None)
    if not isinstance(length, int | float) or length <= 0:
        return None
    return float(length)
