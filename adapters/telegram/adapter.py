"""The Telegram adapter: python-telegram-bot in front of the conversation engine.

:class:`TelegramAdapter` owns a python-telegram-bot ``Application`` (polling by default,
webhook when ``TELEGRAM_WEBHOOK_URL`` is set), turns each ``telegram.Update`` into an
:class:`~core.types.IncomingMessage` at the edge, submits it to the engine in arrival order,
and answers through a :class:`~adapters.telegram.channel.TelegramReplyChannel`, which shows
the streamed reply as an :class:`~adapters.live.LiveMessage` (messages edited as text
arrives). At shutdown :meth:`TelegramAdapter.stop_intake` stops fetching updates before the
engine drains; the bot keeps sending until :meth:`TelegramAdapter.aclose`.

Pacing and flood control live in :mod:`adapters.telegram.transport`, answering in
:mod:`adapters.telegram.channel`; whether a group message is for the bot is read in
:mod:`adapters.telegram.addressing`, a message's files become attachments in
:mod:`adapters.telegram.media`, and albums are gathered into one turn in
:mod:`adapters.telegram.albums`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import Any, Final

from telegram import BotCommand, CallbackQuery, Message, Update
from telegram.constants import ChatType
from telegram.error import (
    BadRequest,
    Conflict,
    InvalidToken,
    NetworkError,
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

from adapters.telegram import addressing, media
from adapters.telegram.albums import Albums
from adapters.telegram.channel import BOT_API_DOWNLOAD_LIMIT, TelegramReplyChannel
from adapters.telegram.polling import QueuedPoller
from adapters.telegram.settings import TelegramSettings
from adapters.telegram.transport import AnyApplication, Transport, is_not_modified
from adapters.telegram.webhook import QueuedWebhook, queued
from core.errors import AdapterError, ConfigError
from core.lifecycle import Lifecycle
from core.limits import SharedLimits
from core.ports import ConversationEngine
from core.telemetry import NO_TELEMETRY, Telemetry
from core.types import IncomingAction, IncomingMessage

__all__ = ["TelegramAdapter", "TelegramReplyChannel"]

_log = logging.getLogger(__name__)

PLATFORM: Final = "telegram"
_ALLOWED_UPDATES: Final = ["message", "callback_query"]


class TelegramAdapter:
    """Serves the engine on Telegram (``core.chat_ports.ChatAdapter``).

    Args:
        settings: ``TELEGRAM_*`` settings; ``bot_token`` must be set.
        engine: the started conversation engine.
        max_file_mb: the largest file downloaded for a chat turn (``MAX_FILE_MB``): it also
            picks the largest photo size that fits. ``/kb add`` passes its own
            ``KB_MAX_FILE_MB``; the Bot API's 20 MB download limit applies in any case.
        telemetry: counts the flood-control waits Telegram asks for (429).
        limits: flood gates and per-chat pacing shared with the bot's other processes
            (Redis); ``None`` keeps them in this process.
        ingress: ``chinwag ingress`` (the engine queues turns for workers). Webhook mode then
            answers Telegram 200 only once the turn is queued
            (:class:`~adapters.telegram.webhook.QueuedWebhook`), so replicas can share one
            webhook behind a load balancer; one elected poller (:attr:`leases`) confirms an
            update only once queued (:class:`~adapters.telegram.polling.QueuedPoller`).

    ``start()`` connects (``getMe``), registers the engine's commands, and starts polling
    or the webhook server; ``aclose()`` stops taking updates, lets replies in flight finish
    and disconnects. Both are idempotent; ``start()`` after ``aclose()`` raises
    ``RuntimeError``. ``start()`` raises :class:`~core.errors.ConfigError` for a missing or
    refused token and :class:`~core.errors.AdapterError` when Telegram cannot be reached.
    """

    def __init__(
        self,
        settings: TelegramSettings,
        engine: ConversationEngine,
        *,
        max_file_mb: float | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
        limits: SharedLimits | None = None,
        ingress: bool = False,
    ) -> None:
        self._ingress = ingress
        self._webhook: QueuedWebhook | None = None
        self._poller: QueuedPoller | None = None
        self._telemetry = telemetry
        self._limits = limits
        self._engine = engine
        self._max_file_bytes = int(max_file_mb * 1024 * 1024) if max_file_mb else None
        self._photo_limit = min(
            self._max_file_bytes or BOT_API_DOWNLOAD_LIMIT, BOT_API_DOWNLOAD_LIMIT
        )
        self._settings = settings
        self._state = Lifecycle.NEW
        self._intake_stopped = False
        self._app: AnyApplication | None = None
        self._transport: Transport | None = None
        self._stopped = asyncio.Event()
        self._fatal: BaseException | None = None
        self._username = ""
        self._bot_id = 0
        self._commands: frozenset[str] = frozenset()
        self._requests: tuple[HTTPXRequest, ...] = ()
        self._conflict_told = False
        self._albums = Albums(engine)
        self._outbound = False

    @property
    def name(self) -> str:
        """``"telegram"``."""
        return PLATFORM

    @property
    def leases(self) -> tuple[str, ...]:
        """What this process must hold alone before it starts (``Engine.wait_to_serve``).

        Polling: the bot's Telegram lease, so exactly one process per token polls and a
        second waits for it instead of fighting over ``getUpdates`` (409). The webhook of
        ``chinwag run`` too (one process answers). Ingress webhook replicas hold none: any
        number of them serve one webhook behind a load balancer.
        """
        if self._ingress and self._settings.webhook_mode:
            return ()
        return (PLATFORM,)

    @property
    def connected(self) -> bool:
        """Whether updates are being fetched (polling or the webhook server is running)."""
        intake = self._webhook or self._poller or (self._app.updater if self._app else None)
        fetching = intake is not None and intake.running
        return self._state is Lifecycle.RUNNING and not self._intake_stopped and fetching

    @property
    def application(self) -> AnyApplication:
        """The python-telegram-bot application (after ``start()``)."""
        if self._app is None:
            raise RuntimeError("TelegramAdapter.start() has not been called")
        return self._app

    def _build(self) -> AnyApplication:
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
        if not self._state.require_startable("TelegramAdapter"):
            return
        self._state = Lifecycle.STARTING
        app = await self._connect()
        self._commands = frozenset(command.name for command in self._engine.commands())
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        app.add_handler(CallbackQueryHandler(self._on_callback))
        app.add_error_handler(self._on_error)
        try:
            await self._sync_commands()
            await app.start()
            await self._start_updates(app)
        except BaseException:
            await self._shutdown(app)
            self._state = Lifecycle.CLOSED
            raise
        self._state = Lifecycle.RUNNING
        _log.info(
            "Telegram: serving @%s by %s",
            self._username,
            "webhook" if self._settings.webhook_mode else "polling",
        )

    async def start_outbound(self) -> None:
        """Connect for sending only (a queue worker): ``getMe``, no polling, no webhook.

        No commands are registered (ingress does that) and no update is fetched; the
        worker answers through :meth:`channel_for`. Idempotent; ``aclose()`` disconnects.
        """
        if not self._state.require_startable("TelegramAdapter"):
            return
        self._state = Lifecycle.STARTING
        await self._connect()
        self._outbound = True
        self._state = Lifecycle.RUNNING
        _log.info("Telegram: sending as @%s (queue worker)", self._username)

    @property
    def outbound_ready(self) -> bool:
        """Whether :meth:`start_outbound` connected and the adapter is not closed."""
        return self._outbound and self._state is Lifecycle.RUNNING

    def channel_for(self, msg: IncomingMessage) -> TelegramReplyChannel:
        """The channel answering ``msg`` as a live update's would (files fetched by ``ref``).

        Raises ``RuntimeError`` before ``start_outbound()`` (or ``start()``).
        """
        if self._transport is None:
            raise RuntimeError("TelegramAdapter.channel_for() before start_outbound()")
        chat = int(msg.chat_id)
        reply_to = int(msg.message_id) if msg.message_id and not msg.is_private else None
        return TelegramReplyChannel(
            self._transport,
            chat_id=chat,
            thread_id=int(msg.thread_id) if msg.thread_id else None,
            reply_to=reply_to,
            is_private=msg.is_private,
            asker=msg.user_id,
            max_file_bytes=self._max_file_bytes,
        )

    async def _connect(self) -> AnyApplication:
        """Build the application and ``getMe``; the transport is ready to send after it."""
        # httpx logs request URLs, which carry the bot token, at INFO.
        for noisy in ("httpx", "httpcore"):
            logger = logging.getLogger(noisy)
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
        # PTB 22's future durations (timedelta): no warning per flood error; both are read.
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
            self._state = Lifecycle.CLOSED
            raise
        self._app = app
        self._transport = Transport(app, self._settings, self._telemetry, self._limits)
        me = app.bot.bot
        self._username = (me.username or "").lower()
        self._bot_id = me.id
        return app

    async def _start_updates(self, app: AnyApplication) -> None:
        """Start the webhook server (``TELEGRAM_WEBHOOK_URL`` set) or long polling."""
        updater = app.updater
        assert updater is not None
        if self._ingress and self._settings.webhook_mode:
            self._webhook = QueuedWebhook(app, self._settings, _ALLOWED_UPDATES)
            await self._webhook.start()
        elif self._settings.webhook_mode:
            host, port = self._settings.listen_address()
            secret = self._settings.webhook_secret
            try:
                await updater.start_webhook(
                    listen=host,
                    port=port,
                    url_path=self._settings.webhook_path(),
                    webhook_url=self._settings.webhook_url,
                    secret_token=secret.get_secret_value() if secret else None,
                    allowed_updates=_ALLOWED_UPDATES,
                )
            except OSError as exc:  # the address is taken, or not one of this host's
                raise ConfigError(
                    "TELEGRAM_WEBHOOK_LISTEN",
                    f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                    TelegramSettings.EXAMPLES["webhook_listen"],
                ) from exc
        elif self._ingress:
            self._poller = QueuedPoller(
                app,
                timeout=self._settings.poll_timeout,
                allowed_updates=_ALLOWED_UPDATES,
                on_error=self._on_polling_error,
                settle=self._albums.settle,
            )
            await self._poller.start()
        else:
            await updater.start_polling(
                timeout=timedelta(seconds=self._settings.poll_timeout),
                allowed_updates=_ALLOWED_UPDATES,
                error_callback=self._on_polling_error,
            )

    async def wait_closed(self) -> None:
        """Return once the adapter stopped; raise the fatal error that stopped it, if any."""
        await self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    async def stop_intake(self) -> None:
        """Stop fetching updates (polling or the webhook server); the bot can still send.

        Updates already fetched are still handed to the engine; later ones stay with
        Telegram for the next start. Replies in flight are delivered until ``aclose()``.
        Idempotent; nothing to do before ``start()``.
        """
        app = self._app
        if self._intake_stopped or app is None or app.updater is None:
            return
        self._intake_stopped = True
        for intake in (self._webhook, self._poller):
            if intake is not None:
                await intake.stop()
        if app.updater.running:
            await app.updater.stop()
        self._albums.flush()  # an album still gathering is handed over, not lost
        _log.info("Telegram: stopped taking updates")

    async def aclose(self) -> None:
        """Stop taking updates, let replies in flight finish, disconnect. Idempotent."""
        if self._state is not Lifecycle.RUNNING:
            self._state = Lifecycle.CLOSED
            self._stopped.set()
            return
        self._state = Lifecycle.CLOSED
        if self._app is not None:
            await self._shutdown(self._app)
        self._albums.flush()
        await self._albums.wait(self._settings.request_timeout)
        self._stopped.set()

    def resume(
        self, chat_id: str, thread_id: str | None, message_ids: Sequence[str]
    ) -> TelegramReplyChannel:
        """A channel into a stored chat whose streamed reply edits ``message_ids``.

        Used by crash recovery (``core.chat_ports.ResumableAdapter``) once the adapter started.

        Raises:
            RuntimeError: before ``start()``.
        """
        if self._transport is None:
            raise RuntimeError("TelegramAdapter.resume() before start()")
        chat = int(chat_id)
        return TelegramReplyChannel(
            self._transport,
            chat_id=chat,
            thread_id=int(thread_id) if thread_id else None,
            is_private=chat > 0,  # Telegram's private chats are the users' (positive) ids
            adopt=message_ids,
        )

    async def _shutdown(self, app: AnyApplication) -> None:
        for intake in (self._webhook, self._poller):
            if intake is not None:
                await intake.stop()
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await app.shutdown()

    # --- commands ---

    async def _sync_commands(self) -> None:
        """Register the engine's commands with ``setMyCommands``, only when they changed."""
        wanted = [
            BotCommand(info.name, addressing.command_description(info.description, info.argument))
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
        attachments = media.attachments(message, self._photo_limit)
        group = message.media_group_id
        if group is not None and self._albums.join(
            (chat.id, group),
            attachments,
            addressing.strip_mention(message.caption or "", self._username),
        ):
            return  # a further file of an album whose first one was taken
        if text is None:
            if attachments:
                text = message.caption or ""  # the caption is the text ("/kb add" too)
            else:
                unsupported = media.unsupported_kind(message)
                if unsupported is None:
                    return  # a service message: joins, pins, topic changes
        if not is_private:
            addressed, cleaned = addressing.addressed(
                message,
                text or message.caption or "",
                username=self._username,
                bot_id=self._bot_id,
                commands=self._commands,
                group_mode=self._settings.group_mode,
            )
            if not addressed:
                return
            if text is not None:
                text = cleaned
        thread_id = message.message_thread_id if message.is_topic_message else None
        reply_to = message.reply_to_message
        if reply_to is not None and reply_to.forum_topic_created:
            reply_to = None
        # Only the user's own earlier file: nobody adds someone else's document by replying.
        own_reply = (
            reply_to is not None
            and reply_to.from_user is not None
            and reply_to.from_user.id == user.id
        )
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
            reply_to_message_id=str(reply_to.message_id) if reply_to is not None else None,
            attachments=attachments,
            reply_attachments=(
                media.attachments(reply_to, self._photo_limit) if reply_to and own_reply else ()
            ),
        )
        out = TelegramReplyChannel(
            self._transport,
            chat_id=chat.id,
            thread_id=thread_id,
            reply_to=None if is_private else message.message_id,
            is_private=is_private,
            asker=str(user.id),
            max_file_bytes=self._max_file_bytes,
        )
        self._transport.saw(chat.id, message.message_id)
        _log.debug("Telegram update %s from chat %s", update.update_id, chat.id)
        self._albums.flush(chat.id)  # an album gathering in this chat came first
        if group is not None and attachments:
            self._albums.gather((chat.id, group), incoming, out, update.update_id)
            return
        # submit() is synchronous: arrival order is kept per conversation.
        await self._hand_over(self._engine.submit(incoming, out), out, "message")

    async def _on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query: CallbackQuery | None = update.callback_query
        if query is None or self._transport is None:
            return
        data = query.data or ""
        # "y|<action id>" or "y|<action id>|<asker's user id>" (see ask_confirmation)
        answer, _, rest = data.partition("|")
        token, _, asker_in_data = rest.partition("|")
        message = query.message
        if answer not in ("y", "n") or not token or not isinstance(message, Message):
            with contextlib.suppress(TelegramError):
                await query.answer()
            return
        action_id = self._transport.confirmations.get(token, token)
        chat = message.chat
        is_private = chat.type == ChatType.PRIVATE
        asker = asker_in_data or self._transport.askers.get((chat.id, message.message_id))
        user_id = str(query.from_user.id)
        try:
            await query.answer()
            if asker is None or asker == user_id:
                # Only the asker's press settles it; others leave the buttons for the asker.
                self._transport.askers.pop((chat.id, message.message_id), None)
                await self._transport.call(chat.id, lambda: message.edit_reply_markup(None))
        except BadRequest as exc:
            if not is_not_modified(exc):
                _log.warning("could not clear confirmation buttons: %s", exc.message)
        except TelegramError as exc:
            _log.warning("could not answer a button press: %s", exc)
        thread_id = message.message_thread_id if message.is_topic_message else None
        # A confirmed call continues the conversation: a further question it asks belongs to
        # the person who pressed.
        out = TelegramReplyChannel(
            self._transport,
            chat_id=chat.id,
            thread_id=thread_id,
            is_private=is_private,
            asker=user_id,
        )
        await self._hand_over(
            self._engine.handle_action(
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
            ),
            out,
            "button press",
        )

    async def _hand_over(
        self, taken: Awaitable[None], out: TelegramReplyChannel, what: str
    ) -> None:
        """Await the engine taking a turn; in ingress, until it is queued (see ``queued``)."""
        await (queued(taken, out, what) if self._ingress else taken)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        if isinstance(error, AdapterError):
            _log.warning("Telegram: %s", error)
            return
        _log.error("Telegram: an update failed", exc_info=error)

    def _on_polling_error(self, exc: TelegramError) -> None:
        if isinstance(exc, InvalidToken):
            # The token was revoked: stop.
            self._fatal = AdapterError(f"Telegram polling stopped: {exc}")
            self._stopped.set()
            _log.error("Telegram polling stopped: %s", exc)
        elif isinstance(exc, Conflict):
            # Another process polls with this token (one not sharing our database, or the
            # lease would have kept us waiting). Stopping would leave both down under a
            # restart policy: keep polling with a backoff; each update is answered once.
            if not self._conflict_told:
                self._conflict_told = True
                _log.warning(
                    "another process polls Telegram with this bot's token (409 Conflict); "
                    "retrying. Run one process per token, or give both the same DATABASE_URL "
                    "so that the second waits for the first"
                )
        elif isinstance(exc, NetworkError):
            _log.warning("Telegram polling: network error (%s); retrying", exc)
        else:
            _log.warning("Telegram polling error: %s", exc)
