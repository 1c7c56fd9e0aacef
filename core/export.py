"""Render a user's stored history for ``/export`` and ``chinwag export``.

A tool round (an assistant message with ``extra["tool_calls"]``) is shown with each call
and its result: in Markdown as one readable line per call, in JSON as a ``tool_calls`` list
(present only on such messages) whose items carry their ``result`` (``null`` while a call
waits for a confirmation). Secret-looking argument values are masked, as in the audit.

A reply answered from the knowledge base is followed by its ``Sources:`` (stored with it,
``extra["sources"]``; a ``sources`` list in JSON). The user's own documents (their user
scope of the knowledge base) follow the conversations, with every chunk's text.

A message that came with photos, voice notes or files lists them (kind, name, size; in JSON
an ``attachments`` list with their stored details, a photo's ``sha256`` among them).

When the history has stored images, :class:`Export` bundles them: :meth:`Export.zip` is one
ZIP file holding the document (``chinwag-export.md`` or ``.json``) and every image once as
``images/<n>-<name>.<jpg|png>``, the document linking each photo to its file (Markdown: an
image link; JSON: a ``file`` key on the attachment). Without images the export is the
document alone, as it always was.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.kb import sources_of
from core.knowledge import ChunkDraft, DocumentInfo, KbScope, KnowledgeStore
from core.media import MediaBlob, StoredAttachment, attachments_of, describe
from core.ports import MemoryStore
from core.tools import redact_secrets
from core.types import ExportedConversation, MessageStatus, Role, StoredMessage

FORMATS = ("md", "json")

IMAGES_DIR = "images"
"""The folder of the bundled images inside an export's ZIP file."""

UPLOAD_LIMITS: dict[str, int] = {
    "telegram": 50 * 1000 * 1000,  # the Bot API's limit for files a bot sends
    "discord": 10 * 1024 * 1024,  # a bot's limit in a server without boosts (and in DMs)
}
"""The largest file a bot may send per platform; others (the console) have none."""

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_STATUS_LABELS = {
    MessageStatus.TOOL_CALLS: "tool calls",
    MessageStatus.AWAITING: "waiting for a confirmation",
}


@dataclass(frozen=True, slots=True)
class ExportedDocument:
    """One of the user's own documents, with its chunks in order."""

    info: DocumentInfo
    chunks: Sequence[ChunkDraft]


def tool_calls_of(message: StoredMessage) -> list[dict[str, Any]]:
    """The message's tool calls, each with its ``result`` (``None`` when it has none yet).

    Arguments are parsed from their JSON (kept as the raw string if they are not an
    object) and secret-looking values are masked.
    """
    extra = message.extra or {}
    calls = extra.get("tool_calls") or []
    results = extra.get("tool_results") or {}
    out: list[dict[str, Any]] = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        out.append(
            {
                "id": call.get("id"),
                "name": call.get("name"),
                "arguments": _arguments(call.get("arguments")),
                "risk": call.get("risk"),
                "source": call.get("source"),
                "result": results.get(call.get("id")),
            }
        )
    return out


def _arguments(raw: Any) -> Any:
    parsed = raw
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw
    return redact_secrets(parsed) if isinstance(parsed, dict) else parsed


def _call_lines(call: dict[str, Any], waiting: bool) -> list[str]:
    """``- `tool` · key=value, ...`` then ``→ status: result`` (indented, every line)."""
    arguments = call["arguments"]
    if isinstance(arguments, dict):
        shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    else:
        shown = str(arguments)
    lines = [f"- 🔧 `{call['name']}`" + (f" · {shown}" if shown else "")]
    result = call["result"]
    if result is None:
        lines.append("  → waiting for a confirmation" if waiting else "  → no result")
        return lines
    status = result.get("status") or ("ok" if result.get("ok") else "error")
    content = str(result.get("content") or "").splitlines() or [""]
    lines.append(f"  → {status}: {content[0]}".rstrip())
    lines += [f"    {line}".rstrip() for line in content[1:]]
    return lines


def _speaker(role: Role, author: str | None, bot: str) -> str:
    if role is Role.ASSISTANT:
        return bot
    if role is Role.USER:
        return f"user {author}" if author else "user"
    return role.value


def render_markdown(
    conversations: Sequence[ExportedConversation],
    *,
    bot: str,
    platform: str,
    user_id: str,
    now: datetime,
    documents: Sequence[ExportedDocument] = (),
    files: Mapping[str, str] | None = None,
) -> str:
    """A readable Markdown document of the conversations, oldest first, then documents.

    ``files`` maps a photo's ``sha256`` to its path in the bundle: such photos are linked.
    """
    files = files or {}
    lines = [
        f"# Conversations with {bot}",
        "",
        f"Exported {now.strftime('%Y-%m-%d %H:%M UTC')} for {platform} user {user_id}.",
        "",
    ]
    if not conversations:
        lines.append("Nothing is stored about you.")
    for number, item in enumerate(conversations, start=1):
        conv = item.conversation
        where = f"{conv.key.platform} chat {conv.key.chat_id}"
        if conv.key.thread_id:
            where += f", thread {conv.key.thread_id}"
        if conv.key.user_id is None:
            where += " (shared memory: your messages only)"
        lines += [
            f"## Conversation {number}",
            "",
            f"Started {conv.created_at.strftime('%Y-%m-%d %H:%M UTC')} in {where}.",
            "",
        ]
        for message in item.messages:
            lines += _message_lines(message, bot, files)
    lines += _document_lines(documents)
    return "\n".join(lines).rstrip() + "\n"


