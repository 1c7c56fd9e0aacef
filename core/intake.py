"""What a message's photos, voice notes and files become: the text and images of a user turn.

The engine hands :class:`Intake` every message that carries attachments and is not a
command, after the allowlist. In order:

1. :meth:`Intake.refusal` checks the limits before anything is downloaded: the size the
   platform announced against ``MAX_FILE_MB``, a voice note's length against
   ``STT_MAX_SECONDS``, a voice note without speech-to-text configured; a refused message
   is named with its size or length, and nothing of it is stored.
2. :meth:`Intake.take` downloads each file through the channel (``core.ports.FileSource``)
   into a private temporary folder, removed afterwards, and reads it:

   - a photo is downscaled by the ``MediaReader`` and saved once per content hash
     (``MemoryStore.save_media``); the turn records it (a :class:`~core.media.StoredAttachment`
     in ``extra["attachments"]``, its hash in ``NewMessage.media``) and the prompt sends it to
     vision models. A model that can't see images gets the caption alone, and the user one
     sentence saying so. The photo is still stored with the caption: switching to a vision
     model with ``/model`` then shows it, as the user would expect of a photo they sent. A
     photo without a caption to such a model is only answered with the sentence: nothing
     would be left to answer, and nothing is stored;
   - a voice note is transcribed (``Transcriber``); the user sees what was heard in one line
     and the transcript (after the caption) is the text stored and answered;
   - a text file is read (``MediaReader.read_text``, at most ``MAX_FILE_CHARS``) into the
     turn as a fenced block under its name, after the typed text (``MAX_INPUT_CHARS``
     applies to the typed text alone); other files are not read (the ``/kb add`` hint).

Any failure (``MediaError``, a refused download, a transcription error) ends the message with
one short sentence; nothing of it is stored, and the bot keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from core.admission import Admission
from core.errors import AdapterError, BackendError, FileTooLong, MediaError
from core.kb_chat import FILE_HINT, upload_name
from core.media import (
    MediaReader,
    StoredAttachment,
    Transcriber,
    human_size,
    image_tokens,
    is_text_file,
)
from core.notices import notify
from core.ports import FileSource, LLMBackend, MemoryStore, ReplyChannel
from core.sessions import Sessions
from core.settings import MediaSettings
from core.types import (
    Attachment,
    AttachmentKind,
    ConversationKey,
    IncomingMessage,
    MessageStatus,
    NewMessage,
    Role,
)

_log = logging.getLogger(__name__)

NO_STT: Final = (
    "Voice notes need speech-to-text, which this bot doesn't have: its operator can set "
    "STT_BASE_URL (or use OpenAI itself). Please type your message instead."
)
NO_FILES: Final = "I can't fetch files on this platform."
NO_READER: Final = "I can't look at photos on this bot. Please send your question as text."
NOTHING_HEARD: Final = "I couldn't make out any words in that voice note. Please try again."
TRANSCRIPTION_FAILED: Final = (
    "I couldn't transcribe that voice note just now. Please try again, or type your message."
)
PHOTO_ONLY: Final = "(photo)"
"""The text stored for a photo sent without a caption (a turn always has some text)."""

_MB = 1024 * 1024
_HEARD_CHARS = 300  # how much of a transcript the "🎤 …" line shows


def fenced(name: str, text: str) -> str:
    """``text`` as a Markdown code block under its file name, with a fence it can't close."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{name}:\n{fence}\n{text.rstrip()}\n{fence}"


