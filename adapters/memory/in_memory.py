"""``InMemoryStore``: the ``MemoryStore`` port in process memory, for tests and throwaway bots.

It keeps everything in dicts and loses it at exit, and imports no database library. Its
semantics are those of :class:`adapters.memory.store.SqlMemoryStore`, and the store contract
tests (``tests/adapters/memory``) run over both: per-conversation sequence numbers that a
failed call does not use up, ``DuplicateMessage`` for a recorded platform id with nothing
of the call stored, the usable-status history filter, pseudonymous usage counters that
survive ``forget_user``, the same ``forget_user`` rules for shared conversations.

Like a database, every call suspends once (``asyncio.sleep(0)``) before it acts, so callers
see the interleavings a real store gives them; each call then acts atomically.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from adapters.memory.in_memory_recovery import InMemoryRecovery, RecoveryState
from adapters.memory.in_memory_tools import InMemoryTools, ToolState
from adapters.memory.validation import (
    check_extra,
    check_hashes,
    check_media,
    check_usage,
    storable,
    usage_pseudonym,
)
from core.errors import DuplicateMessage, StoreError
from core.lifecycle import Lifecycle
from core.media import MediaBlob
from core.text import safe_text
from core.types import (
    Conversation,
    ConversationKey,
    ExportedConversation,
    MessageStatus,
    NewMessage,
    PlatformStats,
    Preferences,
    Role,
    StoredMessage,
    UsageRecord,
    UsageSummary,
)

_NAME: Final = "InMemoryStore"
_USABLE: Final = (MessageStatus.COMPLETE, MessageStatus.CUT, MessageStatus.INTERRUPTED)
# Tool rounds are part of the prompt whatever their text (often none).
_ROUNDS: Final = (MessageStatus.TOOL_CALLS, MessageStatus.AWAITING)

_Slot = tuple[str, str, str, str, str]
_PlatformId = tuple[str, str, str, str]  # bot, platform, chat_id, platform message id
_UsageKey = tuple[str, str, str, date]  # bot, platform, user pseudonym, day


@dataclass(slots=True)
class _Conversation:
    conversation: Conversation
    last_seq: int = 0
    ids: list[int] = field(default_factory=list)  # message ids in seq order


@dataclass(slots=True)
class _Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    messages: int = 0


def _slot(key: ConversationKey) -> _Slot:
    return (key.bot, key.platform, key.chat_id, key.thread_id or "", key.user_id or "")


class InMemoryStore(InMemoryTools, InMemoryRecovery):
    """The ``MemoryStore`` port on dicts: same contract as the SQL store, no persistence.

    Args:
        clock: the source of "now" (tz-aware; kept as UTC) for timestamps; for tests.
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._state = Lifecycle.NEW
        self._secret = secrets.token_bytes(32)
        self._conversations: dict[int, _Conversation] = {}
        self._by_slot: dict[_Slot, list[int]] = {}
        self._messages: dict[int, StoredMessage] = {}
        self._platform_ids: dict[_PlatformId, int] = {}
        self._preferences: dict[_Slot, Preferences] = {}
        self._usage: dict[_UsageKey, _Usage] = {}
        self._next_conversation = 1
        self._next_message = 1
        self._recovery = RecoveryState()
        self._tools = ToolState()
        self._media: dict[str, MediaBlob] = {}
        self._media_links: dict[int, tuple[str, ...]] = {}  # message id -> hashes shown

    def __repr__(self) -> str:
        return f"InMemoryStore({len(self._conversations)} conversations)"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store. Idempotent.

        Raises:
            RuntimeError: after ``aclose()``.
        """
        if self._state.require_startable(_NAME):
            self._state = Lifecycle.RUNNING

    async def aclose(self) -> None:
        """Close the store: later calls raise ``RuntimeError``. Idempotent."""
        self._state = Lifecycle.CLOSED

    async def __aenter__(self) -> InMemoryStore:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _enter(self) -> None:
        """Check the store is running, then let other tasks run (as a database call would)."""
        self._state.require_running(_NAME)
        await asyncio.sleep(0)

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    # --- conversations and messages ------------------------------------------------------

    async def current_conversation(self, key: ConversationKey) -> Conversation:
        """The newest conversation of ``key``, created if there is none."""
        await self._enter()
        ids = self._by_slot.get(_slot(key))
        if ids:
            return self._conversations[ids[-1]].conversation
        return self._create(key)

    async def new_conversation(self, key: ConversationKey) -> Conversation:
        """Start a new conversation for ``key`` (``/reset``); older ones stay stored."""
        await self._enter()
        return self._create(key)

    def _create(self, key: ConversationKey) -> Conversation:
        # Stored keys read back with empty parts as None, as from SQL.
        bot, platform, chat_id, thread_id, user_id = _slot(key)
        stored_key = ConversationKey(bot, platform, chat_id, thread_id or None, user_id or None)
        conversation = Conversation(
            id=self._next_conversation, key=stored_key, created_at=self._now()
        )
        self._next_conversation += 1
        self._conversations[conversation.id] = _Conversation(conversation)
        self._by_slot.setdefault(_slot(key), []).append(conversation.id)
        return conversation

    async def append_messages(
        self, conversation_id: int, messages: Sequence[NewMessage]
    ) -> list[StoredMessage]:
        """Append ``messages`` in order, with consecutive sequence numbers; all or nothing.

        Raises:
            DuplicateMessage: one of the platform ids is already recorded (nothing of this
                call is stored); ``existing`` is the stored message it belongs to.
            StoreError: the conversation does not exist, or the call repeats a platform id.
            ValueError: ``extra`` is not JSON-serialisable.
        """
        batch = storable(messages)
        for message in batch:
            check_extra(message.extra)
            check_hashes(message.media)
        if not batch:
            return []
        await self._enter()
        conv = self._conversations.get(conversation_id)
        if conv is None:
            raise StoreError(f"conversation {conversation_id} does not exist")
        key = conv.conversation.key
        wanted: list[list[_PlatformId]] = []
        for m in batch:
            chat_id = m.platform_chat_id if m.platform_chat_id is not None else key.chat_id
            ids = [(key.bot, key.platform, chat_id, pid) for pid in m.platform_message_ids]
            for platform_id in ids:
                if platform_id in self._platform_ids:
                    raise DuplicateMessage(self._messages[self._platform_ids[platform_id]])
            wanted.append(ids)
        _check_unique([pid for ids in wanted for pid in ids])
        now = self._now()
        stored = [
            StoredMessage(
                id=self._next_message + i,
                conversation_id=conversation_id,
                seq=conv.last_seq + 1 + i,
                role=Role(m.role),
                content=m.content,
                author_id=m.author_id,
                status=MessageStatus(m.status),
                token_count=m.token_count,
                tokenizer=m.tokenizer,
                extra=json.loads(json.dumps(dict(m.extra))) if m.extra is not None else None,
                created_at=now,
            )
            for i, m in enumerate(batch)
        ]
        self._next_message += len(stored)
        conv.last_seq += len(stored)
        for new, m, platform_ids in zip(stored, batch, wanted, strict=True):
            self._messages[new.id] = new
            conv.ids.append(new.id)
            if m.owner is not None:
                self._recovery.owners[new.id] = m.owner
            for platform_id in platform_ids:
                self._platform_ids[platform_id] = new.id
            if m.media:
                self._media_links[new.id] = tuple(m.media)
        return stored

    async def finish_message(
        self,
        message_id: int,
        *,
        content: str,
        status: MessageStatus,
        token_count: int | None = None,
        tokenizer: str | None = None,
        platform_chat_id: str | None = None,
        platform_message_ids: Sequence[str] = (),
        usage: UsageRecord | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the final content, status and token count of a message; record its platform ids.

        ``extra``'s keys are set in the message's ``extra`` (others kept).

        ``usage`` is added even when the message was deleted meanwhile (then nothing else is
        written, and no error is raised).

        Raises:
            StoreError: a platform id is already recorded (nothing of the call is stored).
        """
        final_status = MessageStatus(status)
        content = safe_text(content)
        if usage is not None:
            check_usage(usage)
        check_extra(extra)
        await self._enter()
        message = self._messages.get(message_id)
        platform_ids: list[_PlatformId] = []
        if message is not None:
            key = self._conversations[message.conversation_id].conversation.key
            chat_id = platform_chat_id if platform_chat_id is not None else key.chat_id
            platform_ids = [(key.bot, key.platform, chat_id, pid) for pid in platform_message_ids]
            _check_unique(platform_ids, taken=self._platform_ids)
        if usage is not None:
            self._add_usage(usage)
        if message is None:
            return
        self._messages[message_id] = replace(
            message,
            content=content,
            status=final_status,
            token_count=token_count,
            tokenizer=tokenizer,
            extra={**(message.extra or {}), **extra} if extra else message.extra,
        )
        for platform_id in platform_ids:
            self._platform_ids[platform_id] = message_id

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_seq: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` usable messages, newest first, with ``seq < before_seq``.

        Usable means status complete, cut or interrupted with non-empty content, or a tool
        round (``tool_calls`` or ``awaiting``) whatever its content.
        """
        if limit <= 0:
            return []
        await self._enter()
        conv = self._conversations.get(conversation_id)
        if conv is None:
            return []
        end = len(conv.ids)
        if before_seq is not None:
            end = bisect.bisect_left(conv.ids, before_seq, key=lambda i: self._messages[i].seq)
        found: list[StoredMessage] = []
        for index in range(end - 1, -1, -1):
            message = self._messages[conv.ids[index]]
            if (message.status in _USABLE and message.content) or message.status in _ROUNDS:
                found.append(message)
                if len(found) == limit:
                    break
        return found

    async def find_by_platform_message(
        self, bot: str, platform: str, chat_id: str, platform_message_id: str
    ) -> StoredMessage | None:
        """The stored message a platform message id belongs to, if any."""
        await self._enter()
        message_id = self._platform_ids.get((bot, platform, chat_id, platform_message_id))
        return self._messages[message_id] if message_id is not None else None

    async def reply_to(self, message: StoredMessage) -> StoredMessage | None:
        """The first assistant message after ``message`` in its conversation, if any."""
        await self._enter()
        conv = self._conversations.get(message.conversation_id)
        if conv is None:
            return None
        for candidate in self._messages_of(conv):
            if candidate.seq > message.seq and candidate.role is Role.ASSISTANT:
                return candidate
        return None

    def _conversation_key(self, message: StoredMessage) -> ConversationKey:
        return self._conversations[message.conversation_id].conversation.key

    def _conversation_exists(self, conversation_id: int) -> bool:
        return conversation_id in self._conversations

    def _conversation_slot(self, conversation_id: int) -> ConversationKey:
        return self._conversations[conversation_id].conversation.key

    def _messages_of(self, conv: _Conversation) -> Iterator[StoredMessage]:
        return (self._messages[i] for i in conv.ids)

    # --- preferences -------------------------------------------------------------------------

    async def get_preferences(self, key: ConversationKey) -> Preferences:
        """The slot's preferences (defaults when none were saved)."""
        await self._enter()
        return self._preferences.get(_slot(key), Preferences())

    async def save_preferences(self, key: ConversationKey, preferences: Preferences) -> None:
        """Replace the slot's preferences (they survive ``new_conversation``)."""
        await self._enter()
        self._preferences[_slot(key)] = Preferences(preferences.persona, preferences.model)

    # --- usage, privacy, statistics ----------------------------------------------------------

    async def add_usage(
        self,
        bot: str,
        platform: str,
        user_id: str,
        day: date,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        messages: int = 1,
    ) -> None:
        """Add to the user's pseudonymous usage counters for ``day`` (UTC).

        Raises:
            ValueError: a count is negative.
        """
        usage = UsageRecord(bot, platform, user_id, day, prompt_tokens, completion_tokens, messages)
        check_usage(usage)
        await self._enter()
        self._add_usage(usage)

    def _add_usage(self, usage: UsageRecord) -> None:
        user_key = usage_pseudonym(self._secret, usage.bot, usage.platform, usage.user_id)
        counters = self._usage.setdefault(
            (usage.bot, usage.platform, user_key, usage.day), _Usage()
        )
        counters.prompt_tokens += usage.prompt_tokens
        counters.completion_tokens += usage.completion_tokens
        counters.messages += usage.messages

    async def get_usage(self, bot: str, platform: str, user_id: str, day: date) -> UsageSummary:
        """The user's tokens on ``day`` and in total (zeros for an unknown user)."""
        await self._enter()
        user_key = usage_pseudonym(self._secret, bot, platform, user_id)
        today = total = messages_today = 0
        for (b, p, k, d), counters in self._usage.items():
            if (b, p, k) != (bot, platform, user_key):
                continue
            tokens = counters.prompt_tokens + counters.completion_tokens
            total += tokens
            if d == day:
                today += tokens
                messages_today += counters.messages
        return UsageSummary(tokens_today=today, tokens_total=total, messages_today=messages_today)

    async def save_media(self, blob: MediaBlob) -> None:
        """Store an image once per content hash; saving it again is a no-op.

        Raises:
            ValueError: ``blob.sha256`` is not the SHA-256 of ``blob.data``.
        """
        check_media(blob)
        await self._enter()
        self._media.setdefault(blob.sha256, blob)

    async def load_media(self, hashes: Sequence[str]) -> Mapping[str, MediaBlob]:
        """The stored media of ``hashes`` (those that exist), by hash."""
        await self._enter()
        return {h: self._media[h] for h in hashes if h in self._media}

    async def forget_user(self, bot: str, platform: str, user_id: str) -> int:
        """Delete everything stored about the user but the pseudonymous usage counters.

        As :meth:`adapters.memory.store.SqlMemoryStore.forget_user`: the conversations keyed
        by the user, the user's own messages in shared conversations with the bot's replies
        to them, the preferences of the user's slots, the user's pending tool calls (and
        those of the deleted conversations), the images only the deleted messages showed;
        the user's audit rows keep only the pseudonym.
        Returns the number of messages deleted.

        Raises:
            ValueError: ``user_id`` is empty.
        """
        if not user_id:
            raise ValueError("forget_user needs a user id")
        await self._enter()
        deleted = 0
        for conv in list(self._conversations.values()):
            key = conv.conversation.key
            if (key.bot, key.platform) != (bot, platform):
                continue
            if key.user_id == user_id:
                deleted += self._delete_conversation(conv)
            elif key.user_id is None:
                deleted += self._delete_from_shared(conv, user_id)
        for slot in [s for s in self._preferences if s[:2] == (bot, platform) and s[4] == user_id]:
            del self._preferences[slot]
        self._forget_pending(bot, platform, user_id)
        self._forget_audit(bot, platform, user_id)
        return deleted

    def _delete_conversation(self, conv: _Conversation) -> int:
        self._delete_messages(set(conv.ids))
        del self._conversations[conv.conversation.id]
        slot_ids = self._by_slot[_slot(conv.conversation.key)]
        slot_ids.remove(conv.conversation.id)
        return len(conv.ids)

    def _delete_from_shared(self, conv: _Conversation, user_id: str) -> int:
        """Delete ``user_id``'s messages in shared ``conv`` and the bot's replies to them.

        A reply belongs to the nearest user message before it. Returns how many went.
        """
        doomed: set[int] = set()
        replied_to: str | None = None
        for message in self._messages_of(conv):
            if message.role is Role.USER:
                replied_to = message.author_id
            elif message.role in (Role.ASSISTANT, Role.TOOL) and replied_to == user_id:
                doomed.add(message.id)
            if message.author_id == user_id:
                doomed.add(message.id)
        if not doomed:
            return 0
        self._delete_messages(doomed)
        conv.ids = [i for i in conv.ids if i not in doomed]
        return len(doomed)

    def _delete_messages(self, ids: set[int]) -> None:
        shown: set[str] = set()
        for message_id in ids:
            del self._messages[message_id]
            shown.update(self._media_links.pop(message_id, ()))
        if shown:  # the images no remaining message shows go with them
            still = {h for hashes in self._media_links.values() for h in hashes}
            for sha256 in shown - still:
                self._media.pop(sha256, None)
        for platform_id in [p for p, m in self._platform_ids.items() if m in ids]:
            del self._platform_ids[platform_id]

    async def export_user(
        self, bot: str, platform: str, user_id: str
    ) -> list[ExportedConversation]:
        """The user's conversations with all messages, and their own messages in shared ones.

        Conversations oldest first, messages in order. Shared conversations where the user
        wrote nothing are left out.

        Raises:
            ValueError: ``user_id`` is empty.
        """
        if not user_id:
            raise ValueError("export_user needs a user id")
        await self._enter()
        exported: list[ExportedConversation] = []
        for conv in self._conversations.values():
            key = conv.conversation.key
            if (key.bot, key.platform) != (bot, platform):
                continue
            if key.user_id == user_id:
                messages = list(self._messages_of(conv))
            elif key.user_id is None:
                messages = [m for m in self._messages_of(conv) if m.author_id == user_id]
                if not messages:
                    continue
            else:
                continue
            exported.append(ExportedConversation(conversation=conv.conversation, messages=messages))
        exported.sort(key=lambda e: (e.conversation.created_at, e.conversation.id))
        return exported

    async def stats(self, bot: str, day: date) -> list[PlatformStats]:
        """Counts per platform for ``bot``, in total and on ``day`` (UTC), sorted by platform.

        Users are distinct usage pseudonyms and tokens come from the usage counters (both
        survive ``forget_user``); conversations and messages are what the store holds.
        """
        await self._enter()
        start = datetime.combine(day, time.min, tzinfo=UTC)
        end = start + timedelta(days=1)
        counts: dict[str, dict[str, int]] = {}
        users: dict[tuple[str, bool], set[str]] = {}
        for (b, platform, user_key, d), counters in self._usage.items():
            if b != bot:
                continue
            tokens = counters.prompt_tokens + counters.completion_tokens
            _add(counts, platform, "tokens_total", tokens)
            users.setdefault((platform, False), set()).add(user_key)
            if d == day:
                _add(counts, platform, "tokens_today", tokens)
                users.setdefault((platform, True), set()).add(user_key)
        for (platform, today), keys in users.items():
            _add(counts, platform, "users_today" if today else "users_total", len(keys))
        for conv in self._conversations.values():
            key = conv.conversation.key
            if key.bot != bot:
                continue
            _add(counts, key.platform, "conversations_total", 1)
            _add(
                counts,
                key.platform,
                "conversations_today",
                start <= conv.conversation.created_at < end,
            )
            for message in self._messages_of(conv):
                _add(counts, key.platform, "messages_total", 1)
                _add(counts, key.platform, "messages_today", start <= message.created_at < end)
        return [
            PlatformStats(platform=p, **{**_ZERO_STATS, **c}) for p, c in sorted(counts.items())
        ]


_ZERO_STATS: Final = dict.fromkeys(
    (
        "users_total",
        "users_today",
        "conversations_total",
        "conversations_today",
        "messages_total",
        "messages_today",
        "tokens_total",
        "tokens_today",
    ),
    0,
)


def _add(counts: dict[str, dict[str, int]], platform: str, name: str, value: int) -> None:
    slot = counts.setdefault(platform, {})
    slot[name] = slot.get(name, 0) + int(value)


def _check_unique(
    platform_ids: list[_PlatformId], taken: dict[_PlatformId, int] | None = None
) -> None:
    """Raise ``StoreError`` (as a unique key would) if a platform id repeats or is taken."""
    seen: set[_PlatformId] = set()
    for platform_id in platform_ids:
        if platform_id in seen or (taken is not None and platform_id in taken):
            raise StoreError(
                "a row with the same unique key is already stored (duplicate platform message id?)"
            )
        seen.add(platform_id)


__all__ = ["InMemoryStore"]