def _document_lines(documents: Sequence[ExportedDocument]) -> list[str]:
    if not documents:
        return []
    lines = ["## Your documents", ""]
    for doc in documents:
        info = doc.info
        pages = f", {info.pages} pages" if info.pages else ""
        lines += [
            f"### #{info.id} {info.title}",
            "",
            f"From {info.source}, added {info.created_at.strftime('%Y-%m-%d %H:%M UTC')}: "
            f"{info.chunks} chunks{pages}.",
            "",
        ]
        for chunk in doc.chunks:
            where = f"p. {chunk.page}" if chunk.page else (chunk.heading or "")
            lines += [f"**Chunk {chunk.position + 1}**{f' ({where})' if where else ''}", ""]
            lines += [chunk.text, ""]
    return lines


def _message_lines(message: StoredMessage, bot: str, files: Mapping[str, str]) -> list[str]:
    stamp = message.created_at.strftime("%Y-%m-%d %H:%M")
    label = _STATUS_LABELS.get(message.status, message.status.value)
    status = "" if message.status is MessageStatus.COMPLETE else f" ({label})"
    lines = [f"**{_speaker(message.role, message.author_id, bot)}** · {stamp}{status}", ""]
    attachments = attachments_of(message.extra)
    if attachments:
        lines += [f"Attached: {'; '.join(describe(a) for a in attachments)}", ""]
        links = [_image_link(a, files) for a in attachments if a.sha256 in files]
        if links:
            lines += [*links, ""]
    if message.content:
        lines += [message.content, ""]
    sources = sources_of(message.extra)
    if sources:
        lines += ["Sources:", *(f"- {s.line()}" for s in sources), ""]
    calls = tool_calls_of(message)
    if calls:
        waiting = message.status is MessageStatus.AWAITING
        for call in calls:
            lines += _call_lines(call, waiting)
        lines.append("")
    elif not message.content:
        lines.append("")
    return lines


def _image_link(attachment: StoredAttachment, files: Mapping[str, str]) -> str:
    """``![plant.jpg](images/1-plant.jpg)``: the photo shown from its file in the bundle."""
    alt = (attachment.name or attachment.kind).replace("[", "(").replace("]", ")")
    return f"![{alt}]({files[attachment.sha256 or '']})"


def _attachment_json(attachment: StoredAttachment, files: Mapping[str, str]) -> dict[str, Any]:
    doc = attachment.as_json()
    if attachment.sha256 in files:
        doc["file"] = files[attachment.sha256 or ""]
    return doc


