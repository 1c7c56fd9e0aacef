"""The ports (Protocols) the core talks through: LLM backends and memory stores.

The chat-side ports (``ReplyChannel``, ``FileSource``, ``ConversationEngine``, ``ChatAdapter``,
``ResumableAdapter``) live in :mod:`core.chat_ports`; this module re-exports the first three
for their many callers. The media ports (``MediaReader``, ``Transcriber``) live in
:mod:`core.media`, the knowledge base's (``Embedder``, ``KnowledgeStore``) in
:mod:`core.knowledge`.

Implementations live in ``adapters/`` and are named ``<Vendor><Role>``: ``OpenAIBackend``,
``LocalBackend``, ``SqlMemoryStore``, ``TelegramAdapter``, ``DiscordAdapter``,
``ConsoleAdapter``. Every implementation has an explicit, idempotent lifecycle
(``start()`` / ``aclose()``) and raises ``RuntimeError`` when used before ``start()`` or after
``aclose()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from core.chat_ports import ConversationEngine, FileSource, ReplyChannel
from core.media import MediaBlob
from core.types import (
    AuditEntry,
    BackendEvent,
    ChatMessage,
    CompletionRequest,
    Conversation,
    ConversationKey,
    ExportedConversation,
    InstanceInfo,
    MessageStatus,
    NewMessage,
    PendingClaim,
    PendingState,
    PendingToolCall,
    PlatformStats,
    Preferences,
    ReplyInProgress,
    StoredMessage,
    ToolDecision,
    UsageRecord,
    UsageSummary,
)


@runtime_checkable
class LLMBackend(Protocol):
    """A language model the engine streams replies from.

    Errors are raised as ``core.errors.BackendError`` subclasses only.
    """

    @property
    def name(self) -> str:
        """Short name for logs, e.g. ``"openai"`` or ``"local"``."""
        ...

    @property
    def default_model(self) -> str:
        """The model used when a conversation chose none."""
        ...

    def models(self) -> Sequence[str]:
        """The models ``/model`` may switch between (the default among them)."""
        ...

    def context_window(self, model: str) -> int:
        """The model's context size in tokens (the engine caps it by ``LLM_CONTEXT_WINDOW``)."""
        ...

    def tokenizer_name(self, model: str) -> str:
        """An id of the tokenizer ``count_tokens`` uses for ``model`` (stored with counts)."""
        ...

    async def count_tokens(self, text: str, model: str) -> int:
        """Count the tokens of ``text`` (content only) with ``model``'s tokenizer."""
        ...

    def message_overhead(self, model: str) -> int:
        """Tokens the chat format adds per message (role markers), added to content counts."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        """Stream the completion of ``request`` as events.

        Text and tool-call deltas, then one ``Finish`` saying why the reply ended (``cut``
        when ``request.max_tokens`` or the context stopped it), then ``Usage`` when the
        backend counts it; a backend that waits for a busy model may first yield
        ``QueuePosition``. A stream that raises yields no ``Finish``. ``max_tokens`` ``None``
        means the backend's own limit.

        Closing the iterator early (``aclose()``) cancels the generation and releases the
        connection or worker promptly. Raises ``BackendError`` subclasses while iterating.
        """
        ...

    def supports_images(self, model: str) -> bool:
        """Whether ``model`` accepts images in user turns (``ChatMessage.images``).

        The engine never sends an image to a model that can't see it: the user is told in
        one sentence and the caption alone is answered.
        """
        ...

    def supports_tools(self, model: str) -> bool:
        """Whether ``model`` can be offered tools (and its tool calls are understood).

        The engine never sends tools to a model that can't use them; a user asking such a
        bot to act is told so.
        """
        ...

    async def check_model(self, model: str) -> None:
        """Raise ``BackendError`` (with a clear ``user_message``) if ``model`` cannot be used."""
        ...

    async def start(self) -> None:
        """Open connections / load the default model. Idempotent."""
        ...

    async def aclose(self) -> None:
        """Release everything. Idempotent."""
        ...


@runtime_checkable
class MemoryStore(Protocol):
    """Dialogue memory. Every write returns only once it is committed.

    Raises ``core.errors.StoreError`` on failure.
    """

    async def start(self) -> None:
        """Connect (migrations are applied by the composition root). Idempotent."""
        ...

    async def aclose(self) -> None:
        """Flush pending writes and close. Idempotent."""
        ...

    # --- conversations and messages ---

    async def current_conversation(self, key: ConversationKey) -> Conversation:
        """The newest conversation of ``key``, created if there is none."""
        ...

    async def new_conversation(self, key: ConversationKey) -> Conversation:
        """Start a new conversation for ``key`` (``/reset``); older ones stay stored."""
        ...

    async def append_messages(
        self, conversation_id: int, messages: Sequence[NewMessage]
    ) -> list[StoredMessage]:
        """Append ``messages`` in order in one transaction, with consecutive sequence numbers.

        Platform message ids given in a ``NewMessage`` are recorded for it, and so are the
        media it names (``NewMessage.media``: hashes already saved with ``save_media``).
        Raises ``DuplicateMessage`` (carrying the stored message) if one of those platform
        ids is already recorded; nothing of the call is stored then.
        """
        ...

    async def save_media(self, blob: MediaBlob) -> None:
        """Store an image once per content hash (``blob.sha256``); saving it again is a no-op.

        Media no message links to (``NewMessage.media``) are deleted by ``forget_user`` and
        may be deleted by the store after a day.
        """
        ...

    async def load_media(self, hashes: Sequence[str]) -> Mapping[str, MediaBlob]:
        """The stored media of ``hashes`` (those that exist), by hash."""
        ...

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
        """Set the final content and status of a message and record its platform ids.

        With ``usage``, also add it to the user's counters, in the same transaction. With
        ``extra``, its keys are set in the message's ``extra`` (others kept), in the same
        transaction (a reply's ``"sources"`` and ``"retrieval"``).
        """
        ...

    async def recent_messages(
        self, conversation_id: int, *, limit: int, before_seq: int | None = None
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages usable in a prompt, newest first, with seq < ``before_seq``.

        Usable means status complete or interrupted with non-empty content. The cost depends
        on ``limit``, not on how many messages the conversation holds.
        """
        ...

    async def find_by_platform_message(
        self, bot: str, platform: str, chat_id: str, platform_message_id: str
    ) -> StoredMessage | None:
        """The stored message a platform message id belongs to, if any."""
        ...

    async def reply_to(self, message: StoredMessage) -> StoredMessage | None:
        """The first assistant message after ``message`` in its conversation, if any."""
        ...

    async def save_progress(
        self,
        message_id: int,
        *,
        content: str | None,
        platform_chat_id: str | None = None,
        platform_message_ids: Sequence[str] = (),
    ) -> None:
        """Save a reply in progress: its text so far (unless ``None``) and its messages.

        Only a message still in progress is changed; ids already recorded for it are
        skipped, new ones added after them (the order of the messages on screen).
        """
        ...

    # --- instances, owner leases and recovery ---

    async def register_instance(self, instance: InstanceInfo) -> None:
        """Record a running process (or renew its row)."""
        ...

    async def heartbeat(self, instance_id: str, at: datetime) -> bool:
        """Say ``instance_id`` is alive at ``at``; ``False`` if its row is gone."""
        ...

    async def retire_instance(self, instance_id: str) -> None:
        """Forget a process (stopped, or found dead); its leases are released."""
        ...

    async def instances(self, bot: str) -> list[InstanceInfo]:
        """The processes recorded for ``bot``, live or not."""
        ...

    async def claim_replies(
        self, bot: str, owner: str, live: Sequence[str], *, message_id: int | None = None
    ) -> list[ReplyInProgress]:
        """Take over ``bot``'s replies in progress whose owner is not in ``live``.

        Atomic per reply: two claimants never both get one. With ``message_id``, only that
        reply is considered. Returns the replies now owned by ``owner``, oldest first.
        """
        ...

    async def acquire_lease(self, bot: str, platform: str, owner: str, live: Sequence[str]) -> str:
        """Hold the (bot, platform) lease unless a holder in ``live`` has it; return the holder."""
        ...

    async def release_lease(self, bot: str, platform: str, owner: str) -> None:
        """Give up the (bot, platform) lease if ``owner`` holds it."""
        ...

    # --- tool calls, confirmations and the audit ---

    async def save_tool_calls(
        self,
        message_id: int,
        calls: Sequence[Mapping[str, Any]],
        *,
        content: str | None = None,
        results: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Record the tool calls an assistant message ended with (``extra["tool_calls"]``).

        Each call is ``{"id", "name", "arguments"}`` plus what the engine adds (``"risk"``,
        ``"source"``). With ``content``, the message's text is saved too; with ``results``
        (by call id, as :meth:`save_tool_result` takes them), they are stored in the same
        write. The status is not changed (``finish_message`` sets it).
        """
        ...

    async def save_tool_result(
        self, message_id: int, call_id: str, result: Mapping[str, Any]
    ) -> None:
        """Record one call's result in ``extra["tool_results"][call_id]``, committed.

        ``result`` is ``{"content": str, "ok": bool, "status": str}`` (``status`` one of
        ``ok``, ``error``, ``timeout``, ``declined``, ``expired``, ``denied``, ``invalid``,
        ``cancelled``, ``interrupted``). Results of other calls are kept.
        """
        ...

    async def add_pending_calls(self, calls: Sequence[PendingToolCall]) -> None:
        """Store calls waiting for a confirmation, in one transaction."""
        ...

    async def claim_pending_call(
        self, pending_id: str, *, owner: str, accept: bool, now: datetime
    ) -> PendingClaim:
        """Decide a pending call atomically: exactly one of racing claimants wins.

        ``accept`` moves ``pending`` to ``running`` (owned by ``owner``; the caller executes
        it), a refusal to ``refused``; a call past ``expires_at`` becomes ``expired``. The
        state changes in the transaction that claims it: a double press, a redelivered
        button or two replicas racing get ``GONE``.
        """
        ...

    async def finish_pending_call(self, pending_id: str, state: PendingState) -> None:
        """Set a claimed call's final state (``done`` once its result is stored)."""
        ...

    async def claim_round(self, message_id: int) -> bool:
        """Move a round from ``awaiting`` to ``tool_calls`` atomically; whether this call did.

        Once every call of a round is answered, the model continues from it: of two
        processes that answered its last calls at the same time, only the one that claims it
        continues.
        """
        ...

    async def pending_call(self, pending_id: str) -> PendingToolCall | None:
        """The call ``pending_id`` (its confirmation's action id), in any state, if stored."""
        ...

    async def pending_calls(
        self, conversation_id: int, *, message_id: int | None = None
    ) -> list[PendingToolCall]:
        """The conversation's calls still ``pending`` or ``running`` (of one message)."""
        ...

    async def cancel_pending_calls(self, conversation_id: int) -> list[PendingToolCall]:
        """Cancel the conversation's ``pending`` calls (the chat moved on); return them."""
        ...

    async def expire_pending_calls(self, bot: str, now: datetime) -> list[PendingToolCall]:
        """Mark ``bot``'s pending calls past their expiry ``expired``; return them."""
        ...

    async def add_audit(self, entry: AuditEntry) -> int:
        """Record a proposed tool call (the store adds the user's pseudonym); return its id."""
        ...

    async def finish_audit(
        self,
        audit_id: int,
        *,
        decision: ToolDecision | None = None,
        result_status: str | None = None,
        duration_ms: float | None = None,
    ) -> None:
        """Update an audit row once the call was decided or ran (``None`` keeps a field)."""
        ...

    async def audit_entries(
        self,
        *,
        bot: str | None = None,
        platform: str | None = None,
        user_id: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[AuditEntry]:
        """The newest audit rows first; ``user_id`` (with ``platform``) matches by pseudonym."""
        ...

    # --- preferences ---

    async def get_preferences(self, key: ConversationKey) -> Preferences:
        """The slot's preferences (defaults when none were saved)."""
        ...

    async def save_preferences(self, key: ConversationKey, preferences: Preferences) -> None:
        """Replace the slot's preferences."""
        ...

    # --- usage, privacy, statistics ---

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
        """Add to the user's pseudonymous usage counters for ``day`` (UTC)."""
        ...

    async def get_usage(self, bot: str, platform: str, user_id: str, day: date) -> UsageSummary:
        """The user's tokens on ``day`` and in total."""
        ...

    async def forget_user(self, bot: str, platform: str, user_id: str) -> int:
        """Delete everything stored about the user but the pseudonymous usage counters.

        That is: conversations keyed by the user (with all their messages), the user's own
        messages in shared conversations, their preferences and platform ids, and their
        pending tool calls; their audit rows keep only the pseudonym. Returns the number of
        messages deleted.
        """
        ...

    async def export_user(
        self, bot: str, platform: str, user_id: str
    ) -> list[ExportedConversation]:
        """The user's conversations (and own messages in shared ones), oldest first."""
        ...

    async def stats(self, bot: str, day: date) -> list[PlatformStats]:
        """Counts per platform, in total and on ``day`` (UTC)."""
        ...


__all__ = [
    "ChatMessage",
    "ConversationEngine",
    "FileSource",
    "LLMBackend",
    "MemoryStore",
    "ReplyChannel",
]
