"""Platform-neutral value types shared by the core, the adapters and the backends.

Adapters build these at the edge from vendor objects (``telegram.Update``,
``discord.Message``); the core never sees a vendor type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from core.text import safe_text


class Role(StrEnum):
    """Who wrote a message in the dialogue."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class MessageStatus(StrEnum):
    """The life of a stored message."""

    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    IN_PROGRESS = "in_progress"
    CUT = "cut"  # stopped by the token limit; shown with a notice, "continue" resumes it
    # An assistant message that ended with tool calls (``extra["tool_calls"]``), every call
    # resolved (``extra["tool_results"]``): part of later prompts even with empty content.
    TOOL_CALLS = "tool_calls"
    # Tool calls waiting for a person's confirmation: not a reply in progress (recovery
    # leaves it alone); becomes TOOL_CALLS once every call is resolved.
    AWAITING = "awaiting"


class MemoryScope(StrEnum):
    """How memory is kept in group chats."""

    USER = "user"  # each user has their own memory in a group
    CHAT = "chat"  # the whole chat shares one memory


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that came with a message, fetched only when needed (``/kb add``).

    Attributes:
        kind: one of :class:`AttachmentKind`'s values: ``"photo"`` (a picture to look at:
            Telegram photos and image documents, Discord image attachments), ``"voice"``
            (speech to transcribe: voice notes and audio files) or ``"document"`` (any
            other file: text files are read into the turn, others may go to ``/kb add``).
        name: the file name as the user sent it (may be empty).
        size: its size in bytes, when the platform says.
        mime_type: its MIME type, when the platform says.
        ref: the adapter's handle to download it (a Telegram file id, a Discord URL).
        duration: the length in seconds of a voice note or audio file, when the platform
            says (checked against ``STT_MAX_SECONDS`` before downloading).
    """

    kind: str
    name: str
    size: int | None
    mime_type: str | None
    ref: str
    duration: float | None = None


class AttachmentKind(StrEnum):
    """What the bot does with an attachment (``Attachment.kind``)."""

    PHOTO = "photo"
    VOICE = "voice"
    DOCUMENT = "document"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a user turn, as a backend sends it to a vision model.

    Attributes:
        data: the encoded image (JPEG or PNG), already downscaled for the model.
        mime_type: ``"image/jpeg"`` or ``"image/png"``.
        width: its width in pixels.
        height: its height in pixels.
    """

    data: bytes
    mime_type: str
    width: int
    height: int

    def __repr__(self) -> str:  # never dump megabytes into a log line or a test failure
        return f"ImagePart({self.mime_type}, {self.width}x{self.height}, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message a user sent to the bot, as any platform sees it.

    Attributes:
        platform: ``"telegram"``, ``"discord"``, ``"console"``...
        chat_id: the chat, channel or DM the message arrived in.
        user_id: the author on that platform.
        text: the text; empty when the message carries no text.
        message_id: the platform's id of this message (for redelivery detection).
        thread_id: forum topic or thread id, when the platform has one.
        is_private: a one-to-one chat with the bot.
        user_name: a display name to show the model in shared memory.
        unsupported: what the message carried instead of text (``"sticker"``,
            ``"photo"``...), or ``None`` for a text message.
        reply_to_message_id: the platform id of the message this one replies to.
        attachments: files that came with the message (its caption is ``text``); the
            adapter's channel downloads them (``ReplyChannel.download``).
        reply_attachments: files of the message this one replies to, when the user replied
            to one of their own messages (``/kb add`` as a reply to a file).
        reply_via: an opaque handle the platform answers through from another process: a
            Discord slash command's interaction token (valid 15 minutes), carried from
            ingress to the queue worker. A credential: never shown in ``repr`` or logs, never
            stored with the message.
    """

    platform: str
    chat_id: str
    user_id: str
    text: str
    message_id: str | None = None
    thread_id: str | None = None
    is_private: bool = True
    user_name: str | None = None
    unsupported: str | None = None
    reply_to_message_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    reply_attachments: tuple[Attachment, ...] = ()
    reply_via: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # The one place a user's text enters the core: the prompt, the store and any echo
        # then hold the same text, one every database and wire can carry.
        object.__setattr__(self, "text", safe_text(self.text))
        if self.user_name is not None:
            object.__setattr__(self, "user_name", safe_text(self.user_name))


@dataclass(frozen=True, slots=True)
class IncomingAction:
    """A button press (or console yes/no) answering a confirmation the engine asked for.

    Attributes:
        action_id: the id the engine passed to ``ReplyChannel.ask_confirmation``.
        accepted: whether the user confirmed.
        reply_via: as :attr:`IncomingMessage.reply_via` (the press's interaction token when
            its answer is private to the presser); never shown in ``repr`` or logs.
    """

    platform: str
    chat_id: str
    user_id: str
    action_id: str
    accepted: bool
    thread_id: str | None = None
    is_private: bool = True
    reply_via: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """What identifies a conversation slot; ``/reset`` starts a new conversation in it.

    ``thread_id`` is ``None`` outside threads/topics; ``user_id`` is ``None`` when the
    whole chat shares one memory.
    """

    bot: str
    platform: str
    chat_id: str
    thread_id: str | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call (JSON-schema parameters)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete call of a tool by the model; ``arguments`` is a JSON string."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a prompt sent to a backend."""

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    # Images of a user turn, after its text (sent only to models that accept images).
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What the engine asks a backend to complete."""

    messages: Sequence[ChatMessage]
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    tools: Sequence[ToolSpec] = ()


# --- events a backend streams -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of reply text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call; pieces with the same ``index`` concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the reply ended, as the backend said: once per stream, before ``Usage``.

    ``reason`` is OpenAI's ``finish_reason`` vocabulary: ``"stop"`` (the model finished),
    ``"length"`` (the token limit cut it), ``"tool_calls"``, ``"content_filter"``; other
    servers' words pass through unchanged.
    """

    reason: str

    @property
    def cut(self) -> bool:
        """Whether the token limit stopped the reply before the model finished it."""
        return self.reason == "length"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage for the whole request, as the backend counted it.

    ``cached_tokens``: how many of the prompt tokens the backend had cached from an earlier
    request (not evaluated again); part of ``prompt_tokens``.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """The request waits for a busy backend; ``position`` 1 is next in line."""

    position: int

    @property
    def notice(self) -> str:
        """What a person waiting in line is shown until their answer starts."""
        return (
            f"The model is busy with other conversations: you're number {self.position} "
            "in line. Your answer will follow."
        )


