"""Answering one Telegram message: notices, the live reply, confirmations, files.

:class:`TelegramReplyChannel` implements ``core.ports.ReplyChannel``; its streamed reply is
an :class:`~adapters.live.LiveMessage` on a surface made of the Bot API calls here (HTML with
a plain-text fallback, 4096 UTF-16 units a message, the chat's flood gate). It is also a
``core.ports.FileSource``: the photos, voice notes and documents users send are fetched
with ``getFile`` and streamed to disk, within the Bot API's 20 MB download limit and
``MAX_FILE_MB`` (or the caller's own limit).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Final

import httpx
from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    ReplyParameters,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError, TimedOut

from adapters.files import DownloadRefused, check_size, save_stream
from adapters.live import ChatRefused, LiveMessage, MessageGone
from adapters.telegram.split import Part, plain_parts, render_parts
from adapters.telegram.transport import (
    Throttled,
    Transport,
    is_gone,
    is_not_modified,
    is_parse_error,
)
from core.errors import AdapterError
from core.types import Attachment, ReplyEvent

__all__ = ["TelegramReplyChannel"]

_log = logging.getLogger(__name__)

_CALLBACK_LIMIT: Final = 64  # bytes of callback_data
BOT_API_DOWNLOAD_LIMIT: Final = 20 * 1024 * 1024  # getFile refuses bigger files
_CHUNK: Final = 64 * 1024


def _fits(callback_data: str) -> bool:
    return len(callback_data.encode()) <= _CALLBACK_LIMIT


class TelegramReplyChannel:
    """Answers one incoming message in its chat (and forum topic).

    Built by :class:`TelegramAdapter` for each update; implements ``core.ports.ReplyChannel``.
    Raises :class:`~core.errors.AdapterError` when Telegram refuses for good (the user blocked
    the bot, the chat is gone).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        chat_id: int,
        thread_id: int | None = None,
        reply_to: int | None = None,
        is_private: bool = True,
        asker: str | None = None,
        adopt: Sequence[str] = (),
        max_file_bytes: int | None = None,
    ) -> None:
        self._t = transport
        limit = BOT_API_DOWNLOAD_LIMIT
        self._file_limit = min(limit, max_file_bytes) if max_file_bytes else limit
        self._adopt = tuple(adopt)  # messages on screen the streamed reply takes over
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
    ) -> int:
        """Send ``part``; return the new message's id."""
        bot = self._t.app.bot
        reply = self._reply_parameters()

        async def send(text: str, parse_mode: str | None) -> int:
            try:
                return await self._t.send(
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
                    text=text,
                    parse_mode=parse_mode,
                    markup=markup,
                    pace=self._interval,
                )
            finally:
                self._t.note_edit(self._chat_id)

        try:
            if html:
                try:
                    return await send(part.html, ParseMode.HTML)
                except BadRequest as exc:
                    if not is_parse_error(exc):
                        raise
                    _log.warning(
                        "Telegram refused the HTML of a reply part (%s); sent as plain text",
                        exc.message,
                    )
            return await send(part.text, None)
        except TelegramError as exc:
            raise self._translate(exc) from exc

    async def _edit(self, message_id: int, part: Part, *, final: bool) -> bool:
        """Edit a shown message to ``part``; ``False`` when an intermediate edit was skipped.

        Raises :class:`~adapters.live.MessageGone` when the user deleted the message.
        """
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
                repeat_on_timeout=2 if final else 0,  # an edit is idempotent
                pace=self._interval,
            )

        try:
            try:
                await edit(part.html, ParseMode.HTML)
            except BadRequest as exc:
                if not is_parse_error(exc):
                    raise
                _log.warning(
                    "Telegram refused the HTML of an edit (%s); sent as plain text", exc.message
                )
                await edit(part.text, None)
        except (RetryAfter, Throttled):
            return False  # an intermediate edit: the next flush shows the text
        except TimedOut:
            if not final:
                return False  # applied or not, the next flush sends the text again
            # Made three times, each possibly applied: assume it was, rather than call a
            # reply the user may well be reading complete "failed".
            _log.warning("a final edit in chat %s timed out; assuming it arrived", self._chat_id)
            return True
        except BadRequest as exc:
            if is_not_modified(exc):
                return True
            if is_gone(exc):
                raise MessageGone(f"message {message_id} in chat {self._chat_id} is gone") from exc
            if not final:
                _log.warning("an intermediate edit failed: %s", exc.message)
                return False
            raise self._translate(exc) from exc
        except TelegramError as exc:
            if not final and not isinstance(exc, Forbidden):
                _log.warning("an intermediate edit failed: %s", exc)
                return False
            raise self._translate(exc) from exc
        finally:
            self._t.note_edit(self._chat_id)
        return True

    def _translate(self, exc: TelegramError) -> AdapterError:
        if isinstance(exc, Forbidden):
            return ChatRefused(f"Telegram refused chat {self._chat_id}: {exc.message}")
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
        except (TelegramError, Throttled) as exc:
            _log.debug("typing action failed: %s", exc)

    # --- ReplyChannel ---

    async def send_text(self, text: str) -> Sequence[str]:
        """Send a plain-text notice (split if long); return the message ids."""
        ids: list[str] = []
        for part in plain_parts(text):
            ids.append(str(await self._send(Part(part.text, part.text), html=False)))
        return ids

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        """Show the reply as ``events`` arrive, in messages edited live; return their ids.

        The policy is :class:`~adapters.live.LiveMessage`'s: the first message is sent once
        ``first_flush_delay`` has passed since the first text (or at the end, so a fast reply
        is sent once and never edited); edits follow at most every edit interval and honour
        the chat's flood gate; "typing" shows while no text arrived for ``typing_delay``; a
        queue notice shows until the answer replaces it. Replies over 4096 UTF-16 units
        continue in new messages. The final text is always delivered complete. A channel
        built with ``adopt`` ids (crash recovery) edits those messages into the reply.
        """
        if self._adopt:
            live = LiveMessage.adopt(_Surface(self), self._t.pacing, self._adopt, on_posted)
            return await live.run(events)
        return await LiveMessage(_Surface(self), self._t.pacing, on_posted).run(events)

    def adopt(self, platform_ids: Sequence[str]) -> LiveMessage[Part, int]:
        """A live message that takes over messages of this chat already on screen."""
        return LiveMessage.adopt(_Surface(self), self._t.pacing, platform_ids)

    async def _delete(self, message_id: int) -> None:
        bot = self._t.app.bot
        try:
            await self._t.call(
                self._chat_id, functools.partial(bot.delete_message, self._chat_id, message_id)
            )
        except TelegramError as exc:
            _log.debug("could not delete a spare message: %s", exc)

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        """Show ``prompt`` (plain text) with Yes/No buttons; a press reaches the engine.

        The buttons carry the action id and the asker's id in their callback data
        (``y|t:abc|12345``), so a press after a restart is still understood; only an id too
        long for Telegram's 64 bytes goes through an in-memory map instead.
        """
        asker = self._asker
        token = action_id
        if asker is not None and _fits(f"y|{token}|{asker}"):
            token = f"{token}|{asker}"
        elif not _fits(f"y|{token}"):
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
        message_id = await self._send(Part(prompt, prompt), html=False, markup=markup)
        if asker is not None:
            self._t.askers[(self._chat_id, message_id)] = asker

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

    # --- FileSource ---

    async def download(
        self, attachment: Attachment, destination: Path, *, max_bytes: int | None = None
    ) -> int:
        """Fetch a file the user sent into ``destination``; return its size in bytes.

        A size over the limit (the Bot API's 20 MB, or ``max_bytes`` / ``MAX_FILE_MB`` when
        lower) is refused before anything is fetched: first from the size the message
        carried, then from ``getFile``'s, and while streaming when neither said.

        Raises:
            DownloadRefused: the file is too big (``user_message`` says the limit).
            AdapterError: Telegram refused or could not be reached. Nothing is left at
                ``destination`` after a failure.
        """
        limit = min(max_bytes, BOT_API_DOWNLOAD_LIMIT) if max_bytes else self._file_limit
        check_size(attachment.size, limit, attachment.name)
        bot = self._t.app.bot
        timeout = self._t.settings.request_timeout
        try:
            file = await bot.get_file(attachment.ref)
        except BadRequest as exc:
            if "file is too big" in exc.message.lower():
                raise DownloadRefused(
                    f"Telegram refused to hand over {attachment.name!r}: {exc.message}",
                    f"Telegram lets bots download files of up to "
                    f"{BOT_API_DOWNLOAD_LIMIT // (1024 * 1024)} MB; this one is bigger.",
                ) from exc
            raise AdapterError(f"Telegram getFile failed: {exc.message}") from exc
        except TelegramError as exc:
            raise AdapterError(f"Telegram getFile failed: {exc}") from exc
        check_size(file.file_size, limit, attachment.name)
        path = file.file_path
        if not path:
            raise AdapterError("Telegram getFile returned no file_path")
        if not path.startswith(("http://", "https://")):  # a local Bot API server's own disk
            return await save_stream(_read_local(Path(path)), destination, limit=limit)
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
                client.stream("GET", path) as response,
            ):
                if response.status_code != 200:
                    # The URL carries the bot token: never put it in the message.
                    raise AdapterError(
                        f"Telegram file download failed: HTTP {response.status_code}"
                    )
                return await save_stream(
                    response.aiter_bytes(_CHUNK), destination, limit=limit, name=attachment.name
                )
        except httpx.HTTPError as exc:  # save_stream removed what it had written
            raise AdapterError(f"Telegram file download failed: {type(exc).__name__}") from None


async def _read_local(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, _CHUNK):
            yield chunk


class _Surface:
    """The :class:`~adapters.live.LiveSurface` of one reply: message ids are the handles."""

    __slots__ = ("_c",)

    def __init__(self, channel: TelegramReplyChannel) -> None:
        self._c = channel

    def render(self, text: str) -> list[Part]:
        return render_parts(text)

    def plain(self, text: str) -> list[Part]:
        return plain_parts(text)

    async def post(self, part: Part, index: int) -> int:
        return await self._c._send(part)

    async def edit(self, handle: int, part: Part, *, final: bool) -> bool:
        return await self._c._edit(handle, part, final=final)

    async def delete(self, handle: int) -> None:
        await self._c._delete(handle)

    async def typing(self) -> None:
        await self._c._typing()

    def next_edit_at(self) -> float:
        return self._c._t.edit_slot(self._c._chat_id, self._c._interval)

    def platform_id(self, handle: int) -> str:
        return str(handle)

    def handle_for(self, platform_id: str) -> int:
        return int(platform_id)
