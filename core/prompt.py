"""Build the prompt for one reply: the system prompt, then the most recent turns that fit.

Reads history newest-first, a page at a time, so the cost depends on the context window and
not on how much history a conversation holds. Trimming never deletes stored turns.

The engine keeps a :class:`HistoryCache` of the newest usable messages of the conversations
it serves, updated as it writes them (it is their only writer, one message at a time), so a
busy conversation's prompt needs no read at all; what the cache does not hold is read from
the store.

A user turn that came with photos carries them (``ChatMessage.images``) for models that
accept images, and their cost (``StoredAttachment.tokens``) counts in the budget, so a long
history of photos drops old turns instead of overflowing the context. The images are loaded
from the store (``MemoryStore.load_media``) through a small :class:`MediaCache`: a busy chat
doesn't read them again for every reply, and a restarted bot still sends them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from core.errors import ContextTooLong
from core.media import StoredAttachment, attachments_of
from core.ports import LLMBackend, MemoryStore
from core.rounds import ROUND_STATUSES, is_round, message_text, round_messages
from core.types import ChatMessage, ImagePart, MessageStatus, Role, StoredMessage

_PAGE = 64
_USABLE = (MessageStatus.COMPLETE, MessageStatus.CUT, MessageStatus.INTERRUPTED)

CUT_OFF_LABEL = "[this reply was cut off before it was complete]"
"""Ends an interrupted reply in a prompt: the model never takes a half reply as complete."""
NO_REPLY_LABEL = "[no reply was given to this message: it was lost]"
"""Stands between two user turns whose answer was lost (failed, or cut off before any text)."""
_LABEL_TOKENS = 12  # what a label adds, counted generously (it is not stored)


def usable(message: StoredMessage) -> bool:
    """Whether a stored message belongs in a prompt (the store's rule, too).

    A round that ended with tool calls belongs even with empty text.
    """
    return (message.status in _USABLE and bool(message.content)) or (
        message.status in ROUND_STATUSES
    )


_NO_REPLY = ChatMessage(role=Role.ASSISTANT, content=NO_REPLY_LABEL)


class Turn:
    """A stored message as a prompt uses it, with its chat message built once.

    Prompts are rebuilt for every reply from the same turns; reusing their ``ChatMessage``
    objects keeps a busy bot from allocating (and garbage-collecting) hundreds per reply.
    """

    __slots__ = (
        "_named",
        "_plain",
        "attachments",
        "message",
        "photo_tokens",
        "photos",
        "tokenizer",
        "tokens",
    )

    def __init__(self, message: StoredMessage) -> None:
        self.message = message
        self.tokenizer = message.tokenizer  # what ``tokens`` was counted with
        self.tokens = message.token_count
        self.attachments = attachments_of(message.extra) if message.role is Role.USER else ()
        # The stored photos this (user) turn shows, and what they cost a vision model.
        self.photos = tuple(a for a in self.attachments if a.kind == "photo" and a.sha256)
        self.photo_tokens = sum(p.tokens or 0 for p in self.photos)
        self._plain: tuple[ChatMessage, ...] | None = None
        self._named: tuple[tuple[ChatMessage, ...], int] | None = None

    def chat(self, shared: bool) -> tuple[tuple[ChatMessage, ...], int]:
        """The chat messages, and the tokens a speaker's name (shared memory) or a label add.

        One message, but for a round with tool calls: the assistant's calls, then one tool
        message per call (a prompt holds them all or none).
        """
        message = self.message
        if shared and message.role is Role.USER:
            if self._named is None:
                name = speaker_name(message.extra, message.author_id)
                chat = ChatMessage(role=message.role, content=f"{name}: {message.content}")
                self._named = ((chat,), len(name) // 3 + 2)
            return self._named
        if self._plain is None:
            if is_round(message):
                self._plain = round_messages(message)
            else:
                content = message.content
                if message.role is Role.ASSISTANT and message.status is MessageStatus.INTERRUPTED:
                    content = f"{content}\n\n{CUT_OFF_LABEL}"
                self._plain = (ChatMessage(role=message.role, content=content),)
        if message.status is MessageStatus.INTERRUPTED:
            return self._plain, _LABEL_TOKENS
        return self._plain, 0


@dataclass(slots=True)
class MediaCache:
    """The images of recent prompts, by content hash, least recently used dropped first.

    Bounded by ``max_bytes`` of image data; a prompt rebuilt for every reply of a chat with
    photos reads them from the store once.
    """

    max_bytes: int = 64 * 1024 * 1024
    _images: OrderedDict[str, ImagePart] = field(default_factory=OrderedDict)
    _bytes: int = 0

    async def get(self, store: MemoryStore, hashes: Iterable[str]) -> dict[str, ImagePart]:
        """The images of ``hashes`` that exist (cached, else read from ``store``)."""
        found: dict[str, ImagePart] = {}
        missing: list[str] = []
        for sha in dict.fromkeys(hashes):
            image = self._images.get(sha)
            if image is None:
                missing.append(sha)
            else:
                self._images.move_to_end(sha)
                found[sha] = image
        if missing:
            for sha, blob in (await store.load_media(missing)).items():
                image = ImagePart(blob.data, blob.mime_type, blob.width, blob.height)
                found[sha] = image
                self._keep(sha, image)
        return found

    def _keep(self, sha: str, image: ImagePart) -> None:
        if sha in self._images or len(image.data) > self.max_bytes:
            return
        self._images[sha] = image
        self._bytes += len(image.data)
        while self._bytes > self.max_bytes:
            _, dropped = self._images.popitem(last=False)
            self._bytes -= len(dropped.data)


@dataclass(slots=True)
class _Entry:
    turns: deque[Turn]
    from_start: bool  # holds every usable message since the conversation began


@dataclass(slots=True)
class HistoryCache:
    """The newest usable messages of recently active conversations, oldest first.

    Bounded: at most ``max_turns`` messages per conversation and ``max_conversations``
    conversations (least recently used dropped).

    With ``contiguous``, a message whose sequence number does not follow the newest cached
    one drops its conversation instead (to be read again): where several processes write
    the same conversations (queue workers), a gap means another process wrote in between.
    """

    contiguous: bool = False
    max_conversations: int = 2048
    max_turns: int = 512
    _entries: OrderedDict[int, _Entry] = field(default_factory=OrderedDict)

    def fill(self, conversation_id: int, newest_first: list[Turn], from_start: bool) -> None:
        """Cache what a store read returned (newest first)."""
        turns = deque(reversed(newest_first[: self.max_turns]), maxlen=self.max_turns)
        self._entries[conversation_id] = _Entry(
            turns, from_start and len(newest_first) <= self.max_turns
        )
        self._entries.move_to_end(conversation_id)
        while len(self._entries) > self.max_conversations:
            self._entries.popitem(last=False)

    def add(self, message: StoredMessage) -> None:
        """Record a message just written (only if its conversation is cached and it is usable)."""
        entry = self._entries.get(message.conversation_id)
        if entry is None or not usable(message):
            return
        if self.contiguous and entry.turns and message.seq != entry.turns[-1].message.seq + 1:
            del self._entries[message.conversation_id]
            return
        if len(entry.turns) == entry.turns.maxlen:
            entry.from_start = False
        entry.turns.append(Turn(message))
        self._entries.move_to_end(message.conversation_id)

    def newest_first(
        self, conversation_id: int, before_seq: int | None
    ) -> tuple[Iterator[Turn], bool] | None:
        """Cached turns with seq < ``before_seq``, newest first, and whether that is all."""
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        self._entries.move_to_end(conversation_id)
        turns = (
            t for t in reversed(entry.turns) if before_seq is None or t.message.seq < before_seq
        )
        return turns, entry.from_start

    def oldest_seq(self, conversation_id: int) -> int | None:
        """The sequence number of the oldest cached message, if any."""
        entry = self._entries.get(conversation_id)
        return entry.turns[0].message.seq if entry is not None and entry.turns else None

    def newest_seq(self, conversation_id: int) -> int | None:
        """The sequence number of the newest cached message, if any."""
        entry = self._entries.get(conversation_id)
        return entry.turns[-1].message.seq if entry is not None and entry.turns else None

    def drop(self, conversation_id: int) -> None:
        """Forget one conversation (its stored rows changed behind the cache)."""
        self._entries.pop(conversation_id, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


@dataclass(slots=True)
class Prompt:
    """A prompt ready for the backend, with what it cost.

    Attributes:
        messages: system message first, then history oldest to newest.
        tokens: the prompt's size in the backend's tokens (content plus per-message overhead).
        turns: how many stored messages it includes.
        complete: whether the whole conversation fitted.
        previous: the assistant's reply before the newest message, if the prompt holds it
            (a cut one is what "continue" resumes).
        attachments: the files of the user turns it holds, oldest first (``/history``).
    """

    messages: list[ChatMessage]
    tokens: int
    turns: int
    complete: bool
    previous: StoredMessage | None = None
    attachments: tuple[StoredAttachment, ...] = ()


def speaker_name(extra: Mapping[str, Any] | None, author_id: str | None) -> str:
    """The name to show the model for a user message in a shared memory."""
    if extra and isinstance(extra.get("author_name"), str) and extra["author_name"]:
        return str(extra["author_name"])
    return author_id or "user"


class PromptBuilder:
    """Builds prompts for one backend; caches only token counts of system prompts."""

    def __init__(
        self,
        backend: LLMBackend,
        store: MemoryStore,
        cache: HistoryCache | None = None,
        media: MediaCache | None = None,
    ) -> None:
        self._backend = backend
        self._store = store
        self._cache = cache
        self._media = media or MediaCache()
        self._system_counts: dict[tuple[str, str], int] = {}

    async def _system_tokens(self, text: str, model: str) -> int:
        key = (model, text)
        cached = self._system_counts.get(key)
        if cached is None:
            cached = await self._backend.count_tokens(text, model)
            if len(self._system_counts) > 1024:
                self._system_counts.clear()
            self._system_counts[key] = cached
        return cached

    async def build(
        self,
        *,
        conversation_id: int,
        before_seq: int | None,
        system_prompt: str,
        model: str,
        budget: int,
        shared: bool,
    ) -> Prompt:
        """Fit the system prompt and the newest turns (seq < ``before_seq``) into ``budget``.

        Raises:
            ContextTooLong: if even the system prompt and the newest message don't fit.
        """
        backend = self._backend
        overhead = backend.message_overhead(model)
        tokenizer = backend.tokenizer_name(model)
        used = await self._system_tokens(system_prompt, model) + overhead + 3  # reply priming
        vision = backend.supports_images(model)
        picked: list[tuple[ChatMessage, ...]] = []
        taken: list[Turn] = []
        newest: list[StoredMessage] = []  # the two newest turns taken
        complete = True

        async def take_all(turns: Iterable[Turn]) -> bool:
            """Take turns, newest first, until one does not fit; return whether all fitted."""
            nonlocal used, complete
            for turn in turns:
                tokens = turn.tokens
                if tokens is None or turn.tokenizer != tokenizer:
                    tokens = await backend.count_tokens(message_text(turn.message), model)
                    turn.tokenizer, turn.tokens = tokenizer, tokens
                chat, named = turn.chat(shared)
                cost = tokens + overhead * len(chat) + named
                if vision:
                    cost += turn.photo_tokens
                if used + cost > budget:
                    complete = False
                    return False
                used += cost
                picked.append(chat)
                taken.append(turn)
                if len(newest) < 2:
                    newest.append(turn.message)
            return True

        cursor = before_seq
        cached = self._cache.newest_first(conversation_id, before_seq) if self._cache else None
        if cached is not None:
            turns, from_start = cached
            if not await take_all(turns) or from_start:
                await self._show_images(picked, taken, vision)
                return self._finish(system_prompt, picked, taken, used, complete, budget, newest)
            # every cached turn fitted: the store read continues below the oldest of them
            oldest = self._cache.oldest_seq(conversation_id) if self._cache else None
            if oldest is not None:
                cursor = oldest if cursor is None else min(oldest, cursor)
        read: list[Turn] = []
        page_size = _PAGE
        while True:
            rows = await self._store.recent_messages(
                conversation_id, limit=page_size, before_seq=cursor
            )
            page = [Turn(row) for row in rows]
            read += page
            if await take_all(page) and len(page) == page_size:
                cursor = rows[-1].seq
                # Read about what the rest of the budget holds, judging by the turns so far:
                # long windows take few large reads, and nothing is read far beyond the window.
                per_turn = max((used / len(picked)) if picked else 1, 1)
                page_size = max(16, min(1024, int((budget - used) / per_turn * 1.25) + 8))
                continue
            break
        if self._cache is not None and cached is None:
            # ``before_seq`` is the reply being written: everything usable was read or is older.
            self._cache.fill(conversation_id, read, from_start=len(page) < page_size)
        await self._show_images(picked, taken, vision)
        return self._finish(system_prompt, picked, taken, used, complete, budget, newest)

    async def _show_images(
        self, picked: list[tuple[ChatMessage, ...]], taken: list[Turn], vision: bool
    ) -> None:
        """Put the stored photos of the picked user turns into their chat messages."""
        if not vision:
            return
        wanted = [(i, turn.photos) for i, turn in enumerate(taken) if turn.photos]
        if not wanted:
            return
        images = await self._media.get(self._store, (p.sha256 or "" for _, w in wanted for p in w))
        for i, photos in wanted:
            parts = tuple(images[p.sha256] for p in photos if p.sha256 in images)
            if parts:
                first, *rest = picked[i]
                picked[i] = (replace(first, images=parts), *rest)

    @staticmethod
    def _finish(
        system_prompt: str,
        picked: list[tuple[ChatMessage, ...]],
        taken: list[Turn],
        used: int,
        complete: bool,
        budget: int,
        newest: list[StoredMessage],
    ) -> Prompt:
        if not picked and not complete:
            raise ContextTooLong(
                limit=budget, message="the newest message alone exceeds the budget"
            )
        picked.reverse()
        messages = [ChatMessage(role=Role.SYSTEM, content=system_prompt)]
        for chats in picked:
            if chats[0].role is Role.USER and messages[-1].role is Role.USER:
                messages.append(_NO_REPLY)  # never two user turns where an answer was lost
            messages.extend(chats)
        previous = newest[1] if len(newest) > 1 and newest[1].role is Role.ASSISTANT else None
        return Prompt(
            messages=messages,
            tokens=used,
            turns=len(picked),
            complete=complete,
            previous=previous,
            attachments=tuple(a for turn in reversed(taken) for a in turn.attachments),
        )