BackendEvent = TextDelta | ToolCallDelta | Finish | Usage | QueuePosition

ReplyEvent = str | QueuePosition
"""What ``ReplyChannel.stream_reply`` receives: text deltas (``str``), and ``QueuePosition``
while the reply waits for a busy model (the adapter shows ``notice`` until text arrives)."""


# --- what the store keeps -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversation:
    """A stored conversation."""

    id: int
    key: ConversationKey
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append to a conversation.

    ``platform_message_ids`` are the platform's ids of the message(s) that carried it,
    all in ``platform_chat_id``.
    """

    role: Role
    content: str
    author_id: str | None = None
    status: MessageStatus = MessageStatus.COMPLETE
    token_count: int | None = None
    tokenizer: str | None = None
    extra: Mapping[str, Any] | None = None
    platform_chat_id: str | None = None
    platform_message_ids: Sequence[str] = ()
    owner: str | None = None  # the instance writing a reply in progress
    # Content hashes of the stored media (``MemoryStore.save_media``) this message shows;
    # linked so that /forget deletes what only the forgotten messages referenced.
    media: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored, with its per-conversation sequence number."""

    id: int
    conversation_id: int
    seq: int
    role: Role
    content: str
    author_id: str | None
    status: MessageStatus
    token_count: int | None
    tokenizer: str | None
    extra: Mapping[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """A running chinwag process, as the store keeps it (the owner of replies and leases).

    Attributes:
        id: unique per process start.
        bot: the ``BOT_NAME`` it serves.
        host: the host name it runs on.
        pid: its process id on ``host``.
        heartbeat_at: when it last said it is alive (UTC).
    """

    id: str
    bot: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True, slots=True)
