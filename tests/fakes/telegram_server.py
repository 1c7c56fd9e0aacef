"""A loopback fake of the Telegram Bot API that the real python-telegram-bot talks to.

Point a bot at it with ``TELEGRAM_API_BASE_URL=<fake.base_url>``; the fake answers
``/bot<token>/<method>`` like api.telegram.org and enforces the rules a real bot meets:

* message text must be 1 to 4096 UTF-16 code units *after* entity parsing (leading and
  trailing whitespace trimmed);
* HTML is parsed the way Telegram parses it (:func:`parse_html`): unsupported tags such as
  ``<br>``, unclosed or unmatched tags and a bare ``<`` are refused with
  ``Bad Request: can't parse entities: ...``; a bare ``&`` is kept as text;
* editing a message to the same content fails with ``message is not modified``;
* flood control: limits per chat, per group and globally (:class:`FloodLimits`) answer 429
  with ``parameters.retry_after``; a call to a chat still serving its penalty is recorded
  as *premature*; with ``FloodLimits(bot_wide=True)`` the global limit's penalty applies to
  the whole bot, so a call to *any* chat inside it is premature (calls already on the wire
  when the 429 was answered, :attr:`FakeTelegram.in_flight`, are not counted);
* chats marked blocked answer ``Forbidden: bot was blocked by the user``;
* files: a user's document (:meth:`FakeTelegram.send_document`, image documents too),
  photo (:meth:`FakeTelegram.send_photo`, one file per size), voice note
  (:meth:`FakeTelegram.send_voice`) or audio file (:meth:`FakeTelegram.send_audio`) is
  fetched with ``getFile`` (``Bad Request: file is too big`` over the Bot API's 20 MB
  download limit) and then from ``/file/bot<token>/<file_path>``, streamed;
  :attr:`FakeTelegram.downloads` lists them;
* :meth:`FakeTelegram.answer_late` applies the next calls of a method at once but answers
  them only after a delay (a slow Telegram that did deliver: the client times out).

Tests inject updates (:meth:`FakeTelegram.send_text` and friends), read every call with its
timestamp (:attr:`FakeTelegram.calls`), and read what a user sees in each chat
(:meth:`FakeTelegram.bot_messages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "REAL_LIMITS",
    "Call",
    "Entity",
    "FakeChat",
    "FakeMessage",
    "FakeTelegram",
    "FakeUser",
    "FloodLimits",
    "PhotoFile",
    "TelegramHTMLError",
    "parse_html",
    "utf16_len",
]


# --- Telegram's HTML parser ---------------------------------------------------------------


_CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)


class TelegramHTMLError(ValueError):
    """The text is not valid Telegram HTML; ``str()`` is Telegram's description."""


@dataclass(frozen=True, slots=True)
class Entity:
    """A message entity as Telegram reports it (offsets in UTF-16 code units)."""

    type: str
    offset: int
    length: int
    url: str | None = None
    language: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "offset": self.offset, "length": self.length}
        if self.url is not None:
            data["url"] = self.url
        if self.language is not None:
            data["language"] = self.language
        return data


_TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "u": "underline",
    "ins": "underline",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ATTR_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ATTR_BARE = re.compile(r"[A-Za-z0-9.-]+")


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, as Telegram counts."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _decode_entity(src: str, i: int) -> tuple[str, int] | None:
    """Decode the HTML entity at ``src[i] == '&'``: (text, end) or ``None`` if there is none."""
    end = src.find(";", i + 1, i + 12)
    if end < 0:
        return None
    body = src[i + 1 : end]
    if body in _NAMED_ENTITIES:
        return _NAMED_ENTITIES[body], end + 1
    try:
        if body.startswith(("#x", "#X")):
            code = int(body[2:], 16)
        elif body.startswith("#") and body[1:].isdigit():
            code = int(body[1:])
        else:
            return None
    except ValueError:
        return None
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), end + 1


