"""The Telegram adapter: python-telegram-bot in front of the conversation engine.

:class:`TelegramAdapter` owns a python-telegram-bot ``Application`` (polling by default,
webhook when ``TELEGRAM_WEBHOOK_URL`` is set), turns each ``telegram.Update`` into an
:class:`~core.types.IncomingMessage` at the edge, submits it to the engine in arrival order,
and answers through a :class:`TelegramReplyChannel` that streams the reply into one message
edited as tokens arrive.

Pacing: edits in a chat are at most one per ``TELEGRAM_EDIT_INTERVAL`` seconds (groups:
``TELEGRAM_GROUP_EDIT_INTERVAL``). A 429 from Telegram sets the chat's *flood gate*: no call
to that chat is made before ``retry_after`` has run out; intermediate edits are skipped,
final ones wait and retry, so the complete text always arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, TypeVar

from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from adapters.telegram.render import Block, Run
from adapters.telegram.settings import TelegramSettings
from adapters.telegram.split import TELEGRAM_LIMIT, Part, render_parts, split_blocks
from core.engine import Engine
from core.errors import AdapterError, ConfigError
from core.types import IncomingAction, IncomingMessage, ReplyEvent, text_deltas

__all__ = ["TelegramAdapter", "TelegramReplyChannel"]

_log = logging.getLogger(__name__)

PLATFORM: Final = "telegram"
_ALLOWED_UPDATES: Final = ["message", "callback_query"]
_TYPING_REPEAT: Final = 4.5  # Telegram shows "typing" for 5 seconds
_FLOOD_MARGIN: Final = 0.05
_CALLBACK_LIMIT: Final = 64  # bytes of callback_data
_UNSUPPORTED_KINDS: Final = (
    "sticker",
    "photo",
    "voice",
    "video",
    "video_note",
    "audio",
    "document",
    "animation",
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
    "game",
    "story",
)

_T = TypeVar("_T")
_AnyApplication = Application[Any, Any, Any, Any, Any, Any]


def _retry_seconds(exc: RetryAfter) -> float:
    # PTB 22 warns when reading retry_after as int; accept both shapes quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _is_parse_error(exc: BadRequest) -> bool:
    return "can't parse entities" in exc.message.lower()


def _is_not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


def _is_gone(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return "message to edit not found" in text or "message can't be edited" in text


class _Throttled(Exception):
    """A call skipped because its chat's flood gate is closed (``retry_after`` pending)."""


class _Transport:
    """What reply channels share: the bot, per-chat pacing and the flood gates."""

    def __init__(self, app: _AnyApplication, settings: TelegramSettings) -> None:
        self.app = app
        self.settings = settings
        self._flood_until: dict[int, float] = {}
        self._last_edit: dict[int, float] = {}
        self.confirmations: dict[str, str] = {}  # long action ids by short token
        self.askers: dict[tuple[int, int], str] = {}  # (chat, message) -> asking user id

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def gate(self, chat_id: int) -> float:
        """The loop time before which nothing may be sent to ``chat_id``."""
        return self._flood_until.get(chat_id, 0.0)

    def edit_slot(self, chat_id: int, interval: float) -> float:
        """The earliest loop time the next edit in ``chat_id`` may be made."""
        return max(self._last_edit.get(chat_id, float("-inf")) + interval, self.gate(chat_id))

    def note_edit(self, chat_id: int) -> None:
        self._last_edit[chat_id] = self.now()

    async def call(
        self, chat_id: int, make: Callable[[], Awaitable[_T]], *, wait_flood: bool = True
    ) -> _T:
        """Run one Bot API call for ``chat_id``, honouring its flood gate.

        With ``wait_flood`` a 429 closes the gate for ``retry_after`` and the call is retried
        after it; without, the ``RetryAfter`` propagates (after closing the gate).
        """
        while True:
            wait = self.gate(chat_id) - self.now()
            if wait > 0:
                if not wait_flood:
                    raise _Throttled(wait)
                await asyncio.sleep(wait)
            try:
                return await make()
            except RetryAfter as exc:
                seconds = _retry_seconds(exc)
                until = self.now() + seconds + _FLOOD_MARGIN
                self._flood_until[chat_id] = max(self.gate(chat_id), until)
                _log.info("flood control in chat %s: waiting %.1fs", chat_id, seconds)
                if not wait_flood:
                    raise