def _length(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


@dataclass(slots=True)
class TurnInput:
    """What a message with attachments becomes: the user turn to store and answer.

    Attributes:
        text: the user message's text (caption, transcript, files' contents).
        attachments: what the stored message records about its files.
        media: the content hashes of the stored images it shows.
    """

    text: str
    attachments: list[StoredAttachment] = field(default_factory=list)
    media: list[str] = field(default_factory=list)

    def messages(
        self, msg: IncomingMessage, tokens: int, tokenizer: str, owner: str
    ) -> list[NewMessage]:
        """The user message to store, and its reply's placeholder (in progress by ``owner``)."""
        extra: dict[str, Any] = {"author_name": msg.user_name} if msg.user_name else {}
        if self.attachments:
            extra["attachments"] = [a.as_json() for a in self.attachments]
        user = NewMessage(
            role=Role.USER,
            content=self.text,
            author_id=msg.user_id,
            token_count=tokens,
            tokenizer=tokenizer,
            extra=extra or None,
            platform_chat_id=msg.chat_id,
            platform_message_ids=(msg.message_id,) if msg.message_id else (),
            media=tuple(self.media),
        )
        reply = NewMessage(
            role=Role.ASSISTANT, content="", status=MessageStatus.IN_PROGRESS, owner=owner
        )
        return [user, reply]


class Intake:
    """Limits, downloads and reading of the files users send (see the module doc).

    Args:
        backend: which models see images, and their names for the sentence.
        store: where photos are saved.
        admission: the typed text's size limit, and the rate limits a message counts in.
        sessions: the model that answers the conversation.
        settings: ``MAX_FILE_MB``, ``MAX_FILE_CHARS``, ``STT_MAX_SECONDS``.
        reader: decodes photos and reads text files (``None``: neither is possible).
        transcriber: speech to text (``None``: voice notes are refused with a sentence).
        kb_on: whether the bot has a knowledge base (the ``/kb add`` hint).
    """

    def __init__(
        self,
        *,
        backend: LLMBackend,
        store: MemoryStore,
        admission: Admission,
        sessions: Sessions,
        settings: MediaSettings,
        reader: MediaReader | None,
        transcriber: Transcriber | None,
        kb_on: Callable[[], bool],
    ) -> None:
        self._backend = backend
        self._store = store
        self._admission = admission
        self._sessions = sessions
        self._settings = settings
        self._reader = reader
        self._transcriber = transcriber
        self._kb_on = kb_on

    async def turn(
        self, key: ConversationKey, msg: IncomingMessage, typed: str, out: ReplyChannel
    ) -> TurnInput | None:
        """The whole intake of a message with files (the engine's entry): ``None`` if refused.

        The typed text's size and the files' limits first, then the rate limits (the message
        counts once, like a text message), then the downloads.
        """
        refusal = self._admission.size_refusal(typed) if typed else None
        refusal = refusal or self.refusal(msg)
        if refusal is not None:
            await notify(out, refusal)
            return None
        if not await self._admission.within_limits(msg, out):
            return None
        model = self._sessions.model_for(await self._sessions.preferences(key))
        return await self.take(msg, typed, model, out)

    # --- before downloading ----------------------------------------------------------------

    def refusal(self, msg: IncomingMessage) -> str | None:
        """Why the message's files are refused before any download, or ``None``."""
        settings = self._settings
        for attachment in msg.attachments:
            name = upload_name(attachment)
            if attachment.size is not None and attachment.size > settings.max_file_mb * _MB:
                return (
                    f'"{name}" is too big ({human_size(attachment.size)}; '
                    f"I take files of at most {settings.max_file_mb:g} MB)."
                )
            if attachment.kind != AttachmentKind.VOICE:
                continue
            if self._transcriber is None:
                return NO_STT
            if attachment.duration is not None and attachment.duration > settings.stt_max_seconds:
                return self._too_long(attachment.duration)
        return None

    def _too_long(self, seconds: float) -> str:
        limit = _length(self._settings.stt_max_seconds)
        return f"That voice note is too long ({_length(seconds)}; I transcribe at most {limit})."

    # --- reading ---------------------------------------------------------------------------

    async def take(
        self, msg: IncomingMessage, typed: str, model: str, out: ReplyChannel
    ) -> TurnInput | None:
        """The user turn the message's files and ``typed`` text make, or ``None``: told why.

        Call after :meth:`refusal` and the rate limits.
        """
        photos = [a for a in msg.attachments if a.kind == AttachmentKind.PHOTO]
        voices = [a for a in msg.attachments if a.kind == AttachmentKind.VOICE]
        texts: list[Attachment] = []
        others: list[Attachment] = []
        for a in msg.attachments:
            if a.kind not in (AttachmentKind.PHOTO, AttachmentKind.VOICE):
                readable = self._reader is not None and is_text_file(a.name, a.mime_type)
                (texts if readable else others).append(a)
        if photos and self._reader is None:
            await notify(out, NO_READER)
            return None
        for attachment in others:
            await notify(out, self._unread(attachment))
        if photos and not self._backend.supports_images(model):
            await notify(out, self._blind(model, bool(typed or voices or texts)))
            if not (typed or voices or texts):
                return None
        if not (voices or texts or photos):
            return TurnInput(typed) if typed else None
        if not isinstance(out, FileSource):
            await notify(out, NO_FILES)
            return None
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="chinwag-media-"))
        try:
            return await self._read(msg, typed, out, out, folder, voices, texts, photos)
        except MediaError as exc:
            _log.info("refused a %s file: %s", msg.platform, exc)
            await notify(out, exc.user_message)
            return None
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    def _unread(self, attachment: Attachment) -> str:
        name = upload_name(attachment)
        if self._kb_on():
            return FILE_HINT
        if self._reader is None:
            return f'I can\'t read "{name}" here. Please send your question as text.'
        return f'I can\'t read "{name}": I read photos, voice notes and text files.'

    def _blind(self, model: str, answered: bool) -> str:
        models = self._backend.models()
        seeing = [m for m in models if self._backend.supports_images(m)]
        if not seeing:
            nor = "nor can this bot's other models"
            if answered:
                return f"{model} can't see images ({nor}), so I'll answer your text only."
            return f"{model} can't see images, {nor}: please describe it in words."
        switch = f"switch with /model to one that can ({', '.join(seeing[:4])})"
        if answered:
            return f"{model} can't see images, so I'll answer your text only: {switch}."
        return f"{model} can't see images: {switch}, then send the photo again."

    async def _read(
        self,
        msg: IncomingMessage,
        typed: str,
        out: ReplyChannel,
        files: FileSource,
        folder: Path,
        voices: Sequence[Attachment],
        texts: Sequence[Attachment],
        photos: Sequence[Attachment],
    ) -> TurnInput:
        turn = TurnInput(typed)
        parts = [typed] if typed else []
        for number, attachment in enumerate(voices):
            path = await self._download(msg, files, attachment, folder, number)
            heard, seconds = await self._transcribe(attachment, path)
            await notify(out, self._heard(heard))
            parts.append(heard)
            turn.attachments.append(
                StoredAttachment(
                    kind=attachment.kind,
                    name=attachment.name,
                    size=path.stat().st_size,
                    mime_type=attachment.mime_type,
                    seconds=seconds,
                )
            )
        for number, attachment in enumerate(texts, start=len(voices)):
            text, size = await self._read_text(msg, files, attachment, folder, number)
            parts.append(fenced(upload_name(attachment), text))
            turn.attachments.append(
                StoredAttachment(
                    kind=AttachmentKind.DOCUMENT,
                    name=attachment.name,
                    size=size,
                    mime_type=attachment.mime_type,
                    chars=len(text),
                )
            )
        for number, attachment in enumerate(photos, start=len(voices) + len(texts)):
            stored = await self._photo(msg, files, attachment, folder, number)
            turn.attachments.append(stored)
            if stored.sha256 is not None:
                turn.media.append(stored.sha256)
        turn.text = "\n\n".join(parts) or PHOTO_ONLY
        return turn

    async def _download(
        self,
        msg: IncomingMessage,
        out: FileSource,
        attachment: Attachment,
        folder: Path,
        number: int,
    ) -> Path:
        """Fetch one file into ``folder`` (under a plain numbered name: never the user's)."""
        path = folder / f"{number}"
        name = upload_name(attachment)
        try:
            await out.download(attachment, path)
        except AdapterError as exc:
            _log.warning("could not download a %s file: %s", msg.platform, exc, exc_info=True)
            raise MediaError(f'I could not fetch "{name}": {exc.user_message}') from exc
        return path

    async def _transcribe(self, attachment: Attachment, path: Path) -> tuple[str, float | None]:
        transcriber, reader = self._transcriber, self._reader
        assert transcriber is not None  # refused before the download otherwise
        seconds = attachment.duration
        if seconds is None and reader is not None:
            seconds = await reader.audio_seconds(path, attachment.mime_type)
        if seconds is not None and seconds > self._settings.stt_max_seconds:
            raise MediaError(self._too_long(seconds))
        try:
            name = upload_name(attachment)
            heard = await transcriber.transcribe(path, name, attachment.mime_type)
        except BackendError as exc:
            _log.warning("speech-to-text failed: %s", exc, exc_info=True)
            raise MediaError(TRANSCRIPTION_FAILED) from exc
        heard = " ".join(heard.split())
        if not heard:
            raise MediaError(NOTHING_HEARD)
        return heard, seconds

    @staticmethod
    def _heard(text: str) -> str:
        if len(text) > _HEARD_CHARS:
            text = text[: _HEARD_CHARS - 1].rstrip() + "…"
        return f"🎤 “{text}”"

    async def _read_text(
        self,
        msg: IncomingMessage,
        out: FileSource,
        attachment: Attachment,
        folder: Path,
        number: int,
    ) -> tuple[str, int]:
        reader = self._reader
        assert reader is not None
        path = await self._download(msg, out, attachment, folder, number)
        name = upload_name(attachment)
        limit = self._settings.max_file_chars
        try:
            return await reader.read_text(path, name, limit), path.stat().st_size
        except FileTooLong as exc:
            # Too long to read into a turn, not too long for the documents' search.
            if self._kb_on() and "/kb add" not in exc.user_message:
                raise MediaError(f"{exc.user_message} {FILE_HINT}") from exc
            raise

    async def _photo(
        self,
        msg: IncomingMessage,
        out: FileSource,
        attachment: Attachment,
        folder: Path,
        number: int,
    ) -> StoredAttachment:
        reader = self._reader
        assert reader is not None
        path = await self._download(msg, out, attachment, folder, number)
        blob = await reader.prepare_image(path, upload_name(attachment))
        await self._store.save_media(blob)
        return StoredAttachment(
            kind=AttachmentKind.PHOTO,
            name=attachment.name,
            size=path.stat().st_size,
            mime_type=blob.mime_type,
            sha256=blob.sha256,
            width=blob.width,
            height=blob.height,
            tokens=image_tokens(blob.width, blob.height),
        )


__all__ = ["NO_STT", "PHOTO_ONLY", "Intake", "TurnInput", "fenced", "is_text_file"]