def _decode_all(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            decoded = _decode_entity(value, i)
            if decoded:
                out.append(decoded[0])
                i = decoded[1]
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def parse_html(src: str) -> tuple[str, list[Entity]]:
    """Parse Telegram HTML into (visible text, entities), as the Bot API does.

    The text is returned untrimmed. Raises :class:`TelegramHTMLError` with Telegram's
    description (without the ``Bad Request: can't parse entities:`` prefix).
    """

    def offset(pos: int) -> int:
        return len(src[:pos].encode("utf-8"))

    out: list[str] = []
    entities: list[Entity] = []
    # (tag name, attributes, utf16 start, language of an inner code for pre)
    stack: list[list[Any]] = []
    units = 0
    i = 0
    n = len(src)
    while i < n:
        ch = src[i]
        if ch == "&":
            decoded = _decode_entity(src, i)
            if decoded:
                out.append(decoded[0])
                units += utf16_len(decoded[0])
                i = decoded[1]
                continue
        if ch != "<":
            out.append(ch)
            units += 2 if ord(ch) > 0xFFFF else 1
            i += 1
            continue
        begin = i
        i += 1
        if i >= n or src[i] != "/":
            j = i
            while j < n and not src[j].isspace() and src[j] != ">":
                j += 1
            if j >= n:
                raise TelegramHTMLError(f"Unclosed start tag at byte offset {offset(begin)}")
            name = src[i:j].lower()
            if name not in _TAG_TYPES:
                raise TelegramHTMLError(
                    f'Unsupported start tag "{name}" at byte offset {offset(begin)}'
                )
            attrs: dict[str, str] = {}
            i = j
            while True:
                while i < n and src[i].isspace():
                    i += 1
                if i >= n:
                    raise TelegramHTMLError(f"Unclosed start tag at byte offset {offset(begin)}")
                if src[i] == ">":
                    i += 1
                    break
                match = _ATTR_NAME.match(src, i)
                if not match:
                    raise TelegramHTMLError(
                        f'Empty attribute name in the tag "{name}" at byte offset {offset(begin)}'
                    )
                attr = match.group().lower()
                i = match.end()
                while i < n and src[i].isspace():
                    i += 1
                if i >= n or src[i] != "=":
                    raise TelegramHTMLError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{name}" at byte offset {offset(begin)}'
                    )
                i += 1
                while i < n and src[i].isspace():
                    i += 1
                if i >= n:
                    raise TelegramHTMLError(f"Unclosed start tag at byte offset {offset(begin)}")
                if src[i] in "\"'":
                    close = src.find(src[i], i + 1)
                    if close < 0:
                        raise TelegramHTMLError(
                            f'Unclosed end of an attribute value in the tag "{name}" '
                            f"at byte offset {offset(begin)}"
                        )
                    value = _decode_all(src[i + 1 : close])
                    i = close + 1
                else:
                    bare = _ATTR_BARE.match(src, i)
                    if not bare:
                        raise TelegramHTMLError(
                            f"Unexpected end of name token at byte offset {offset(i)}"
                        )
                    value = bare.group()
                    i = bare.end()
                attrs[attr] = value
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise TelegramHTMLError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {offset(begin)}'
                )
            stack.append([name, attrs, units, None])
        else:
            if not stack:
                raise TelegramHTMLError(f"Unexpected end tag at byte offset {offset(begin)}")
            j = i + 1
            while j < n and not src[j].isspace() and src[j] != ">":
                j += 1
            end_name = src[i + 1 : j].lower()
            while j < n and src[j].isspace():
                j += 1
            if j >= n or src[j] != ">":
                raise TelegramHTMLError(f"Unclosed end tag at byte offset {offset(begin)}")
            name, attrs, start, inner_language = stack.pop()
            if end_name and end_name != name:
                raise TelegramHTMLError(
                    f'Unmatched end tag at byte offset {offset(begin)}, expected "</{name}>", '
                    f'found "</{end_name}>"'
                )
            i = j + 1
            length = units - start
            if length <= 0:
                continue
            kind = _TAG_TYPES[name]
            language: str | None = None
            url: str | None = None
            if name == "code":
                css = attrs.get("class", "")
                if stack and stack[-1][0] == "pre" and css.startswith("language-"):
                    stack[-1][3] = css[len("language-") :]
                    continue  # merged into the enclosing pre
            if name == "pre":
                language = inner_language
            if name == "a":
                url = attrs.get("href")
                if not url:
                    continue
            if name == "blockquote" and "expandable" in attrs:
                kind = "expandable_blockquote"
            entities.append(Entity(kind, start, length, url=url, language=language))
    if stack:
        raise TelegramHTMLError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e.offset, -e.length))
    return "".join(out), entities