@dataclass(slots=True)
class _Shown:
    """One message of a reply as last shown."""

    message_id: int
    html: str


class TelegramReplyChannel:
    """Answers one incoming message in its chat (and forum topic).

    Built by :class:`TelegramAdapter` for each update; implements ``core.ports.ReplyChannel``.
    Raises :class:`~core.errors.AdapterError` when Telegram refuses for good (the user blocked
    the bot, the chat is gone).
    """

    def __init__(
        self,
        transport: _Transport,
        *,
        chat_id: int,
        thread_id: int | None = None,
        reply_to: int | None = None,
        is_private: bool = True,
        asker: str | None = None,
    ) -> None:
        self._t = transport
        self._asker = asker
        self._chat_id = chat_id
        self._thread_id = thread_id
        self._reply_to = reply_to
        self._is_private = is_private
        settings = transport.settings
        self._interval = settings.edit_interval if is_private else settings.group_edit_interval

    # --- sending primitives ---

    def _reply_parameters(self) -> ReplyParameters | None:
        if self._reply_to is None:
            return None
        reply = ReplyParameters(self._reply_to, allow_sending_without_reply=True)
        self._reply_to = None  # only the first message of an answer points at the question
        return reply

    async def _send(
        self, part: Part, *, html: bool = True, markup: InlineKeyboardMarkup | None = None
    ) -> Message:
        bot = self._t.app.bot
        reply = self._reply_parameters()

        async def send(text: str, parse_mode: str | None) -> Message:
            try:
                return await self._t.call(
                    self._chat_id,
                    lambda: bot.send_message(
                        self._chat_id,
                        text,
                        parse_mode=parse_mode,
                        message_thread_id=self._thread_id,
                        reply_parameters=reply,
                        reply_markup=markup,
                        link_preview_options=LinkPreviewOptions(is_disabled=True),
                    ),
                )
            finally:
                self._t.note_edit(self._chat_id)

        try:
            if html:
                try:
                    return await send(part.html, ParseMode.HTML)
                except BadRequest as exc:
                    if not _is_parse_error(exc):
                        raise
                    _log.warning(
                        "Telegram refused the HTML of a reply part (%s); sent as plain text",
                        exc.message,
                    )
            return await send(part.text, None)
        except TelegramError as exc:
            raise self._translate(exc) from exc

    async def _edit(self, message_id: int, part: Part, *, final: bool) -> int | None:
        """Edit a shown message to ``part``; returns the id now holding it (None if skipped)."""
        bot = self._t.app.bot

        async def edit(text: str, parse_mode: str | None) -> None:
            await self._t.call(
                self._chat_id,
                lambda: bot.edit_message_text(
                    text,
                    chat_id=self._chat_id,
                    message_id=message_id,
                    parse_mode=parse_mode,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                ),
                wait_flood=final,
            )

        try:
            try:
                await edit(part.html, ParseMode.HTML)
            except BadRequest as exc:
                if not _is_parse_error(exc):
                    raise
                _log.warning(
                    "Telegram refused the HTML of an edit (%s); sent as plain text", exc.message
                )
                await edit(part.text, None)
        except (RetryAfter, _Throttled):
            return None  # an intermediate edit: the next flush shows the text
        except BadRequest as exc:
            if _is_not_modified(exc):
                return message_id
            if _is_gone(exc):
                # The user deleted the message we were editing: show the part anew.
                return (await self._send(part)).message_id
            if not final:
                _log.warning("an intermediate edit failed: %s", exc.message)
                return None
            raise self._translate(exc) from exc
        except TelegramError as exc:
            if not final and not isinstance(exc, Forbidden):
                _log.warning("an intermediate edit failed: %s", exc)
                return None
            raise self._translate(exc) from exc
        finally:
            self._t.note_edit(self._chat_id)
        return message_id

    def _translate(self, exc: TelegramError) -> AdapterError:
        if isinstance(exc, Forbidden):
            return AdapterError(f"Telegram refused chat {self._chat_id}: {exc.message}")
        return AdapterError(f"Telegram call failed in chat {self._chat_id}: {exc}")

    async def _typing(self) -> None:
        if self._t.gate(self._chat_id) > self._t.now():
            return
        bot = self._t.app.bot
        try:
            await self._t.call(
                self._chat_id,
                lambda: bot.send_chat_action(
                    self._chat_id, ChatAction.TYPING, message_thread_id=self._thread_id
                ),
                wait_flood=False,
            )
        except (TelegramError, _Throttled) as exc:
            _log.debug("typing action failed: %s", exc)

    # --- ReplyChannel ---

    async def send_text(self, text: str) -> Sequence[str]:
        """Send a plain-text notice (split if long); return the message ids."""
        ids: list[str] = []
        block = Block((Run(text),))
        for runs in split_blocks([block], TELEGRAM_LIMIT):
            plain = "".join(run.text for run in runs)
            message = await self._send(Part(plain, plain), html=False)
            ids.append(str(message.message_id))
        return ids

    async def stream_reply(self, events: AsyncIterator[ReplyEvent]) -> Sequence[str]:
        """Show the reply in one message edited as ``deltas`` arrive; return all message ids.

        The first message is sent once ``first_flush_delay`` has passed since the first
        token (or at the end, so a fast reply is sent once and never edited); then edits
        follow at most every edit interval. "typing" is shown while no token arrived for
        ``typing_delay``. Replies over 4096 characters continue in new messages. The final
        text is always delivered complete.
        """
        stream = _LiveReply(self)
        try:
            async for delta in text_deltas(events):
                if delta:
                    stream.add(delta)
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except Exception:
            # The deltas failed: deliver what was received (unless the user is unreachable),
            # then report the failure.
            with contextlib.suppress(AdapterError):
                await stream.finish()
            raise
        return await stream.finish()

    async def _show(self, shown: list[_Shown], markdown: str, *, final: bool) -> None:
        """Make the chat show ``markdown``: edit changed parts, send new ones."""
        parts = render_parts(markdown)
        for index, part in enumerate(parts):
            if index < len(shown):
                current = shown[index]
                if current.html == part.html:
                    continue
                wait = self._t.edit_slot(self._chat_id, self._interval) - self._t.now()
                if wait > 0:
                    if not final and index == len(parts) - 1:
                        return  # the next flush will show it
                    await asyncio.sleep(wait)
                new_id = await self._edit(
                    current.message_id, part, final=final or index < len(parts) - 1
                )
                if new_id is None:
                    return
                current.message_id = new_id
                current.html = part.html
            else:
                message = await self._send(part)
                shown.append(_Shown(message.message_id, part.html))
        if final and len(shown) > len(parts):
            # Rare: the finished text renders shorter than a partial one did.
            bot = self._t.app.bot
            for extra in shown[len(parts) :]:
                stale = extra.message_id
                with contextlib.suppress(TelegramError):
                    await self._t.call(
                        self._chat_id, functools.partial(bot.delete_message, self._chat_id, stale)
                    )
            del shown[len(parts) :]

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        """Show ``prompt`` with Yes/No buttons; the press reaches ``Engine.handle_action``."""
        token = action_id
        if len(f"y|{token}".encode()) > _CALLBACK_LIMIT:
            token = f"#{len(self._t.confirmations)}"
            self._t.confirmations[token] = action_id
        markup = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("Yes", callback_data=f"y|{token}"),
                    InlineKeyboardButton("No", callback_data=f"n|{token}"),
                ]
            ]
        )
        asker = self._asker
        message = await self._send(Part(prompt, prompt), html=False, markup=markup)
        if asker is not None:
            self._t.askers[(self._chat_id, message.message_id)] = asker

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        """Send ``data`` as a document named ``filename``."""
        bot = self._t.app.bot
        reply = self._reply_parameters()
        try:
            await self._t.call(
                self._chat_id,
                lambda: bot.send_document(
                    self._chat_id,
                    InputFile(data, filename=filename),
                    caption=caption[:1024] or None,
                    message_thread_id=self._thread_id,
                    reply_parameters=reply,
                ),
            )
        except TelegramError as exc:
            raise self._translate(exc) from exc