class ReplyInProgress:
    """A reply left in progress that an instance took over (``MemoryStore.claim_replies``).

    Attributes:
        message: the stored reply (status ``in_progress``, content as last saved).
        key: its conversation's slot.
        chat_id: the platform chat its messages are in.
        platform_message_ids: the messages already on screen, in the order they were posted.
    """

    message: StoredMessage
    key: ConversationKey
    chat_id: str
    platform_message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Preferences:
    """Per-slot preferences that outlive ``/reset``; ``None`` means the default."""

    persona: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A command the engine answers, for adapters to register (menus, slash commands)."""

    name: str
    description: str
    argument: str | None = None  # e.g. "text" for /system <text>
    admin_only: bool = False
    choices: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Tokens one exchange used, to add to the user's counters for ``day`` (UTC)."""

    bot: str
    platform: str
    user_id: str
    day: date
    prompt_tokens: int
    completion_tokens: int
    messages: int = 1


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A user's token usage: today (UTC) and in total, kept pseudonymously."""

    tokens_today: int
    tokens_total: int
    messages_today: int = 0


@dataclass(frozen=True, slots=True)
class PlatformStats:
    """Counts for ``/stats`` on one platform."""

    platform: str
    users_total: int
    users_today: int
    conversations_total: int
    conversations_today: int
    messages_total: int
    messages_today: int
    tokens_total: int
    tokens_today: int


@dataclass(frozen=True, slots=True)
class ExportedConversation:
    """One conversation with the messages ``/export`` delivers for a user."""

    conversation: Conversation
    messages: Sequence[StoredMessage]


# --- tools: pending confirmations and the audit --------------------------------------------


class PendingState(StrEnum):
    """Where a tool call that waits for a person's confirmation is in its life."""

    PENDING = "pending"  # asked; waiting for the button
    RUNNING = "running"  # claimed by a confirmation; executing (exactly one claimant)
    DONE = "done"  # executed, result stored
    REFUSED = "refused"  # the person said no
    EXPIRED = "expired"  # not answered within TOOL_CONFIRM_SECONDS
    CANCELLED = "cancelled"  # the conversation moved on, /reset or /forget


class ClaimOutcome(StrEnum):
    """What :meth:`MemoryStore.claim_pending_call` did."""

    CLAIMED = "claimed"  # pending -> running: the caller executes it, and only the caller
    REFUSED = "refused"  # pending -> refused (the answer was no)
    EXPIRED = "expired"  # pending but past its expiry -> expired; nothing runs
    GONE = "gone"  # unknown, or already decided (a double press, a redelivered button)


@dataclass(frozen=True, slots=True)
class PendingToolCall:
    """A tool call waiting for (or past) a confirmation, as the store keeps it.

    Attributes:
        id: the confirmation's action id (short, URL-safe; what the buttons carry).
        key: the conversation slot the call belongs to.
        chat_id: the platform chat the question was asked in.
        user_id: who asked the bot (only they, or an admin, may confirm).
        conversation_id: the stored conversation.
        message_id: the stored assistant message whose ``extra["tool_calls"]`` holds it.
        call_id: the model's id of the call.
        tool: the tool's name.
        arguments: the validated arguments, as JSON.
        risk: ``"act"`` or ``"dangerous"``.
        state: where it is in its life.
        audit_id: its row in the audit.
        owner: the instance that claimed it (while ``RUNNING``).
    """

    id: str
    key: ConversationKey
    chat_id: str
    user_id: str
    conversation_id: int
    message_id: int
    call_id: str
    tool: str
    arguments: str
    risk: str
    state: PendingState
    created_at: datetime
    expires_at: datetime
    audit_id: int | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class PendingClaim:
    """The result of claiming a pending call: what happened, and the call if it exists."""

    outcome: ClaimOutcome
    call: PendingToolCall | None


class ToolDecision(StrEnum):
    """What the gate decided about a proposed call (the audit's ``decision``)."""

    ALLOWED = "allowed"  # a read call, run at once
    PENDING = "pending"  # waiting for a confirmation
    CONFIRMED = "confirmed"
    REFUSED = "refused"  # the person said no
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    DENIED = "denied"  # by policy: the user may not use it, or it was not offered
    INVALID = "invalid"  # arguments did not match the schema; told to the model


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One proposed tool call, as the audit keeps it.

    ``user_id`` is cleared by ``/forget``; ``user_pseudonym`` (an HMAC) stays.
    ``arguments`` is JSON with secrets redacted. ``result_status`` is ``"ok"``, ``"error"``,
    ``"timeout"`` or ``None`` (not run); ``duration_ms`` is the execution's.
    """

    at: datetime
    bot: str
    platform: str
    chat_id: str
    user_id: str | None
    tool: str
    source: str
    arguments: str
    risk: str
    decision: ToolDecision
    user_pseudonym: str = ""
    result_status: str | None = None
    duration_ms: float | None = None
    id: int | None = None