def _trim(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    """Strip leading/trailing whitespace as Telegram does, shifting and clipping entities."""
    lead = len(text) - len(text.lstrip())
    stripped = text.strip()
    shift = utf16_len(text[:lead])
    total = utf16_len(stripped)
    kept: list[Entity] = []
    for entity in entities:
        start = max(entity.offset - shift, 0)
        end = min(entity.offset + entity.length - shift, total)
        if end > start:
            kept.append(
                Entity(entity.type, start, end - start, url=entity.url, language=entity.language)
            )
    return stripped, kept


# --- state --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeUser:
    """A Telegram user (or bot) account."""

    id: int
    first_name: str
    username: str | None = None
    is_bot: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.username:
            data["username"] = self.username
        return data


@dataclass(frozen=True, slots=True)
class FakeChat:
    """A chat: ``private``, ``group`` or ``supergroup`` (a forum when ``is_forum``)."""

    id: int
    type: str
    title: str | None = None
    is_forum: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.title:
            data["title"] = self.title
        if self.type == "private":
            data["first_name"] = f"user{self.id}"
        if self.is_forum:
            data["is_forum"] = True
        return data


@dataclass(slots=True)
class FakeMessage:
    """A message in a chat as a user sees it (text after entity parsing)."""

    message_id: int
    chat: FakeChat
    sender: FakeUser
    text: str
    entities: list[Entity] = field(default_factory=list)
    thread_id: int | None = None
    reply_to: int | None = None
    reply_markup: dict[str, Any] | None = None
    document: tuple[str, bytes] | None = None
    caption: str | None = None
    mime_type: str | None = None
    size_known: bool = True  # whether the update carries the document's file_size
    # The Bot API object of a photo (its list of sizes), voice note or audio file.
    media: Any = None
    media_group_id: str | None = None  # the album it belongs to
    kind: str = "text"
    date: int = field(default_factory=lambda: int(time.time()))
    deleted: bool = False
    edits: int = 0

    def entity_types(self) -> set[str]:
        return {entity.type for entity in self.entities}

    @property
    def file_id(self) -> str:
        """The id of the message's document (unique across chats, as Telegram's are)."""
        return f"doc{self.chat.id}_{self.message_id}"

    def to_dict(self, fake: FakeTelegram, *, with_reply: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "date": self.date,
            "chat": self.chat.to_dict(),
            "from": self.sender.to_dict(),
        }
        if self.kind == "text":
            data["text"] = self.text
            if self.entities:
                data["entities"] = [e.to_dict() for e in self.entities]
        elif self.kind == "document" and self.document:
            name, blob = self.document
            data["document"] = {
                "file_id": self.file_id,
                "file_unique_id": f"u{self.file_id}",
                "file_name": name,
            }
            if self.size_known:
                data["document"]["file_size"] = len(blob)
            if self.mime_type:
                data["document"]["mime_type"] = self.mime_type
            self._caption(data)
        elif self.kind in ("photo", "voice", "audio") and self.media is not None:
            data[self.kind] = self.media
            self._caption(data)
        elif self.kind == "sticker":
            data["sticker"] = {
                "file_id": "sticker1",
                "file_unique_id": "usticker1",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
            }
        elif self.kind == "photo":
            data["photo"] = [
                {"file_id": "photo1", "file_unique_id": "uphoto1", "width": 90, "height": 90}
            ]
            if self.caption:
                data["caption"] = self.caption
        elif self.kind == "voice":
            data["voice"] = {"file_id": "voice1", "file_unique_id": "uvoice1", "duration": 2}
        elif self.kind == "video_note":
            data["video_note"] = {
                "file_id": "note1",
                "file_unique_id": "unote1",
                "length": 240,
                "duration": 3,
            }
        if self.media_group_id is not None:
            data["media_group_id"] = self.media_group_id
        if self.thread_id is not None:
            data["message_thread_id"] = self.thread_id
            if self.chat.is_forum:
                data["is_topic_message"] = True
        if self.reply_markup:
            data["reply_markup"] = self.reply_markup
        if with_reply and self.reply_to is not None:
            replied = fake.find_message(self.chat.id, self.reply_to)
            if replied is not None:
                data["reply_to_message"] = replied.to_dict(fake, with_reply=False)
        return data

    def _caption(self, data: dict[str, Any]) -> None:
        if not self.caption:
            return
        data["caption"] = self.caption
        entities = _user_entities(self.caption)
        if entities:
            data["caption_entities"] = [entity.to_dict() for entity in entities]


def _user_entities(text: str) -> list[Entity]:
    """The entities Telegram finds in what a user typed: a leading /command, @mentions."""
    entities: list[Entity] = []
    command = re.match(r"/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?", text)
    if command:
        entities.append(Entity("bot_command", 0, utf16_len(command.group())))
    for mention in re.finditer(r"(?<![\w@])@[A-Za-z0-9_]{5,32}", text):
        start = utf16_len(text[: mention.start()])
        entities.append(Entity("mention", start, utf16_len(mention.group())))
    return entities


@dataclass(frozen=True, slots=True)
class PhotoFile:
    """One size of a photo a user sends: its pixel size and its JPEG bytes."""

    width: int
    height: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """One Bot API call as the fake received it."""

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic()
    chat_id: int | None
    ok: bool
    error_code: int | None = None
    description: str | None = None
    premature: bool = False  # made while the chat still served a 429 penalty


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """At most ``count`` calls per ``seconds``, per chat, per group chat, and in total.

    ``None`` disables a limit. Counted calls: sending, editing and document calls. With
    ``bot_wide`` the penalty for passing ``global_`` closes every chat, as Telegram's
    bot-wide limit (~30 messages a second across chats) does.
    """

    chat: tuple[int, float] | None = None
    group: tuple[int, float] | None = None
    global_: tuple[int, float] | None = None
    bot_wide: bool = False


REAL_LIMITS = FloodLimits(chat=(2, 2.0), group=(20, 60.0), global_=(30, 1.0))
"""Telegram's published guidance: ~1 message per second per chat (short bursts allowed),
20 per minute in a group, 30 per second in total."""

_COUNTED = {"sendMessage", "editMessageText", "sendDocument", "editMessageReplyMarkup"}
_JSON_PARAMS = {
    "reply_markup",
    "entities",
    "commands",
    "reply_parameters",
    "allowed_updates",
    "scope",
    "link_preview_options",
}
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses bigger files ("file is too big")
_INT_PARAMS = {"message_id", "message_thread_id", "offset", "limit", "timeout", "max_connections"}
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)