class _LiveReply:
    """The state of one streamed reply: text so far, messages shown, pending timers.

    Tokens are read by the caller's task; flushes and "typing" run on timers, so a reply
    that arrives at once costs no extra task or wake-up and is sent in one message.
    """

    def __init__(self, channel: TelegramReplyChannel) -> None:
        self._c = channel
        self._t = channel._t
        self._loop = asyncio.get_running_loop()
        self._chunks: list[str] = []
        self._shown: list[_Shown] = []
        self._flushed = 0  # chunks shown by the last flush
        self._first_token_at: float | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._typing_timer: asyncio.TimerHandle | None = None
        self._typing_tasks: set[asyncio.Task[None]] = set()
        self._done = False
        self._arm_typing(self._t.settings.typing_delay)

    def add(self, delta: str) -> None:
        """Take one piece of text; schedule a flush if none is pending."""
        self._chunks.append(delta)
        now = self._loop.time()
        if self._first_token_at is None:
            self._first_token_at = now
        self._arm_typing(self._t.settings.typing_delay)
        self._arm_flush()

    def _arm_typing(self, delay: float) -> None:
        if self._done:
            return
        if self._typing_timer is not None:
            self._typing_timer.cancel()
        self._typing_timer = self._loop.call_later(delay, self._start_typing)

    def _start_typing(self) -> None:
        if self._done:
            return
        task = asyncio.create_task(self._c._typing(), name=f"telegram-typing-{self._c._chat_id}")
        self._typing_tasks.add(task)
        task.add_done_callback(self._typing_tasks.discard)
        self._typing_timer = self._loop.call_later(_TYPING_REPEAT, self._start_typing)

    def _arm_flush(self) -> None:
        if self._done or self._flush_timer is not None or self._flushing is not None:
            return
        if self._shown:
            due = self._t.edit_slot(self._c._chat_id, self._c._interval)
        else:
            assert self._first_token_at is not None
            due = max(
                self._first_token_at + self._t.settings.first_flush_delay,
                self._t.gate(self._c._chat_id),
            )
        self._flush_timer = self._loop.call_at(due, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        self._flushing = asyncio.create_task(
            self._flush(), name=f"telegram-reply-flush-{self._c._chat_id}"
        )

    async def _flush(self) -> None:
        try:
            count = len(self._chunks)
            await self._c._show(self._shown, "".join(self._chunks), final=False)
            self._flushed = count
        except AdapterError as exc:
            _log.warning("could not show a partial reply: %s", exc)
        finally:
            self._flushing = None
        if len(self._chunks) > self._flushed:
            self._arm_flush()

    def _stop_timers(self) -> None:
        self._done = True
        for timer in (self._flush_timer, self._typing_timer):
            if timer is not None:
                timer.cancel()
        self._flush_timer = self._typing_timer = None

    def cancel(self) -> None:
        """Stop everything at once (the caller was cancelled)."""
        self._stop_timers()
        if self._flushing is not None:
            self._flushing.cancel()
        for task in self._typing_tasks:
            task.cancel()

    async def finish(self) -> list[str]:
        """Show the complete text; return the ids of every message of the reply."""
        self._stop_timers()
        if self._flushing is not None:
            await asyncio.wait([self._flushing])  # its edit lands before the final one
        if len(self._chunks) > self._flushed or not self._shown:
            await self._c._show(self._shown, "".join(self._chunks), final=True)
        return [str(item.message_id) for item in self._shown]


class TelegramAdapter:
    """Serves the engine on Telegram (``core.ports.ChatAdapter``).

    Args:
        settings: ``TELEGRAM_*`` settings; ``bot_token`` must be set.
        engine: the started conversation engine.

    ``start()`` connects (``getMe``), registers the engine's commands, and starts polling
    or the webhook server; ``aclose()`` stops taking updates, lets replies in flight finish
    and disconnects. Both are idempotent; ``start()`` after ``aclose()`` raises
    ``RuntimeError``. ``start()`` raises :class:`~core.errors.ConfigError` for a missing or
    refused token and :class:`~core.errors.AdapterError` when Telegram cannot be reached.
    """

    def __init__(self, settings: TelegramSettings, engine: Engine) -> None:
        self._engine = engine
        self._settings = settings
        self._state = "new"
        self._app: _AnyApplication | None = None
        self._transport: _Transport | None = None
        self._stopped = asyncio.Event()
        self._fatal: BaseException | None = None
        self._username = ""
        self._bot_id = 0
        self._commands: frozenset[str] = frozenset()
        self._requests: tuple[HTTPXRequest, ...] = ()

    @property
    def name(self) -> str:
        """``"telegram"``."""
        return PLATFORM

    @property
    def application(self) -> _AnyApplication:
        """The python-telegram-bot application (after ``start()``)."""
        if self._app is None:
            raise RuntimeError("TelegramAdapter.start() has not been called")
        return self._app

    def _build(self) -> _AnyApplication:
        settings = self._settings
        if settings.bot_token is None:
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN", "is not set", TelegramSettings.EXAMPLES["bot_token"]
            )
        timeout = settings.request_timeout
        # Own the HTTP clients so they can be closed even when start() fails half-way.
        self._requests = (
            HTTPXRequest(
                connection_pool_size=settings.connection_pool_size,
                connect_timeout=timeout,
                read_timeout=timeout,
                write_timeout=timeout,
                pool_timeout=timeout,
            ),
            HTTPXRequest(
                connection_pool_size=1,
                connect_timeout=timeout,
                read_timeout=settings.poll_timeout + timeout,
                write_timeout=timeout,
                pool_timeout=timeout,
            ),
        )
        builder: ApplicationBuilder[Any, Any, Any, Any, Any, Any] = (
            Application.builder()
            .token(settings.bot_token.get_secret_value())
            .concurrent_updates(settings.max_concurrent_updates)
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
        )
        if settings.api_base_url:
            builder = builder.base_url(f"{settings.api_base_url}/bot").base_file_url(
                f"{settings.api_base_url}/file/bot"
            )
        return builder.build()

    async def start(self) -> None:
        """Connect and begin serving. Idempotent."""
        if self._state == "started":
            return
        if self._state != "new":
            raise RuntimeError("TelegramAdapter.start() after aclose()")
        # httpx logs request URLs, which carry the bot token, at INFO.
        for noisy in ("httpx", "httpcore"):
            logger = logging.getLogger(noisy)
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
        # Opt in to PTB 22's future behaviour (durations as timedelta) so that it does not
        # warn on every flood-control error; the adapter reads both shapes.
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        app = self._build()
        try:
            try:
                await app.initialize()
            except InvalidToken as exc:
                raise ConfigError(
                    "TELEGRAM_BOT_TOKEN",
                    "was refused by Telegram",
                    TelegramSettings.EXAMPLES["bot_token"],
                ) from exc
            except TelegramError as exc:
                raise AdapterError(f"cannot reach the Telegram Bot API: {exc}") from exc
        except BaseException:
            # initialize() failed half-way: PTB will not close its HTTP clients itself.
            for request in self._requests:
                await request.shutdown()
            self._state = "closed"
            raise
        self._app = app
        self._transport = _Transport(app, self._settings)
        me = app.bot.bot
        self._username = (me.username or "").lower()
        self._bot_id = me.id
        self._commands = frozenset(command.name for command in self._engine.commands())
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        app.add_handler(CallbackQueryHandler(self._on_callback))
        app.add_error_handler(self._on_error)
        try:
            await self._sync_commands()
            await app.start()
            updater = app.updater
            assert updater is not None
            if self._settings.webhook_mode:
                host, port = self._settings.listen_address()
                secret = self._settings.webhook_secret
                await updater.start_webhook(
                    listen=host,
                    port=port,
                    url_path=self._settings.webhook_path(),
                    webhook_url=self._settings.webhook_url,
                    secret_token=secret.get_secret_value() if secret else None,
                    allowed_updates=_ALLOWED_UPDATES,
                )
            else:
                await updater.start_polling(
                    timeout=timedelta(seconds=self._settings.poll_timeout),
                    allowed_updates=_ALLOWED_UPDATES,
                    error_callback=self._on_polling_error,
                )
        except BaseException:
            await self._shutdown(app)
            self._state = "closed"
            raise
        self._state = "started"
        _log.info(
            "Telegram: serving @%s by %s",
            self._username,
            "webhook" if self._settings.webhook_mode else "polling",
        )

    async def wait_closed(self) -> None:
        """Return once the adapter stopped; raise the fatal error that stopped it, if any."""
        await self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    async def stop_intake(self) -> None:
        """Stop taking new messages; replies in flight can still be delivered. Idempotent."""
        # Interim: the structure work replaces this with a real intake stop.

    async def aclose(self) -> None:
        """Stop taking updates, let replies in flight finish, disconnect. Idempotent."""
        if self._state != "started":
            self._state = "closed"
            self._stopped.set()
            return
        self._state = "closed"
        if self._app is not None:
            await self._shutdown(self._app)
        self._stopped.set()

    @staticmethod
    async def _shutdown(app: _AnyApplication) -> None:
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await app.shutdown()

    # --- commands ---

    async def _sync_commands(self) -> None:
        """Register the engine's commands with ``setMyCommands``, only when they changed."""
        wanted = [
            BotCommand(info.name, _command_description(info.description, info.argument))
            for info in self._engine.commands()
            if not info.admin_only
        ]
        bot = self.application.bot
        try:
            current = await bot.get_my_commands()
            if [(c.command, c.description) for c in current] != [
                (c.command, c.description) for c in wanted
            ]:
                await bot.set_my_commands(wanted)
                _log.info("Telegram: registered %d commands", len(wanted))
        except TelegramError as exc:
            _log.warning("could not register the bot's commands: %s", exc)

    # --- updates ---

    def _addressed(self, message: Message, text: str) -> tuple[bool, str]:
        """Whether a group message is for this bot, and its text without the bot's @mention."""
        entities = message.parse_entities() if message.text else message.parse_caption_entities()
        addressed = False
        for entity, value in entities.items():
            if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
                name, _, target = value[1:].partition("@")
                if target:
                    if target.lower() != self._username:
                        return False, text  # a command for another bot
                    addressed = True
                elif name.lower() in self._commands:
                    addressed = True
            elif (entity.type == MessageEntity.MENTION and value[1:].lower() == self._username) or (
                entity.type == MessageEntity.TEXT_MENTION
                and entity.user
                and entity.user.id == self._bot_id
            ):
                addressed = True
        replied = message.reply_to_message
        if (
            replied is not None
            and replied.from_user is not None
            and replied.from_user.id == self._bot_id
            and not replied.forum_topic_created
        ):
            addressed = True
        if self._settings.group_mode == "all":
            addressed = True
        return addressed, _strip_mention(text, self._username)

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or self._transport is None:
            return
        user = message.from_user
        if user is None or user.is_bot:
            return
        chat = message.chat
        is_private = chat.type == ChatType.PRIVATE
        text = message.text
        unsupported = None
        if text is None:
            unsupported = next((k for k in _UNSUPPORTED_KINDS if getattr(message, k, None)), None)
            if unsupported is None:
                return  # a service message: joins, pins, topic changes
        if not is_private:
            addressed, cleaned = self._addressed(message, text or message.caption or "")
            if not addressed:
                return
            if text is not None:
                text = cleaned
        thread_id = message.message_thread_id if message.is_topic_message else None
        reply_to = message.reply_to_message
        incoming = IncomingMessage(
            platform=PLATFORM,
            chat_id=str(chat.id),
            user_id=str(user.id),
            text=text or "",
            message_id=str(message.message_id),
            thread_id=str(thread_id) if thread_id is not None else None,
            is_private=is_private,
            user_name=user.full_name,
            unsupported=unsupported,
            reply_to_message_id=(
                str(reply_to.message_id)
                if reply_to is not None and not reply_to.forum_topic_created
                else None
            ),
        )
        out = TelegramReplyChannel(
            self._transport,
            chat_id=chat.id,
            thread_id=thread_id,
            reply_to=None if is_private else message.message_id,
            is_private=is_private,
            asker=str(user.id),
        )
        _log.debug("Telegram update %s from chat %s", update.update_id, chat.id)
        # submit() is synchronous: arrival order is kept per conversation.
        await self._engine.submit(incoming, out)

    async def _on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query: CallbackQuery | None = update.callback_query
        if query is None or self._transport is None:
            return
        data = query.data or ""
        answer, _, token = data.partition("|")
        message = query.message
        if answer not in ("y", "n") or not token or not isinstance(message, Message):
            with contextlib.suppress(TelegramError):
                await query.answer()
            return
        action_id = self._transport.confirmations.get(token, token)
        chat = message.chat
        is_private = chat.type == ChatType.PRIVATE
        asker = self._transport.askers.get((chat.id, message.message_id))
        user_id = str(query.from_user.id)
        try:
            await query.answer()
            if asker is None or asker == user_id:
                # Only the asker's press settles it; others leave the buttons for the asker.
                self._transport.askers.pop((chat.id, message.message_id), None)
                await self._transport.call(chat.id, lambda: message.edit_reply_markup(None))
        except BadRequest as exc:
            if not _is_not_modified(exc):
                _log.warning("could not clear confirmation buttons: %s", exc.message)
        except TelegramError as exc:
            _log.warning("could not answer a button press: %s", exc)
        thread_id = message.message_thread_id if message.is_topic_message else None
        out = TelegramReplyChannel(
            self._transport, chat_id=chat.id, thread_id=thread_id, is_private=is_private
        )
        await self._engine.handle_action(
            IncomingAction(
                platform=PLATFORM,
                chat_id=str(chat.id),
                user_id=user_id,
                action_id=action_id,
                accepted=answer == "y",
                thread_id=str(thread_id) if thread_id is not None else None,
                is_private=is_private,
            ),
            out,
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        if isinstance(error, AdapterError):
            _log.warning("Telegram: %s", error)
            return
        _log.error("Telegram: an update failed", exc_info=error)

    def _on_polling_error(self, exc: TelegramError) -> None:
        if isinstance(exc, (InvalidToken, Conflict)):
            # Another instance polls with this token, or the token was revoked: stop.
            self._fatal = AdapterError(f"Telegram polling stopped: {exc}")
            self._stopped.set()
            _log.error("Telegram polling stopped: %s", exc)
        elif isinstance(exc, NetworkError):
            _log.warning("Telegram polling: network error (%s); retrying", exc)
        else:
            _log.warning("Telegram polling error: %s", exc)


def _command_description(description: str, argument: str | None) -> str:
    text = f"{description} <{argument}>" if argument else description
    return text[:256] or "-"


def _strip_mention(text: str, username: str) -> str:
    """Remove ``@username`` (any case) from ``text`` and tidy the spaces it leaves."""
    if not username:
        return text
    lowered = text.lower()
    needle = f"@{username}"
    out: list[str] = []
    i = 0
    while True:
        found = lowered.find(needle, i)
        end = found + len(needle)
        if found < 0:
            out.append(text[i:])
            break
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            out.append(text[i:end])
            i = end
            continue
        out.append(text[i:found])
        i = end
    cleaned = re.sub(r"[ \t]{2,}", " ", "".join(out))
    return cleaned.strip() if cleaned.strip() else text
