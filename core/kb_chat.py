"""The knowledge base in chats: grounding each user message, ``/kb``, ``/why``, ``/forget``.

:class:`KbChat` is built by the engine when it has a :class:`~core.kb.KnowledgeBase`:

* :meth:`KbChat.ground` retrieves the chunks for a user message once (every model round of
  its turn reuses them); with ``KB_STRICT=true`` (never for a bot with tools) and nothing
  relevant, the bot says so itself and the model is not asked;
* ``/kb`` lists the documents in scope, ``/kb remove ID`` removes one (admins: the bot's
  and the chat's; everyone: their own), ``/kb add`` ingests the file sent with the command
  or the file of the user's own message it replies to (admins into the bot's knowledge
  base; with ``KB_USER_UPLOADS=true`` users into their own); a file sent without the
  command is never ingested;
* ``/why`` shows the chunks and scores the last answer was given (stored with it);
* ``/forget`` also deletes the user's own documents (:meth:`KbChat.forget`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from core.commands import CommandRegistry
from core.errors import AdapterError, KbError, StoreError
from core.kb import NOTHING_RELEVANT, Grounding, KnowledgeBase, retrieval_record, scope_label
from core.knowledge import KbScope
from core.notices import notify
from core.ports import FileSource, LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache
from core.sessions import Sessions
from core.telemetry import NO_TELEMETRY, Telemetry, error_kind
from core.turns import TurnContext
from core.types import (
    Attachment,
    ConversationKey,
    IncomingMessage,
    MessageStatus,
    Role,
    StoredMessage,
)

_log = logging.getLogger(__name__)

FILE_HINT: Final = (
    "To add a file to the knowledge base, send it with the caption /kb add "
    "(or reply /kb add to it)."
)
"""The answer to a file sent without a caption (it is not ingested)."""

KB_USAGE: Final = (
    "/kb lists the documents I answer from here; /kb add with a file (or as a reply to "
    "your file) adds one; /kb remove ID removes one."
)

_EXTENSIONS: Final = {
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/html": ".html",
    "application/pdf": ".pdf",
}
_UNSAFE = re.compile(r"[^\w.\- ]+")


def upload_name(attachment: Attachment) -> str:
    """A safe file name for an upload: its own base name, or one from its MIME type."""
    name = _UNSAFE.sub("_", Path(attachment.name.replace("\\", "/")).name).strip(" .")
    if not name:
        name = "document" + _EXTENSIONS.get(attachment.mime_type or "", "")
    return name[:120]


class KbChat:
    """The knowledge base's part of the conversation and its commands.

    Args:
        knowledge: the knowledge base service.
        store: the memory store (the strict answer, the last answer for ``/why``).
        backend: the LLM backend (token counts of the strict answer).
        sessions: conversation ids per slot.
        history: the engine's history cache.
        is_admin: whether a message's author is an admin.
        has_tools: whether the bot offers tools (``KB_STRICT`` never applies then).
        telemetry: counts the searches (nothing if omitted).
    """

    def __init__(
        self,
        *,
        knowledge: KnowledgeBase,
        store: MemoryStore,
        backend: LLMBackend,
        sessions: Sessions,
        history: HistoryCache,
        is_admin: Callable[[IncomingMessage], bool],
        has_tools: Callable[[], bool],
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._telemetry = telemetry
        self.knowledge = knowledge
        self._store = store
        self._backend = backend
        self._sessions = sessions
        self._history = history
        self._is_admin = is_admin
        self._has_tools = has_tools

    def register(self, registry: CommandRegistry) -> None:
        """Add ``/kb`` and ``/why``."""
        registry.register(
            "kb",
            "Documents I answer from: /kb | /kb add (with a file) | /kb remove ID",
            self.kb,
            argument="action",
        )
        registry.register("why", "The document passages my last answer was given", self.why)

    # --- answering -------------------------------------------------------------------------

    async def ground(self, turn: TurnContext, placeholder: StoredMessage) -> bool:
        """Retrieve the chunks for the turn's message; whether the model should answer.

        ``False`` when ``KB_STRICT`` answered instead (nothing relevant in the documents):
        the bot said so and stored it as the reply, without asking the model.
        """
        text = turn.msg.text.strip()
        if not text:
            return True
        strict = self.knowledge.settings.strict and not self._has_tools()
        try:
            grounding = await self.knowledge.retrieve(turn.key.bot, turn.msg, text)
        except (KbError, StoreError) as exc:
            if strict:
                raise
            self._telemetry.error(error_kind(exc))
            _log.warning("answering without documents: the knowledge base failed: %s", exc)
            return True
        turn.grounding = grounding
        if grounding.searched:
            self._telemetry.kb_search()
        if grounding.retrieval.used or not grounding.searched or not strict:
            return True
        await self._nothing_relevant(turn, placeholder, grounding)
        return False

    async def _nothing_relevant(
        self, turn: TurnContext, placeholder: StoredMessage, grounding: Grounding
    ) -> None:
        ids = await notify(turn.out, NOTHING_RELEVANT)
        tokens = await self._backend.count_tokens(NOTHING_RELEVANT, turn.model)
        tokenizer = self._backend.tokenizer_name(turn.model)
        extra = {"retrieval": retrieval_record(grounding, 0)}
        await self._store.finish_message(
            placeholder.id,
            content=NOTHING_RELEVANT,
            status=MessageStatus.COMPLETE,
            token_count=tokens,
            tokenizer=tokenizer,
            platform_chat_id=turn.msg.chat_id,
            platform_message_ids=ids,
            extra=extra,
        )
        self._history.add(
            replace(
                placeholder,
                content=NOTHING_RELEVANT,
                status=MessageStatus.COMPLETE,
                token_count=tokens,
                tokenizer=tokenizer,
                extra=extra,
            )
        )

    async def forget(self, bot: str, platform: str, user_id: str) -> int:
        """``/forget``: delete the user's own documents; return how many."""
        return await self.knowledge.forget(bot, platform, user_id)

    # --- /kb -------------------------------------------------------------------------------

    async def kb(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/kb [list | add [me|chat] | remove ID]``."""
        action, _, rest = arg.strip().partition(" ")
        action = action.lower()
        if action in ("", "list", "ls"):
            await self._list(key, msg, out)
        elif action in ("remove", "rm", "delete"):
            await self._remove(key, msg, out, rest.strip())
        elif action == "add":
            await self._add(key, msg, out, rest.strip().lower())
        else:
            await notify(out, KB_USAGE)

    async def _list(self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel) -> None:
        documents = await self.knowledge.documents(key.bot, msg)
        if not documents:
            await notify(out, "There are no documents in the knowledge base here yet.")
            return
        lines = ["Documents I answer from here:"]
        for doc in documents:
            pages = f", {doc.pages} pages" if doc.pages else ""
            lines.append(
                f'#{doc.id} "{doc.title}": {doc.chunks} chunks{pages} ({scope_label(doc.scope)})'
            )
        lines.append("Remove one with /kb remove ID.")
        await notify(out, "\n".join(lines))

    async def _remove(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        digits = arg.lstrip("#")
        if not digits.isdigit():
            await notify(out, "Which one? /kb remove ID (the number /kb shows).")
            return
        document_id = int(digits)
        visible = {d.id: d for d in await self.knowledge.documents(key.bot, msg)}
        found = visible.get(document_id)
        if found is None:
            await notify(out, f"There is no document #{document_id} here.")
            return
        admin = self._is_admin(msg)
        if not await self.knowledge.remove(key.bot, msg, document_id, admin=admin):
            await notify(out, f"Only the bot's admins can remove #{document_id}.")
            return
        _log.info("removed knowledge base document %d on request", document_id)
        await notify(out, f'Removed #{document_id} "{found.title}".')

    def _target(self, bot: str, msg: IncomingMessage, arg: str) -> KbScope | str:
        """Where ``/kb add [me|chat]`` puts the file, or why it may not."""
        knowledge, admin = self.knowledge, self._is_admin(msg)
        if arg in ("me", "mine", "my", "own"):
            if admin or knowledge.settings.user_uploads:
                return knowledge.own_scope(bot, msg)
            return "Only the bot's admins can add documents here."
        if arg == "chat":
            if msg.is_private:
                return "/kb add chat is for group chats; in a private chat use /kb add."
            return knowledge.chat_scope(bot, msg) if admin else "Only admins add chat documents."
        if arg:
            return "Use /kb add, /kb add me or /kb add chat."
        if admin:
            return KbScope.of_bot(bot)
        if knowledge.settings.user_uploads:
            return knowledge.own_scope(bot, msg)
        return "Only the bot's admins can add documents here."

    async def _add(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        knowledge = self.knowledge
        add_file = knowledge.add_file
        attachments = msg.attachments or msg.reply_attachments
        if add_file is None:
            await notify(out, "Adding documents from chats is not set up for this bot.")
            return
        if not attachments:
            await notify(out, "Send a file with the caption /kb add, or reply /kb add to it.")
            return
        target = self._target(key.bot, msg, arg)
        if isinstance(target, str):
            await notify(out, target)
            return
        if not isinstance(out, FileSource):
            await notify(out, "I can't fetch files on this platform.")
            return
        attachment = attachments[0]
        name = upload_name(attachment)
        limit = knowledge.settings.max_file_mb
        if attachment.size is not None and attachment.size > limit * 1024 * 1024:
            size = attachment.size / 1024 / 1024
            await notify(out, f'"{name}" is too big ({size:.1f} MB; at most {limit:g} MB).')
            return
        await notify(out, f'Adding "{name}"...')
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="chinwag-kb-"))
        try:
            path = folder / name
            # KB_MAX_FILE_MB, not the chat's MAX_FILE_MB: a manual may be bigger than a photo.
            await out.download(attachment, path, max_bytes=int(limit * 1024 * 1024))
            report = await add_file(path, target, f"{msg.platform}:{msg.user_id}", name)
        except AdapterError as exc:
            _log.warning("could not download a %s upload: %s", msg.platform, exc)
            await notify(out, f'I could not fetch "{name}": {exc.user_message}')
            return
        except KbError as exc:
            await notify(out, f'Nothing added from "{name}": {str(exc).rstrip(".")}.')
            return
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        _log.info("added a %s upload to the %s knowledge base", msg.platform, target.kind.value)
        await notify(out, report.line())

    # --- /why ------------------------------------------------------------------------------

    async def why(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/why``: the chunks (and scores) the last answer was given."""
        conversation_id = await self._sessions.conversation_id(key)
        rows = await self._store.recent_messages(conversation_id, limit=16)
        last = next((r for r in rows if r.role is Role.ASSISTANT), None)
        record = (last.extra or {}).get("retrieval") if last is not None else None
        if not isinstance(record, Mapping):
            await notify(out, "My last answer was not given any documents.")
            return
        await notify(out, why_text(record, self.knowledge.settings.min_score))


def why_text(record: Mapping[str, Any], min_score: float) -> str:
    """``/why``'s answer from a reply's ``extra["retrieval"]``."""
    hits: Sequence[Mapping[str, Any]] = record.get("hits") or ()
    if not hits:
        return "For my last answer I searched the documents and found nothing."
    in_prompt = int(record.get("in_prompt") or 0)
    if record.get("used"):
        head = f"My last answer was given {in_prompt} of {len(hits)} passages found:"
    else:
        head = (
            f"For my last answer no passage reached the relevance threshold ({min_score:g}), "
            "so I answered without the documents. The best ones found:"
        )
    lines = [head]
    for hit in hits:
        rank = int(hit.get("rank") or 0)
        where = str(hit.get("where") or "")
        place = f" {where}" if where.startswith("§") else f", {where}" if where else ""
        keyword = ", keyword match" if hit.get("keyword") else ""
        skipped = " (did not fit the prompt)" if record.get("used") and rank > in_prompt else ""
        lines.append(
            f"[{rank}] {hit.get('title')}{place}: score {float(hit.get('score') or 0):.2f}"
            f"{keyword}{skipped}"
        )
        snippet = str(hit.get("snippet") or "")
        if snippet:
            lines.append(f'    "{snippet}..."')
    return "\n".join(lines)


__all__ = ["FILE_HINT", "KB_USAGE", "KbChat", "upload_name", "why_text"]
