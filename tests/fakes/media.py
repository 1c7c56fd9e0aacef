"""In-process fakes of the media ports, and a recording channel that serves files.

- :class:`FakeReader` (``MediaReader``): an "image" is any bytes starting ``IMG WxH\\n``
  (kept as they are, with that size); anything else is corrupt. Text files decode as UTF-8.
- :class:`FakeTranscriber` (``Transcriber``): answers a scripted transcript, or fails.
- :class:`FileChannel`: a ``RecordingChannel`` that is a ``FileSource``: it serves the bytes
  registered under an attachment's ``ref`` and records every download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.errors import AdapterError, BackendUnavailable, FileTooLong, MediaError
from core.media import MediaBlob, content_hash
from core.types import Attachment
from tests.fakes.channel import RecordingChannel


def image_bytes(width: int, height: int, fill: bytes = b"x") -> bytes:
    """A fake image FakeReader decodes as ``width`` x ``height``."""
    return f"IMG {width}x{height}\n".encode() + fill * 64


class FakeReader:
    """A ``MediaReader`` without Pillow (see the module doc)."""

    def __init__(self) -> None:
        self.prepared: list[str] = []

    async def prepare_image(self, path: Path, name: str) -> MediaBlob:
        data = path.read_bytes()
        head, _, _ = data.partition(b"\n")
        if not head.startswith(b"IMG "):
            raise MediaError(f'"{name}" is not an image I can read.')
        width, height = (int(n) for n in head[4:].decode().split("x"))
        self.prepared.append(name)
        return MediaBlob(content_hash(data), "image/jpeg", data, width, height)

    async def read_text(self, path: Path, name: str, max_chars: int) -> str:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MediaError(f'"{name}" is not a UTF-8 text file.') from exc
        if len(text) > max_chars:
            raise FileTooLong(name, max_chars)
        return text

    async def audio_seconds(self, path: Path, mime_type: str | None) -> float | None:
        return None


class FakeTranscriber:
    """A ``Transcriber`` with a scripted transcript; ``fail`` makes it raise."""

    def __init__(self, transcript: str = "what is the capital of France") -> None:
        self.transcript = transcript
        self.fail = False
        self.heard: list[tuple[str, int]] = []

    async def transcribe(self, path: Path, name: str, mime_type: str | None) -> str:
        if self.fail:
            raise BackendUnavailable("the speech-to-text server is down")
        self.heard.append((name, path.stat().st_size))
        return self.transcript

    async def aclose(self) -> None:
        return None


@dataclass
class FileChannel(RecordingChannel):
    """A recording channel whose platform serves the files registered in ``served``."""

    served: dict[str, bytes] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def attach(
        self,
        kind: str,
        name: str,
        data: bytes,
        mime_type: str | None = None,
        *,
        size: int | None = -1,
        duration: float | None = None,
    ) -> Attachment:
        """Serve ``data`` and return the attachment a platform would announce for it."""
        ref = f"ref-{len(self.served) + 1}"
        self.served[ref] = data
        announced = len(data) if size == -1 else size
        return Attachment(kind, name, announced, mime_type, ref, duration)

    async def download(
        self, attachment: Attachment, destination: Path, *, max_bytes: int | None = None
    ) -> int:
        self.downloads.append(attachment.ref)
        data = self.served.get(attachment.ref)
        if data is None:
            raise AdapterError("the platform no longer has that file")
        destination.write_bytes(data)
        self.paths.append(destination)
        return len(data)
