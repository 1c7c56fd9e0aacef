"""Photos, voice notes and text files in a conversation: what core knows of them.

The vendor work (decoding and downscaling images with Pillow, reading text files, asking a
speech-to-text server) happens in adapters behind this module's two ports,
:class:`MediaReader` and :class:`Transcriber`; this module also holds the neutral parts every
side agrees on:

- :class:`MediaBlob`, an image as the store keeps it (once per content hash);
- :func:`image_tokens`, what an image costs in a prompt, counted as OpenAI's API counts it;
- :func:`is_vision_model`, the built-in list of model families that accept images;
- :class:`StoredAttachment`, what a stored message records about each file it came with
  (in ``extra["attachments"]``), read back by the prompt, ``/history`` and ``/export``;
- :func:`classify` and :func:`is_text_file`: which file is a photo, a voice note, a text
  file to read into the turn, or another document.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Protocol

from core.types import AttachmentKind

IMAGE_MAX_SIDE = 2048
"""Images are downscaled to fit a square of this many pixels (as the API does for them)."""
IMAGE_MAX_SHORT_SIDE = 768
"""...and so that their shorter side is at most this (the API's next step: more is waste)."""

_TILE = 512
_TOKENS_PER_TILE = 170
_BASE_TOKENS = 85


@dataclass(frozen=True, slots=True)
class MediaBlob:
    """An image as stored: encoded bytes, once per content hash.

    Attributes:
        sha256: the hex SHA-256 of ``data`` (the key; see :func:`content_hash`).
        mime_type: ``"image/jpeg"`` or ``"image/png"``.
        data: the encoded image, already downscaled.
        width: its width in pixels.
        height: its height in pixels.
    """

    sha256: str
    mime_type: str
    data: bytes
    width: int
    height: int

    def __repr__(self) -> str:  # never dump megabytes into a log line or a test failure
        return f"MediaBlob({self.sha256[:12]}, {self.mime_type}, {self.width}x{self.height})"


def content_hash(data: bytes) -> str:
    """The key a blob is stored under: the hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def fit_size(width: int, height: int) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` is downscaled to (never upscaled).

    First to fit :data:`IMAGE_MAX_SIDE` square, then so that the shorter side is at most
    :data:`IMAGE_MAX_SHORT_SIDE`: what OpenAI's API does to an image before counting it,
    so a larger image would cost upload time and nothing else.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"not an image size: {width}x{height}")
    scale = min(1.0, IMAGE_MAX_SIDE / max(width, height))
    scale = min(scale, IMAGE_MAX_SHORT_SIDE / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def image_tokens(width: int, height: int) -> int:
    """The prompt tokens an image costs, as OpenAI's API counts a ``detail: high`` image.

    The image is scaled as :func:`fit_size` does, then cut into 512-pixel tiles: 170
    tokens a tile plus 85 (GPT-4o's figures; other vision models charge about as much, and
    a budget that errs high never overflows the context).
    """
    w, h = fit_size(width, height)
    tiles = math.ceil(w / _TILE) * math.ceil(h / _TILE)
    return _TOKENS_PER_TILE * tiles + _BASE_TOKENS


# Families of models that accept images, matched at the start of the model id's last path
# part (OpenRouter's ``openai/gpt-4o`` is ``gpt-4o``, vLLM's ``Qwen/Qwen2.5-VL-7B-Instruct``
# is ``Qwen2.5-VL-7B-Instruct``), case-insensitively. Listed in the README. The lookaheads
# keep out the text-only (or audio-only) models of the same families: gpt-4o-audio/realtime/
# transcribe/tts, gpt-4-turbo-preview, o1-mini, o1-preview, o3-mini, Gemma 3 1B and 270M,
# Gemini's TTS and embedding models, Ministral 3B (2024), Mistral Small 3.0.
VISION_FAMILIES: tuple[str, ...] = (
    r"gpt-4o(?!(-mini)?-(audio|realtime|transcribe|tts|search))",
    r"chatgpt-4o",
    r"gpt-4\.1",
    r"gpt-4\.5",
    r"gpt-4-turbo(?!-preview)",
    r"gpt-4(-\d{4})?-vision",
    r"gpt-5",
    r"o1(?!-mini|-preview)",
    r"o3(?!-mini)",
    r"o4-mini",
    r"claude-(3|(sonnet|opus|haiku)-[4-9])",
    r"claude-[0-9.]+-(sonnet|opus|haiku)",
    r"gemini(?!.*(-tts|embedding))",
    r"gemma-?3(?![:-](1b|270m))",
    r"paligemma",
    r"(bak)?llava",
    r"qwen[0-9.]*-?(vl|omni)",
    r"qvq",
    r"pixtral",
    r"llama-?3\.2-?(11|90)b-?vision|llama-?3\.2-vision",
    r"llama-?4",
    r"minicpm-?[vo]",
    r"moondream",
    r"internvl",
    r"phi-?3(\.5)?-vision",
    r"phi-?4-multimodal",
    r"mistral-small-?(3\.[12]|2503|2506|latest)",
    r"mistral-medium-?(3|2505|2508|latest)",
    r"mistral-large-?3",
    r"ministral-?3(?!b)",
    r"granite[0-9.]*-?vision",
    r"smolvlm",
    r"idefics",
    r"cogvlm",
    r"glm-4(\.[0-9])?v",
    r"grok-(2-vision|4)",
    # Whatever else says so in its name: aya-vision, kimi-vl, deepseek-vl2, ...
    r".*vision",
    r".*[-_]vl(\d|[-_.:]|$)",
)
_VISION = re.compile("|".join(f"(?:{family})" for family in VISION_FAMILIES), re.IGNORECASE)


def is_vision_model(model: str, extra: Iterable[str] = ()) -> bool:
    """Whether ``model`` accepts images: one of ``extra``, or a known family.

    ``extra`` are the operator's own names (``OPENAI_VISION_MODELS``): exact ids, or
    prefixes ending in ``*`` (``*`` alone: every model). Both compare case-insensitively,
    as the families do.
    """
    wanted = model.strip().lower()
    for name in extra:
        name = name.strip().lower()
        if not name:
            continue
        if name.endswith("*") and wanted.startswith(name[:-1]):
            return True
        if name == wanted:
            return True
    base = wanted.rsplit("/", 1)[-1]
    return _VISION.match(base) is not None


@dataclass(frozen=True, slots=True)
class StoredAttachment:
    """What a stored user message records about one file it came with.

    Attributes:
        kind: ``"photo"``, ``"voice"`` or ``"document"`` (``AttachmentKind``).
        name: the file's name as sent (may be empty).
        size: its size in bytes as received.
        mime_type: its MIME type, when known.
        sha256: for a photo, the key of its stored :class:`MediaBlob`.
        width: for a photo, the stored (downscaled) width.
        height: for a photo, the stored height.
        tokens: for a photo, what it costs in a prompt (:func:`image_tokens`).
        seconds: for a voice note, its length.
        chars: for a text file, how many characters of it went into the turn.
    """

    kind: str
    name: str
    size: int
    mime_type: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    tokens: int | None = None
    seconds: float | None = None
    chars: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON object kept in ``extra["attachments"]`` (``None`` fields left out)."""
        return {key: value for key in self.__slots__ if (value := getattr(self, key)) is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredAttachment:
        """Read one entry of ``extra["attachments"]`` back; unknown keys are ignored."""
        known = {key: data[key] for key in cls.__slots__ if key in data}
        known.setdefault("kind", "document")
        known.setdefault("name", "")
        known.setdefault("size", 0)
        return cls(**known)


def attachments_of(extra: Mapping[str, Any] | None) -> tuple[StoredAttachment, ...]:
    """The attachments a stored message's ``extra`` records (none for most messages)."""
    if not extra:
        return ()
    entries = extra.get("attachments")
    if not isinstance(entries, Sequence):
        return ()
    return tuple(StoredAttachment.from_json(e) for e in entries if isinstance(e, Mapping))


def describe(attachment: StoredAttachment) -> str:
    """One short line naming an attachment for ``/history`` and ``/export``.

    For example ``photo plant.jpg (1024x768, 182 KB)`` or ``voice note (0:42)``.
    """
    name = f" {attachment.name}" if attachment.name else ""
    details: list[str] = []
    if attachment.width and attachment.height:
        details.append(f"{attachment.width}x{attachment.height}")
    if attachment.seconds is not None:
        minutes, seconds = divmod(round(attachment.seconds), 60)
        details.append(f"{minutes}:{seconds:02d}")
    details.append(human_size(attachment.size))
    kind = "voice note" if attachment.kind == "voice" else attachment.kind
    if attachment.kind == "document":
        kind = "file"
    return f"{kind}{name} ({', '.join(details)})"


def human_size(size: int) -> str:
    """``532 bytes``, ``182 KB``, ``2.4 MB``: a size a person reads at a glance."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


TEXT_EXTENSIONS: frozenset[str] = _words(
    # Prose and data.
    ".txt .text .md .markdown .rst .adoc .org .tex .csv .tsv .json .jsonl .ndjson .yaml .yml"
    " .toml .ini .cfg .conf .env .properties .xml .html .htm .svg .log .srt .vtt .ics .vcf"
    # Code.
    " .py .pyi .js .mjs .cjs .ts .tsx .jsx .java .kt .kts .scala .go .rs .c .h .cc .cpp"
    " .cxx .hpp .hh .cs .fs .swift .m .mm .rb .php .pl .pm .lua .r .jl .dart .ex .exs .erl"
    " .hs .ml .clj .el .vim .sh .bash .zsh .fish .ps1 .bat .cmd .sql .graphql .proto .css"
    " .scss .sass .less .vue .svelte .gradle .cmake .mk .dockerfile .tf .nix .patch .diff"
)
"""File name endings read into the turn as text (``MAX_FILE_CHARS``), whatever the MIME type."""

TEXT_NAMES: frozenset[str] = _words(
    "readme license licence changelog makefile dockerfile containerfile procfile gemfile"
    " rakefile vagrantfile justfile .gitignore .dockerignore .editorconfig"
)
"""Whole file names (lower case) of text files that have no telling extension."""

_TEXT_MIME_TYPES = _words(
    "application/json application/ld+json application/x-ndjson application/xml"
    " application/yaml application/x-yaml application/toml application/javascript"
    " application/x-javascript application/typescript application/x-sh application/x-python"
    " application/x-python-code application/sql application/x-tex application/x-subrip"
    " image/svg+xml"
)
_IMAGE_EXTENSIONS = _words(".jpg .jpeg .jpe .png .gif .webp .bmp .tif .tiff .avif")
_AUDIO_EXTENSIONS = _words(
    ".ogg .oga .opus .mp3 .m4a .aac .wav .flac .webm .weba .amr .mpga .mpeg .3gp"
)


def _mime(mime_type: str | None) -> str:
    return (mime_type or "").split(";", 1)[0].strip().lower()


def is_text_file(name: str, mime_type: str | None) -> bool:
    """Whether a file is text to read into the turn (by its name first, then its MIME type).

    ``notes.md``, ``data.csv``, ``main.py``, ``Makefile``, or any ``text/*`` type. The
    reader still checks the bytes: a "text" file that isn't is refused there.
    """
    path = PurePath(name.strip().lower())
    if path.suffix in TEXT_EXTENSIONS or path.name in TEXT_NAMES:
        return True
    mime = _mime(mime_type)
    return mime.startswith("text/") or mime in _TEXT_MIME_TYPES or mime.endswith(("+json", "+xml"))


def classify(name: str, mime_type: str | None) -> AttachmentKind:
    """What the bot does with a file a user sent: look at it, transcribe it, or read it.

    ``image/*`` (or an image extension with no telling MIME type) is a
    :attr:`~AttachmentKind.PHOTO`, ``audio/*`` (or an audio extension likewise) a
    :attr:`~AttachmentKind.VOICE`, anything else a :attr:`~AttachmentKind.DOCUMENT` (see
    :func:`is_text_file` for which documents are read). Platform voice notes are voice
    whatever their name: adapters set that kind themselves. An SVG is a document (text):
    vision models take raster images only.
    """
    mime = _mime(mime_type)
    suffix = PurePath(name.strip().lower()).suffix
    if mime == "image/svg+xml" or suffix == ".svg":
        return AttachmentKind.DOCUMENT
    unknown = mime in ("", "application/octet-stream")
    if mime.startswith("image/") or (unknown and suffix in _IMAGE_EXTENSIONS):
        return AttachmentKind.PHOTO
    if mime.startswith("audio/") or (unknown and suffix in _AUDIO_EXTENSIONS):
        return AttachmentKind.VOICE
    return AttachmentKind.DOCUMENT


class MediaReader(Protocol):
    """Turns the files users send into what a prompt holds (Pillow and friends, in adapters).

    Every method raises ``core.errors.MediaError`` with a sentence naming the file and the
    problem (corrupt, unsupported format, too large) when it can't.
    """

    async def prepare_image(self, path: Path, name: str) -> MediaBlob:
        """Decode the image at ``path``, turn it upright and downscale it for vision models.

        The result is re-encoded (JPEG, or PNG when it has transparency) at most
        :func:`core.media.fit_size` of the original, with no metadata (no GPS position).
        """
        ...

    async def read_text(self, path: Path, name: str, max_chars: int) -> str:
        """The text of the file at ``path``: UTF-8 (other encodings detected or refused).

        Raises ``MediaError`` when it is longer than ``max_chars`` characters (naming the
        limit) or is not text.
        """
        ...

    async def audio_seconds(self, path: Path, mime_type: str | None) -> float | None:
        """The length of the audio file at ``path`` in seconds, ``None`` when unknown."""
        ...


class Transcriber(Protocol):
    """Speech to text (an OpenAI-compatible ``/v1/audio/transcriptions`` endpoint)."""

    async def transcribe(self, path: Path, name: str, mime_type: str | None) -> str:
        """The words spoken in the audio file at ``path``.

        Raises ``core.errors.BackendError`` subclasses when the server fails, and
        ``MediaError`` when it refuses the file.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...