def _message_json(message: StoredMessage, files: Mapping[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "seq": message.seq,
        "role": message.role.value,
        "author_id": message.author_id,
        "content": message.content,
        "status": message.status.value,
        "created_at": message.created_at.isoformat(),
    }
    calls = tool_calls_of(message)
    if calls:
        doc["tool_calls"] = calls
    attachments = attachments_of(message.extra)
    if attachments:
        doc["attachments"] = [_attachment_json(a, files) for a in attachments]
    sources = sources_of(message.extra)
    if sources:
        doc["sources"] = [s.line() for s in sources]
    return doc


def _document_json(doc: ExportedDocument) -> dict[str, Any]:
    info = doc.info
    return {
        "id": info.id,
        "title": info.title,
        "source": info.source,
        "pages": info.pages,
        "added_at": info.created_at.isoformat(),
        "chunks": [
            {"position": c.position, "page": c.page, "heading": c.heading, "text": c.text}
            for c in doc.chunks
        ],
    }


def render_json(
    conversations: Sequence[ExportedConversation],
    *,
    bot: str,
    platform: str,
    user_id: str,
    now: datetime,
    documents: Sequence[ExportedDocument] = (),
    files: Mapping[str, str] | None = None,
) -> str:
    """The same content as a JSON document (stable keys, ISO 8601 UTC times)."""
    files = files or {}
    doc: dict[str, Any] = {
        "bot": bot,
        "platform": platform,
        "user_id": user_id,
        "exported_at": now.isoformat(),
        "conversations": [
            {
                "chat_id": item.conversation.key.chat_id,
                "thread_id": item.conversation.key.thread_id,
                "shared": item.conversation.key.user_id is None,
                "started_at": item.conversation.created_at.isoformat(),
                "messages": [_message_json(m, files) for m in item.messages],
            }
            for item in conversations
        ],
    }
    if documents:
        doc["documents"] = [_document_json(d) for d in documents]
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def render(
    fmt: str,
    conversations: Sequence[ExportedConversation],
    *,
    bot: str,
    platform: str,
    user_id: str,
    now: datetime,
    documents: Sequence[ExportedDocument] = (),
    files: Mapping[str, str] | None = None,
) -> str:
    """Render in ``fmt`` (``"md"`` or ``"json"``); raises ``ValueError`` for others."""
    kw: dict[str, Any] = {"bot": bot, "platform": platform, "user_id": user_id, "now": now}
    if fmt == "md":
        return render_markdown(conversations, documents=documents, files=files, **kw)
    if fmt == "json":
        return render_json(conversations, documents=documents, files=files, **kw)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


@dataclass(frozen=True, slots=True)
class BundledImage:
    """One stored image of an export and its path inside the ZIP file."""

    path: str
    blob: MediaBlob


@dataclass(frozen=True, slots=True)
class Export:
    """Everything stored for one user, ready to render alone or bundled with its images.

    Attributes:
        fmt: ``"md"`` or ``"json"``.
        images: the stored images the history shows, once each, in order of appearance.
    """

    fmt: str
    conversations: Sequence[ExportedConversation]
    documents: Sequence[ExportedDocument]
    images: Sequence[BundledImage]
    bot: str
    platform: str
    user_id: str
    now: datetime

    @property
    def document_name(self) -> str:
        """The document's name inside the ZIP file."""
        return f"chinwag-export.{self.fmt}"

    def document(self, *, linked: bool = False) -> str:
        """The document; ``linked`` links each bundled photo to its file (for :meth:`zip`)."""
        files = {image.blob.sha256: image.path for image in self.images} if linked else {}
        return render(
            self.fmt,
            self.conversations,
            bot=self.bot,
            platform=self.platform,
            user_id=self.user_id,
            now=self.now,
            documents=self.documents,
            files=files,
        )

    def zip(self) -> bytes:
        """The linked document and the images in one ZIP file (the same bytes every time)."""
        stamp = self.now.timetuple()[:6]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            entry = zipfile.ZipInfo(self.document_name, date_time=stamp)
            entry.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(entry, self.document(linked=True).encode("utf-8"))
            for image in self.images:
                entry = zipfile.ZipInfo(image.path, date_time=stamp)
                entry.compress_type = zipfile.ZIP_STORED  # JPEG and PNG are compressed already
                bundle.writestr(entry, image.blob.data)
        return buffer.getvalue()


def image_path(number: int, attachment: StoredAttachment, blob: MediaBlob) -> str:
    """``images/1-plant.jpg``: numbered, the sent name's safe stem (else the hash), the type."""
    stem = _UNSAFE.sub("_", attachment.name.rsplit(".", 1)[0]).strip("._-")[:60]
    extension = _EXTENSIONS.get(blob.mime_type, "bin")
    return f"{IMAGES_DIR}/{number}-{stem or blob.sha256[:12]}.{extension}"


async def _documents(
    knowledge: KnowledgeStore | None, bot: str, platform: str, user_id: str
) -> list[ExportedDocument]:
    """The user's own documents in the knowledge base (none without one)."""
    documents: list[ExportedDocument] = []
    if knowledge is not None:
        for info in await knowledge.documents([KbScope.of_user(bot, platform, user_id)]):
            chunks = [draft for _, draft in await knowledge.chunks_of(info.id)]
            documents.append(ExportedDocument(info, chunks))
    return documents


async def _images(
    store: MemoryStore, conversations: Sequence[ExportedConversation]
) -> list[BundledImage]:
    """The stored images the messages show, once per hash, numbered in order of appearance."""
    wanted: dict[str, StoredAttachment] = {}
    for item in conversations:
        for message in item.messages:
            for attachment in attachments_of(message.extra):
                if attachment.sha256 and attachment.sha256 not in wanted:
                    wanted[attachment.sha256] = attachment
    if not wanted:
        return []
    blobs = await store.load_media(list(wanted))
    found = [(attachment, blobs[sha]) for sha, attachment in wanted.items() if sha in blobs]
    return [
        BundledImage(image_path(number, attachment, blob), blob)
        for number, (attachment, blob) in enumerate(found, start=1)
    ]


async def export_of(
    store: MemoryStore,
    *,
    bot: str,
    platform: str,
    user_id: str,
    fmt: str,
    now: datetime,
    knowledge: KnowledgeStore | None = None,
) -> Export:
    """Read everything ``store`` (and ``knowledge``) keeps for the user, images included.

    Raises ``ValueError`` for an unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    conversations = await store.export_user(bot, platform, user_id)
    documents = await _documents(knowledge, bot, platform, user_id)
    return Export(
        fmt=fmt,
        conversations=conversations,
        documents=documents,
        images=await _images(store, conversations),
        bot=bot,
        platform=platform,
        user_id=user_id,
        now=now,
    )


async def export_document(
    store: MemoryStore,
    *,
    bot: str,
    platform: str,
    user_id: str,
    fmt: str,
    now: datetime,
    knowledge: KnowledgeStore | None = None,
) -> str:
    """The user's history as one document in ``fmt``, without the images."""
    conversations = await store.export_user(bot, platform, user_id)
    documents = await _documents(knowledge, bot, platform, user_id)
    return render(
        fmt,
        conversations,
        bot=bot,
        platform=platform,
        user_id=user_id,
        now=now,
        documents=documents,
    )