class _ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


class FakeTelegram:
    """The fake Bot API server. Use ``async with FakeTelegram() as fake``.

    Attributes:
        token: the only token accepted (others get 401 Unauthorized).
        bot: the bot's own account (``getMe``).
        limits: flood limits; change them at any time.
        calls: every call received, in order.
        host: the address it listens on (``0.0.0.0`` to be reached from a container too).
    """

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token_abcdefghijklmnopqrstuv",
        bot_username: str = "chinwag_test_bot",
        limits: FloodLimits | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.token = token
        self.bot = FakeUser(int(token.split(":")[0]), "Chinwag", bot_username, is_bot=True)
        self.limits = limits or FloodLimits()
        self.calls: list[Call] = []
        self.commands: list[dict[str, Any]] = []
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.webhook_refusals: list[int] = []  # HTTP statuses of refused deliveries
        # (unix time, message) of the last failed delivery, as getWebhookInfo reports it.
        self.webhook_last_error: tuple[int, str] | None = None
        self.reject_html = False  # refuse every parse_mode=HTML request (tests the fallback)
        # Called with every message the bot sends or edits (benchmarks time replies by it).
        self.listeners: list[Callable[[FakeMessage], None]] = []
        self._blocked: set[int] = set()
        self._late: dict[str, list[float]] = {}  # method -> delays of its next answers
        self._messages: dict[int, dict[int, FakeMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._updates: deque[tuple[int, dict[str, Any]]] = deque()
        self._delivered: dict[int, dict[str, Any]] = {}
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._window: dict[Any, deque[float]] = {}
        self._penalty: dict[int, float] = {}
        self._bot_penalty = (0.0, 0.0)  # (since, until) of a bot-wide penalty
        # A call arriving this soon after a bot-wide 429 was already on the wire: not premature.
        self.in_flight = 0.2
        self._runner: web.AppRunner | None = None
        self._site_port = 0
        self._session: aiohttp.ClientSession | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._closing = False
        self._poll_generation = 0
        self.conflicts = 0  # long polls ended by another getUpdates (409 Conflict)
        self._files: dict[str, bytes] = {}  # file_id -> bytes (documents users and the bot sent)
        # file_id -> (folder, extension) of its getFile path, as Telegram names them
        self._file_kinds: dict[str, tuple[str, str]] = {}
        self._file_paths: dict[str, str] = {}  # file_path (getFile) -> file_id
        self.downloads: list[str] = []  # file_paths fetched from /file/bot<token>/..., in order

    # --- lifecycle ---

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._file)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._site_port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        self._closing = True
        self._notify()  # long polls in progress return now
        await self._stop_webhook()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._site_port

    @property
    def base_url(self) -> str:
        """The root URL for ``TELEGRAM_API_BASE_URL``."""
        return f"http://127.0.0.1:{self._site_port}"

    # --- test API: users, chats, updates ---

    def answer_late(self, method: str, seconds: float, times: int = 1) -> None:
        """Handle the next ``times`` calls of ``method`` at once, answer each ``seconds`` late.

        Errors are late too ("message is not modified" included): a slow server is slow for
        every answer.
        """
        self._late.setdefault(method, []).extend([seconds] * times)

    def block(self, chat_id: int) -> None:
        """Mark a private chat as one whose user blocked the bot."""
        self._blocked.add(chat_id)

    def _message_id(self, chat_id: int) -> int:
        value = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = value + 1
        return value

    def _store(self, message: FakeMessage) -> FakeMessage:
        self._messages.setdefault(message.chat.id, {})[message.message_id] = message
        self._notify()
        if message.sender.id == self.bot.id:
            for listener in self.listeners:
                listener(message)
        return message

    def _enqueue(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        update["update_id"] = update_id
        self._updates.append((update_id, update))
        self._notify()
        return update_id

    def send_text(
        self,
        chat: FakeChat,
        user: FakeUser,
        text: str,
        *,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> FakeMessage:
        """A user sends ``text``; commands and @mentions get their entities."""
        entities = _user_entities(text)
        message = FakeMessage(
            self._message_id(chat.id),
            chat,
            user,
            text,
            entities,
            thread_id=thread_id,
            reply_to=reply_to,
        )
        self._store(message)
        self._enqueue({"message": message.to_dict(self)})
        return message

    def send_other(
        self,
        chat: FakeChat,
        user: FakeUser,
        kind: str,
        *,
        caption: str | None = None,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> FakeMessage:
        """A user sends a ``sticker``, a ``video_note``, or a file-less ``photo`` / ``voice``.

        :meth:`send_photo` and :meth:`send_voice` send ones whose files can be fetched.
        """
        message = FakeMessage(
            self._message_id(chat.id),
            chat,
            user,
            "",
            kind=kind,
            caption=caption,
            thread_id=thread_id,
            reply_to=reply_to,
        )
        self._store(message)
        self._enqueue({"message": message.to_dict(self)})
        return message

    def send_document(
        self,
        chat: FakeChat,
        user: FakeUser,
        name: str,
        data: bytes,
        *,
        caption: str | None = None,
        mime_type: str | None = "text/plain",
        reply_to: int | None = None,
        size_known: bool = True,
    ) -> FakeMessage:
        """A user sends ``data`` as a document named ``name`` (a ``/command`` caption included).

        ``size_known=False`` leaves ``file_size`` out of the update (Telegram may).
        """
        message = FakeMessage(
            self._message_id(chat.id),
            chat,
            user,
            "",
            kind="document",
            document=(name, data),
            caption=caption,
            mime_type=mime_type,
            reply_to=reply_to,
            size_known=size_known,
        )
        self._files[message.file_id] = data
        self._store(message)
        self._enqueue({"message": message.to_dict(self)})
        return message

    def send_photo(
        self,
        chat: FakeChat,
        user: FakeUser,
        sizes: Sequence[PhotoFile],
        *,
        caption: str | None = None,
        reply_to: int | None = None,
        media_group_id: str | None = None,
    ) -> FakeMessage:
        """A user sends a photo: Telegram offers it in ``sizes`` (smallest first), each a file.

        ``caption`` is its text (a ``/command`` gets its entity); photos sent together as an
        album are one message each with the same ``media_group_id``.
        """
        message = self._new_media_message(chat, user, "photo", caption, reply_to)
        message.media_group_id = media_group_id
        media: list[dict[str, Any]] = []
        for index, size in enumerate(sizes):
            file_id = f"photo{chat.id}_{message.message_id}_{index}"
            self._add_file(file_id, size.data, "photos", ".jpg")
            media.append(
                {
                    "file_id": file_id,
                    "file_unique_id": f"u{file_id}",
                    "width": size.width,
                    "height": size.height,
                    "file_size": len(size.data),
                }
            )
        message.media = media
        return self._deliver_media(message)

    def send_voice(
        self,
        chat: FakeChat,
        user: FakeUser,
        data: bytes,
        duration: int,
        *,
        caption: str | None = None,
        mime_type: str = "audio/ogg",
    ) -> FakeMessage:
        """A user records a voice note: ``data`` (OGG/Opus) lasting ``duration`` seconds."""
        message = self._new_media_message(chat, user, "voice", caption, None)
        file_id = f"voice{chat.id}_{message.message_id}"
        self._add_file(file_id, data, "voice", ".oga")
        message.media = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "duration": duration,
            "mime_type": mime_type,
            "file_size": len(data),
        }
        return self._deliver_media(message)

    def send_audio(
        self,
        chat: FakeChat,
        user: FakeUser,
        name: str | None,
        data: bytes,
        duration: int,
        *,
        caption: str | None = None,
        mime_type: str = "audio/mpeg",
        title: str | None = None,
    ) -> FakeMessage:
        """A user sends a music/audio file ``name`` (``None``: Telegram knows no file name)."""
        message = self._new_media_message(chat, user, "audio", caption, None)
        file_id = f"audio{chat.id}_{message.message_id}"
        self._add_file(file_id, data, "music", ".mp3")
        audio: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "duration": duration,
            "mime_type": mime_type,
            "file_size": len(data),
        }
        if name is not None:
            audio["file_name"] = name
        if title is not None:
            audio["title"] = title
        message.media = audio
        return self._deliver_media(message)

    def _new_media_message(
        self,
        chat: FakeChat,
        user: FakeUser,
        kind: str,
        caption: str | None,
        reply_to: int | None,
    ) -> FakeMessage:
        return FakeMessage(
            self._message_id(chat.id),
            chat,
            user,
            "",
            kind=kind,
            caption=caption,
            reply_to=reply_to,
        )

    def _deliver_media(self, message: FakeMessage) -> FakeMessage:
        self._store(message)
        self._enqueue({"message": message.to_dict(self)})
        return message

    def _add_file(self, file_id: str, data: bytes, folder: str, extension: str) -> None:
        self._files[file_id] = data
        self._file_kinds[file_id] = (folder, extension)

    def press_button(self, message: FakeMessage, user: FakeUser, data: str) -> int:
        """A user presses the inline button with callback ``data`` under ``message``."""
        return self._enqueue(
            {
                "callback_query": {
                    "id": str(next(self._callback_ids)),
                    "from": user.to_dict(),
                    "message": message.to_dict(self),
                    "chat_instance": str(message.chat.id),
                    "data": data,
                }
            }
        )

    def redeliver(self, update_id: int) -> None:
        """Queue an already delivered update again, as Telegram does after a lost offset."""
        self._updates.append((update_id, self._delivered[update_id]))
        self._notify()

    def delivered_update_ids(self) -> list[int]:
        """Ids of the updates delivered to the bot so far."""
        return sorted(self._delivered)

    @property
    def pending_updates(self) -> int:
        return len(self._updates)

    # --- test API: what users see ---

    def find_message(self, chat_id: int, message_id: int) -> FakeMessage | None:
        return self._messages.get(chat_id, {}).get(message_id)

    def messages(self, chat_id: int) -> list[FakeMessage]:
        """All visible (not deleted) messages of a chat, oldest first."""
        return [m for m in self._messages.get(chat_id, {}).values() if not m.deleted]

    def bot_messages(
        self, chat_id: int, *, thread_id: int | str | None = "any"
    ) -> list[FakeMessage]:
        """The bot's visible messages in a chat (optionally only in one topic)."""
        return [
            m
            for m in self.messages(chat_id)
            if m.sender.id == self.bot.id and (thread_id == "any" or m.thread_id == thread_id)
        ]

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds after some change; fail after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_idle(self, quiet: float = 0.3, timeout: float = 15.0) -> None:
        """Wait until no call arrived for ``quiet`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                last = self.calls[-1].at if self.calls else 0.0
                wait = last + quiet - time.monotonic()
                if wait <= 0 and not self._updates:
                    return
                await asyncio.sleep(max(wait, 0.02))

    # --- flood control ---

    def _check_flood(self, chat: FakeChat | None, now: float) -> None:
        if chat is None:
            return
        penalty = max(self._penalty.get(chat.id, 0.0), self._bot_until(now))
        if now < penalty:
            raise _ApiError(429, "premature", {"retry_after": max(1, math.ceil(penalty - now))})
        windows: list[tuple[Any, tuple[int, float]]] = []
        if self.limits.chat:
            windows.append((("chat", chat.id), self.limits.chat))
        if self.limits.group and chat.type != "private":
            windows.append((("group", chat.id), self.limits.group))
        if self.limits.global_:
            windows.append(("global", self.limits.global_))
        for key, (count, seconds) in windows:
            stamps = self._window.setdefault(key, deque())
            while stamps and stamps[0] <= now - seconds:
                stamps.popleft()
            if len(stamps) >= count:
                retry = max(1, math.ceil(stamps[0] + seconds - now))
                self._penalty[chat.id] = now + retry
                if key == "global" and self.limits.bot_wide:
                    self._bot_penalty = (now, now + retry)
                raise _ApiError(
                    429, f"Too Many Requests: retry after {retry}", {"retry_after": retry}
                )
        for key, _ in windows:
            self._window[key].append(now)

    def _bot_until(self, now: float) -> float:
        since, until = self._bot_penalty
        return until if since <= now else 0.0

    def _premature(self, chat_id: int | None, now: float) -> bool:
        """Whether a call to ``chat_id`` arrived while it (or the whole bot) served a 429."""
        if chat_id is None:
            return False
        since, until = self._bot_penalty
        return now < self._penalty.get(chat_id, 0.0) or since + self.in_flight <= now < until

    # --- HTTP ---

    async def _params(self, request: web.Request) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        if request.content_type == "application/json":
            raw = await request.json()
            return raw
        if request.method == "POST" and request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    raw[key] = (value.filename, value.file.read())
                else:
                    raw[key] = value
        raw.update(request.query)
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, str) and key in _JSON_PARAMS:
                params[key] = json.loads(value)
            elif isinstance(value, str) and key in _INT_PARAMS:
                params[key] = int(value)
            elif isinstance(value, str) and value in ("true", "false"):
                params[key] = value == "true"
            else:
                params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params = await self._params(request)
        handler = getattr(self, f"_api_{method}", None)
        chat_id = _int_or_none(params.get("chat_id"))
        now = time.monotonic()
        premature = self._premature(chat_id, now)
        try:
            if handler is None:
                raise _ApiError(404, "Not Found")
            result = await handler(params, now)
        except _ApiError as exc:
            description = exc.description
            if description == "premature":
                retry = (exc.parameters or {}).get("retry_after")
                description = f"Too Many Requests: retry after {retry}"
            self.calls.append(
                Call(method, params, now, chat_id, False, exc.code, description, premature)
            )
            self._notify()
            body: dict[str, Any] = {
                "ok": False,
                "error_code": exc.code,
                "description": description,
            }
            if exc.parameters:
                body["parameters"] = exc.parameters
            await self._answer_late(method)
            return web.json_response(body, status=exc.code)
        self.calls.append(Call(method, params, now, chat_id, True, premature=premature))
        self._notify()
        await self._answer_late(method)
        return web.json_response({"ok": True, "result": result})

    async def _answer_late(self, method: str) -> None:
        late = self._late.get(method)
        if late:
            await asyncio.sleep(late.pop(0))  # the call is applied already; the client may give up

    def _chat(self, params: dict[str, Any]) -> FakeChat:
        chat_id = _int_or_none(params.get("chat_id"))
        if chat_id is None:
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if chat_id in self._blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        known = self._messages.get(chat_id)
        if not known:
            raise _ApiError(400, "Bad Request: chat not found")
        return next(iter(known.values())).chat

    def _formatted(self, params: dict[str, Any], key: str = "text") -> tuple[str, list[Entity]]:
        text = params.get(key)
        if not isinstance(text, str):
            raise _ApiError(400, "Bad Request: message text is empty")
        if params.get("parse_mode") == "HTML":
            if self.reject_html:
                raise _ApiError(400, "Bad Request: can't parse entities: rejected by the test")
            try:
                text, entities = parse_html(text)
            except TelegramHTMLError as exc:
                raise _ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        elif params.get("parse_mode"):
            raise _ApiError(400, "Bad Request: unsupported parse_mode")
        else:
            entities = [
                Entity(
                    e["type"],
                    e["offset"],
                    e["length"],
                    url=e.get("url"),
                    language=e.get("language"),
                )
                for e in params.get("entities") or []
            ]
        return _trim(text, entities)

    def _bot_message(self, chat: FakeChat, params: dict[str, Any], **fields: Any) -> FakeMessage:
        thread_id = _int_or_none(params.get("message_thread_id"))
        if thread_id is not None and not chat.is_forum:
            thread_id = None
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id")
        if reply_to is not None and self.find_message(chat.id, reply_to) is None:
            if not reply.get("allow_sending_without_reply"):
                raise _ApiError(400, "Bad Request: message to be replied not found")
            reply_to = None
        message = FakeMessage(
            self._message_id(chat.id),
            chat,
            self.bot,
            thread_id=thread_id,
            reply_to=reply_to,
            reply_markup=params.get("reply_markup"),
            **fields,
        )
        return self._store(message)

    # --- methods ---

    async def _api_getMe(self, params: dict[str, Any], now: float) -> Any:
        data = self.bot.to_dict()
        data.update(
            can_join_groups=True, can_read_all_group_messages=False, supports_inline_queries=False
        )
        return data

    async def _api_getUpdates(self, params: dict[str, Any], now: float) -> Any:
        if self.webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = params.get("offset") or 0
        limit = params.get("limit") or 100
        timeout = params.get("timeout") or 0
        allowed = params.get("allowed_updates")
        if offset:
            while self._updates and self._updates[0][0] < offset:
                self._updates.popleft()
        # Like Telegram, a second long poll ends the one waiting with 409 Conflict.
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()
        if not self._updates and timeout:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(float(timeout), 30.0)):
                    while not self._updates and not self.webhook_url and not self._closing:
                        await self._changed.wait()
                        if self._poll_generation != generation:
                            self.conflicts += 1
                            raise _ApiError(409, _CONFLICT)
        batch = []
        for update_id, update in list(self._updates)[:limit]:
            self._delivered[update_id] = update
            if allowed and not any(kind in update for kind in allowed):
                continue
            batch.append(update)
        return batch

    async def _api_setWebhook(self, params: dict[str, Any], now: float) -> Any:
        url = params.get("url") or ""
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        await self._stop_webhook()
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook_url = url or None
        self.webhook_secret = secret
        if self.webhook_url:
            self._webhook_task = asyncio.create_task(self._deliver(), name="fake-telegram-webhook")
        self._notify()
        return True

    async def _api_deleteWebhook(self, params: dict[str, Any], now: float) -> Any:
        await self._stop_webhook()
        self.webhook_url = None
        self.webhook_secret = None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._notify()
        return True

    async def _api_getWebhookInfo(self, params: dict[str, Any], now: float) -> Any:
        info: dict[str, Any] = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook_url and self.webhook_last_error is not None:
            info["last_error_date"], info["last_error_message"] = self.webhook_last_error
        return info

    async def _stop_webhook(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(self) -> None:
        """Post queued updates to the webhook in order, with the secret header."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        while True:
            if not self._updates:
                await self._changed.wait()
                continue
            update_id, update = self._updates[0]
            headers = {}
            if self.webhook_secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
            try:
                async with self._session.post(
                    self.webhook_url or "",
                    json=update,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if 200 <= status < 300:
                self._delivered[update_id] = update
                if self._updates and self._updates[0][0] == update_id:
                    self._updates.popleft()
                self._notify()
            else:
                self.webhook_refusals.append(status)
                why = (
                    f"Wrong response from the webhook: {status}" if status else "Connection refused"
                )
                self.webhook_last_error = (int(time.time()), why)
                self._notify()
                await asyncio.sleep(0.1)

    async def _api_sendMessage(self, params: dict[str, Any], now: float) -> Any:
        chat = self._chat(params)
        self._check_flood(chat, now)
        text, entities = self._formatted(params)
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            raise _ApiError(400, "Bad Request: message is too long")
        return self._bot_message(chat, params, text=text, entities=entities).to_dict(self)

    async def _api_editMessageText(self, params: dict[str, Any], now: float) -> Any:
        chat = self._chat(params)
        self._check_flood(chat, now)
        message = self.find_message(chat.id, params.get("message_id") or 0)
        if message is None or message.deleted:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if message.sender.id != self.bot.id:
            raise _ApiError(400, "Bad Request: message can't be edited")
        text, entities = self._formatted(params)
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            raise _ApiError(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        if text == message.text and entities == message.entities and markup == message.reply_markup:
            raise _ApiError(400, _NOT_MODIFIED)
        message.text, message.entities, message.reply_markup = text, entities, markup
        message.edits += 1
        self._notify()
        for listener in self.listeners:
            listener(message)
        return message.to_dict(self)

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any], now: float) -> Any:
        chat = self._chat(params)
        self._check_flood(chat, now)
        message = self.find_message(chat.id, params.get("message_id") or 0)
        if message is None or message.deleted:
            raise _ApiError(400, "Bad Request: message to edit not found")
        markup = params.get("reply_markup")
        if markup == message.reply_markup or (not markup and not message.reply_markup):
            raise _ApiError(400, _NOT_MODIFIED)
        message.reply_markup = markup or None
        self._notify()
        return message.to_dict(self)

    async def _api_deleteMessage(self, params: dict[str, Any], now: float) -> Any:
        chat = self._chat(params)
        message = self.find_message(chat.id, params.get("message_id") or 0)
        if message is None or message.deleted:
            raise _ApiError(400, "Bad Request: message to delete not found")
        message.deleted = True
        self._notify()
        return True

    async def _api_sendChatAction(self, params: dict[str, Any], now: float) -> Any:
        chat = self._chat(params)
        if now < max(self._penalty.get(chat.id, 0.0), self._bot_until(now)):
            raise _ApiError(429, "premature", {"retry_after": 1})
        if params.get("action") not in {"typing", "upload_document"}:
            raise _ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _api_sendDocument(self, params: dict[str, Any], now: float) -> Any:
        chat = self._chat(params)
        self._check_flood(chat, now)
        document = params.get("document")
        if not isinstance(document, tuple):
            raise _ApiError(400, "Bad Request: there is no document in the request")
        caption = params.get("caption")
        return self._bot_message(
            chat, params, text="", kind="document", document=document, caption=caption
        ).to_dict(self)

    async def _api_getFile(self, params: dict[str, Any], now: float) -> Any:
        file_id = str(params.get("file_id") or "")
        data = self._files.get(file_id)
        if data is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        if len(data) > BOT_API_DOWNLOAD_LIMIT:
            raise _ApiError(400, "Bad Request: file is too big")
        folder, extension = self._file_kinds.get(file_id, ("documents", ".bin"))
        file_path = f"{folder}/file_{file_id}{extension}"
        self._file_paths[file_path] = file_id
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": len(data),
            "file_path": file_path,
        }

    async def _file(self, request: web.Request) -> web.StreamResponse:
        """``GET /file/bot<token>/<file_path>``: the bytes, in pieces."""
        file_id = self._file_paths.get(request.match_info["file_path"])
        if request.match_info["token"] != self.token or file_id is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        data = self._files[file_id]
        self.downloads.append(request.match_info["file_path"])
        response = web.StreamResponse()
        response.content_length = len(data)
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        for start in range(0, len(data), 65536):
            await response.write(data[start : start + 65536])
        await response.write_eof()
        return response

    async def _api_answerCallbackQuery(self, params: dict[str, Any], now: float) -> Any:
        if not params.get("callback_query_id"):
            raise _ApiError(400, "Bad Request: query is too old and response timeout expired")
        return True

    async def _api_setMyCommands(self, params: dict[str, Any], now: float) -> Any:
        commands = params.get("commands") or []
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command.get("command", "")):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(command.get("description", "")) <= 256:
                raise _ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _api_getMyCommands(self, params: dict[str, Any], now: float) -> Any:
        return list(self.commands)

    async def _api_deleteMyCommands(self, params: dict[str, Any], now: float) -> Any:
        self.commands = []
        return True

    async def _api_close(self, params: dict[str, Any], now: float) -> Any:
        return True


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
